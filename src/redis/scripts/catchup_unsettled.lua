-- Catch-up's "anything new?" check (src/bridge/catchup/walk.rs), many scopes per call.
-- KEYS[1] the legacy checkpoint HASH (chatbridge:checkpoints); then pairs (history LIST,
--   checkpoint STRING).
-- ARGV[1] how many of the newest entries a fingerprint covers; ARGV[p + 1] the channel of
--   pair p (the field of the legacy hash).
-- Returns, for each pair whose history does not start with its checkpoint's fingerprint, its
--   1-based index, the fingerprint of its history now, and 1/0: whether it has a checkpoint.
local n, out = tonumber(ARGV[1]), {}
for p = 1, (#KEYS - 1) / 2 do
  local top = redis.call('LRANGE', KEYS[2 * p], 0, n - 1)
  local fingerprint = '-'
  if #top > 0 then
    for i, e in ipairs(top) do top[i] = redis.sha1hex(e) end
    fingerprint = 'v2:' .. table.concat(top, ',')
  end
  local checkpoint = redis.call('GET', KEYS[2 * p + 1])
  if not checkpoint then
    checkpoint = redis.call('HGET', KEYS[1], ARGV[p + 1])
  end
  if checkpoint ~= fingerprint then
    table.insert(out, p)
    table.insert(out, fingerprint)
    table.insert(out, checkpoint and 1 or 0)
  end
end
return out
