-- Accept a mark tick for one symbol and return the positions whose trigger it crossed.
-- KEYS: price, positions, then the trigger sets in the order they are read
-- ARGV: first each set's direction, "down" or "up" (a down set fires at mark <= its
--       score, an up set at mark >= it), one per set in the order of KEYS; the
--       caller passes the sets and directions from monitor/core/triggers.py,
--       worsening sets first, so which set is a side's worsening one is stated
--       there alone. Then: mark (decimal string), mark_ts (epoch ms), score (the
--       mark as a double, for ranges), ceiling (epoch ms, or "" for none: the
--       latest believable stored mark_ts)
-- Returns {0} when the tick is older than the stored mark (dropped), else
-- {1, index_price or "", index_ts or "", id1, record1, id2, record2, ...},
-- the sets in the order given, each from its farthest-crossed trigger towards the
-- mark (most underwater first, in a worsening set).
-- A stored mark_ts beyond the ceiling came from the future (a ts in microseconds
-- kept by an older version): it is not believed, or no tick would ever pass again.
local sets = #KEYS - 2
local mark, mark_ts, score = ARGV[sets + 1], ARGV[sets + 2], ARGV[sets + 3]
local ceiling = tonumber(ARGV[sets + 4])
local stored = redis.call('HMGET', KEYS[1], 'mark_ts', 'mark')
local stored_ts = tonumber(stored[1])
if stored_ts and stored_ts > tonumber(mark_ts) and not (ceiling and stored_ts > ceiling) then
  return {0}
end
-- The stored mark again (recovery, a tick retried) writes nothing, so it is
-- answered even by a Redis out of memory (which refuses a script's first write).
if stored[1] ~= mark_ts or stored[2] ~= mark then
  redis.call('HSET', KEYS[1], 'mark', mark, 'mark_ts', mark_ts)
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
for i = 1, sets do
  if ARGV[i] == 'down' then
    collect(redis.call('ZREVRANGEBYSCORE', KEYS[i + 2], '+inf', score))
  else
    collect(redis.call('ZRANGEBYSCORE', KEYS[i + 2], '-inf', score))
  end
end
return reply
