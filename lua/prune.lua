-- prune: remove a run nobody committed to or acquired for at least ARGV[2] ms: its
-- generations, head, lease, events and staged data. The fence stays, bumped, as a tombstone
-- (as delete.lua), so that no holder of an older token can write into a run created again.
-- For runs created before a retention was set: a run under a retention of its own (its head
-- records retention_ms: a store or run retention, or finish's keep_for) and whose head expires
-- is left, however idle: it expires by itself when its user asked (KEPT).
--
-- KEYS[1]    fence    string int (kept, incremented)
-- KEYS[2]    lease    hash (deleted); a live lease (held, unexpired) refuses the prune
-- KEYS[3]    head     hash (deleted)
-- KEYS[4]    events   stream (deleted)
-- KEYS[5]    staging  hash {commit id: "<token>:<expected>:<count>:<bytes>"} (deleted)
-- KEYS[6..]  for each generation entry "<g>:<chunks>", the key g:<g> then its chunk keys;
--            then for each staged entry "<cid>:<count>", its <count> staged keys; then x:refs
--            and the shared chunks x:<address> it names (all deleted)
-- ARGV[1]  who pruned (for the log line the caller writes; the run's own events go)
-- ARGV[2]  idle in ms: the run is removed only when its last commit (head created_ms), its
--          lease's acquire, renew or release, and its newest audit event are all older
-- ARGV[3]  dry run (1: check and answer, write nothing)
-- ARGV[4]  number of generation entries d
-- ARGV[5 .. 4+d]  generation entries "<g>:<chunks>"
-- ARGV[5+d ..]    staged commits "<cid>:<count>" (as the caller read them from the staging hash)
--
-- Returns {new_fence, generations_deleted, idle_ms}; the fence as the exact string INCR stored
-- (dry run: {fence, generations the head keeps, idle_ms}).
-- Errors (nothing written):
--   "ACTIVE <idle_ms>"             the run was touched less than ARGV[2] ms ago (or its lease is live)
--   "KEPT <ms_left>"               the run is under its own retention (head retention_ms) and
--                                  expires by itself in ms_left (its head's PTTL)
--   "EMPTY"                        nothing to remove: no head, lease, events or staging (the
--                                  fence alone is left: a deleted or expired run)
--   "DAMAGED <where> <value>"      the fence, the head's created_ms or retention_ms or a lease
--                                  time (<where>: "fence", "head.created_ms", "lease.renewed_ms",
--                                  ...) holds what no script writes: the run's last touch, or
--                                  whether it expires by itself, is unknown
--   "NEED_KEYS <g>:<c> ..."        the head keeps generations whose keys were not passed
--   "NEED_SHARED <n>"              x:refs names n shared chunks, not exactly those passed (a
--                                  commit shared chunks since the caller read x:refs)
-- include: run_keys
local idle, dry, nd = tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4])
local function int(x) return string.format('%d', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4], KEYS[5]) == 0 then
  return redis.error_reply('EMPTY')
end
local function damaged(where, value)
  return redis.error_reply('DAMAGED ' .. where .. ' ' .. string.gsub(value, '%c', '?'))
end
local fence = redis.call('GET', KEYS[1])
if fence and not string.match(fence, '^%d+$') then return damaged('fence', fence) end
local created = redis.call('HGET', KEYS[3], 'created_ms')
if created and not string.match(created, '^%d+$') then return damaged('head.created_ms', created) end
local last = tonumber(created or '0')
local l = redis.call('HMGET', KEYS[2], 'state', 'acquired_ms', 'renewed_ms', 'released_ms')
for i, name in ipairs({'acquired_ms', 'renewed_ms', 'released_ms'}) do
  local v = l[i + 1]
  if v and not string.match(v, '^%d+$') then return damaged('lease.' .. name, v) end
  last = math.max(last, tonumber(v or '0'))
end
if l[1] == 'held' and redis.call('PTTL', KEYS[2]) > 0 then
  return redis.error_reply('ACTIVE 0')
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  local newest = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
  if newest[1] then last = math.max(last, tonumber(string.match(newest[1][1], '^(%d+)')) or 0) end
end
local since = now - last
if since < idle then
  return redis.error_reply('ACTIVE ' .. int(math.max(0, since)))
end
local retention = redis.call('HGET', KEYS[3], 'retention_ms')
if retention and not string.match(retention, '^%d+$') then return damaged('head.retention_ms', retention) end
if retention and tonumber(retention) > 0 then
  local left = redis.call('PTTL', KEYS[3])
  if left > 0 then return redis.error_reply('KEPT ' .. int(left)) end
end

local missing, kept = generations_not_passed(redis.call('HGET', KEYS[3], 'kept'), nd)
if dry then
  return {fence or '0', kept, int(since)}
end
if #missing > 0 then
  return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' '))
end
local refused = shared_not_passed(nd)
if refused then return refused end

local deleted = delete_run_keys(nd)
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('INCR', KEYS[1])
return {redis.call('GET', KEYS[1]), deleted, int(since)}
