-- saver_read: what LangGraph reads of a thread, in one round trip: a checkpoint with its
-- values and pending writes (get_tuple), a page of a listing, the delta-channel history
-- walk, the newest checkpoint record of every namespace (prune), or everything (copy).
--
-- KEYS: the thread's keys, as in saver_write.lua (KEYS[1] fence .. KEYS[10] runs).
-- ARGV[1]  mode: "page" | "history" | "heads" | "dump"
-- ARGV[2]  thread TTL in ms to refresh (refresh_on_read); 0: leave the expiry alone
-- "page"    ARGV[3] scope: "one" (ARGV[4] only) | "all" (every namespace from ARGV[4] on, in
--                   byte order)
--           ARGV[4] namespace
--           ARGV[5] upper bound: list checkpoint ids below it in the first namespace ("": from
--                   the newest)
--           ARGV[6] before: list ids below it in every later namespace ("": from the newest)
--           ARGV[7] limit: the most checkpoints returned (>= 1)
--           ARGV[8] exact checkpoint id ("": any): only that checkpoint, in each namespace
-- "history" ARGV[3] namespace, ARGV[4] checkpoint id (the walk starts at its parent, and
--           ends where the chain comes back to a checkpoint it visited),
--           ARGV[5] the most checkpoints visited, ARGV[6 ..] channel names
-- "heads"   (no more arguments)
-- "dump"    (no more arguments)
--
-- Returns
--   "page":    {version, more, tuples}; more = 1 when the limit stopped the page (the next
--              page starts below the last tuple); tuples = items "<length>:<bytes>" (one bulk
--              string, cheaper to read than nested replies): for each tuple ns, checkpoint id,
--              record, then per (channel, version) of the record's shape "1" .. value frame
--              ("0" where the value is missing), then the number of writes, then each write's
--              member and frame
--   "history": {version, next, {checkpoint id, write member, write frame, ...} (newest
--              checkpoint first, per checkpoint in member order), {channel, value frame, ...}
--              (the seeds)}; next = the last checkpoint visited when the walk stopped at
--              ARGV[5] visits (a walk from it goes on at its parent), "" when it ended
--   "heads":   {version, ns, checkpoint id, record, ns, checkpoint id, record, ...}
--   "dump":    {version, {index members}, {records field, value, ...}, {values field, value,
--              ...}, {writes field, value, ...}, {runs members}}
-- Errors: "BAD_ARGS <mode>".
-- include: shape

local mode = ARGV[1]
local version = tonumber(redis.call('HGET', KEYS[3], 'ver') or '0')

