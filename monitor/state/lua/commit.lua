-- Apply decided transitions atomically: record, trigger sets and outbox event together.
-- KEYS: positions, long:down, long:up, short:down, short:up, outbox, price, tombstones,
--       changes (the symbol's change log: the ids each call wrote, see reindex.lua)
--       (the trigger sets in the order of TriggerSet, monitor/core/triggers.py: each
--       write names its side and gives its down and up scores, and a side's two sets
--       are the pair after KEYS[1] for long, the next pair for short; the order is
--       checked by tests/state/test_keys.py. Which of them is worsening is not
--       this script's business: the caller's down and up scores say it.)
-- ARGV[1]: "mark_ts|mark" the decisions were made at ("" = do not check, "-" = no mark yet),
-- ARGV[2]: the writes, fields separated by NUL, 9 per write: id, expected record
--       ("" = must be absent), new record, side, down score ("" = none),
--       up score ("" = none), event_id ("" = none), topic, payload
--       (read with nul_fields, from the prelude fields.lua; reindex and queue_event
--       are from the prelude reindex.lua)
-- ARGV[3], ARGV[4] (on a Redis Cluster only): a pub/sub channel and the symbol,
--       published there when an event was queued, so the relay reads this
--       outbox now (a cluster cannot block on every symbol's outbox at once).
-- A group whose stored record differs from the expected one was changed by
-- someone else since it was read (another monitor, a newer version): it is
-- skipped and its id returned, so the caller re-reads and decides again. This
-- compare-and-set is what stops two monitors from emitting one transition twice.
-- A record written closed or liquidated (a tombstone) is stamped in the tombstones
-- set with the server's time, so lua/expire.lua can forget it after the retention;
-- a newer version that is open again leaves the set.
-- Position versions are decided against the latest mark; if a tick moved the
-- mark since, the whole batch is refused ({"stale_quote"}) and decided again,
-- or a position could join the trigger index just after the tick that
-- crossed its trigger had looked.
if ARGV[1] ~= '' then
  local price = redis.call('HMGET', KEYS[7], 'mark_ts', 'mark')
  local stored = price[1] and (price[1] .. '|' .. price[2]) or '-'
  if stored ~= ARGV[1] then
    return {'stale_quote'}
  end
end
local field, more = nul_fields(ARGV[2])
local now_ms
local conflicts, written_ids = {}, {}
local queued = false
while more() do
  local id, expected, record, side = field(), field(), field(), field()
  local down_score, up_score = field(), field()
  local event_id, topic, payload = field(), field(), field()
  local current, written = false, false
  if expected == '' then
    -- Must be absent: HSETNX compares and writes in one call (what a load meets).
    written = redis.call('HSETNX', KEYS[1], id, record) == 1
  else
    current = redis.call('HGET', KEYS[1], id)
    if current == expected then
      redis.call('HSET', KEYS[1], id, record)
      written = true
    end
  end
  if written then
    now_ms = reindex(id, side, down_score, up_score, record, current, now_ms)
    written_ids[#written_ids + 1] = id
    queued = queue_event(event_id, topic, payload) or queued
  else
    conflicts[#conflicts + 1] = id
  end
end
note_changes(KEYS[9], written_ids)
if queued and ARGV[3] then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return conflicts
