-- delete: remove a run's checkpoints, lease and staged data; the fence survives, bumped, as a
-- tombstone so that no holder of an older token can write into a recreated run.
--
-- KEYS[1]    fence    string int (kept, incremented)
-- KEYS[2]    lease    hash (deleted)
-- KEYS[3]    head     hash (deleted)
-- KEYS[4]    events   stream (kept: the audit trail outlives the data), capped at ~ARGV[2]; under
--                     a retention it expires with the fence
-- KEYS[5]    staging  hash {commit id: "<token>:<expected>:<count>:<bytes>"} (deleted)
-- KEYS[6..]  for each generation entry "<g>:<chunks>", the key g:<g> then its chunk keys;
--            then for each staged entry "<cid>:<count>", its <count> staged keys; then x:refs
--            and the shared chunks x:<address> it names (all deleted)
-- ARGV[1]  who deleted (free text for the audit event)
-- ARGV[2]  events stream max length
-- ARGV[3]  delete id (random, one per call; "" none): kept in the audit event
-- ARGV[4]  number of generation entries d
-- ARGV[5 .. 4+d]  generation entries "<g>:<chunks>"
-- ARGV[5+d ..]    staged commits "<cid>:<count>" (as the caller read them from the staging hash)
--
-- Returns {new_fence, generations_deleted}; the fence as the exact string INCR stored. A
-- resend of a delete that applied (its reply lost) finds its id in one of the last RECENT
-- audit events and answers what that attempt did: the fence now, the generations it deleted
-- (nothing written).
-- Errors (nothing written):
--   "DAMAGED fence <value>"        the fence is not an integer (its INCR would fail with the data gone)
--   "NEED_KEYS <g>:<c> ..."        the head keeps generations whose keys were not passed
--   "NEED_SHARED <n>"              x:refs names n shared chunks, not exactly those passed
-- Staged keys registered after the caller read the staging hash are not passed: they expire
-- with their TTL (their commits are fenced by the bumped fence).
-- include: run_keys
local RECENT = 16
local delete_id = ARGV[3]
if delete_id ~= '' then
  for _, e in ipairs(redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', RECENT)) do
    local f, seen = e[2], {}
    for i = 1, #f - 1, 2 do seen[f[i]] = f[i + 1] end
    if seen.kind == 'delete' and seen.id == delete_id then
      return {redis.call('GET', KEYS[1]) or '0', tonumber(seen.generations) or 0}
    end
  end
end

local fence_s = redis.call('GET', KEYS[1])
if fence_s and not string.match(fence_s, '^%d+$') then
  return redis.error_reply('DAMAGED fence ' .. string.gsub(fence_s, '%c', '?'))
end

local nd = tonumber(ARGV[4])
local missing = generations_not_passed(redis.call('HGET', KEYS[3], 'kept'), nd)
if #missing > 0 then
  return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' '))
end
local refused = shared_not_passed(nd)
if refused then return refused end

local deleted = delete_run_keys(nd)
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
redis.call('INCR', KEYS[1])
local fence = redis.call('GET', KEYS[1])
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'kind', 'delete', 'by', ARGV[1],
  'fence', fence, 'generations', deleted, 'ms', now, 'id', delete_id)
if redis.call('PTTL', KEYS[4]) == -1 then  -- recreated on a run under a retention: expire with its fence
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then redis.call('PEXPIRE', KEYS[4], left) end
end
return {fence, deleted}
