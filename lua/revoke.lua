-- revoke: (admin) bump the fence so that every current holder is fenced off, drop the lease.
--
-- KEYS[1] fence   string int
-- KEYS[2] lease   hash (see acquire.lua)
-- KEYS[3] events  stream, capped at ~ARGV[2]
-- ARGV[1] who revoked (free text for the audit event)
-- ARGV[2] events stream max length
--
-- Returns the new fence, as the exact string INCR stored (a Lua number would round a fence
-- past 2^53, e.g. one imported before MAX_INT was enforced; revoke never refuses: it must
-- always fence every holder off).
-- Errors (nothing written):
--   "DAMAGED fence <value>"  the fence is not an integer: no token above it can be made
local fence_s = redis.call('GET', KEYS[1])
if fence_s and not string.match(fence_s, '^%d+$') then
  return redis.error_reply('DAMAGED fence ' .. string.gsub(fence_s, '%c', '?'))
end
local l_owner, l_state, l_token = unpack(redis.call('HMGET', KEYS[2], 'owner', 'state', 'token'))
redis.call('INCR', KEYS[1])
local fence = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[2])
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local fields = {'kind', 'revoke', 'by', ARGV[1], 'fence', fence, 'ms', now}
if l_state == 'held' then
  table.insert(fields, 'previous_owner'); table.insert(fields, l_owner)
  table.insert(fields, 'previous_token'); table.insert(fields, l_token)
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
if redis.call('PTTL', KEYS[3]) == -1 then  -- recreated on a run under a retention: expire with its fence
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then redis.call('PEXPIRE', KEYS[3], left) end
end
return fence
