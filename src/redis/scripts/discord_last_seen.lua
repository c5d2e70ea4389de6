-- The Discord Gateway's catch-up mark (src/platforms/discord/gateway/events.rs): a channel's
-- last seen message id, moved only forward.
-- KEYS[1] the channel's last-seen STRING. ARGV[1] the new message id (a snowflake: decimal
--   digits, so longer is newer and equal lengths compare as text).
-- Returns 1 when set, 0 when the stored id is as new or newer.
local cur = redis.call('GET', KEYS[1])
if cur and (#cur > #ARGV[1] or (#cur == #ARGV[1] and cur >= ARGV[1])) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
