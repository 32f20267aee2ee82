-- retain: mark a run done and let the server remove it once nobody commits to it or
-- acquires it for ARGV[3] ms (Lease.finish(keep_for=...)): every key of the run gets that
-- expiry, the fence a later one; the caller's lease is released.
--
-- KEYS[1]  fence    string int; expires ARGV[4] ms after max(now, fence) + ARGV[3]: it
--                   outlives the data, and a fence recreated after it (acquire under a
--                   retention) starts at the server time in ms, above every token it held
-- KEYS[2]  lease    hash (see acquire.lua): released when the caller holds it, then expires
--                   with the data (a lease another owner holds keeps its own ttl)
-- KEYS[3]  head     hash: records retention_ms and finished_ms (when the run has a head)
-- KEYS[4]  events   stream, capped at ~ARGV[5]
-- KEYS[5]  staging  hash of staged commits (expires on its own, see commit.lua)
-- KEYS[6..]  for each generation entry "<g>:<chunks>", the key g:<g> then its chunk keys;
--            then x:refs (the run's shared-chunk reference counts, see core/dedup.py) and
--            the shared chunks x:<address> it names: they get the same expiry as the
--            generations that list them (a run finished with shared generations leaves none)
-- ARGV[1]  token of the caller: it must be the run's fence (0: none, an admin's call)
-- ARGV[2]  owner of the caller (for the audit event)
-- ARGV[3]  retention in ms, an integer in [1, MAX_INT]
-- ARGV[4]  fence margin in ms, an integer in [0, MAX_INT]
-- ARGV[5]  events stream max length
-- ARGV[6]  number of generation entries d
-- ARGV[7 .. 6+d]  generation entries "<g>:<chunks>"
--
-- Numbers: every time and token stays below MAX_INT = 2^50 (redis_ckpt.core.config.MAX_INT).
--
-- Returns the server time (ms) at which the run's data expires unless it is acquired or
-- committed to again (which sets its expiry anew).
-- Errors (nothing written):
--   "FENCED <token> <fence>"       the caller's token is not the run's fence (a newer holder)
--   "NEED_KEYS <g>:<c> ..."        the head keeps generations whose keys were not passed
--   "NEED_SHARED <n>"              x:refs names n shared chunks, not all of them passed
--   "OUT_OF_RANGE <what> <value>"  a retention, margin or fence past MAX_INT
--   "DAMAGED fence <value>"        the fence is not an integer (changed by hand)
local LIMIT = 1125899906842624  -- 2^50
local function int(x) return string.format('%d', x) end
local token_s, owner = ARGV[1], ARGV[2]
local retention, margin, nd = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
if not (retention and retention >= 1 and retention <= LIMIT) then
  return redis.error_reply('OUT_OF_RANGE retention ' .. ARGV[3])
end
if not (margin and margin >= 0 and margin <= LIMIT) then
  return redis.error_reply('OUT_OF_RANGE margin ' .. ARGV[4])
end
local fence_s = redis.call('GET', KEYS[1]) or '0'
if not string.match(fence_s, '^%d+$') then
  return redis.error_reply('DAMAGED fence ' .. string.gsub(fence_s, '%c', '?'))
end
local fence = tonumber(fence_s)
if fence >= LIMIT then return redis.error_reply('OUT_OF_RANGE fence ' .. fence_s) end
if token_s ~= '0' and token_s ~= fence_s then
  return redis.error_reply('FENCED ' .. token_s .. ' ' .. fence_s)
end

local offered = {}
for i = 7, 6 + nd do offered[ARGV[i]] = true end
local h_kept = redis.call('HGET', KEYS[3], 'kept')
local missing = {}
for entry in string.gmatch(h_kept or '', '[^,]+') do
  if not string.find(entry, ':') then entry = entry .. ':0' end
  if not offered[entry] then table.insert(missing, entry) end
end
if #missing > 0 then return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' ')) end
local k = 6  -- past the generations' keys: x:refs, then the shared chunks passed
for i = 7, 6 + nd do k = k + tonumber(string.match(ARGV[i], ':(%d+)$')) + 1 end
local counts, passed, shared = redis.call('HGETALL', KEYS[k]), {}, {}  -- {address, count, ...}
local from = #KEYS[k] - 3  -- a chunk's key is x:refs's with its address in place of "refs"
for i = k + 1, #KEYS do passed[string.sub(KEYS[i], from)] = KEYS[i] end
for i = 1, #counts, 2 do
  if not passed[counts[i]] then return redis.error_reply('NEED_SHARED ' .. int(#counts / 2)) end
  shared[#shared + 1] = passed[counts[i]]
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local l_state, l_token = unpack(redis.call('HMGET', KEYS[2], 'state', 'token'))
if token_s ~= '0' and l_state == 'held' and l_token == token_s then
  redis.call('HSET', KEYS[2], 'state', 'released', 'released_ms', int(now))
  l_state = 'released'
end
if h_kept then
  redis.call('HSET', KEYS[3], 'retention_ms', int(retention), 'finished_ms', int(now))
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'kind', 'finish', 'owner', owner,
  'token', token_s, 'keep_ms', int(retention), 'ms', int(now))
if l_state ~= 'held' then redis.call('PEXPIRE', KEYS[2], int(retention)) end  -- a live lease keeps its ttl
local r = int(retention)
for i = 3, k - 1 do  -- head, events, the generations' keys
  if i ~= 5 then redis.call('PEXPIRE', KEYS[i], r) end
end
redis.call('PEXPIRE', KEYS[k], r)  -- x:refs and its chunks: they expire with the generations listing them
for _, key in ipairs(shared) do redis.call('PEXPIRE', key, r) end
redis.call('PEXPIREAT', KEYS[1], int(math.max(now, fence) + retention + margin))
return now + retention
