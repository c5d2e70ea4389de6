-- Deletes a lease only while it is still ours (src/redis/lease.rs).
-- KEYS[1] the lease STRING. ARGV[1] the value we stored.
-- Returns 1 when deleted, 0 when it was not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
