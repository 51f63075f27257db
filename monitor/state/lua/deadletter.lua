-- Keep one rejected message in the dead-letter stream, bounded in entries and in bytes.
-- KEYS: the stream
-- ARGV[1]: most entries kept, ARGV[2]: most bytes kept, ARGV[3]: this entry's bytes,
-- ARGV[4..]: the entry's fields and values (one of them "bytes" = ARGV[3])
-- Every entry records its own size ("bytes") and, as it is added, the size of the
-- whole stream ("total"): the newest entry's total is the count, read in O(1), with
-- no key beside the stream (an ACL on the key prefix covers it; a stream deleted by
-- hand starts again from zero). The oldest entries go first, whole, until both
-- bounds hold with the new one; the new entry always stays (the caller caps its
-- size below the byte bound).
local maxlen, max_bytes, size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function field_of(entry, name)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == name then return tonumber(fields[i + 1]) or 0 end
  end
  return 0
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
local total = size + (newest and field_of(newest, 'total') or 0)
local length = redis.call('XLEN', KEYS[1]) + 1
local dropped = 0
while length > 1 and (length > maxlen or total > max_bytes) do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  redis.call('XDEL', KEYS[1], oldest[1])
  total = total - field_of(oldest, 'bytes')
  length = length - 1
  dropped = dropped + 1
end
if length == 1 then total = size end
redis.call('XADD', KEYS[1], '*', 'total', total, unpack(ARGV, 4))
return dropped
