-- saver_write: one write of a LangGraph thread (a checkpoint, a task's writes, or a batch of
-- both), fenced per invocation and applied atomically; the thread's keys get the thread TTL.
--
-- KEYS: the thread's keys, in this order in every saver_* script, all sharing the thread's
-- hash tag {<run>} (redis_ckpt.integrations.langgraph.model.ThreadKeys):
--   KEYS[1]  fence    string int: the highest token ever handed out for the thread
--   KEYS[2]  events   stream, capped at ~ARGV[6] entries: claims and refused writes
--   KEYS[3]  meta     hash {ver, token, inv, owner, thread, ttl}: the thread's version (bumped
--                     by every write), the token and invocation id of its last claim ("" for
--                     a standalone write), who made it, the LangGraph thread id, and "1"
--                     while the thread's keys have an expiry
--   KEYS[4]  index    zset, all scores 0: "<ns>\0<checkpoint id>"
--   KEYS[5]  records  hash "<ns>\0<checkpoint id>" -> "<n>:<shape>" .. record frame; shape =
--                     the parent id, then (channel, version) of every channel whose value is
--                     stored, as netstrings (see "Shape" below)
--   KEYS[6]  values   hash "<ns>\0<channel>\0<version>" -> value frame (first write wins)
--   KEYS[7]  windex   zset, all scores 0: "<ns>\0<checkpoint id>\0<task id>\0<idx>\0<channel>"
--   KEYS[8]  writes   hash, the windex members -> write frame
--   KEYS[9]  nss      zset, all scores 0: the thread's checkpoint namespaces
--   KEYS[10] runs     zset, all scores 0: "<run id>\0<ns>\0<checkpoint id>" (LangGraph run ids)
-- ARGV[1]  token: this invocation's token; 0 when it has not written yet (this write claims)
-- ARGV[2]  invocation id (random, per LangGraph invocation); "" for a standalone call
-- ARGV[3]  expected thread version (what the invocation read); "" to claim unconditionally
-- ARGV[4]  owner (audit)
-- ARGV[5]  thread TTL in ms; 0: the thread's keys never expire (see "Expiry" below)
-- ARGV[6]  events stream max length
-- ARGV[7]  the LangGraph thread id (kept in meta)
-- ARGV[8 ..] items, one after another:
--   "P", ns, checkpoint id, parent id ("" none), record frame, run id ("" none), k,
--        then k triples (channel, version, value frame or "" when the value is not new: a
--        value stored under that channel and version earlier is then referred to)
--   "W", ns, checkpoint id, n, then n quads (task id, idx: an integer, channel, write frame):
--        a write with idx >= 0 is kept if its (task id, idx) is new (the first one wins), one with
--        idx < 0 (a special channel: error, interrupt, ...) replaces the earlier one
-- Shape: its strings as "<length>:<bytes>" one after another (netstrings without the
-- comma); the whole shape is one more such string in front of the record frame.
-- Names (ns, ids, channels, versions) never contain "\0" (the saver refuses them before
-- sending).
--
-- Claim (token 0): the write is accepted when the thread's version is the expected one (the
-- invocation read the newest state: it takes the thread over at once, whoever wrote before),
-- or when ARGV[2] already holds the thread's current claim (a concurrent first write of the
-- same invocation; a standalone write after a standalone write). A claim hands out token =
-- fence + 1, or now_ms * 100 when the fence is gone (the thread expired): tokens only grow,
-- even across an expiry of the fence with the thread's data (the server clock has passed
-- every token handed out before, unless the thread was claimed more than 100 times per ms on
-- average since it was created). A thread's version starts at now_ms * 100 the same way, so
-- a version read before an expiry never matches again.
--
-- Expiry (a TTL given): all of the thread's keys share one expiry, so data and indexes expire
-- together and never in the middle of a write. A write sets it to TTL + TTL/16 from now
-- (every key) only when it has fallen behind TTL from now, or lies past TTL + TTL/16 (a lower
-- TTL than before); otherwise it stays, and only the keys this write may have made get it too
-- (PEXPIREAT ... NX: a no-op on a key that has it). So the thread lives at least TTL after its
-- last write and at most TTL/16 longer, and most writes spend one PTTL instead of an expiry
-- on every key. A write refused after an audit event gives a new events stream the TTL.
-- Without a TTL (0) a write makes every key permanent when meta says they expire, and the
-- fence and events when the thread is new (a delete leaves those two with their expiry).
--
-- Numbers: tokens and versions are integers below MAX_INT = 2^50 (redis_ckpt.core MAX_INT),
-- exact in Lua's doubles, written with string.format('%d').
--
-- Returns {token, version, {run id, ...}}: the invocation's token, the thread's new version,
-- and the run ids of "P" items that were new to the thread (no checkpoint of theirs in
-- KEYS[10] before): the thread may have left that run's cross-thread index (a delete or
-- prune, in any process), so the caller files it there again.
-- Errors (nothing written but the audit event):
--   "THREAD_FENCED <token> <fence> <claimed> <owner>"  the token is not the thread's fence: another
--        invocation claimed the thread (claimed = the token of the last claim, owner its
--        owner; fence > claimed: a revoke or delete moved the fence), or the thread expired
--        (fence 0)
--   "CONFLICT <expected> <actual>"  the thread changed since the invocation read it (actual: its
--        version now)
--   "OUT_OF_RANGE <what> <value>"    a token, version or ttl past MAX_INT
--   "BAD_ITEMS <position>"           malformed items, or a "P" item whose parent is its own
--                                    checkpoint id (a parent chain that loops; a bug of the caller)
local LIMIT = 1125899906842624  -- 2^50
local function int(x) return string.format('%d', x) end
local function item(s) return string.format('%d', #s) .. ':' .. s end

local token = tonumber(ARGV[1])
local inv, expected, owner = ARGV[2], ARGV[3], ARGV[4]
local ttl = tonumber(ARGV[5])
if not (token and token >= 0 and token <= LIMIT) then return redis.error_reply('OUT_OF_RANGE token ' .. ARGV[1]) end
if not (ttl and ttl >= 0 and ttl <= LIMIT) then return redis.error_reply('OUT_OF_RANGE ttl ' .. ARGV[5]) end

-- 1. the items are well formed (checked before anything is written)
local i = 8
while i <= #ARGV do
  local kind = ARGV[i]
  local n
  if kind == 'P' then
    n = tonumber(ARGV[i + 6])
    if not n or n < 0 or i + 6 + 3 * n > #ARGV then return redis.error_reply('BAD_ITEMS ' .. int(i)) end
    if ARGV[i + 3] == ARGV[i + 2] then return redis.error_reply('BAD_ITEMS ' .. int(i)) end  -- its own parent
    i = i + 7 + 3 * n
  elseif kind == 'W' then
    n = tonumber(ARGV[i + 3])
    if not n or n < 0 or i + 3 + 4 * n > #ARGV then return redis.error_reply('BAD_ITEMS ' .. int(i)) end
    for j = i + 5, i + 4 * n + 1, 4 do  -- each write's index: an integer (compared in step 3)
      local idx = tonumber(ARGV[j])
      if not idx or idx ~= math.floor(idx) then return redis.error_reply('BAD_ITEMS ' .. int(i)) end
    end
    i = i + 4 + 4 * n
  else
    return redis.error_reply('BAD_ITEMS ' .. int(i))
  end
end

local touched = {}  -- KEYS indexes this write may create (they get the thread's expiry)
local function event(kind, ...)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'kind', kind, 'owner', owner, ...)
  touched[2] = true
end
local function refused(reply)  -- after an audit event: the events stream a refusal made expires
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[5], 'NX') end
  return redis.error_reply(reply)
