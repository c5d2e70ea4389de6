-- Takes a lease if nobody holds it (src/redis/lease.rs).
-- KEYS[1] the lease STRING (PX expiry); KEYS[2], for a numbered lease only, its tenure counter
--   (INCR on each acquisition).
-- ARGV[1] the taker's token, ARGV[2] the rest of the value (who holds it), ARGV[3] ttl (ms).
-- Stores `{token} {epoch} {rest}` (numbered) or `{token} {rest}`.
-- Returns {1, value, ttl} when taken; {0, current value, its PTTL} when held.
local current = redis.call('GET', KEYS[1])
if current then
  return {0, current, redis.call('PTTL', KEYS[1])}
end
local value
if KEYS[2] then
  local epoch = redis.call('INCR', KEYS[2])
  value = ARGV[1] .. ' ' .. epoch .. ' ' .. ARGV[2]
else
  value = ARGV[1] .. ' ' .. ARGV[2]
end
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[3])
return {1, value, tonumber(ARGV[3])}
