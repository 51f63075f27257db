-- Replace the epoch by compare-and-set (see monitor/state/epoch.py).
-- KEYS: epoch; ARGV[1]: the stored value expected ('' for absent), ARGV[2]: the new one.
-- Writes only when the stored value is the one expected; returns what is stored after.
local current = redis.call('GET', KEYS[1])
if (current or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return current
