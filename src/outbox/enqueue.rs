//! The enqueue script: de-dup, XADD to each link's outbox and the checkpoint, atomically.

use std::collections::HashMap;

use chrono::Utc;
use redis::AsyncCommands;

use super::{CHECKPOINTS, Outbox, Result, kind_seen_key, outbox_key, seen_key};
use crate::model::{OutboundKind, Scope};

/// One event to put in the outboxes of `links`.
#[derive(Debug, Clone)]
pub struct Enqueue {
    pub scope: Scope,
    /// The de-dup key: message `id`, or the content hash of an id-less event.
    pub event_id: String,
    pub kind: OutboundKind,
    /// The event JSON as published, relayed verbatim.
    pub payload: String,
    /// The links that want it (already filtered by routing). Empty: only mark it seen.
    pub links: Vec<String>,
}

/// What one enqueue call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// Events written to at least one outbox (or marked seen).
    pub added: usize,
    /// Events already seen within the window, skipped.
    pub duplicates: usize,
}

/// Atomically, per event: add its id to the scope's seen set; only if it was new, append it
/// to each link's outbox and, for messages, move the scope's checkpoint. Then trim the seen
/// sets to the window. All events of one call are one script: all or nothing.
pub(super) const ENQUEUE: &str = r#"
local window = tonumber(ARGV[1])
local at = ARGV[2]
local t = redis.call('TIME')
local base = tonumber(t[1]) * 1000000 + tonumber(t[2])
local added, dup, seq = 0, 0, 0
local touched = {}
local i = 3
while i <= #ARGV do
  local seen = KEYS[tonumber(ARGV[i])]
  local checkpoint = ARGV[i + 1]
  local id, scope, kind, payload = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local n = tonumber(ARGV[i + 6])
  seq = seq + 1
  if redis.call('ZADD', seen, 'NX', base + seq, id) == 1 then
    for j = 1, n do
      redis.call('XADD', KEYS[tonumber(ARGV[i + 6 + j])], '*',
        'id', id, 'scope', scope, 'kind', kind, 'at', at, 'payload', payload)
    end
    if checkpoint ~= '' then
      redis.call('HSET', KEYS[1], checkpoint, id)
    end
    touched[seen] = true
    added = added + 1
  else
    dup = dup + 1
  end
  i = i + 7 + n
end
for key, _ in pairs(touched) do
  local excess = redis.call('ZCARD', key) - window
  if excess > 0 then
    redis.call('ZREMRANGEBYRANK', key, 0, excess - 1)
  end
end
return {added, dup}
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

impl Outbox {
    /// Enqueues a batch of events, de-duplicated per scope within `window` recent ids.
    pub async fn enqueue(&mut self, events: &[Enqueue], window: usize) -> Result<Enqueued> {
        if events.is_empty() {
            return Ok(Enqueued::default());
        }
        let mut keys = Keys::default();
        keys.get(CHECKPOINTS.to_owned());
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(window).arg(Utc::now().timestamp_millis());
        for event in events {
            let is_message = event.kind == OutboundKind::Event(crate::model::EventKind::Message);
            let channel = event.scope.channel();
            invocation
                .arg(keys.get(kind_seen_key(&event.scope, event.kind)))
                .arg(if is_message { channel.as_str() } else { "" })
                .arg(&event.event_id)
                .arg(&channel)
                .arg(event.kind.as_str())
                .arg(&event.payload)
                .arg(event.links.len());
            for link in &event.links {
                invocation.arg(keys.get(outbox_key(link)));
            }
        }
        for name in &keys.names {
            invocation.key(name);
        }
        let (added, duplicates): (usize, usize) = invocation.invoke_async(&mut self.con).await?;
        Ok(Enqueued { added, duplicates })
    }

    /// Which of `ids` are in the scope's seen window (for catch-up).
    pub async fn seen(&mut self, scope: &Scope, ids: &[&str]) -> Result<Vec<bool>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = seen_key(scope);
        let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
            .arg(key)
            .arg(ids)
            .query_async(&mut self.con)
            .await?;
        Ok(scores.into_iter().map(|s| s.is_some()).collect())
    }

    /// The id of the last message enqueued from this scope, if it was ever seen.
    pub async fn checkpoint(&mut self, scope: &Scope) -> Result<Option<String>> {
        Ok(self.con.hget(CHECKPOINTS, scope.channel()).await?)
    }
}
