-- run_keys: the part of delete.lua and prune.lua that removes a run's keys, included where
-- each says "-- include: run_keys" (redis_ckpt.drivers.scripts.lua_text). Both lay out KEYS
-- and ARGV alike (see their headers): KEYS[6..] each generation entry's g:<g> then its chunk
-- keys, each staged commit's keys, then x:refs and the shared chunks it names;
-- ARGV[4] the number of generation entries nd, ARGV[5 .. 4+nd] the entries "<g>:<chunks>",
-- ARGV[5+nd ..] the staged commits "<cid>:<count>".

-- The head's kept generations (its "kept" field) whose entries were not passed, and how many
-- generations it keeps.
local function generations_not_passed(h_kept, nd)
  local offered, missing, kept = {}, {}, 0
  for i = 5, 4 + nd do offered[ARGV[i]] = true end
  for entry in string.gmatch(h_kept or '', '[^,]+') do
    kept = kept + 1
    if not string.find(entry, ':') then entry = entry .. ':0' end
    if not offered[entry] then table.insert(missing, entry) end
  end
  return missing, kept
end

-- nil, or the NEED_SHARED refusal: x:refs names other shared chunks than exactly those passed
-- (a commit shared chunks since the caller read x:refs: it reads them again).
local function shared_not_passed(nd)
  local k = 6
  for i = 5, 4 + nd do k = k + tonumber(string.match(ARGV[i], ':(%d+)$')) + 1 end
  for i = 5 + nd, #ARGV do k = k + tonumber(string.match(ARGV[i], ':(%d+)$')) end
  if not KEYS[k] then return nil end  -- the run shares no chunks
  local counts, passed = redis.call('HGETALL', KEYS[k]), {}  -- {address, count, ...}
  local from = #KEYS[k] - 3  -- a chunk's key is x:refs's with its address in place of "refs"
  for i = k + 1, #KEYS do passed[string.sub(KEYS[i], from)] = true end
  local ok = #counts / 2 == #KEYS - k
  for i = 1, #counts, 2 do ok = ok and passed[counts[i]] end
  if not ok then return redis.error_reply('NEED_SHARED ' .. #counts / 2) end
  return nil
end

-- Delete every key from KEYS[6] on; the number of generations that existed.
local function delete_run_keys(nd)
  local deleted, k = 0, 6
  for i = 5, 4 + nd do
    local c = tonumber(string.match(ARGV[i], ':(%d+)$'))
    deleted = deleted + redis.call('DEL', KEYS[k])
    for j = 1, c do redis.call('DEL', KEYS[k + j]) end
    k = k + c + 1
  end
  for i = k, #KEYS do redis.call('DEL', KEYS[i]) end
  return deleted
end
