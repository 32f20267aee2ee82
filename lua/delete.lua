-- delete: remove a run's checkpoints and lease; the fence survives, bumped, as a tombstone so
-- that no holder of an older token can write into a recreated run.
--
-- KEYS[1]    fence   string int (kept, incremented)
-- KEYS[2]    lease   hash (deleted)
-- KEYS[3]    head    hash (deleted)
-- KEYS[4]    events  stream (kept: the audit trail outlives the data), capped at ~ARGV[2]
-- KEYS[5..]  keys of the generations to delete; ARGV[3..] are their generation numbers
-- ARGV[1]  who deleted (free text for the audit event)
-- ARGV[2]  events stream max length
--
-- Returns {new_fence, generations_deleted}
-- Errors: "NEED_KEYS <g> ..."  the head keeps generations whose keys were not passed
local h_kept = redis.call('HGET', KEYS[3], 'kept')
local offered = {}
for i = 5, #KEYS do offered[tonumber(ARGV[i - 2])] = KEYS[i] end
local missing = {}
local kept = {}
if h_kept and h_kept ~= '' then
  for g in string.gmatch(h_kept, '[^,]+') do
    local n = tonumber(g)
    table.insert(kept, n)
    if not offered[n] then table.insert(missing, n) end
  end
end
if #missing > 0 then
  return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' '))
end
local deleted = 0
for i = 5, #KEYS do deleted = deleted + redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[2], KEYS[3])
local fence = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'kind', 'delete', 'by', ARGV[1],
  'fence', fence, 'generations', deleted, 'ms', now)
return {fence, deleted}
