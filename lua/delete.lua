-- delete: remove a run's checkpoints and lease; the fence survives, bumped, as a tombstone so
-- that no holder of an older token can write into a recreated run.
--
-- KEYS[1]    fence   string int (kept, incremented)
-- KEYS[2]    lease   hash (deleted)
-- KEYS[3]    head    hash (deleted)
-- KEYS[4]    events  stream (kept: the audit trail outlives the data), capped at ~ARGV[2]
-- KEYS[5..]  for each ARGV[3..] entry "<g>:<chunks>", the key g:<g> then its chunk keys
-- ARGV[1]  who deleted (free text for the audit event)
-- ARGV[2]  events stream max length
--
-- Returns {new_fence, generations_deleted}
-- Errors: "NEED_KEYS <g>:<c> ..."  the head keeps generations whose keys were not passed
local h_kept = redis.call('HGET', KEYS[3], 'kept')
local offered = {}
for i = 3, #ARGV do offered[ARGV[i]] = true end
local missing = {}
if h_kept and h_kept ~= '' then
  for entry in string.gmatch(h_kept, '[^,]+') do
    if not string.find(entry, ':') then entry = entry .. ':0' end
    if not offered[entry] then table.insert(missing, entry) end
  end
end
if #missing > 0 then
  return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' '))
end
local deleted = 0
local k = 5
for i = 3, #ARGV do
  local c = tonumber(string.match(ARGV[i], ':(%d+)$'))
  deleted = deleted + redis.call('DEL', KEYS[k])
  for j = 1, c do redis.call('DEL', KEYS[k + j]) end
  k = k + c + 1
end
redis.call('DEL', KEYS[2], KEYS[3])
local fence = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'kind', 'delete', 'by', ARGV[1],
  'fence', fence, 'generations', deleted, 'ms', now)
return {fence, deleted}
