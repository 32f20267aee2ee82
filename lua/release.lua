-- release: let go of the lease, only for the holder of that token.
--
-- KEYS[1] lease   hash (see acquire.lua); becomes state "released" with no TTL, so the
--                 next acquire is recorded as a plain acquire, not a takeover (under a
--                 retention: with the events' expiry, which is the run's)
-- KEYS[2] events  stream, capped at ~ARGV[3]
-- ARGV[1] token of the caller
-- ARGV[2] owner of the caller
-- ARGV[3] events stream max length
--
-- Tokens are compared as the strings the caller and acquire wrote (exact at any size).
--
-- Returns 1 when released, 2 when the lease is already released by the caller's token (a
-- resend whose first attempt applied, or a second release), 0 when the caller's token did not
-- hold the lease (nothing changed either way).
local l_state, l_token = unpack(redis.call('HMGET', KEYS[1], 'state', 'token'))
if l_token ~= ARGV[1] then
  return 0
end
if l_state ~= 'held' then
  return l_state == 'released' and 2 or 0
end
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('HSET', KEYS[1], 'state', 'released', 'released_ms', now)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'kind', 'release',
  'owner', ARGV[2], 'token', ARGV[1], 'ms', now)
local left = redis.call('PTTL', KEYS[2])  -- > 0 only for a run under a retention
if left > 0 then redis.call('PEXPIRE', KEYS[1], left) else redis.call('PERSIST', KEYS[1]) end
return 1
