-- The inbound write (src/inbound/write.rs): de-duplicates on the sender's id and writes an event
-- the way the seed's operation would, recording that chatbridge wrote it.
-- KEYS[1] de-dup STRING, KEYS[2] history LIST, KEYS[3] bridged ZSET, KEYS[4] members SET,
--   KEYS[5] read receipts HASH.
-- ARGV[1] channel, ARGV[2] payload, ARGV[3] op (message, join, leave, read, signal),
--   ARGV[4] last history index kept, ARGV[5] payload key, ARGV[6] de-dup ttl (s),
--   ARGV[7] answer id, ARGV[8] user id, ARGV[9] last read, ARGV[10] bridged cap.
-- Returns {1, id} when written; {0, the first write's id} when the de-dup key was present
--   (nothing written).
local prior = redis.call('GET', KEYS[1])
if prior then
  return {0, prior}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local newest = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')[2]
if newest and tonumber(newest) >= now then
  -- Several writes in one millisecond: keep them in write order, so the trim drops the oldest.
  now = tonumber(newest) + 0.001
end
redis.call('ZADD', KEYS[3], now, ARGV[5])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[10]) + 1))
local op = ARGV[3]
if op == 'join' then
  redis.call('SADD', KEYS[4], ARGV[8])
elseif op == 'leave' then
  redis.call('SREM', KEYS[4], ARGV[8])
elseif op == 'read' then
  redis.call('HSET', KEYS[5], ARGV[8], ARGV[9])
elseif op == 'message' then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]))
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
redis.call('SET', KEYS[1], ARGV[7], 'EX', tonumber(ARGV[6]))
return {1, ARGV[7]}
