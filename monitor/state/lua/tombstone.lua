-- Prelude: whether a stored position record is a tombstone (closed, or liquidated
-- in its version). A record is a JSON array ending in status, transitions.
local function is_tombstone(record)
  return record ~= nil and record ~= false
    and (string.find(record, ',"liquidated",%d+%]$') ~= nil
      or string.find(record, ',"closed",%d+%]$') ~= nil)
end
