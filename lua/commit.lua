-- commit: apply one generation if the caller holds the run's current fencing token and
-- expects the current head; rotate the kept generations; all in one atomic step.
--
-- KEYS[1]    fence   string int: the run's current fence
-- KEYS[2]    head    hash {generation, token, commit_id, checksum, size, schema_version, codec,
--                         created_ms, owner, kept}  kept = "3,4,5" oldest first
-- KEYS[3]    events  stream, capped at ~ARGV[11]
-- KEYS[4]    the key of the new generation (g:<expected+1>)
-- KEYS[5..]  keys of older generations the caller expects this commit to rotate out;
--            ARGV[13..] are their generation numbers, in the same order
-- ARGV[1]  token              ARGV[2]  expected generation   ARGV[3]  commit id
-- ARGV[4]  frame (bytes)      ARGV[5]  checksum (hex)        ARGV[6]  schema version
-- ARGV[7]  codec              ARGV[8]  created ms            ARGV[9]  owner
-- ARGV[10] keep (>= 1)        ARGV[11] events max length     ARGV[12] the new generation number
--
-- Returns {generation, "new"}    applied
--         {generation, "retry"}  the head already is this commit id (a retry of an applied
--                                commit); an event is written so that the caller's WAITAOF
--                                covers the original write too
-- Errors (nothing but the audit event is written):
--   "FENCED <token> <fence>"       token below the fence: a newer worker holds the run
--   "FENCE_BEHIND <token> <fence>" token above the fence: the server lost fence increments
--   "CONFLICT <expected> <actual>" the head is not the expected generation
--   "NEED_KEYS <g> <g> ..."        rotation must drop generations whose keys were not passed
--   "BAD_GENERATION <expected+1> <arg>"
local token = tonumber(ARGV[1])
local expected = tonumber(ARGV[2])
local commit_id = ARGV[3]
local owner = ARGV[9]
local keep = tonumber(ARGV[10])
local maxlen = ARGV[11]
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if token < fence then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'kind', 'fenced', 'owner', owner,
    'token', token, 'fence', fence, 'expected', expected, 'commit_id', commit_id, 'ms', now)
  return redis.error_reply('FENCED ' .. token .. ' ' .. fence)
end
if token > fence then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'kind', 'fence_behind', 'owner', owner,
    'token', token, 'fence', fence, 'commit_id', commit_id, 'ms', now)
  return redis.error_reply('FENCE_BEHIND ' .. token .. ' ' .. fence)
end

local h_gen, h_commit, h_kept = unpack(redis.call('HMGET', KEYS[2], 'generation', 'commit_id', 'kept'))
local current = tonumber(h_gen or '0')
if h_commit == commit_id then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'kind', 'commit_retry', 'owner', owner,
    'token', token, 'generation', current, 'commit_id', commit_id, 'ms', now)
  return {current, 'retry'}
end
if current ~= expected then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'kind', 'conflict', 'owner', owner,
    'token', token, 'expected', expected, 'actual', current, 'commit_id', commit_id, 'ms', now)
  return redis.error_reply('CONFLICT ' .. expected .. ' ' .. current)
end
local new = current + 1
if tonumber(ARGV[12]) ~= new then
  return redis.error_reply('BAD_GENERATION ' .. new .. ' ' .. ARGV[12])
end

-- rotation plan, checked before anything is written
local kept = {}
if h_kept and h_kept ~= '' then
  for g in string.gmatch(h_kept, '[^,]+') do table.insert(kept, tonumber(g)) end
end
table.insert(kept, new)
local drop_count = #kept - keep
local offered = {}
for i = 5, #KEYS do offered[tonumber(ARGV[i + 8])] = KEYS[i] end
local missing = {}
for i = 1, drop_count do
  if not offered[kept[i]] then table.insert(missing, kept[i]) end
end
if #missing > 0 then
  return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' '))
end

redis.call('SET', KEYS[4], ARGV[4])
local still = {}
for i = 1, #kept do
  if i <= drop_count then
    redis.call('DEL', offered[kept[i]])
  else
    table.insert(still, kept[i])
  end
end
redis.call('HSET', KEYS[2], 'generation', new, 'token', token, 'commit_id', commit_id,
  'checksum', ARGV[5], 'size', string.len(ARGV[4]), 'schema_version', ARGV[6], 'codec', ARGV[7],
  'created_ms', ARGV[8], 'owner', owner, 'kept', table.concat(still, ','))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'kind', 'commit', 'owner', owner,
  'token', token, 'generation', new, 'commit_id', commit_id, 'size', string.len(ARGV[4]), 'ms', now)
return {new, 'new'}