local function item(s) return string.format('%d', #s) .. ':' .. s end
local pieces = {}  -- "page": the tuples, as items
local function tuple(ns, cid, record)
  local shape = shape_of(record)
  pieces[#pieces + 1] = item(ns)
  pieces[#pieces + 1] = item(cid)
  pieces[#pieces + 1] = item(record)
  for j = 2, #shape, 2 do
    local v = redis.call('HGET', KEYS[6], ns .. '\0' .. shape[j] .. '\0' .. shape[j + 1])
    pieces[#pieces + 1] = v and item('1' .. v) or '1:0'
  end
  local p = ns .. '\0' .. cid .. '\0'
  local members = redis.call('ZRANGEBYLEX', KEYS[7], '[' .. p, '(' .. ns .. '\0' .. cid .. '\1')
  pieces[#pieces + 1] = item(string.format('%d', #members))
  for _, member in ipairs(members) do
    pieces[#pieces + 1] = item(member)
    pieces[#pieces + 1] = item(redis.call('HGET', KEYS[8], member) or '')
  end
end

local out
if mode == 'page' then
  local scope, first, upper, before = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local limit, exact = tonumber(ARGV[7]), ARGV[8]
  if not limit or limit < 1 or (scope ~= 'one' and scope ~= 'all') then return redis.error_reply('BAD_ARGS page') end
  local nss = {first}
  if scope == 'all' then nss = redis.call('ZRANGEBYLEX', KEYS[9], '[' .. first, '+') end
  local more = 0
  local found = 0
  for n, ns in ipairs(nss) do
    local bound = (n == 1 and upper ~= '') and upper or before
    if exact ~= '' then
      local record = redis.call('HGET', KEYS[5], ns .. '\0' .. exact)
      if record then
        tuple(ns, exact, record)
        found = found + 1
      end
    else
      local top = bound ~= '' and ('(' .. ns .. '\0' .. bound) or ('(' .. ns .. '\1')
      local members = redis.call('ZREVRANGEBYLEX', KEYS[4], top, '(' .. ns .. '\0', 'LIMIT', 0, limit - found)
      for _, member in ipairs(members) do
        local cid = string.sub(member, #ns + 2)
        local record = redis.call('HGET', KEYS[5], member)
        if record then
          tuple(ns, cid, record)
          found = found + 1
        end
      end
    end
    if found >= limit then
      more = 1
      break
    end
  end
  out = {version, more, table.concat(pieces)}
elseif mode == 'history' then
  local ns, cid, visits = ARGV[3], ARGV[4], tonumber(ARGV[5])
  if not visits or visits < 1 then return redis.error_reply('BAD_ARGS history') end
  local wanted, left = {}, 0
  for j = 6, #ARGV do
    if not wanted[ARGV[j]] then left = left + 1 end
    wanted[ARGV[j]] = true
  end
  local writes, seeds = {}, {}
  local record = redis.call('HGET', KEYS[5], ns .. '\0' .. cid)
  local cur = record and shape_of(record)[1] or ''
  local seen, walked = 0, {[cid] = true}  -- walked: a parent chain that loops (damage) ends
  local last = ''  -- the last checkpoint visited
  while cur ~= '' and left > 0 and seen < visits do
    record = not walked[cur] and redis.call('HGET', KEYS[5], ns .. '\0' .. cur)
    if not record then cur = ''; break end
    walked[cur] = true
    seen = seen + 1
    local p = ns .. '\0' .. cur .. '\0'
    for _, member in ipairs(redis.call('ZRANGEBYLEX', KEYS[7], '[' .. p, '(' .. ns .. '\0' .. cur .. '\1')) do
      local rest = string.sub(member, #p + 1)
      local a = string.find(rest, '\0', 1, true)
      local b = string.find(rest, '\0', a + 1, true)
      if wanted[string.sub(rest, b + 1)] then
        writes[#writes + 1] = cur
        writes[#writes + 1] = member
        writes[#writes + 1] = redis.call('HGET', KEYS[8], member)
      end
    end
    local shape = shape_of(record)
    for j = 2, #shape, 2 do
      if wanted[shape[j]] then
        wanted[shape[j]] = nil
        left = left - 1
        seeds[#seeds + 1] = shape[j]
        seeds[#seeds + 1] = redis.call('HGET', KEYS[6], ns .. '\0' .. shape[j] .. '\0' .. shape[j + 1]) or false
      end
    end
    last, cur = cur, shape[1]
  end
  -- stopped at the visit bound: the next walk goes on from the last checkpoint visited (at its parent)
  out = {version, (cur ~= '' and left > 0) and last or '', writes, seeds}
elseif mode == 'heads' then
  out = {version}
  for _, ns in ipairs(redis.call('ZRANGE', KEYS[9], 0, -1)) do
    local top = redis.call('ZREVRANGEBYLEX', KEYS[4], '(' .. ns .. '\1', '(' .. ns .. '\0', 'LIMIT', 0, 1)[1]
    if top then
      out[#out + 1] = ns
      out[#out + 1] = string.sub(top, #ns + 2)
      out[#out + 1] = redis.call('HGET', KEYS[5], top)
    end
  end
elseif mode == 'dump' then
  out = {version, redis.call('ZRANGE', KEYS[4], 0, -1), redis.call('HGETALL', KEYS[5]),
         redis.call('HGETALL', KEYS[6]), redis.call('HGETALL', KEYS[8]), redis.call('ZRANGE', KEYS[10], 0, -1)}
else
  return redis.error_reply('BAD_ARGS ' .. tostring(mode))
end

local ttl = tonumber(ARGV[2]) or 0
if ttl > 0 and version > 0 then  -- as saver_write.lua's "Expiry": moved only once behind (or past a lower TTL)
  local slack = math.floor(ttl / 16)
  local left = redis.call('PTTL', KEYS[3])
  if left < ttl or left > ttl + slack then
    for k = 1, #KEYS do redis.call('PEXPIRE', KEYS[k], string.format('%d', ttl + slack)) end
    -- meta's flag says the keys expire: the next write of a saver without a TTL persists them all
    redis.call('HSET', KEYS[3], 'ttl', '1')
  end
end
return out
