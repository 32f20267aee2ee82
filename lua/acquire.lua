-- acquire: take the run's lease and hand out a new fencing token.
--
-- KEYS[1] fence   string int: highest token ever issued for the run (never decreases)
-- KEYS[2] lease   hash {owner, token, state, acquired_ms, renewed_ms, ttl_ms}
--                 state "held" (key has PX ttl) | "released" (no TTL: the holder let go)
-- KEYS[3] head    hash: the generation handed back to the new holder; its retention_ms
--                 (a run's own retention) applies when ARGV[5] is 0
-- KEYS[4] events  stream, capped at ~ARGV[3] entries
-- KEYS[5] staging hash {commit id: "<token>:<expected>:<count>:<bytes>"} of staged commits
-- KEYS[6..]       for each generation entry of ARGV[8..7+d], g:<g> then its chunk keys; then
--                 the staged keys of the dead entries, <count> keys each; then x:refs (the
--                 run's shared-chunk reference counts, see core/dedup.py) and the shared chunks
--                 x:<address> passed (under a retention every one x:refs names is needed)
-- ARGV[1] owner
-- ARGV[2] ttl in ms, an integer in [1, MAX_INT]
-- ARGV[3] events stream max length
-- ARGV[4] strict (1: answer NEED_STAGE for staged commits whose keys were not passed)
-- ARGV[5] retention in ms (0: the run's own, if its head records one; none: nothing expires)
-- ARGV[6] fence margin in ms: under a retention the fence expires that long after the data
-- ARGV[7] number of generation entries d
-- ARGV[8 .. 7+d]  generation entries "<g>:<chunks>" (under a retention every kept one is
--                 needed: their keys get the new expiry)
-- ARGV[8+d ..]    staged commits "<cid>:<count>" whose keys are passed for removal
--
-- Numbers: tokens and ttls stay below MAX_INT = 2^50 (redis_ckpt.core.config.MAX_INT), where Lua's
-- doubles are exact; the acquire that would pass it is refused before anything is written.
--
-- Retention: when one applies, every key of the run (head, kept generations, events, x:refs
-- and the shared chunks it names) expires that long from now, the fence ARGV[6] ms after
-- max(now, token) + retention, and the token is at least the server time in ms (TIME): a
-- fence recreated after it expired starts above every token the run held. A run holding
-- shared chunks also records the retention in its head (retention_ms, when ARGV[5] set it),
-- so that every later commit and acquire moves their expiry on too (and a "dedup" commit is
-- answered RETAINED, see commit.lua): a chunk never expires before a generation listing it.
-- Without one, nothing here expires and the token is fence + 1.
--
-- Returns {token, head_generation, kind, previous_token}
--   kind: "acquire"   first lease, or the previous holder released
--         "takeover"  the previous holder's lease expired (or was revoked) without release
--         "reacquire" the same owner acquired again (its older token is fenced off)
-- Errors (nothing written):
--   "OUT_OF_RANGE ttl <ttl>"       ttl not an integer in [1, MAX_INT] (likewise retention, margin)
--   "OUT_OF_RANGE fence <fence>"   the fence is at (or past) MAX_INT: no token can be handed out
--   "DAMAGED <where> <value>"      the fence, or the head's generation, retention_ms or kept
--                                  (<where>: "fence", "head.generation", ...), holds what no
--                                  script writes (control characters in <value> shown as "?")
--   "LEASE_HELD <ms_left> <owner>" another owner holds a live lease
--   "NEED_STAGE <cid>:<count> ..." staged commits (all dead once the fence moves: their
--                                  scripts will meet FENCED) whose keys were not passed
--   "NEED_KEYS <g>:<c> ..."        under a retention: kept generations whose keys were not passed
--   "NEED_SHARED <n>"              under a retention: x:refs names n shared chunks, not all passed
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
local function damaged(where, value)
  return redis.error_reply('DAMAGED ' .. where .. ' ' .. string.gsub(value, '%c', '?'))
end
local previous_s = redis.call('GET', KEYS[1]) or '0'
if not string.match(previous_s, '^%d+$') then return damaged('fence', previous_s) end
local previous = tonumber(previous_s)
if previous >= LIMIT then
  return redis.error_reply('OUT_OF_RANGE fence ' .. previous_s)
end

local l_owner, l_state, l_token = unpack(redis.call('HMGET', KEYS[2], 'owner', 'state', 'token'))
if l_state == 'held' and l_owner ~= owner then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then
    return redis.error_reply('LEASE_HELD ' .. int(left) .. ' ' .. l_owner)
  end
end

local h = redis.call('HMGET', KEYS[3], 'generation', 'retention_ms', 'kept')
for i, name in ipairs({'generation', 'retention_ms'}) do
  if h[i] and not string.match(h[i], '^%d+$') then return damaged('head.' .. name, h[i]) end
end
for e in string.gmatch(h[3] or '', '[^,]+') do
  if not (string.match(e, '^%d+$') or string.match(e, '^%d+:%d+$')) then return damaged('head.kept', h[3]) end
end
local retention, margin = tonumber(ARGV[5]), tonumber(ARGV[6])
if not (retention and retention >= 0 and retention <= LIMIT and margin and margin >= 0 and margin <= LIMIT) then
  return redis.error_reply('OUT_OF_RANGE retention ' .. ARGV[5])
end
if retention == 0 then retention = tonumber(h[2] or '0') or 0 end
local nd = tonumber(ARGV[7])
local k = 6
local gen_keys = {}
if retention > 0 then  -- every kept generation's keys get the new expiry: all must be passed
  local offered = {}
  for i = 8, 7 + nd do
    local c = tonumber(string.match(ARGV[i], ':(%d+)$'))
    offered[ARGV[i]] = true
    for j = 0, c do table.insert(gen_keys, KEYS[k + j]) end
    k = k + c + 1
  end
  local missing = {}
  for e in string.gmatch(h[3] or '', '[^,]+') do
    if not string.find(e, ':') then e = e .. ':0' end
    if not offered[e] then table.insert(missing, e) end
  end
  if #missing > 0 then return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' ')) end
else
  for i = 8, 7 + nd do k = k + tonumber(string.match(ARGV[i], ':(%d+)$')) + 1 end
end

local passed = {}
for i = 8 + nd, #ARGV do
  local cid, c = string.match(ARGV[i], '^(.+):(%d+)$')
  passed[cid] = {k, tonumber(c)}
  k = k + tonumber(c)
end
local x_refs, shared = KEYS[k], {}  -- under a retention: the keys of the chunks x:refs names
if retention > 0 then
  local counts, passed_x = redis.call('HGETALL', x_refs), {}  -- {address, count, ...}
  local from = #x_refs - 3  -- a chunk's key is x:refs's with its address in place of "refs"
  for i = k + 1, #KEYS do passed_x[string.sub(KEYS[i], from)] = KEYS[i] end
  for i = 1, #counts, 2 do
    if not passed_x[counts[i]] then return redis.error_reply('NEED_SHARED ' .. int(#counts / 2)) end
    shared[#shared + 1] = passed_x[counts[i]]
  end
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
local t = redis.call('TIME')
local now_n = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = int(now_n)
local token
if retention > 0 then
  token = math.max(previous + 1, now_n)  -- a recreated fence starts above every token it held
  redis.call('SET', KEYS[1], int(token))
else
  token = redis.call('INCR', KEYS[1])
  -- no retention: the run is kept until deleted, and so are its fence and audit events (INCR
  -- keeps the TTL a retained run's tombstone had: a run made again under its id lost its fence)
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[4])
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'owner', owner, 'token', int(token), 'state', 'held',
  'acquired_ms', now, 'renewed_ms', now, 'ttl_ms', int(ttl))
redis.call('PEXPIRE', KEYS[2], int(ttl))

local generation = tonumber(h[1] or '0')
local fields = {'kind', kind, 'owner', owner, 'token', int(token), 'ms', now, 'ttl_ms', int(ttl)}
if kind ~= 'acquire' or previous > 0 then
  table.insert(fields, 'previous_token'); table.insert(fields, previous_s)
  if l_owner then table.insert(fields, 'previous_owner'); table.insert(fields, l_owner) end
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', unpack(fields))
if retention > 0 then
  local r = int(retention)
  for _, key in ipairs(gen_keys) do redis.call('PEXPIRE', key, r) end
  if #shared > 0 then
    redis.call('PEXPIRE', x_refs, r)
    for _, key in ipairs(shared) do redis.call('PEXPIRE', key, r) end
    if h[1] and h[2] ~= r then redis.call('HSET', KEYS[3], 'retention_ms', r) end
  end
  redis.call('PEXPIRE', KEYS[3], r)
  redis.call('PEXPIRE', KEYS[4], r)
  redis.call('PEXPIREAT', KEYS[1], int(math.max(now_n, token) + retention + margin))
end
return {token, generation, kind, previous}
