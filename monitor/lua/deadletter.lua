-- Keep one rejected message in the dead-letter stream, bounded in entries and in bytes.
-- KEYS: the stream, its byte count (a string; same hash slot as the stream)
-- ARGV[1]: most entries kept, ARGV[2]: most bytes kept, ARGV[3]: this entry's bytes,
-- ARGV[4..]: the entry's fields and values (one of them "bytes" = ARGV[3])
-- The oldest entries go first, whole, until both bounds hold again; the new
-- entry always stays (the caller caps its size below the byte bound). Each
-- entry records its own size, so the count stays exact without reading payloads.
local maxlen, max_bytes, size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
local total = redis.call('INCRBY', KEYS[2], size)
local length = redis.call('XLEN', KEYS[1])
local dropped = 0
while length > 1 and (length > maxlen or total > max_bytes) do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local fields, bytes = oldest[2], 0
  for i = 1, #fields, 2 do
    if fields[i] == 'bytes' then bytes = tonumber(fields[i + 1]) or 0 end
  end
  redis.call('XDEL', KEYS[1], oldest[1])
  total = redis.call('DECRBY', KEYS[2], bytes)
  length = length - 1
  dropped = dropped + 1
end
-- The stream was deleted or trimmed by hand: start counting again from this entry.
if length == 1 and total ~= size then
  redis.call('SET', KEYS[2], size)
end
return dropped
