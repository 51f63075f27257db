-- Read a symbol's change log (reindex.lua's note_changes) after a cursor, with the
-- counts that tell a reader whether entries it has not read were trimmed.
-- KEYS: changes
-- ARGV[1]: the cursor, an entry id (exclusive; "0-0": from the start),
-- ARGV[2]: how many entries to read (0: none, only the counts)
-- Returns {entries ever added, entries kept, the last entry id, entries after the cursor};
-- {0, 0, "0-0", {}} when there is no log (nothing written yet, or Redis lost it).
-- Read in one call, so the counts and the entries describe one state of the log.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, '0-0', {}}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local added, length, last = 0, 0, '0-0'
for n = 1, #info, 2 do
  local name = info[n]
  if name == 'entries-added' then added = info[n + 1]
  elseif name == 'length' then length = info[n + 1]
  elseif name == 'last-generated-id' then last = info[n + 1]
  end
end
local entries = {}
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
end
return {added, length, last, entries}
