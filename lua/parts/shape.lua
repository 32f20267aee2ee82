-- shape: reading a checkpoint record's shape, for saver_read.lua and saver_admin.lua (included
-- where each says "-- include: shape"; saver_write.lua writes it). A record is "<n>:<shape>"
-- followed by the record frame; shape = items "<length>:<bytes>" one after another: the
-- parent id ("" none), then channel and version of each stored value.

-- The strings of a run of items.
local function items(s)
  local out, i = {}, 1
  while i <= #s do
    local c = string.find(s, ':', i, true)
    local n = tonumber(string.sub(s, i, c - 1))
    out[#out + 1] = string.sub(s, c + 1, c + n)
    i = c + n + 1
  end
  return out
end

-- A record's shape as a list: {parent id, channel, version, channel, version, ...}.
local function shape_of(record)
  local c = string.find(record, ':', 1, true)
  return items(string.sub(record, c + 1, c + tonumber(string.sub(record, 1, c - 1))))
end
