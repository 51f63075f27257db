#!lua flags=allow-oom
-- Take a symbol's lease if it is free or already this monitor's.
-- KEYS: the lease; ARGV[1]: the holder's id, ARGV[2]: the time-to-live (ms).
-- Returns 1 when taken. A restarted monitor (same id) adopts the leases its
-- previous life held instead of waiting for them to expire. Allowed while
-- Redis is out of memory (a few bytes beyond maxmemory): a publisher needs its
-- leases to drain the outbox, which is what frees memory. Renewing (PEXPIRE)
-- and releasing (DEL) are allowed then anyway.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0
end
return 0
