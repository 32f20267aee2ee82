-- load: the head's fields and, when the head names one of the generations the caller
-- guessed, that generation's stored value, as one snapshot (reads only, one round trip).
--
-- KEYS[1]     head   hash (see commit.lua)
-- KEYS[2 ..]  g:<n>  the keys of the guessed generations (the caller's newest known, maybe
--                    the one after it)
-- ARGV[1]     the guessed generation numbers n (ARGV[1], ARGV[2], ...), in the order of KEYS[2 ..]
--
-- Returns {generation, kept, checksum, commit_id, kept_ms, value}: the head's fields (false
--         where absent; all false: no head) and the value of g:<generation> (the frame, or
--         the manifest of a chunked one) when generation is among the guesses, else false.
-- No errors of its own. Used for small frames only: a value passing through Lua is copied
-- twice (a large one is read with MULTI/HMGET/GET/EXEC instead).
local h = redis.call('HMGET', KEYS[1], 'generation', 'kept', 'checksum', 'commit_id', 'kept_ms')
h[6] = false
for i = 1, #ARGV do
  if ARGV[i] == h[1] then
    h[6] = redis.call('GET', KEYS[i + 1])
    break
  end
end
return h
