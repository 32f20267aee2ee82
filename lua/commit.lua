-- commit: apply one generation if the caller holds the run's current fencing token and
-- expects the current head; rotate the kept generations; all in one atomic step.
-- The same script restores an exported frame (mode "import").
--
-- KEYS[1]  fence    string int: the run's current fence
-- KEYS[2]  head     hash {generation, token, commit_id, checksum, size, chunks, schema_version,
--                        codec, created_ms, owner, kept, kept_ids, kept_ms, epoch, retention_ms}
--                   kept     = "3,4:2,5" oldest first, "<g>:<c>" for a generation stored as a
--                              manifest plus c chunks
--                   kept_ids = the commit id of each kept generation, same order ("-": unknown,
--                              a head written before kept_ids existed)
--                   kept_ms  = the server time (ms) each kept generation was committed ("-": unknown)
--                   created_ms = the server time of the head generation's commit (TIME, never
--                              the writer's clock)
--                   epoch    = the fence when this head was created (or first seen by this
--                              script): no run deleted since a token >= epoch was issued
-- KEYS[3]  events   stream, capped at ~F.maxlen: written by refusals, resends, imports and the
--                   commit that creates the head; a routine commit writes none (the head
--                   records it: generation, commit id, token, owner, time)
-- KEYS[4]  lease    hash (import drops it; commit does not read it)
-- KEYS[5]  staging  hash {commit id: "<token>:<expected>:<count>:<bytes>"}: the commits whose
--                   data is staged (written by the caller with the staged keys)
-- KEYS[6]  the key of the new generation, g:<n> (the frame, or the manifest of a chunked one)
-- KEYS[7 .. 6+s]       staged keys (written by the caller with a TTL, in the same pipeline):
--                      the whole frame when ARGV[2] is empty (large frames never pass through
--                      Lua, where an argument costs ~0.4 ms per MiB), else the chunks
-- KEYS[7+s .. 6+2s]    the keys they become: g:<n>, or the chunk keys g:<n>:c:<i>
-- then                 keys of the generations rotation drops: for each drop entry "<g>:<c>",
--                      the key g:<g> then its <c> chunk keys
-- then                 keys of dead staged commits: for each dead entry "<cid>:<count>", its
--                      <count> staged keys
-- then                 x:refs, the run's shared-chunk reference counts {address: kept
--                      generations listing it}, then shared chunks x:<address> offered for
--                      freeing (see "Shared chunks" below; under a retention every one x:refs
--                      names is needed: those still listed get the new expiry)
-- ARGV[1]  the scalar fields F, joined by "\n" (none of them can hold a newline), in order:
--          1 mode ("commit" | "import" | "dedup": a commit whose ARGV[2] is a shared-chunk
--          manifest and whose staged keys are chunks becoming x:<address>), 2 token,
--          3 expected generation (commit), 4 commit id,
--          5 checksum of the whole frame (hex), 6 schema version, 7 codec, 8 owner, 9 keep (>= 1),
--          10 events max length, 11 the new generation number (commit: expected + 1; import:
--          the frame's own), 12 size of the whole frame, 13 number of chunks c (0: not chunked),
--          14 who imported (import only), 15 number of staged keys s, 16 resend (1: an earlier
--          attempt of this commit id was sent and its outcome is unknown to the caller),
--          17 number of drop entries d, 18 stage limit (bytes of other commits' staged data
--          above which every other staged commit is removed), 19 strict (1: answer NEED_STAGE
--          for dead staged commits whose keys were not passed; 0: leave them), 20 retention
--          in ms (0: the run's own, if its head records one), 21 fence margin in ms
-- ARGV[2]  frame or manifest (bytes), or empty when the frame itself is staged
-- ARGV[3 .. 2+d]  drop entries "<g>:<chunks>" (generations offered for rotation; under a
--                 retention every kept generation: their keys get the new expiry)
-- ARGV[3+d ..]    dead staged commits "<cid>:<count>" whose keys are passed for removal
--
-- Numbers: every token, generation, fence, size and time is an integer below
-- MAX_INT = 2^50 (redis_ckpt.core.config.MAX_INT), where Lua's doubles are exact; they are written
-- with string.format('%d'), as redis.call arguments (exact on both servers) or as the digits
-- they came as (a canonical ARGV number, TIME's seconds and microseconds), never with
-- tostring/.. (which prints >= 1e14 as "1e+14"). Past the bound: OUT_OF_RANGE, nothing written.
--
-- Returns generation              applied (an integer)
--         {generation, "retry"}  this commit id already applied: the head or a kept generation
--                                (a resend after a lost reply); an event is written so that the
--                                caller's WAITAOF covers the original write too
--         {generation, fence}    import applied (the fence is max(fence, token) + 1)
-- Errors (nothing is written but the audit event and the removal of the caller's staged keys):
--   "FENCED <token> <fence>"       token below the fence: a newer worker holds the run
--   "FENCE_BEHIND <token> <fence>" token above the fence: the server lost fence increments
--   "CONFLICT <expected> <actual>" the head is not the expected generation (import: the
--                                  head is at or past the frame's generation)
--   "OUTCOME_UNKNOWN <code> <token> <fence> <expected> <actual>"  a resend met <code> (one of
--                                  the three above) and the server cannot show that the
--                                  first attempt did not apply (see below)
--   "OUT_OF_RANGE <what> <value>"  a token, generation or fence past MAX_INT
--   "BAD_ARGS <detail>"            ARGV[1] does not hold the 21 fields
--   "NEED_KEYS <g>:<c> ..."        rotation must drop generations whose keys were not passed
--                                  (under a retention: any kept generation's)
--   "NEED_STAGE <cid>:<count> ..." dead staged commits whose keys were not passed (strict)
--   "BAD_GENERATION <expected+1> <arg>"
--   "STAGE_MISSING <i>"            a staged key is gone (expired): stage again and resend
--   "NEED_CHUNKS <address> ..."    the manifest lists shared chunks the run does not hold (or
--                                  whose key is gone) and this commit did not stage: stage them
--                                  and resend
--   "NEED_FREE <address> ..."      rotation frees shared chunks whose keys were not passed, or
--                                  the manifest reuses (does not stage) chunks whose keys were not
--                                  passed (their existence is checked)
--   "NEED_SHARED <n>"              under a retention: x:refs names n shared chunks, not all passed
--   "DAMAGED <where> <value>"      the fence, or the head's generation, retention_ms, epoch or
--                                  kept, holds what no script writes (as in acquire.lua)
--   "RETAINED <ms>"                a "dedup" commit on a run under a retention (shared chunks
--                                  would expire with the generation that staged them): the
--                                  caller's staged keys are removed; commit it not shared
--
-- The commit id is checked first, whatever the fence and the head are now. A resend whose
-- commit id is not found gets a definite FENCED / FENCE_BEHIND / CONFLICT only when the
-- server can show the first attempt did not apply, i.e. all of:
--   * the head exists and its epoch <= token: no delete since the token was issued (a delete
--     bumps the fence past every issued token, so a head created after it has epoch > token),
--     hence an applied first attempt would still be in this head's history;
--   * and either the head is below the generation the commit would have made (generations
--     never go back within one head's history), or that generation is kept with a known
--     commit id (it would be ours had the first attempt applied).
-- Otherwise (no head, a newer epoch, the generation rotated out of kept, an unknown id):
-- OUTCOME_UNKNOWN. Being fenced alone proves nothing: the first attempt may have applied
-- before the fence moved and rotated out since.
--
-- Shared chunks (redis_ckpt/core/dedup.py): a manifest ("RCKX") lists 32-hex addresses from
-- byte 10 (N at bytes 6-9). Any commit or import whose rotation drops such a generation, and
-- a "dedup" commit for its own manifest, change x:refs by +1 per distinct address of the new
-- generation and -1 per distinct address of each dropped one, touching only the addresses
-- whose count changes; a count reaching 0 deletes the field and the chunk.
--
-- Retention (field 20, or the head's retention_ms): when one applies, a commit that applies
-- sets every key of the run (head, kept generations, events, a released lease, x:refs and
-- the shared chunks it still names) to expire that long from now and the fence ARGV 21 ms
-- after max(now, fence) + retention; an import raises the fence to at least the server time
-- in ms (see acquire.lua). A refusal's audit event on a run whose events expired gets the
-- fence's expiry. Without one: nothing expires.
--
-- Staging: a staged commit is dead once it can no longer apply; the commit that makes it so,
-- or the next one, removes it. Dead here: import (it bumps the fence): every other staged
-- commit; commit: token below this one's, or expected generation <= the current head (it
-- conflicts once this commit applies); every other one when their bytes pass the stage limit.
local LIMIT = 1125899906842624  -- 2^50
-- the 21 fields of ARGV[1] in one match (one C call: a loop over gmatch costs several us)
local mode, token_s, expected_s, commit_id, checksum, schema, codec, owner, keep_s, maxlen, new_s,
      size, chunks_s, by, staged_s, resend_s, nd_s, stage_limit_s, strict_s, retention_s, margin_s =
  string.match(ARGV[1],
  '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n' ..
  '([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n' ..
  '([^\n]*)\n([^\n]*)$')
local token, expected, keep = tonumber(token_s), tonumber(expected_s), tonumber(keep_s)
local new, chunks, staged = tonumber(new_s), tonumber(chunks_s), tonumber(staged_s)
local resend, nd, stage_limit, strict = resend_s == '1', tonumber(nd_s), tonumber(stage_limit_s), strict_s == '1'
local retention, margin = tonumber(retention_s) or 0, tonumber(margin_s) or 0
local importing = mode == 'import'
if not margin_s then
  return redis.error_reply('BAD_ARGS ARGV[1] must hold 21 fields joined by newlines')
end

local function int(x) return string.format('%d', x) end
local function split(s)  -- "a,b,,c" -> {"a", "b", "", "c"}; nil or "" -> {}
  local out, i = {}, 1
  if s and s ~= '' then  -- string.find: no iterator, no copy of s to build (cheaper than gmatch)
    while true do
      local j = string.find(s, ',', i, true)
      if not j then out[#out + 1] = string.sub(s, i); return out end
      out[#out + 1] = string.sub(s, i, j - 1)
      i = j + 1
    end
  end
  return out
end
local function gen_of(entry) return tonumber(string.match(entry, '^(%d+)')) end

if not (token and token >= (importing and 0 or 1) and token <= LIMIT) then
  return redis.error_reply('OUT_OF_RANGE token ' .. token_s)
end
if not (new and new >= 1 and new <= LIMIT) then
  return redis.error_reply('OUT_OF_RANGE generation ' .. new_s)
end

local function event(kind, ...)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'kind', kind, 'owner', owner,
    'token', token_s, 'commit_id', commit_id, ...)  -- the entry id carries the time
end
local function unstage()
  for i = 7, 6 + staged do redis.call('DEL', KEYS[i]) end
  if staged > 0 then redis.call('HDEL', KEYS[5], commit_id) end
end

local fence_s = redis.call('GET', KEYS[1]) or '0'
local fence = tonumber(fence_s)
local h_gen, h_commit, h_kept, h_ids, h_ms, h_epoch, h_token, h_size, h_chunks, h_schema, h_codec, h_owner,
      h_retention =
  unpack(redis.call('HMGET', KEYS[2], 'generation', 'commit_id', 'kept', 'kept_ids', 'kept_ms', 'epoch',
                    'token', 'size', 'chunks', 'schema_version', 'codec', 'owner', 'retention_ms'))
-- what no script writes (changed by hand, a partial restore) is refused before anything is
-- written, as acquire.lua does: arithmetic on it would fail partway, after earlier writes
local function damaged(where, value)
  unstage()  -- the caller's staged keys go, as with every refusal
  return redis.error_reply('DAMAGED ' .. where .. ' ' .. string.gsub(value, '%c', '?'))
end
if not string.match(fence_s, '^%d+$') then return damaged('fence', fence_s) end
for where, v in pairs({['head.generation'] = h_gen, ['head.retention_ms'] = h_retention, ['head.epoch'] = h_epoch}) do
  if v and not string.match(v, '^%d+$') then return damaged(where, v) end  -- false: no such field
end
for e in string.gmatch(h_kept or '', '[^,]+') do
  if not (string.match(e, '^%d+$') or string.match(e, '^%d+:%d+$')) then return damaged('head.kept', h_kept) end
end
if retention == 0 and h_retention then retention = tonumber(h_retention) or 0 end
local current = tonumber(h_gen or '0')
local current_s = h_gen or '0'

-- the kept generations with their commit ids and times, aligned (oldest first)
local kept, ids, times
local function kept_lists()
  if kept then return end
  kept, ids, times = split(h_kept), split(h_ids), split(h_ms)
  while #ids < #kept do table.insert(ids, 1, '-') end
  while #times < #kept do table.insert(times, 1, '-') end
  while #ids > #kept do table.remove(ids, 1) end
  while #times > #kept do table.remove(times, 1) end
end

-- 1. this commit id already applied? (first, whatever the fence and the head are now)
local found = nil
if h_commit == commit_id then
  found = current
elseif h_ids and string.find(h_ids, commit_id, 1, true) then  -- a cheap filter (no copies); the loop decides
  kept_lists()
  for i = #kept, 1, -1 do
    if ids[i] == commit_id then found = gen_of(kept[i]); break end
  end
end
if found then
  unstage()
  event(importing and 'import_retry' or 'commit_retry', 'generation', found)
  return {found, 'retry'}
end

-- 2. fence and generation
-- the refusal's helpers, made only when a refusal is coming (a closure costs a few us here)
local reject
if (importing and current >= new) or (not importing and (token ~= fence or current ~= expected)) then
  local function provably_not_applied()
    if not resend then return true end  -- no earlier attempt: nothing else could have applied it
    if not h_gen then return false end
    local epoch = tonumber(h_epoch or '')
    if not epoch or epoch > token then return false end
    if current < new then return true end
    kept_lists()
    for i = 1, #kept do
      if gen_of(kept[i]) == new then return ids[i] ~= '-' end
    end
    return false
  end
  reject = function(code, a, b, kind, ...)
    unstage()
    if not provably_not_applied() then
      event((importing and 'import' or 'commit') .. '_unknown', 'refused', code, 'fence', fence_s,
        'expected', expected_s, 'actual', current_s)
      return redis.error_reply('OUTCOME_UNKNOWN ' .. code .. ' ' .. token_s .. ' ' .. fence_s .. ' ' ..
        expected_s .. ' ' .. current_s)
    end
    if kind then
      event(kind, ...)
      if redis.call('PTTL', KEYS[3]) == -1 then  -- recreated on a run under a retention: expire with its fence
        local left = redis.call('PTTL', KEYS[1])
        if left > 0 then redis.call('PEXPIRE', KEYS[3], left) end
      end
    end
    return redis.error_reply(code .. ' ' .. a .. ' ' .. b)
  end
end

if not importing then
  if token < fence then
    return reject('FENCED', token_s, fence_s, 'fenced', 'fence', fence_s, 'expected', expected_s)
  end
  if token > fence then
    return reject('FENCE_BEHIND', token_s, fence_s, 'fence_behind', 'fence', fence_s)
  end
  if current ~= expected then
    return reject('CONFLICT', expected_s, current_s, 'conflict', 'expected', expected_s, 'actual', current_s)
  end
  if new ~= current + 1 then
    unstage()
    return redis.error_reply('BAD_GENERATION ' .. int(current + 1) .. ' ' .. new_s)
  end
else
  if token >= LIMIT then
    unstage()
    return redis.error_reply('OUT_OF_RANGE token ' .. token_s)
  end
  if fence >= LIMIT then
    unstage()
    return redis.error_reply('OUT_OF_RANGE fence ' .. fence_s)
  end
  if current >= new then
    return reject('CONFLICT', int(new - 1), current_s, nil)
  end
end

if mode == 'dedup' and retention > 0 then
  unstage()
  return redis.error_reply('RETAINED ' .. int(retention))
end
for i = 0, staged - 1 do
  if redis.call('EXISTS', KEYS[7 + i]) == 0 then
    return redis.error_reply('STAGE_MISSING ' .. i)
  end
end

-- 3. rotation plan and dead staged commits, checked before anything is written
-- as written: ARGV's own digits when already canonical (string.format costs a few us here)
local new_w = string.find(new_s, '^[1-9]%d*$') and new_s or int(new)
local chunks_w = chunks == 0 and '0' or int(chunks)
kept_lists()
kept[#kept + 1] = chunks > 0 and (new_w .. ':' .. chunks_w) or new_w
ids[#ids + 1] = commit_id
local offered = {}
local k = 7 + 2 * staged
for i = 3, 2 + nd do
  local c = tonumber(string.match(ARGV[i], '^%d+:(%d+)$'))  -- the whole entry matched: it is the key
  local list = {}
  for j = 0, c do list[j + 1] = KEYS[k + j] end
  offered[ARGV[i]] = list
  k = k + c + 1
end
local function entry_key(entry)
  return string.find(entry, ':') and entry or (entry .. ':0')
end
local drop_count = #kept - keep
local none = {}  -- the empty table every list that stays empty shares (fewer tables for the GC)
local missing = none
for i = 1, retention > 0 and #kept - 1 or drop_count do  -- the new generation is kept[#kept]
  if not offered[entry_key(kept[i])] then
    if missing == none then missing = {} end
    table.insert(missing, entry_key(kept[i]))
  end
end
if #missing > 0 then
  return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' '))
end

local passed = #ARGV > 2 + nd and {} or none  -- dead staged commits whose keys were passed: cid -> {first key, count}
for i = 3 + nd, #ARGV do
  local cid, c = string.match(ARGV[i], '^(.+):(%d+)$')
  passed[cid] = {k, tonumber(c)}
  k = k + tonumber(c)
end
-- which of staging and x:refs exist, in one call: EXISTS counts a key once per time it is
-- named, so naming staging twice answers 2 * staging + x:refs
local x_refs, present = KEYS[k], 0
if strict or drop_count > 0 then present = redis.call('EXISTS', KEYS[5], KEYS[5], x_refs) end
local registry = (strict and present >= 2) and redis.call('HGETALL', KEYS[5]) or none
if #registry > 0 then
  local others, bytes = {}, 0
  for i = 1, #registry, 2 do
    if registry[i] ~= commit_id then
      local t, e, c, b = string.match(registry[i + 1], '^(%d+):(%d+):(%d+):(%d+)$')
      table.insert(others, {registry[i], tonumber(t or '0'), tonumber(e or '0'), c or '0'})
      bytes = bytes + tonumber(b or '0')
    end
  end
  local need = {}
  for _, o in ipairs(others) do
    local dead = importing or bytes > stage_limit or o[2] < token or o[3] <= current
    if dead and not passed[o[1]] then table.insert(need, o[1] .. ':' .. o[4]) end
  end
  if #need > 0 then
    return redis.error_reply('NEED_STAGE ' .. table.concat(need, ' '))
  end
end

-- 3b. shared chunks: the reference counts after this commit, checked before anything is written
-- (only a "dedup" commit, or a rotation on a run holding x:refs, can change them)
local x_set, x_del, x_gone = none, none, none
local x_kept = none  -- under a retention: the keys of the chunks x:refs names (they get the new expiry)
if retention > 0 then  -- (a "dedup" commit was answered RETAINED above)
  local counts = redis.call('HGETALL', x_refs)  -- {address, count, ...}
  if #counts > 0 then
    local passed_x, from = {}, #x_refs - 3  -- a chunk's key is x:refs's with its address in place of "refs"
    for i = k + 1, #KEYS do passed_x[string.sub(KEYS[i], from)] = KEYS[i] end
    x_kept = {}
    for i = 1, #counts, 2 do
      if not passed_x[counts[i]] then return redis.error_reply('NEED_SHARED ' .. int(#counts / 2)) end
      x_kept[#x_kept + 1] = passed_x[counts[i]]
    end
  end
end
if mode == 'dedup' or (drop_count > 0 and present % 2 == 1) then
  x_set, x_del, x_gone = {}, {}, {}
  local delta, x_changed, mine = {}, {}, {}
  local function addresses(blob, d, out)  -- each distinct address of a manifest: delta += d (and into out)
    local b1, b2, b3, b4 = string.byte(blob, 6, 9)
    local n, seen = ((b1 * 256 + b2) * 256 + b3) * 256 + b4, {}
    if #blob < 9 + 32 * n then return end  -- a damaged manifest: its chunks are left (never freed wrongly)
    for i = 0, n - 1 do
      local a = string.sub(blob, 10 + 32 * i, 41 + 32 * i)
      if not seen[a] then
        seen[a] = true
        local v = (delta[a] or 0) + d
        if not delta[a] then x_changed[#x_changed + 1] = a end
        delta[a] = v
        if out then out[#out + 1] = a end
      end
    end
  end
  if mode == 'dedup' then addresses(ARGV[2], 1, mine) end
  if drop_count > 0 and present % 2 == 1 then  -- no x:refs: no kept generation is shared
    for i = 1, drop_count do
      local blob = redis.call('GET', offered[entry_key(kept[i])][1])
      if blob and string.sub(blob, 1, 4) == 'RCKX' then addresses(blob, -1) end
    end
  end
  local nonzero = {}  -- most addresses of a manifest are in the dropped one too: left as they are
  for _, a in ipairs(x_changed) do if delta[a] ~= 0 then nonzero[#nonzero + 1] = a end end
  x_changed = nonzero
  local staged_x, offered_x, lacking, unfreed = {}, {}, {}, {}
  for i = 7 + staged, 6 + 2 * staged do staged_x[string.sub(KEYS[i], -32)] = true end
  for i = k + 1, #KEYS do offered_x[string.sub(KEYS[i], -32)] = KEYS[i] end
  -- a chunk the manifest reuses (not staged) must still exist: x:refs may count one whose key
  -- is gone (deleted by hand, a partial restore); its key is passed with those offered for
  -- freeing (NEED_FREE when not), one EXISTS per 4000, and a gone one is asked for (NEED_CHUNKS)
  local reused, gone_x = {}, {}
  for _, a in ipairs(mine) do
    if not staged_x[a] then
      if offered_x[a] then reused[#reused + 1] = offered_x[a] else unfreed[#unfreed + 1] = a end
    end
  end
  if #unfreed > 0 then return redis.error_reply('NEED_FREE ' .. table.concat(unfreed, ' ')) end
  for first = 1, #reused, 4000 do
    local batch = {unpack(reused, first, math.min(first + 3999, #reused))}
    if redis.call('EXISTS', unpack(batch)) < #batch then
      for _, key in ipairs(batch) do
        if redis.call('EXISTS', key) == 0 then
          local a = string.sub(key, -32)
          gone_x[a] = true
          lacking[#lacking + 1] = a
        end
      end
    end
  end
  if #x_changed > 0 then
    for first = 1, #x_changed, 4000 do
      local batch = {unpack(x_changed, first, math.min(first + 3999, #x_changed))}
      local counts = redis.call('HMGET', x_refs, unpack(batch))
      for j, a in ipairs(batch) do
        local d = delta[a]
        local was = tonumber(counts[j] or '0') or 0
        if d > 0 and was == 0 and not staged_x[a] and not gone_x[a] then lacking[#lacking + 1] = a end
        if was + d > 0 then
          x_set[#x_set + 1] = a; x_set[#x_set + 1] = int(was + d)
        else
          x_del[#x_del + 1] = a
          if offered_x[a] then x_gone[#x_gone + 1] = offered_x[a] else unfreed[#unfreed + 1] = a end
        end
      end
    end
  end
  if #lacking > 0 then return redis.error_reply('NEED_CHUNKS ' .. table.concat(lacking, ' ')) end
  if #unfreed > 0 then return redis.error_reply('NEED_FREE ' .. table.concat(unfreed, ' ')) end
end

-- 4. apply
if ARGV[2] ~= '' then redis.call('SET', KEYS[6], ARGV[2]) end
for i = 0, staged - 1 do
  redis.call('RENAME', KEYS[7 + i], KEYS[7 + staged + i])
  redis.call('PERSIST', KEYS[7 + staged + i])
end
if staged > 0 then redis.call('HDEL', KEYS[5], commit_id) end
for cid, where in pairs(passed) do
  for j = 0, where[2] - 1 do redis.call('DEL', KEYS[where[1] + j]) end
  redis.call('HDEL', KEYS[5], cid)
end
local t = redis.call('TIME')
local now = t[1] .. (#t[2] > 3 and string.sub('00' .. string.sub(t[2], 1, -4), -3) or '000')  -- ms, exact digits
times[#times + 1] = now
local from, gone = math.max(drop_count, 0) + 1, {}  -- kept[from ..] stay (kept, ids, times aligned)
for i = 1, drop_count do
  for _, key in ipairs(offered[entry_key(kept[i])]) do gone[#gone + 1] = key end
end
if #gone > 0 then redis.call('DEL', unpack(gone)) end
for i = 1, #x_set, 6000 do redis.call('HSET', x_refs, unpack(x_set, i, math.min(i + 5999, #x_set))) end
for i = 1, #x_del, 6000 do redis.call('HDEL', x_refs, unpack(x_del, i, math.min(i + 5999, #x_del))) end
for i = 1, #x_gone, 6000 do redis.call('DEL', unpack(x_gone, i, math.min(i + 5999, #x_gone))) end
if importing then
  fence = math.max(fence, token) + 1
  if retention > 0 then fence = math.max(fence, tonumber(now)) end  -- see acquire.lua
end
-- the head: what every commit changes, then what rarely does only when it did (fewer fields
-- to write and to log)
local fields = {'generation', new_w, 'commit_id', commit_id, 'checksum', checksum, 'created_ms', now,
  'kept', table.concat(kept, ',', from), 'kept_ids', table.concat(ids, ',', from),
  'kept_ms', table.concat(times, ',', from)}
local function changed(name, old, value)
  if old ~= value then fields[#fields + 1] = name; fields[#fields + 1] = value end
end
changed('token', h_token, token_s)
changed('size', h_size, size)
changed('chunks', h_chunks, chunks_w)
changed('schema_version', h_schema, schema)
changed('codec', h_codec, codec)
changed('owner', h_owner, owner)
if not h_gen or not h_epoch then changed('epoch', nil, int(fence)) end
if retention > 0 then changed('retention_ms', h_retention, int(retention)) end
redis.call('HSET', KEYS[2], unpack(fields))
local expire  -- under a retention: every key of the run, from now (see the header)
if retention > 0 then
  expire = function()
    local r = int(retention)
    for i = math.max(1, drop_count + 1), #kept - 1 do
      for _, key in ipairs(offered[entry_key(kept[i])]) do redis.call('PEXPIRE', key, r) end
    end
    redis.call('PEXPIRE', KEYS[6], r)
    for i = 7 + staged, 6 + 2 * staged do redis.call('PEXPIRE', KEYS[i], r) end
    if #x_kept > 0 then  -- those freed above are gone (PEXPIRE of a missing key does nothing)
      redis.call('PEXPIRE', x_refs, r)
      for _, key in ipairs(x_kept) do redis.call('PEXPIRE', key, r) end
    end
    redis.call('PEXPIRE', KEYS[2], r)
    redis.call('PEXPIRE', KEYS[3], r)
    if redis.call('PTTL', KEYS[4]) == -1 then redis.call('PEXPIRE', KEYS[4], r) end  -- a held lease keeps its ttl
    redis.call('PEXPIREAT', KEYS[1], int(math.max(tonumber(now), fence) + retention + margin))
  end
end

if importing then
  redis.call('SET', KEYS[1], int(fence))
  redis.call('DEL', KEYS[4])
  event('import', 'generation', new_w, 'fence', int(fence), 'by', by)
  if expire then expire() end
  return {new, fence}
end
if not h_gen then  -- the commit that creates the head; later ones are recorded by the head itself
  event('commit', 'generation', new_w, 'size', size, 'chunks', chunks_w)
end
if expire then expire() end
return new
