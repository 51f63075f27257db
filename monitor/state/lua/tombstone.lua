-- Prelude: whether a stored position record is a tombstone (closed, or liquidated
-- in its version). A record is a JSON array ending in status, transitions.
-- The patterns are anchored at the end, so only the tail is searched: a match
-- is at most ',"liquidated",' plus the 20 digits of a 64-bit count plus ']'
-- (35 bytes); searching the whole record tried a match at every byte of it.
local TOMBSTONE_TAIL = -40
local function is_tombstone(record)
  return record ~= nil and record ~= false
    and (string.find(record, ',"liquidated",%d+%]$', TOMBSTONE_TAIL) ~= nil
      or string.find(record, ',"closed",%d+%]$', TOMBSTONE_TAIL) ~= nil)
end
