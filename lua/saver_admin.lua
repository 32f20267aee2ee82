-- saver_admin: remove a LangGraph thread, prune it, or remove the checkpoints of one
-- LangGraph run, in one atomic step each.
--
-- KEYS: the thread's keys, as in saver_write.lua (KEYS[1] fence .. KEYS[10] runs).
-- ARGV[1]  mode: "delete" | "prune" | "runs"
-- ARGV[2]  owner (audit)
-- ARGV[3]  events stream max length
-- "delete"  (no more arguments): every key but the fence and the events is removed; the fence
--           moves past every token handed out (every running invocation is fenced off). A
--           thread with neither fence nor meta (never written, or expired) is left as it is
-- "prune"   ARGV[4] strategy: "keep_latest" | "delete"; ARGV[5 ..] triples (namespace,
--           checkpoint id, channels) for keep_latest: the newest checkpoint of every namespace
--           as the caller read it, and channels = items "<length>:<bytes>" naming the
--           DeltaChannels it rebuilds from its ancestors. keep_latest refuses when the newest
--           checkpoint of a namespace is not the one given (a put since the caller read them:
--           its chain is not known), else it keeps the
--           newest checkpoint of each namespace and, for each such channel, every ancestor up
--           to the nearest one that stores the channel's value (the delta chain), with their
--           writes and the values they refer to (a chain that comes back to a checkpoint ends
--           there); "delete" keeps nothing
-- "runs"    ARGV[4] LangGraph run id: its checkpoints go, with their writes
-- Values no kept checkpoint refers to go too (prune, runs). The audit event of an operation
-- that changed something goes to the events stream, which then expires with the thread.
--
-- Returns "delete": {token, {run id, ...}}  the new fence (0: nothing to delete), and the run
--                  ids the thread had
--         "prune", "runs": {removed, {run id, ...}}  checkpoints removed, and the run ids of
--                  which the thread keeps no checkpoint now (for the cross-thread index)
--         "prune" refused: {-1, version}  nothing written (version: the thread's now); read
--                  the newest checkpoints again and retry
-- Errors: "BAD_ARGS <mode>"; "OUT_OF_RANGE fence <value>".
-- Numbers: as saver_write.lua (tokens and versions below 2^50, max(x + 1, now_ms * 100)).
local LIMIT = 1125899906842624  -- 2^50
local function int(x) return string.format('%d', x) end
-- include: shape
local function before_nul(s) return string.sub(s, 1, (string.find(s, '\0', 1, true) or (#s + 1)) - 1) end

local mode, owner = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local floor = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) * 100
local function event(kind, ...)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'kind', kind, 'owner', owner, ...)
  -- the stream expires with the thread (the fence's expiry is the thread's: saver_write.lua,
  -- "Expiry"), also when this event made it (a thread written only by standalone calls)
  local at = redis.call('PEXPIRETIME', KEYS[1])
  if at > 0 then redis.call('PEXPIREAT', KEYS[2], at, 'NX') end
end
local function run_ids()
  local seen, out = {}, {}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[10], 0, -1)) do
    local rid = before_nul(m)
    if not seen[rid] then seen[rid] = true; out[#out + 1] = rid end
  end
  return out, seen
end

if mode == 'delete' then
  if redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then return {0, {}} end  -- never written (or expired): no tombstone
  local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
  local token = math.max(fence + 1, floor)
  if token > LIMIT then return redis.error_reply('OUT_OF_RANGE fence ' .. int(token)) end
  local rids = run_ids()
  redis.call('SET', KEYS[1], int(token), 'KEEPTTL')
  for k = 3, #KEYS do redis.call('DEL', KEYS[k]) end
  event('delete', 'fence', int(token))
  return {token, rids}
end

-- prune / runs: decide which checkpoints stay ("<ns>\0<cid>" -> true), then sweep
local gone = {}  -- "<ns>\0<cid>" of the checkpoints removed
local all = redis.call('ZRANGE', KEYS[4], 0, -1)
if mode == 'prune' then
  local strategy = ARGV[4]
  if strategy ~= 'keep_latest' and strategy ~= 'delete' then return redis.error_reply('BAD_ARGS prune') end
  local heads, chains = {}, {}
  for j = 5, #ARGV - 2, 3 do
    heads[ARGV[j]] = ARGV[j] .. '\0' .. ARGV[j + 1]
    chains[ARGV[j]] = items(ARGV[j + 2])
  end
  local keep = {}
  if strategy == 'keep_latest' then
    for _, ns in ipairs(redis.call('ZRANGE', KEYS[9], 0, -1)) do
      local top = redis.call('ZREVRANGEBYLEX', KEYS[4], '(' .. ns .. '\1', '(' .. ns .. '\0', 'LIMIT', 0, 1)[1]
      if top and top ~= heads[ns] then return {-1, redis.call('HGET', KEYS[3], 'ver') or '0'} end
      if top then
        keep[top] = true
        local need, left = {}, 0
        for _, ch in ipairs(chains[ns] or {}) do
          if not need[ch] then left = left + 1 end
          need[ch] = true
        end
        local cur, walked = top, {}
        while left > 0 and not walked[cur] do  -- walked: a parent chain that loops (damage) ends
          walked[cur] = true
          local record = redis.call('HGET', KEYS[5], cur)
          if not record then break end
          keep[cur] = true
          local shape = shape_of(record)
          for j = 2, #shape, 2 do
            if need[shape[j]] then need[shape[j]] = nil; left = left - 1 end
          end
          if shape[1] == '' then break end
          cur = ns .. '\0' .. shape[1]
        end
      end
    end
  end
  for _, m in ipairs(all) do
    if not keep[m] then gone[m] = true end
  end
elseif mode == 'runs' then
  local rid = ARGV[4]
  if not rid or rid == '' then return redis.error_reply('BAD_ARGS runs') end
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[10], '[' .. rid .. '\0', '(' .. rid .. '\1')) do
    gone[string.sub(m, #rid + 2)] = true
  end
else
  return redis.error_reply('BAD_ARGS ' .. tostring(mode))
end

local removed = 0
for _, m in ipairs(all) do
  if gone[m] then
    removed = removed + 1
    redis.call('ZREM', KEYS[4], m)
    redis.call('HDEL', KEYS[5], m)
  end
end
for _, w in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do  -- "<ns>\0<cid>\0...": the writes of removed checkpoints
  local a = string.find(w, '\0', 1, true)
  local b = string.find(w, '\0', a + 1, true)
  if gone[string.sub(w, 1, b - 1)] then
    redis.call('ZREM', KEYS[7], w)
    redis.call('HDEL', KEYS[8], w)
  end
end
local _, before = run_ids()
for _, r in ipairs(redis.call('ZRANGE', KEYS[10], 0, -1)) do
  if gone[string.sub(r, #before_nul(r) + 2)] then redis.call('ZREM', KEYS[10], r) end
end
local _, after = run_ids()
local dropped = {}
for rid in pairs(before) do
  if not after[rid] then dropped[#dropped + 1] = rid end
end
-- values: keep those a remaining checkpoint refers to
local used, has = {}, {}
local records = redis.call('HGETALL', KEYS[5])
for j = 1, #records, 2 do
  local ns = before_nul(records[j])
  has[ns] = true
  local shape = shape_of(records[j + 1])
  for k = 2, #shape, 2 do used[ns .. '\0' .. shape[k] .. '\0' .. shape[k + 1]] = true end
end
for _, f in ipairs(redis.call('HKEYS', KEYS[6])) do
  if not used[f] then redis.call('HDEL', KEYS[6], f) end
end
for _, ns in ipairs(redis.call('ZRANGE', KEYS[9], 0, -1)) do
  if not has[ns] then redis.call('ZREM', KEYS[9], ns) end
end
if removed > 0 then
  local ver = tonumber(redis.call('HGET', KEYS[3], 'ver') or '0')
  redis.call('HSET', KEYS[3], 'ver', int(math.max(ver + 1, floor)))
  event(mode == 'runs' and 'delete_for_runs' or 'prune', 'removed', int(removed))
end
return {removed, dropped}
