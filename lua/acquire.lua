-- acquire: take the run's lease and hand out a new fencing token.
--
-- KEYS[1] fence   string int: highest token ever issued for the run (never decreases)
-- KEYS[2] lease   hash {owner, token, state, acquired_ms, renewed_ms, ttl_ms}
--                 state "held" (key has PX ttl) | "released" (no TTL: the holder let go)
-- KEYS[3] head    hash, read only: the generation handed back to the new holder
-- KEYS[4] events  stream, capped at ~ARGV[3] entries
-- ARGV[1] owner
-- ARGV[2] ttl in ms (> 0)
-- ARGV[3] events stream max length
--
-- Returns {token, head_generation, kind, previous_token}
--   kind: "acquire"   first lease, or the previous holder released
--         "takeover"  the previous holder's lease expired (or was revoked) without release
--         "reacquire" the same owner acquired again (its older token is fenced off)
-- Errors: "LEASE_HELD <ms_left> <owner>"  another owner holds a live lease
--
-- The token is the safety mechanism; the lease is only liveness.
local owner = ARGV[1]
local ttl = tonumber(ARGV[2])
local maxlen = ARGV[3]

local l_owner, l_state, l_token = unpack(redis.call('HMGET', KEYS[2], 'owner', 'state', 'token'))
if l_state == 'held' and l_owner ~= owner then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then
    return redis.error_reply('LEASE_HELD ' .. left .. ' ' .. l_owner)
  end
end

local previous = tonumber(redis.call('GET', KEYS[1]) or '0')
local kind = 'takeover'
if previous == 0 or l_state == 'released' then
  kind = 'acquire'
elseif l_state == 'held' and l_owner == owner then
  kind = 'reacquire'
end

local token = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'owner', owner, 'token', token, 'state', 'held',
  'acquired_ms', now, 'renewed_ms', now, 'ttl_ms', ttl)
redis.call('PEXPIRE', KEYS[2], ttl)

local generation = tonumber(redis.call('HGET', KEYS[3], 'generation') or '0')
local fields = {'kind', kind, 'owner', owner, 'token', token, 'ms', now, 'ttl_ms', ttl}
if kind ~= 'acquire' or previous > 0 then
  table.insert(fields, 'previous_token'); table.insert(fields, previous)
  if l_owner then table.insert(fields, 'previous_owner'); table.insert(fields, l_owner) end
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', unpack(fields))
return {token, generation, kind, previous}
