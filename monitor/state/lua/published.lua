-- Keep published events in the capped stream behind /api/events and the dashboard.
-- KEYS: the published stream; ARGV[1]: approximate maximum length,
-- ARGV[2]: the entries, 4 NUL-separated fields each: event_id, symbol, topic, payload
-- (read with nul_fields, from the prelude fields.lua).
local field, more = nul_fields(ARGV[2])
local added = 0
while more() do
  local event_id, symbol, topic, payload = field(), field(), field(), field()
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'event_id', event_id, 'symbol', symbol, 'topic', topic, 'payload', payload)
  added = added + 1
end
return added
