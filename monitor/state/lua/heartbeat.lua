#!lua flags=allow-oom
-- Announce a live monitor and forget those whose heartbeat expired.
-- KEYS: the heartbeat set; ARGV[1]: when this one expires (ms), ARGV[2]: its id,
-- ARGV[3]: now (ms). Returns how many are live. Allowed while Redis is out of
-- memory, like lease_acquire.lua: its member is one per process.
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
return redis.call('ZCARD', KEYS[1])
