//! The enqueue script: per event, de-dup and XADD to each link's outbox (or dead-letter
//! stream); per call, move checkpoints, prune de-dup sets and cap outboxes. All atomic.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use redis::AsyncCommands;

use super::{Outbox, Result, kind_seen_key};
use crate::model::{EventKind, OutboundKind, Scope};
use crate::redis::keys;

/// One event to put in the outboxes of `links`.
#[derive(Debug, Clone)]
pub struct Enqueue {
    pub scope: Scope,
    /// The de-dup key: a hash of the channel and the exact payload ([`crate::model::content_id`]).
    /// Never the message `id`, which a client chooses and can reuse.
    pub key: String,
    /// The id shown to operators and receivers: the message `id`, or `key` for id-less events.
    pub event_id: String,
    pub kind: OutboundKind,
    /// The event JSON as published, relayed verbatim.
    pub payload: String,
    /// The links that want it (already filtered by routing). Each de-duplicates on its own:
    /// another process's enqueue for its own links never hides the event from these.
    pub links: Vec<String>,
    /// Set for a history entry that cannot be relayed (too large to read, or not a message):
    /// it goes to the links' dead-letter streams with this reason instead of their outboxes.
    pub dead: Option<String>,
    /// The link the event's `origin` field names, when it is one of `links`: a claim that the
    /// event came from that link, honoured (the link skipped, no echo) only if chatbridge
    /// itself recorded writing the event ([`bridged_key`]); anyone can write an `origin`.
    pub origin: Option<String>,
}

/// What one enqueue call did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// Events new to at least one of their links (and events for no link).
    pub added: usize,
    /// Events every one of their links had already seen, skipped.
    pub duplicates: usize,
    /// Per link, events dropped from its outbox because it was over `outbox_max_len` or
    /// held events older than `outbox_max_age`.
    pub dropped: Vec<(String, usize)>,
}

/// What a catch-up pass settles together with its events, in the same script call.
#[derive(Debug, Default, Clone)]
pub struct Commit {
    /// Scope → new checkpoint value.
    pub checkpoints: Vec<(Scope, String)>,
    /// Other keys of ours to set (key → value), such as the DM watermark.
    pub marks: Vec<(String, String)>,
    /// Scopes whose message de-dup set may forget what was enqueued before this Redis time
    /// (microseconds): everything older is below the new checkpoint.
    pub prune: Vec<(Scope, i64)>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.checkpoints.is_empty() && self.prune.is_empty() && self.marks.is_empty()
    }
}

/// Bounds on what the outbox keys may hold.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Recent signal hashes remembered per scope and link (signals are never caught up, so
    /// this only guards against two processes enqueueing the same publish).
    pub signal_window: usize,
    /// The most message keys one scope's de-dup set keeps per link between catch-up passes,
    /// whatever the traffic; beyond it the oldest are forgotten (at worst a duplicate after a
    /// crash).
    pub seen_cap: usize,
    /// The most entries one outbox keeps (`[delivery] outbox_max_len`).
    pub outbox_max_len: usize,
    /// The oldest entry one outbox keeps (`[delivery] outbox_max_age_secs`).
    pub outbox_max_age: Duration,
    /// How long the catch-up keys of an idle DM conversation live.
    pub dm_idle: Duration,
    /// The most entries one dead-letter stream keeps (`[delivery] dlq_max_len`); beyond it the
    /// oldest are dropped.
    pub dlq_max_len: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            signal_window: 2000,
            seen_cap: 200_000,
            outbox_max_len: 1_000_000,
            outbox_max_age: Duration::from_secs(7 * 86_400),
            dm_idle: Duration::from_secs(90 * 86_400),
            dlq_max_len: 100_000,
        }
    }
}

