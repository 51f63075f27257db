-- Apply decided transitions atomically: record, trigger sets and outbox event together.
-- KEYS: positions, long:down, long:up, short:down, short:up, outbox, price
-- ARGV[1]: "mark_ts|mark" the decisions were made at ("" = do not check, "-" = no mark yet),
-- then groups of 9: id, expected record ("" = must be absent), new record, side,
--       down score ("" = none), up score ("" = none), event_id ("" = none), topic, payload
-- A group whose stored record differs from the expected one was changed by
-- someone else since it was read (another monitor, a newer version): it is
-- skipped and its id returned, so the caller re-reads and decides again. This
-- compare-and-set is what stops two monitors from emitting one transition twice.
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
local conflicts = {}
for i = 2, #ARGV, 9 do
  local id = ARGV[i]
  local current = redis.call('HGET', KEYS[1], id)
  local expected = ARGV[i + 1]
  if (expected == '' and current) or (expected ~= '' and current ~= expected) then
    conflicts[#conflicts + 1] = id
  else
    redis.call('HSET', KEYS[1], id, ARGV[i + 2])
    -- A new version may flip the side, so leave every set before joining one.
    for k = 2, 5 do redis.call('ZREM', KEYS[k], id) end
    local down, up = KEYS[2], KEYS[3]
    if ARGV[i + 3] == 'short' then down, up = KEYS[4], KEYS[5] end
    if ARGV[i + 4] ~= '' then redis.call('ZADD', down, ARGV[i + 4], id) end
    if ARGV[i + 5] ~= '' then redis.call('ZADD', up, ARGV[i + 5], id) end
    if ARGV[i + 6] ~= '' then
      redis.call('XADD', KEYS[6], '*', 'event_id', ARGV[i + 6], 'topic', ARGV[i + 7],
        'payload', ARGV[i + 8])
    end
  end
end
return conflicts
