-- Where a Slack link posted each event (src/platforms/slack/outbound.rs): event key -> the
-- post's ts, bounded to the newest entries.
-- KEYS[1] the link's map HASH (event key -> ts), KEYS[2] its order ZSET (event key by time
--   recorded). ARGV[1] how many entries to keep, ARGV[2] now (Unix milliseconds), ARGV[3] the
--   post's ts, ARGV[4..] the event keys the post carried.
-- Trims the oldest entries beyond ARGV[1] from both. Returns 0.
local keep = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local ts = ARGV[3]
for i = 4, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ts)
  redis.call('ZADD', KEYS[2], now, ARGV[i])
end
local over = redis.call('ZCARD', KEYS[2]) - keep
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return 0