end

-- 2. fence and claim
local fence_s = redis.call('GET', KEYS[1])
local fence = tonumber(fence_s or '0')
local m = redis.call('HMGET', KEYS[3], 'ver', 'token', 'inv', 'owner', 'ttl')
local meta = {}  -- the fields of meta this write sets
local function floor()  -- now_ms * 100: above every token and version handed out before
  local t = redis.call('TIME')
  return (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) * 100
end

if token > 0 then
  if token ~= fence then
    event('fenced', 'token', ARGV[1], 'fence', fence_s or '0')
    return refused('THREAD_FENCED ' .. ARGV[1] .. ' ' .. (fence_s or '0') .. ' ' .. (m[2] or '0') .. ' ' .. (m[4] or '-'))
  end
elseif m[2] and m[2] == fence_s and (m[3] == inv and (inv ~= '' or m[1])) then
  -- a concurrent write of this invocation claimed the thread first; or a standalone write
  -- after a standalone one: nobody holds the thread, nothing to take over
  token = fence
else
  if expected ~= '' and expected ~= (m[1] or '0') then
    event('conflict', 'expected', expected, 'actual', m[1] or '0')
    return refused('CONFLICT ' .. expected .. ' ' .. (m[1] or '0'))
  end
  token = fence_s and (fence + 1) or math.max(fence + 1, floor())
  if token > LIMIT then return redis.error_reply('OUT_OF_RANGE fence ' .. int(token)) end
  redis.call('SET', KEYS[1], int(token), 'KEEPTTL')
  touched[1] = true
  meta = {'token', int(token), 'inv', inv, 'owner', owner}
  if inv ~= '' or (m[3] or '') ~= '' then
    if (m[3] or '') ~= '' then
      event('takeover', 'token', int(token), 'previous_token', m[2] or '0', 'previous_owner', m[4] or '-')
    else
      event('acquire', 'token', int(token))
    end
  end
