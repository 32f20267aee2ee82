-- renew: extend the lease, only for the holder of the current token.
--
-- KEYS[1] fence   string int
-- KEYS[2] lease   hash (see acquire.lua)
-- KEYS[3] events  stream, capped at ~ARGV[4]
-- ARGV[1] token of the caller
-- ARGV[2] new ttl in ms, an integer in [1, MAX_INT] (MAX_INT = 2^50, redis_ckpt.core.config.MAX_INT:
--         Lua's doubles are exact below it)
-- ARGV[3] owner of the caller (for the audit event)
-- ARGV[4] events stream max length
--
-- Returns the new ttl in ms.
-- Errors: "OUT_OF_RANGE ttl <ttl>"  (nothing written)
--         "LEASE_LOST <fence> <holder_token|0> <holder_owner|>"  the caller's token no longer
--         holds a live lease (expired, revoked, released or taken over); a renew_failed event
--         is written.
local LIMIT = 1125899906842624  -- 2^50
local token = ARGV[1]
local ttl = tonumber(ARGV[2])
if not (ttl and ttl >= 1 and ttl <= LIMIT and ttl == math.floor(ttl)) then
  return redis.error_reply('OUT_OF_RANGE ttl ' .. ARGV[2])
end
local function int(x) return string.format('%d', x) end
local l_owner, l_state, l_token = unpack(redis.call('HMGET', KEYS[2], 'owner', 'state', 'token'))
local fence = redis.call('GET', KEYS[1]) or '0'
local t = redis.call('TIME')
local now = int(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))

if l_state == 'held' and l_token == token and fence == token then
  redis.call('HSET', KEYS[2], 'renewed_ms', now, 'ttl_ms', int(ttl))
  redis.call('PEXPIRE', KEYS[2], int(ttl))
  return ttl
end

local holder_token, holder = '0', ''
if l_state == 'held' then holder_token, holder = l_token, l_owner end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'renew_failed',
  'owner', ARGV[3], 'token', token, 'fence', fence, 'holder', holder, 'holder_token', holder_token, 'ms', now)
if redis.call('PTTL', KEYS[3]) == -1 then  -- recreated on a run under a retention: expire with its fence
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then redis.call('PEXPIRE', KEYS[3], left) end
end
return redis.error_reply('LEASE_LOST ' .. fence .. ' ' .. holder_token .. ' ' .. holder)
