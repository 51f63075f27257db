-- Accept a mark tick for one symbol and return the positions whose trigger it crossed.
-- KEYS: price, positions, long:down, long:up, short:down, short:up
-- ARGV: mark (decimal string), mark_ts (epoch ms), score (the mark as a double, for ranges)
-- Returns {0} when the tick is older than the stored mark (dropped), else
-- {1, index_price or "", index_ts or "", id1, record1, id2, record2, ...},
-- most underwater first within each direction.
local stored_ts = redis.call('HGET', KEYS[1], 'mark_ts')
if stored_ts and tonumber(stored_ts) > tonumber(ARGV[2]) then
  return {0}
end
redis.call('HSET', KEYS[1], 'mark', ARGV[1], 'mark_ts', ARGV[2])
local index = redis.call('HMGET', KEYS[1], 'index', 'index_ts')
local reply = {1, index[1] or '', index[2] or ''}
local function collect(ids)
  if #ids == 0 then return end
  local records = redis.call('HMGET', KEYS[2], unpack(ids))
  for i, id in ipairs(ids) do
    if records[i] then
      reply[#reply + 1] = id
      reply[#reply + 1] = records[i]
    end
  end
end
local score = ARGV[3]
collect(redis.call('ZREVRANGEBYSCORE', KEYS[3], '+inf', score))   -- longs worsening
collect(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', score))      -- shorts worsening
collect(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', score))      -- longs recovering
collect(redis.call('ZREVRANGEBYSCORE', KEYS[5], '+inf', score))   -- shorts recovering
return reply
