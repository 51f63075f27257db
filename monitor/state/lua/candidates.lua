-- Accept a mark tick for one symbol and return the positions whose trigger it crossed.
-- KEYS: price, positions, long:down, long:up, short:down, short:up
-- ARGV: mark (decimal string), mark_ts (epoch ms), score (the mark as a double, for ranges),
--       ceiling (epoch ms, or "" for none: the latest believable stored mark_ts)
-- Returns {0} when the tick is older than the stored mark (dropped), else
-- {1, index_price or "", index_ts or "", id1, record1, id2, record2, ...},
-- most underwater first within each direction.
-- A stored mark_ts beyond the ceiling came from the future (a ts in microseconds
-- kept by an older version): it is not believed, or no tick would ever pass again.
local stored = redis.call('HMGET', KEYS[1], 'mark_ts', 'mark')
local stored_ts = tonumber(stored[1])
local ceiling = tonumber(ARGV[4])
if stored_ts and stored_ts > tonumber(ARGV[2]) and not (ceiling and stored_ts > ceiling) then
  return {0}
end
-- The stored mark again (recovery, a tick retried) writes nothing, so it is
-- answered even by a Redis out of memory (which refuses a script's first write).
if stored[1] ~= ARGV[2] or stored[2] ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'mark', ARGV[1], 'mark_ts', ARGV[2])
end
local index = redis.call('HMGET', KEYS[1], 'index', 'index_ts')
local reply = {1, index[1] or '', index[2] or ''}
-- HMGET in slices: Lua's unpack() cannot spread a burst of 100,000 ids at once.
local SLICE = 1000
local function collect(ids)
  for first = 1, #ids, SLICE do
    local last = math.min(first + SLICE - 1, #ids)
    local records = redis.call('HMGET', KEYS[2], unpack(ids, first, last))
    for i = first, last do
      local record = records[i - first + 1]
      if record then
        reply[#reply + 1] = ids[i]
        reply[#reply + 1] = record
      end
    end
  end
end
local score = ARGV[3]
collect(redis.call('ZREVRANGEBYSCORE', KEYS[3], '+inf', score))   -- longs worsening
collect(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', score))      -- shorts worsening
collect(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', score))      -- longs recovering
collect(redis.call('ZREVRANGEBYSCORE', KEYS[5], '+inf', score))   -- shorts recovering
return reply
