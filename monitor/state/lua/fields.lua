-- Prelude of scripts that take many fields in one argument, separated by NUL
-- (redis-py packs each argument in Python, ~4 us apiece). Empty fields count.
-- nul_fields(blob) returns next_field() and more(): more() is true while a
-- field is left, next_field() returns it and moves on.
local function nul_fields(blob)
  local at = 1
  local function next_field()
    local stop = string.find(blob, '\0', at, true)
    local value
    if stop then
      value = string.sub(blob, at, stop - 1)
      at = stop + 1
    else
      value = string.sub(blob, at)
      at = #blob + 2
    end
    return value
  end
  local function more()
    return at <= #blob + 1
  end
  return next_field, more
end
