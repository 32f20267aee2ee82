-- commit: apply one generation if the caller holds the run's current fencing token and
-- expects the current head; rotate the kept generations; all in one atomic step.
-- The same script restores an exported frame (mode "import").
--
-- KEYS[1]  fence   string int: the run's current fence
-- KEYS[2]  head    hash {generation, token, commit_id, checksum, size, chunks, schema_version,
--                       codec, created_ms, owner, kept}  kept = "3,4:2,5" oldest first, "<g>:<c>"
--                       for a generation stored as a manifest plus c chunks
-- KEYS[3]  events  stream, capped at ~F.maxlen
-- KEYS[4]  lease   hash (import drops it; commit does not read it)
-- KEYS[5]  the key of the new generation, g:<n> (the frame, or the manifest of a chunked one)
-- KEYS[6 .. 5+s]       staged keys (written by the caller with a TTL, in the same pipeline):
--                      the whole frame when ARGV[2] is empty (large frames never pass through
--                      Lua, where an argument costs ~0.4 ms per MiB), else the chunks
-- KEYS[6+s .. 5+2s]    the keys they become: g:<n>, or the chunk keys g:<n>:c:<i>
-- KEYS[6+2s ..]        keys of the generations rotation drops: for each ARGV[3..] entry
--                      "<g>:<chunks>", the key g:<g> then its <chunks> chunk keys
-- ARGV[1]  the scalar fields F, joined by "\n" (none of them can hold a newline), in order:
--          mode ("commit" | "import"), token, expected generation (commit), commit id,
--          checksum of the whole frame (hex), schema version, codec, created ms, owner,
--          keep (>= 1), events max length, the new generation number (commit: expected + 1;
--          import: the frame's own), size of the whole frame, number of chunks c (0: not
--          chunked), who imported (import only), number of staged keys s
-- ARGV[2]  frame or manifest (bytes), or empty when the frame itself is staged
-- ARGV[3..] generations offered for rotation, "<g>:<chunks>"
--
-- Returns generation              applied (an integer)
--         {generation, "retry"}  the head already is this commit id (a resend of an applied
--                                commit); an event is written so that the caller's WAITAOF
--                                covers the original write too
--         {generation, fence}    import applied (the fence is max(fence, token) + 1)
-- Errors (nothing is written but the audit event and the removal of staged keys):
--   "FENCED <token> <fence>"       token below the fence: a newer worker holds the run
--   "FENCE_BEHIND <token> <fence>" token above the fence: the server lost fence increments
--   "CONFLICT <expected> <actual>" the head is not the expected generation (import: the
--                                  head is at or past the frame's generation)
--   "NEED_KEYS <g>:<c> ..."        rotation must drop generations whose keys were not passed
--   "BAD_GENERATION <expected+1> <arg>"
--   "STAGE_MISSING <i>"            a staged key is gone (expired): stage again and resend
local F = {}
for v in string.gmatch(ARGV[1] .. '\n', '(.-)\n') do table.insert(F, v) end
local mode, commit_id, checksum, schema, codec, created = F[1], F[4], F[5], F[6], F[7], F[8]
local owner, maxlen, size, by = F[9], F[11], F[13], F[15]
local token, expected, keep = tonumber(F[2]), tonumber(F[3]), tonumber(F[10])
local new, chunks, staged = tonumber(F[12]), tonumber(F[14]), tonumber(F[16])

local function event(kind, ...)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'kind', kind, 'owner', owner,
    'token', token, 'commit_id', commit_id, ...)  -- the entry id carries the time
end
local function unstage()
  for i = 6, 5 + staged do redis.call('DEL', KEYS[i]) end
end

local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
local h_gen, h_commit, h_kept = unpack(redis.call('HMGET', KEYS[2], 'generation', 'commit_id', 'kept'))
local current = tonumber(h_gen or '0')

if mode == 'commit' then
  if token < fence then
    unstage()
    event('fenced', 'fence', fence, 'expected', expected)
    return redis.error_reply('FENCED ' .. token .. ' ' .. fence)
  end
  if token > fence then
    unstage()
    event('fence_behind', 'fence', fence)
    return redis.error_reply('FENCE_BEHIND ' .. token .. ' ' .. fence)
  end
  if h_commit == commit_id then
    unstage()
    event('commit_retry', 'generation', current)
    return {current, 'retry'}
  end
  if current ~= expected then
    unstage()
    event('conflict', 'expected', expected, 'actual', current)
    return redis.error_reply('CONFLICT ' .. expected .. ' ' .. current)
  end
  if new ~= current + 1 then
    unstage()
    return redis.error_reply('BAD_GENERATION ' .. (current + 1) .. ' ' .. new)
  end
elseif current >= new then
  unstage()
  return redis.error_reply('CONFLICT ' .. (new - 1) .. ' ' .. current)
end

for i = 0, staged - 1 do
  if redis.call('EXISTS', KEYS[6 + i]) == 0 then
    return redis.error_reply('STAGE_MISSING ' .. i)
  end
end

-- rotation plan, checked before anything is written
local kept = {}
if h_kept and h_kept ~= '' then
  for entry in string.gmatch(h_kept, '[^,]+') do table.insert(kept, entry) end
end
table.insert(kept, chunks > 0 and (new .. ':' .. chunks) or tostring(new))
local offered = {}
local k = 6 + 2 * staged
for i = 3, #ARGV do
  local g, c = string.match(ARGV[i], '^(%d+):(%d+)$')
  local list = {}
  for j = 0, tonumber(c) do list[j + 1] = KEYS[k + j] end
  offered[g .. ':' .. c] = list
  k = k + tonumber(c) + 1
end
local function entry_key(entry)
  return string.find(entry, ':') and entry or (entry .. ':0')
end
local drop_count = #kept - keep
local missing = {}
for i = 1, drop_count do
  if not offered[entry_key(kept[i])] then table.insert(missing, entry_key(kept[i])) end
end
if #missing > 0 then
  return redis.error_reply('NEED_KEYS ' .. table.concat(missing, ' '))
end

-- apply
if ARGV[2] ~= '' then redis.call('SET', KEYS[5], ARGV[2]) end
for i = 0, staged - 1 do
  redis.call('RENAME', KEYS[6 + i], KEYS[6 + staged + i])
  redis.call('PERSIST', KEYS[6 + staged + i])
end
local still = {}
for i = 1, #kept do
  if i <= drop_count then
    for _, key in ipairs(offered[entry_key(kept[i])]) do redis.call('DEL', key) end
  else
    table.insert(still, kept[i])
  end
end
redis.call('HSET', KEYS[2], 'generation', new, 'token', token, 'commit_id', commit_id,
  'checksum', checksum, 'size', size, 'chunks', chunks, 'schema_version', schema,
  'codec', codec, 'created_ms', created, 'owner', owner, 'kept', table.concat(still, ','))

if mode == 'import' then
  fence = math.max(fence, token) + 1
  redis.call('SET', KEYS[1], fence)
  redis.call('DEL', KEYS[4])
  event('import', 'generation', new, 'fence', fence, 'by', by)
  return {new, fence}
end
event('commit', 'generation', new, 'size', size, 'chunks', chunks)
return new
