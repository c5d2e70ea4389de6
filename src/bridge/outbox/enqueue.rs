//! The enqueue script: per event, de-dup and XADD to each link's outbox (or dead-letter
//! stream); per call, move checkpoints, prune de-dup sets and cap outboxes. All atomic.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use redis::AsyncCommands;

use super::{Outbox, Result, kind_seen_key};
use crate::chat::model::{EventKind, OutboundKind, Scope};
use crate::redis::keys;

/// One event to put in the outboxes of `links`.
#[derive(Debug, Clone)]
pub struct Enqueue {
    pub scope: Scope,
    /// The de-dup key: a hash of the channel and the exact payload ([`crate::chat::model::content_id`]).
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
    /// itself recorded writing the event ([`crate::redis::keys::bridged`]); anyone can write an `origin`.
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
    /// Write outbox entries packed (two fields instead of five; see `enqueue.lua`): the worker
    /// then parses 4 values an entry instead of 10, ~10 % of the daemon's instructions per
    /// message when batched. Every reader since this one reads both forms, but an older
    /// chatbridge drops a packed entry as unreadable, so this stays off until no process older
    /// than this one can hold a lease on the same Redis (a rolling upgrade, a rollback).
    pub packed_entries: bool,
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
            packed_entries: false,
        }
    }
}

/// De-duplicates and enqueues a batch per link, then commits and caps (contract: the top of
/// the file).
pub(super) const ENQUEUE: &str = include_str!("../../redis/scripts/enqueue.lua");

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
            .arg(caps.dlq_max_len)
            .arg(if caps.packed_entries { "1" } else { "0" });
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

    /// The scope's checkpoint (see [`crate::bridge::catchup`]), if it has one.
    pub async fn checkpoint(&mut self, scope: &Scope) -> Result<Option<String>> {
        Ok(self.con.get(keys::checkpoint(&scope.channel())).await?)
    }
}
