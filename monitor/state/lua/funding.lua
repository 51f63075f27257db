-- Apply one funding time to positions of one symbol, atomically per batch: margin
-- (the new record), trigger sets, the funding mark and the outbox events together.
-- KEYS: positions, long:down, long:up, short:down, short:up, outbox, price, tombstones,
--       funding (hash: position id -> the last funding time it paid, epoch ms)
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
local conflicts, paid = {}, {}
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
    for k = 2, 5 do redis.call('ZREM', KEYS[k], id) end
    local down, up = KEYS[2], KEYS[3]
    if side == 'short' then down, up = KEYS[4], KEYS[5] end
    if down_score ~= '' then redis.call('ZADD', down, down_score, id) end
    if up_score ~= '' then redis.call('ZADD', up, up_score, id) end
    if is_tombstone(record) then
      if not now_ms then
        local now = redis.call('TIME')
        now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
      end
      redis.call('ZADD', KEYS[8], now_ms, id)
    end
    for n = 1, 2 do
      local event_id, topic, payload = events[n][1], events[n][2], events[n][3]
      if event_id ~= '' then
        redis.call('XADD', KEYS[6], '*', 'event_id', event_id, 'topic', topic, 'payload', payload)
        queued = true
      end
    end
  end
end
if queued and ARGV[4] then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return {conflicts, paid}