/// First (`m`, then `m` pairs of stream index and link name): which link each stream belongs
/// to. Per event (`seen`, `key`, `id`, `scope`, `kind`, `payload`, `dead`, `origin`, `bridged`,
/// `n`, `n` stream keys), per stream: add `{link}:{key}` to the scope's seen set (score: Redis
/// time in µs); only if that link had not seen it, and no earlier version recorded the bare
/// `key` (seen for every link), append the event to the stream (an outbox, or with `dead` set
/// a dead-letter stream, kept to `dlq_max_len` entries), except to the `origin` link's outbox
/// when chatbridge recorded writing the event (`key` in the scope's `bridged` set). So each
/// link de-duplicates on its own: a process that enqueues an event for its links never hides
/// it from another process's other links. Then: set the
/// checkpoints, prune and cap the seen sets, expire idle DM keys, and trim each touched
/// outbox to its length and age caps, counting what was dropped in the link's stats.
pub(super) const ENQUEUE: &str = r#"
local failed_at = ARGV[1]
local max_len, min_id, dlq_max = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local added, dup, seq = 0, 0, 0
local touched = {}
local names = {}
local i = 6
for _ = 1, tonumber(ARGV[5]) do
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
  local fresh, legacy = 0, nil
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
"#;

/// Interns key names so the script gets each once and events refer to them by index.
#[derive(Default)]
struct Keys {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Keys {
    fn get(&mut self, name: String) -> usize {
        if let Some(&i) = self.index.get(&name) {
            return i;
        }
        self.names.push(name.clone());
        self.index.insert(name, self.names.len());
        self.names.len()
    }
}

/// What one call touches besides its events' streams.
#[derive(Default)]
struct Used {
    /// Seen sets (key index) with the cap each is trimmed to.
    seen_caps: Vec<(usize, usize)>,
    /// Keys of DM scopes, expired when idle.
    dm_keys: Vec<usize>,
    /// Links whose outboxes got events, to trim to their caps.
    links: Vec<String>,
}

impl Used {
    /// The key index of a scope's seen set for `kind`, noting its cap the first time.
    fn seen(&mut self, keys: &mut Keys, caps: &Caps, scope: &Scope, kind: OutboundKind) -> usize {
        let index = keys.get(kind_seen_key(scope, kind));
        if !self.seen_caps.iter().any(|(i, _)| *i == index) {
            self.seen_caps.push((index, base_cap(caps, kind)));
            if matches!(scope, Scope::Dm(..)) {
                self.dm_keys.push(index);
            }
        }
        index
    }
}

impl Used {
    /// Raises the cap of seen set `index` to hold `links` entries per event: the set records
    /// each link's copy of an event.
    fn widen(&mut self, index: usize, caps: &Caps, kind: OutboundKind, links: usize) {
        if let Some((_, cap)) = self.seen_caps.iter_mut().find(|(i, _)| *i == index) {
            *cap = (*cap).max(base_cap(caps, kind).saturating_mul(links));
        }
    }
}

/// How many events a scope's seen set for `kind` remembers per link.
fn base_cap(caps: &Caps, kind: OutboundKind) -> usize {
    if is_message(kind) {
        caps.seen_cap
    } else {
        caps.signal_window
    }
}

fn is_message(kind: OutboundKind) -> bool {
    kind == OutboundKind::Event(EventKind::Message)
}

impl Outbox {
    /// Enqueues a batch of events, each once per link and scope (de-duplicated on its key).
    pub async fn enqueue(&mut self, events: &[Enqueue]) -> Result<Enqueued> {
        self.enqueue_and_commit(events, &Commit::default()).await
    }

