-- Keep published events in the capped stream behind /api/events and the dashboard.
-- KEYS: the published stream; ARGV[1]: approximate maximum length,
-- ARGV[2]: the entries, 4 NUL-separated fields each: event_id, symbol, topic, payload
-- (one argument: redis-py packs each argument in Python, ~4 us apiece).
local blob = ARGV[2]
local at = 1
local function field()
  local stop = string.find(blob, '\0', at, true)
  local value
  if stop then
    value = string.sub(blob, at, stop - 1)
    at = stop + 1
  else
    value = string.sub(blob, at)
    at = #blob + 2
  end
  return value
end
local added = 0
while at <= #blob + 1 do
  local event_id, symbol, topic, payload = field(), field(), field(), field()
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'event_id', event_id, 'symbol', symbol, 'topic', topic, 'payload', payload)
  added = added + 1
end
return added
