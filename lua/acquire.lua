-- acquire: take the run's lease and hand out a new fencing token.
--
-- KEYS[1] fence   string int: highest token ever issued for the run (never decreases)
-- KEYS[2] lease   hash {owner, token, state, acquired_ms, renewed_ms, ttl_ms}
--                 state "held" (key has PX ttl) | "released" (no TTL: the holder let go)
-- KEYS[3] head    hash, read only: the generation handed back to the new holder
-- KEYS[4] events  stream, capped at ~ARGV[3] entries
-- KEYS[5] staging hash {commit id: "<token>:<expected>:<count>:<bytes>"} of staged commits
-- KEYS[6..]       the staged keys of the ARGV[5..] entries, <count> keys each
-- ARGV[1] owner
-- ARGV[2] ttl in ms, an integer in [1, MAX_INT]
-- ARGV[3] events stream max length
-- ARGV[4] strict (1: answer NEED_STAGE for staged commits whose keys were not passed)
-- ARGV[5..] staged commits "<cid>:<count>" whose keys are passed for removal
--
-- Numbers: tokens and ttls stay below MAX_INT = 2^50 (redis_ckpt._core.MAX_INT), where Lua's
-- doubles are exact; the acquire that would pass it is refused before anything is written.
--
-- Returns {token, head_generation, kind, previous_token}
--   kind: "acquire"   first lease, or the previous holder released
--         "takeover"  the previous holder's lease expired (or was revoked) without release
--         "reacquire" the same owner acquired again (its older token is fenced off)
-- Errors (nothing written):
--   "OUT_OF_RANGE ttl <ttl>"       ttl not an integer in [1, MAX_INT]
--   "OUT_OF_RANGE fence <fence>"   the fence is at (or past) MAX_INT: no token can be handed out
--   "LEASE_HELD <ms_left> <owner>" another owner holds a live lease
--   "NEED_STAGE <cid>:<count> ..." staged commits (all dead once the fence moves: their
--                                  scripts will meet FENCED) whose keys were not passed
--
-- The token is the safety mechanism; the lease is only liveness.
local LIMIT = 1125899906842624  -- 2^50
local owner = ARGV[1]
local ttl = tonumber(ARGV[2])
local maxlen = ARGV[3]
local function int(x) return string.format('%d', x) end

if not (ttl and ttl >= 1 and ttl <= LIMIT and ttl == math.floor(ttl)) then
  return redis.error_reply('OUT_OF_RANGE ttl ' .. ARGV[2])
end
local previous_s = redis.call('GET', KEYS[1]) or '0'
local previous = tonumber(previous_s)
if not previous or previous >= LIMIT then
  return redis.error_reply('OUT_OF_RANGE fence ' .. previous_s)
end

local l_owner, l_state, l_token = unpack(redis.call('HMGET', KEYS[2], 'owner', 'state', 'token'))
if l_state == 'held' and l_owner ~= owner then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then
    return redis.error_reply('LEASE_HELD ' .. int(left) .. ' ' .. l_owner)
  end
end

local passed = {}
local k = 6
for i = 5, #ARGV do
  local cid, c = string.match(ARGV[i], '^(.+):(%d+)$')
  passed[cid] = {k, tonumber(c)}
  k = k + tonumber(c)
end
if ARGV[4] == '1' then
  local registry = redis.call('HGETALL', KEYS[5])
  local need = {}
  for i = 1, #registry, 2 do
    if not passed[registry[i]] then
      table.insert(need, registry[i] .. ':' .. (string.match(registry[i + 1], '^%d+:%d+:(%d+):') or '0'))
    end
  end
  if #need > 0 then
    return redis.error_reply('NEED_STAGE ' .. table.concat(need, ' '))
  end
end

local kind = 'takeover'
if previous == 0 or l_state == 'released' then
  kind = 'acquire'
elseif l_state == 'held' and l_owner == owner then
  kind = 'reacquire'
end

for cid, where in pairs(passed) do
  for j = 0, where[2] - 1 do redis.call('DEL', KEYS[where[1] + j]) end
  redis.call('HDEL', KEYS[5], cid)
end
local token = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local now = int(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'owner', owner, 'token', int(token), 'state', 'held',
  'acquired_ms', now, 'renewed_ms', now, 'ttl_ms', int(ttl))
redis.call('PEXPIRE', KEYS[2], int(ttl))

local generation = tonumber(redis.call('HGET', KEYS[3], 'generation') or '0')
local fields = {'kind', kind, 'owner', owner, 'token', int(token), 'ms', now, 'ttl_ms', int(ttl)}
if kind ~= 'acquire' or previous > 0 then
  table.insert(fields, 'previous_token'); table.insert(fields, previous_s)
  if l_owner then table.insert(fields, 'previous_owner'); table.insert(fields, l_owner) end
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', unpack(fields))
return {token, generation, kind, previous}
