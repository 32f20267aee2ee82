-- import: restore an exported frame under its own run and generation (admin).
--
-- KEYS[1]    fence   string int: set to max(fence, frame token) + 1, so it never goes down and
--                    every current holder is fenced off
-- KEYS[2]    lease   hash (deleted: nobody holds the restored run)
-- KEYS[3]    head    hash (see commit.lua); points at the imported generation afterwards
-- KEYS[4]    events  stream, capped at ~ARGV[11]
-- KEYS[5]    the key of the imported generation (g:<ARGV[2]>)
-- KEYS[6..]  keys of kept generations rotation drops; ARGV[13..] their generation numbers
-- ARGV[1]  frame (bytes, verified by the caller)   ARGV[2]  its generation
-- ARGV[3]  its token          ARGV[4]  checksum (hex)    ARGV[5]  schema version
-- ARGV[6]  codec              ARGV[7]  created ms        ARGV[8]  owner
-- ARGV[9]  commit id          ARGV[10] keep              ARGV[11] events max length
-- ARGV[12] who imported (free text for the audit event)
--
-- Returns {generation, new_fence}
-- Errors: "CONFLICT <generation - 1> <head>"  the run's head is at or past that generation
--         "NEED_KEYS <g> ..."                 as in commit.lua
local generation = tonumber(ARGV[2])
local keep = tonumber(ARGV[10])
local h_gen, h_kept = unpack(redis.call('HMGET', KEYS[3], 'generation', 'kept'))
local current = tonumber(h_gen or '0')
if current >= generation then
  return redis.error_reply('CONFLICT ' .. (generation - 1) .. ' ' .. current)
end

local kept = {}
if h_kept and h_kept ~= '' then
  for g in string.gmatch(h_kept, '[^,]+') do table.insert(kept, tonumber(g)) end
end
table.insert(kept, generation)
local drop_count = #kept - keep
local offered = {}
for i = 6, #KEYS do offered[tonumber(ARGV[i + 7])] = KEYS[i] end
local missing = {}
for i = 1, drop_count do
  if not offered[kept[i]] then table.insert(missing, kept[i]) end
end
if #missing > 0 then
  return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' '))
end

local fence = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[3])) + 1
redis.call('SET', KEYS[1], fence)
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[5], ARGV[1])
local still = {}
for i = 1, #kept do
  if i <= drop_count then redis.call('DEL', offered[kept[i]]) else table.insert(still, kept[i]) end
end
redis.call('HSET', KEYS[3], 'generation', generation, 'token', ARGV[3], 'commit_id', ARGV[9],
  'checksum', ARGV[4], 'size', string.len(ARGV[1]), 'schema_version', ARGV[5], 'codec', ARGV[6],
  'created_ms', ARGV[7], 'owner', ARGV[8], 'kept', table.concat(still, ','))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', 'kind', 'import', 'by', ARGV[12],
  'generation', generation, 'token', ARGV[3], 'fence', fence, 'ms', now)
return {generation, fence}
