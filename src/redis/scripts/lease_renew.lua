-- Extends a lease only while it is still ours (src/redis/lease.rs).
-- KEYS[1] the lease STRING. ARGV[1] the value we stored, ARGV[2] ttl (ms).
-- Returns 1 when extended, 0 when the lease is not ours (expired, perhaps taken).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
