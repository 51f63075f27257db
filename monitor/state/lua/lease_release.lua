-- Give a symbol's lease back if this monitor holds it.
-- KEYS: the lease; ARGV[1]: the holder's id. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
