-- Renew a symbol's lease if this monitor still holds it.
-- KEYS: the lease; ARGV[1]: the holder's id, ARGV[2]: the time-to-live (ms).
-- Returns 1 when renewed, 0 when the lease is another's or gone.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
