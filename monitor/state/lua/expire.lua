-- Forget tombstones (closed or liquidated records) older than the retention.
-- (is_tombstone is from the prelude tombstone.lua)
-- KEYS: positions, tombstones, funding (the last funding time each position paid,
-- forgotten with its record); ARGV[1]: the retention (ms), ARGV[2]: most per call.
-- A record that is no longer a tombstone (a newer version arrived) is kept; its
-- entry in the set goes either way. Returns how many records were deleted, and
-- whether entries older than the cutoff remain.
local now = redis.call('TIME')
local cutoff = now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[2]))
local deleted = 0
for _, id in ipairs(ids) do
  local record = redis.call('HGET', KEYS[1], id)
  if is_tombstone(record) then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[3], id)
    deleted = deleted + 1
  end
  redis.call('ZREM', KEYS[2], id)
end
return {deleted, #ids == tonumber(ARGV[2]) and 1 or 0}
