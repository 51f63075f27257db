-- Apply one funding time to positions of one symbol, atomically per batch: margin
-- (the new record), trigger sets, the funding mark and the outbox events together.
-- KEYS: positions, long:down, long:up, short:down, short:up, outbox, price, tombstones,
--       funding (hash: position id -> the last funding time it paid, epoch ms), changes
--       (the change log, as commit.lua's KEYS[9])
--       (the trigger sets in the order of commit.lua's KEYS[2..5])
-- ARGV[1]: "mark_ts|mark" the payments were decided at ("" = do not check),
-- ARGV[2]: the funding time (epoch ms),
-- ARGV[3]: the writes, fields separated by NUL, 12 per write: id, expected record,
--       new record, side, down score ("" = none), up score ("" = none), then two
--       events (the funding event, and the status event the mark decided, "" = none),
--       each event_id, topic, payload
-- ARGV[4], ARGV[5] (on a Redis Cluster only): as commit.lua's ARGV[3], ARGV[4].
-- Returns {conflicts, paid already}: the ids whose record changed since it was read
-- (decide again), and the ids that had paid this funding time or a later one (skipped:
-- a funding time applied twice, by a retry or a second monitor, pays once).
-- Payments are decided at the latest mark; if a tick moved it since, nothing is
-- written ({"stale_quote"}) and the batch is decided again.
if ARGV[1] ~= '' then
  local price = redis.call('HMGET', KEYS[7], 'mark_ts', 'mark')
  local stored = price[1] and (price[1] .. '|' .. price[2]) or '-'
  if stored ~= ARGV[1] then
    return {'stale_quote'}
  end
end
local funding_ts = tonumber(ARGV[2])
local field, more = nul_fields(ARGV[3])
local now_ms
local conflicts, paid, written_ids = {}, {}, {}
local queued = false
while more() do
  local id, expected, record, side = field(), field(), field(), field()
  local down_score, up_score = field(), field()
  local events = {}
  for n = 1, 2 do
    events[n] = {field(), field(), field()}
  end
  local last = tonumber(redis.call('HGET', KEYS[9], id) or '0')
  local current = redis.call('HGET', KEYS[1], id)
  if last >= funding_ts then
    paid[#paid + 1] = id
  elseif current ~= expected then
    conflicts[#conflicts + 1] = id
  else
    redis.call('HSET', KEYS[1], id, record)
    redis.call('HSET', KEYS[9], id, ARGV[2])
    now_ms = reindex(id, side, down_score, up_score, record, current, now_ms)
    written_ids[#written_ids + 1] = id
    for n = 1, 2 do
      queued = queue_event(events[n][1], events[n][2], events[n][3]) or queued
    end
  end
end
note_changes(KEYS[10], written_ids)
if queued and ARGV[4] then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return {conflicts, paid}
