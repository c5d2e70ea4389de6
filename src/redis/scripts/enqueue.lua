-- The idempotent enqueue (src/outbox/enqueue.rs): de-dup, append to outboxes or dead-letter
-- streams, move checkpoints, cap what grows; one call per batch.
-- KEYS: every key the batch touches, interned once; ARGV refers to them by 1-based index.
-- ARGV[1] failed_at (for dead letters), ARGV[2] outbox max length, ARGV[3] min id (age cap),
--   ARGV[4] dead-letter max length, ARGV[5] '1' to write outbox entries packed (below);
--   ARGV[6] m, then m pairs (stream index, link name).
-- Then n events, each: seen set index, key, id, scope, kind, payload, dead ('' or why),
--   origin stream index (0: none), bridged set index, n streams, the n stream indexes.
-- Then counted groups of pairs: checkpoints (key index, value); seen prunes (key index,
--   min score); seen caps (key index, cap); DM expiries (key index, seconds); outbox trims
--   (stream index, link stats index).
-- Per event and stream: add {link}:{key} to the seen set (score: Redis time in us); only if
--   that link had not seen it, and no earlier version recorded the bare key (seen for every
--   link), append the event (an outbox, or with dead set a dead-letter stream), except to the
--   origin link's outbox when chatbridge recorded writing the event (key in bridged). So each
--   link de-duplicates on its own: a process that enqueues an event for its links never hides
--   it from another process's other links. Then: set the checkpoints, prune and cap the seen
--   sets, expire idle DM keys, and trim each touched outbox to its length and age caps,
--   counting what was dropped in the link's stats (HINCRBY dropped).
-- An outbox entry has the fields id, key, scope, kind, payload; packed, it has two: `m`, the
--   event's metadata as "{key}\n{kind}\n{byte length of scope}\n{scope}{id}" (the id last,
--   whatever it holds), and `payload`, so a read-back parses 4 values an entry instead of 10.
--   Dead letters (and entries replayed from them) always have the named fields.
-- Returns {added, duplicates, {stream index, dropped, ...}}.
local failed_at = ARGV[1]
local max_len, min_id, dlq_max = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local packed = ARGV[5] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local added, dup, seq = 0, 0, 0
local touched = {}
local names = {}
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  names[tonumber(ARGV[i])] = ARGV[i + 1] .. ':'
  i = i + 2
end
for _ = 1, tonumber(ARGV[i]) do
  i = i + 1
  local seen, key, id = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2]
  local scope, kind, payload, dead = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local origin, bridged = tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8])
  local n = tonumber(ARGV[i + 9])
  seq = seq + 1
  local fresh, legacy, meta = 0, nil, nil
  for j = 1, n do
    local stream = tonumber(ARGV[i + 9 + j])
    if redis.call('ZADD', seen, 'NX', now + seq, names[stream] .. key) == 1 then
      if legacy == nil then
        -- the bare key: enqueued by a version that de-duplicated per scope, for every link
        legacy = redis.call('ZSCORE', seen, key) ~= false
      end
      if not legacy then
        fresh = fresh + 1
        if origin > 0 and stream == origin and redis.call('ZSCORE', KEYS[bridged], key) then
          -- chatbridge wrote it on behalf of this link: never send it back (no echo)
        elseif dead == '' and packed then
          meta = meta or (key .. '\n' .. kind .. '\n' .. #scope .. '\n' .. scope .. id)
          redis.call('XADD', KEYS[stream], '*', 'm', meta, 'payload', payload)
          touched[stream] = true
        elseif dead == '' then
          redis.call('XADD', KEYS[stream], '*',
            'id', id, 'key', key, 'scope', scope, 'kind', kind, 'payload', payload)
          touched[stream] = true
        else
          redis.call('XADD', KEYS[stream], 'MAXLEN', dlq_max, '*',
            'id', id, 'key', key, 'scope', scope, 'kind', kind, 'payload', payload,
            'status', '', 'detail', dead, 'failed_at', failed_at)
        end
      end
    end
  end
  if fresh > 0 or n == 0 then
    added = added + 1
  else
    dup = dup + 1
  end
  i = i + 9 + n
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  redis.call('SET', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  redis.call('ZREMRANGEBYSCORE', KEYS[tonumber(ARGV[i + 1])], '-inf', '(' .. ARGV[i + 2])
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  local key, cap = KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  local excess = redis.call('ZCARD', key) - cap
  if excess > 0 then
    redis.call('ZREMRANGEBYRANK', key, 0, excess - 1)
  end
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  redis.call('EXPIRE', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
  i = i + 2
end
i = i + 1
local dropped = {}
for _ = 1, tonumber(ARGV[i]) do
  local stream, stats = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if touched[stream] then
    local n = 0
    if redis.call('XLEN', KEYS[stream]) > max_len then
      n = n + redis.call('XTRIM', KEYS[stream], 'MAXLEN', max_len)
    end
    n = n + redis.call('XTRIM', KEYS[stream], 'MINID', min_id)
    if n > 0 then
      redis.call('HINCRBY', KEYS[stats], 'dropped', n)
      table.insert(dropped, stream)
      table.insert(dropped, n)
    end
  end
  i = i + 2
end
return {added, dup, dropped}