    /// Enqueues a batch of events and settles `commit` with them, atomically.
    pub async fn enqueue_and_commit(
        &mut self,
        events: &[Enqueue],
        commit: &Commit,
    ) -> Result<Enqueued> {
        if events.is_empty() && commit.is_empty() {
            return Ok(Enqueued::default());
        }
        let caps = self.caps;
        let now = Utc::now();
        let min_id = now.timestamp_millis()
            - i64::try_from(caps.outbox_max_age.as_millis()).unwrap_or(i64::MAX);
        let mut keys = Keys::default();
        let mut invocation = self.script.prepare_invoke();
        // Only dead letters carry `failed_at`: no date formatting on the hot path.
        let failed_at = if events.iter().any(|e| e.dead.is_some()) {
            now.to_rfc3339()
        } else {
            String::new()
        };
        invocation
            .arg(failed_at)
            .arg(caps.outbox_max_len)
            .arg(min_id.max(0))
            .arg(caps.dlq_max_len);
        let mut used = Used::default();
        // Per batch, each scope's channel and seen-set index, and each link's stream index,
        // are worked out once: a burst repeats a few scopes and links thousands of times.
        let mut streams: HashMap<(&str, bool), usize> = HashMap::new();
        for event in events {
            for link in &event.links {
                let dead = event.dead.is_some();
                streams.entry((link, dead)).or_insert_with(|| {
                    if !used.links.contains(link) {
                        used.links.push(link.clone());
                    }
                    keys.get(if dead {
                        keys::dlq(link)
                    } else {
                        keys::outbox(link)
                    })
                });
            }
        }
        // Which link each stream is, so the script records what each link has seen.
        invocation.arg(streams.len());
        for ((link, _), stream) in &streams {
            invocation.arg(*stream).arg(*link);
        }
        invocation.arg(events.len());
        let mut scopes: HashMap<(&Scope, bool), (String, usize)> = HashMap::new();
        for event in events {
            let (channel, seen) = scopes
                .entry((&event.scope, is_message(event.kind)))
                .or_insert_with(|| {
                    let seen = used.seen(&mut keys, &caps, &event.scope, event.kind);
                    (event.scope.channel(), seen)
                });
            used.widen(*seen, &caps, event.kind, event.links.len());
            invocation
                .arg(*seen)
                .arg(&event.key)
                .arg(&event.event_id)
                .arg(channel.as_str())
                .arg(event.kind.as_str())
                .arg(&event.payload)
                .arg(event.dead.as_deref().unwrap_or(""));
            match &event.origin {
                Some(origin) if event.dead.is_none() => invocation
                    .arg(keys.get(keys::outbox(origin)))
                    .arg(keys.get(keys::bridged(&event.scope.channel()))),
                _ => invocation.arg(0).arg(0),
            };
            invocation.arg(event.links.len());
            for link in &event.links {
                let stream = streams
                    .get(&(link.as_str(), event.dead.is_some()))
                    .copied()
                    .unwrap_or_default();
                invocation.arg(stream);
            }
        }
        let message = OutboundKind::Event(EventKind::Message);
        invocation.arg(commit.checkpoints.len() + commit.marks.len());
        for (key, value) in &commit.marks {
            invocation.arg(keys.get(key.clone())).arg(value);
        }
        for (scope, value) in &commit.checkpoints {
            let index = keys.get(keys::checkpoint(&scope.channel()));
            if matches!(scope, Scope::Dm(..)) {
                used.dm_keys.push(index);
            }
            invocation.arg(index).arg(value);
        }
        invocation.arg(commit.prune.len());
        for (scope, below) in &commit.prune {
            let index = used.seen(&mut keys, &caps, scope, message);
            invocation.arg(index).arg(below);
        }
        invocation.arg(used.seen_caps.len());
        for (index, cap) in &used.seen_caps {
            invocation.arg(index).arg(cap);
        }
        invocation.arg(used.dm_keys.len());
        for index in &used.dm_keys {
            invocation.arg(index).arg(caps.dm_idle.as_secs().max(1));
        }
        invocation.arg(used.links.len());
        let mut stream_links = HashMap::new();
        for link in used.links {
            let stream = keys.get(keys::outbox(&link));
            invocation.arg(stream).arg(keys.get(keys::link(&link)));
            stream_links.insert(stream, link);
        }
        for name in &keys.names {
            invocation.key(name);
        }
        let (added, duplicates, dropped): (usize, usize, Vec<usize>) =
            invocation.invoke_async(&mut self.con).await?;
        let dropped = dropped
            .chunks(2)
            .filter_map(|pair| match pair {
                [stream, n] => stream_links.get(stream).map(|link| (link.clone(), *n)),
                _ => None,
            })
            .collect();
        Ok(Enqueued {
            added,
            duplicates,
            dropped,
        })
    }

    /// The scope's checkpoint (see [`crate::catchup`]), if it has one.
    pub async fn checkpoint(&mut self, scope: &Scope) -> Result<Option<String>> {
        Ok(self.con.get(keys::checkpoint(&scope.channel())).await?)
    }
}
