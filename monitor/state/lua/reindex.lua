-- Prelude: what every write of a position record does after its HSET, in the key layout
-- commit.lua and funding.lua share (KEYS[2..5] the trigger sets, KEYS[6] the outbox,
-- KEYS[8] the tombstones; each passes its change log to note_changes). Uses is_tombstone from the prelude tombstone.lua.

-- Re-index position `id` (its new `record`, replacing `current`, false if none): leave
-- every trigger set, join its side's with the given scores ("" = none), and keep the
-- tombstones set in step. Returns now_ms, read from the server's clock the first time
-- a tombstone needs it.
local function reindex(id, side, down_score, up_score, record, current, now_ms)
  -- A new version may flip the side, so leave every set before joining one
  -- (a position not stored before is in none).
  if current then
    for k = 2, 5 do redis.call('ZREM', KEYS[k], id) end
  end
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
  elseif is_tombstone(current) then
    redis.call('ZREM', KEYS[8], id)
  end
  return now_ms
end

-- How many calls the change log keeps (about: trimmed a node at a time). A reader
-- further behind than that files its copy of the book afresh.
local CHANGES_KEPT = 1000

-- Note in the symbol's change log (a stream) the ids one call wrote, in one entry, so
-- that a reader keeping a copy of the book (monitor/state/books.py) re-reads only them.
local function note_changes(key, ids)
  if #ids > 0 then
    redis.call('XADD', key, 'MAXLEN', '~', CHANGES_KEPT, '*', 'ids', table.concat(ids, '\0'))
  end
end

-- Queue an event in the outbox; true if there was one ("" event_id = none).
local function queue_event(event_id, topic, payload)
  if event_id == '' then return false end
  redis.call('XADD', KEYS[6], '*', 'event_id', event_id, 'topic', topic, 'payload', payload)
  return true
end
