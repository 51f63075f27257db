-- What new versions of a symbol's positions are decided on: its mark and their records.
-- KEYS: price, positions
-- ARGV[1]: position ids separated by NUL (one argument: redis-py packs each
-- argument in Python, ~4 µs apiece, and a load reads thousands).
-- Returns {mark, mark_ts, index, then each id's stored record}, false where
-- absent; read in one step, so the records and the mark belong together.
local ids = {}
for id in string.gmatch(ARGV[1], '[^%z]+') do ids[#ids + 1] = id end
local reply = redis.call('HMGET', KEYS[1], 'mark', 'mark_ts', 'index')
-- unpack() cannot spread more than a few thousand values at once.
local SLICE = 1000
for first = 1, #ids, SLICE do
  local records = redis.call('HMGET', KEYS[2], unpack(ids, first, math.min(first + SLICE - 1, #ids)))
  for k = 1, #records do reply[#reply + 1] = records[k] end
end
return reply
