-- Forget outbox entries the broker has acknowledged: XACK and XDEL in one call.
-- KEYS: outbox; ARGV[1]: consumer group, ARGV[2]: entry ids separated by spaces
-- (one argument: redis-py packs each argument in Python, and a burst acks
-- thousands). Returns the number acknowledged.
local ids = {}
for id in string.gmatch(ARGV[2], '%S+') do ids[#ids + 1] = id end
local acked = 0
-- unpack() cannot spread more than a few thousand values at once.
local SLICE = 1000
for first = 1, #ids, SLICE do
  local last = math.min(first + SLICE - 1, #ids)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids, first, last))
  redis.call('XDEL', KEYS[1], unpack(ids, first, last))
end
return acked