end
local version = m[1] and (tonumber(m[1]) + 1) or floor()
if version > LIMIT then return redis.error_reply('OUT_OF_RANGE version ' .. int(version)) end

-- 3. apply
local new_runs = {}  -- run ids of "P" items the thread held no checkpoint of
i = 8
while i <= #ARGV do
  local ns = ARGV[i + 1]
  local cid = ARGV[i + 2]
  if ARGV[i] == 'P' then
    local n = tonumber(ARGV[i + 6])
    local shape = {item(ARGV[i + 3])}
    for j = i + 7, i + 4 + 3 * n, 3 do
      local field = ns .. '\0' .. ARGV[j] .. '\0' .. ARGV[j + 1]
      local stored
      if ARGV[j + 2] ~= '' then
        redis.call('HSETNX', KEYS[6], field, ARGV[j + 2])
        stored = true
      else
        stored = redis.call('HEXISTS', KEYS[6], field) == 1
      end
      if stored then
        shape[#shape + 1] = item(ARGV[j])
        shape[#shape + 1] = item(ARGV[j + 1])
      end
    end
    redis.call('HSET', KEYS[5], ns .. '\0' .. cid, item(table.concat(shape)) .. ARGV[i + 4])
    redis.call('ZADD', KEYS[4], 0, ns .. '\0' .. cid)
    redis.call('ZADD', KEYS[9], 0, ns)
    touched[4], touched[5], touched[6], touched[9] = true, true, true, true
    local lg_run = ARGV[i + 5]
    if lg_run ~= '' then
      if #redis.call('ZRANGEBYLEX', KEYS[10], '[' .. lg_run .. '\0', '(' .. lg_run .. '\1', 'LIMIT', 0, 1) == 0 then
        new_runs[#new_runs + 1] = lg_run
      end
      redis.call('ZADD', KEYS[10], 0, lg_run .. '\0' .. ns .. '\0' .. cid)
      touched[10] = true
    end
    i = i + 7 + 3 * n
  else
    local n = tonumber(ARGV[i + 3])
    for j = i + 4, i + 4 * n, 4 do
      local p = ns .. '\0' .. cid .. '\0' .. ARGV[j] .. '\0' .. ARGV[j + 1]
      local old = redis.call('ZRANGEBYLEX', KEYS[7], '[' .. p .. '\0', '(' .. p .. '\1')
      if tonumber(ARGV[j + 1]) < 0 then  -- a special write: the last one wins
        for _, member in ipairs(old) do
          redis.call('ZREM', KEYS[7], member)
          redis.call('HDEL', KEYS[8], member)
        end
        old = {}
      end
      if #old == 0 then
        local member = p .. '\0' .. ARGV[j + 2]
        redis.call('ZADD', KEYS[7], 0, member)
        redis.call('HSET', KEYS[8], member, ARGV[j + 3])
        touched[7], touched[8] = true, true
      end
    end
    i = i + 4 + 4 * n
  end
end

-- 4. the new version, and the thread's one expiry (see "Expiry")
table.insert(meta, 'ver'); table.insert(meta, int(version))
if not m[1] then table.insert(meta, 'thread'); table.insert(meta, ARGV[7]) end
if ttl > 0 and m[5] ~= '1' then table.insert(meta, 'ttl'); table.insert(meta, '1') end
if ttl == 0 and m[5] == '1' then table.insert(meta, 'ttl'); table.insert(meta, '0') end
redis.call('HSET', KEYS[3], unpack(meta))
if ttl > 0 then
  local slack = math.floor(ttl / 16)
  local left = redis.call('PTTL', KEYS[3])  -- -1: meta has no expiry yet (a new thread, or a TTL just given)
  if left < ttl or left > ttl + slack then
    for k = 1, #KEYS do redis.call('PEXPIRE', KEYS[k], int(ttl + slack)) end
  else
    local at = redis.call('PEXPIRETIME', KEYS[3])
    for k in pairs(touched) do redis.call('PEXPIREAT', KEYS[k], at, 'NX') end
  end
elseif m[5] == '1' then
  for k = 1, #KEYS do redis.call('PERSIST', KEYS[k]) end
elseif not m[1] then  -- a new thread: the fence and events a delete left keep the expiry a TTL gave them
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
return {token, version, new_runs}
