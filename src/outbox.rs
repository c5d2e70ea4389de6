//! The durable per-link outbox: one Redis Stream per link under `chatbridge:`, written before
//! anything is sent, read by that link's worker through a consumer group, acknowledged (and
//! deleted) only after the target accepted.
//!
//! Keys (all ours, `WIRE.md`):
//! - `chatbridge:outbox:{link}`: STREAM of events waiting for the link (depth = XLEN);
//! - `chatbridge:dlq:{link}`: STREAM of events the link refused permanently, with why;
//! - `chatbridge:seen:{channel}`: ZSET of recently enqueued message ids (the de-dup window);
//! - `chatbridge:seen:{channel}:signals`: the same for events without an id (content hashes);
//! - `chatbridge:checkpoints`: HASH channel → id of the last message enqueued from it;
//! - `chatbridge:link:{link}`: HASH of delivery stats and the `disabled` reason, if any.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};

use crate::model::{Outbound, OutboundKind, Scope};

/// The consumer group (and consumer) every worker reads through. One daemon per Redis: the
/// consumer name is fixed so a restarted process finds what its predecessor left pending.
const GROUP: &str = "chatbridge";
const CONSUMER: &str = "chatbridge";
pub const CHECKPOINTS: &str = "chatbridge:checkpoints";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

pub type Result<T> = std::result::Result<T, OutboxError>;

pub fn outbox_key(link: &str) -> String {
    format!("chatbridge:outbox:{link}")
}

pub fn dlq_key(link: &str) -> String {
    format!("chatbridge:dlq:{link}")
}

fn link_key(link: &str) -> String {
    format!("chatbridge:link:{link}")
}

/// The seen set of a scope's messages.
pub fn seen_key(scope: &Scope) -> String {
    kind_seen_key(scope, OutboundKind::Event(crate::model::EventKind::Message))
}

fn kind_seen_key(scope: &Scope, kind: OutboundKind) -> String {
    match kind {
        OutboundKind::Event(crate::model::EventKind::Message) => {
            format!("chatbridge:seen:{}", scope.channel())
        }
        _ => format!("chatbridge:seen:{}:signals", scope.channel()),
    }
}

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
const ENQUEUE: &str = r#"
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

/// Handle on the outbox keys; cheap to clone (one multiplexed connection underneath).
#[derive(Clone)]
pub struct Outbox {
    /// Self-healing connection shared by everything that is not a blocking read.
    con: ConnectionManager,
    /// The enqueue script (EVALSHA, loaded again automatically after a Redis restart).
    script: std::sync::Arc<Script>,
}

impl Outbox {
    pub fn new(con: ConnectionManager) -> Self {
        Self {
            con,
            script: std::sync::Arc::new(Script::new(ENQUEUE)),
        }
    }

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

    /// Creates the link's consumer group (and stream) if missing.
    pub async fn ensure_group(&mut self, link: &str) -> Result<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(outbox_key(link))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.con)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Acknowledges delivered entries, deletes them from the outbox and records the progress.
    pub async fn ack(&mut self, link: &str, delivered: &[Outbound]) -> Result<()> {
        let Some(last) = delivered.last() else {
            return Ok(());
        };
        let ids: Vec<&str> = delivered.iter().map(|o| o.entry_id.as_str()).collect();
        let mut pipe = redis::pipe();
        remove_entries(pipe.atomic(), link, &ids)
            .hincr(link_key(link), "delivered", delivered.len())
            .ignore()
            .hset(link_key(link), "last_id", &last.event_id)
            .ignore()
            .hset(link_key(link), "last_at", Utc::now().to_rfc3339())
            .ignore()
            .query_async::<()>(&mut self.con)
            .await?;
        Ok(())
    }

    /// Removes entries without delivering them (only for entries that cannot be parsed).
    pub async fn discard(&mut self, link: &str, entry_ids: &[String]) -> Result<()> {
        let mut pipe = redis::pipe();
        remove_entries(pipe.atomic(), link, entry_ids)
            .query_async::<()>(&mut self.con)
            .await?;
        Ok(())
    }

    /// Moves refused entries to the link's dead-letter stream with the status and a short
    /// excerpt of why, atomically with removing them from the outbox.
    pub async fn dead_letter(
        &mut self,
        link: &str,
        refused: &[Outbound],
        status: Option<u16>,
        detail: &str,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let failed_at = Utc::now().to_rfc3339();
        let status = status.map(|s| s.to_string()).unwrap_or_default();
        for entry in refused {
            pipe.cmd("XADD")
                .arg(dlq_key(link))
                .arg("*")
                .arg(entry_fields(entry))
                .arg(&[
                    ("status", status.as_str()),
                    ("detail", detail),
                    ("failed_at", failed_at.as_str()),
                ])
                .ignore();
            remove_entries(&mut pipe, link, &[&entry.entry_id]);
        }
        pipe.query_async::<()>(&mut self.con).await?;
        Ok(())
    }

    /// Marks a link disabled (the target said it is gone); its outbox keeps filling.
    pub async fn disable(&mut self, link: &str, reason: &str) -> Result<()> {
        let _: () = self
            .con
            .hset_multiple(
                link_key(link),
                &[
                    ("disabled", reason.to_owned()),
                    ("disabled_at", Utc::now().to_rfc3339()),
                ],
            )
            .await?;
        Ok(())
    }

    /// Why the link is disabled, if it is.
    pub async fn disabled(&mut self, link: &str) -> Result<Option<String>> {
        Ok(self.con.hget(link_key(link), "disabled").await?)
    }

    /// Re-enables a disabled link; returns whether it was disabled.
    pub async fn enable(&mut self, link: &str) -> Result<bool> {
        let removed: usize = self
            .con
            .hdel(link_key(link), &["disabled", "disabled_at"])
            .await?;
        Ok(removed > 0)
    }

    /// Depth, pending, dead letters and progress of one link.
    pub async fn status(&mut self, link: &str) -> Result<LinkStatus> {
        let key = outbox_key(link);
        let (depth, dead, stats): (usize, usize, HashMap<String, String>) = redis::pipe()
            .xlen(&key)
            .xlen(dlq_key(link))
            .hgetall(link_key(link))
            .query_async(&mut self.con)
            .await?;
        let pending: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(&key)
            .arg(GROUP)
            .query_async(&mut self.con)
            .await;
        let pending = match pending {
            Ok(Value::Array(items)) => match items.first() {
                Some(Value::Int(n)) => *n as usize,
                _ => 0,
            },
            _ => 0,
        };
        Ok(LinkStatus {
            link: link.to_owned(),
            depth,
            pending,
            dead,
            delivered: stats
                .get("delivered")
                .and_then(|d| d.parse().ok())
                .unwrap_or(0),
            last_id: stats.get("last_id").cloned(),
            last_at: stats.get("last_at").cloned(),
            disabled: stats.get("disabled").cloned(),
        })
    }

    /// The oldest `count` dead letters of a link. A damaged entry comes back as an error
    /// naming it, in place, so one bad entry does not hide the others.
    pub async fn dlq_list(
        &mut self,
        link: &str,
        count: usize,
    ) -> Result<Vec<std::result::Result<DeadLetter, Damaged>>> {
        self.dlq_page(link, "-", count).await
    }

    async fn dlq_page(
        &mut self,
        link: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<std::result::Result<DeadLetter, Damaged>>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = redis::cmd("XRANGE")
            .arg(dlq_key(link))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con)
            .await?;
        Ok(parse_entries(reply)?
            .into_iter()
            .map(|(id, fields)| {
                DeadLetter::from_fields(id.clone(), fields).map_err(|e| Damaged {
                    id,
                    why: e.to_string(),
                })
            })
            .collect())
    }

    /// Puts every readable dead letter of a link back at the end of its outbox, oldest first;
    /// returns how many moved and the damaged entries left where they are.
    pub async fn dlq_replay(&mut self, link: &str) -> Result<(usize, Vec<Damaged>)> {
        let (mut moved, mut damaged) = (0, Vec::new());
        let mut start = "-".to_owned();
        loop {
            let page = self.dlq_page(link, &start, 500).await?;
            let Some(last) = page.last() else {
                return Ok((moved, damaged));
            };
            start = match last {
                Ok(dead) => format!("({}", dead.dlq_id),
                Err(damaged) => format!("({}", damaged.id),
            };
            let mut pipe = redis::pipe();
            pipe.atomic();
            for dead in page {
                let dead = match dead {
                    Ok(dead) => dead,
                    Err(bad) => {
                        damaged.push(bad);
                        continue;
                    }
                };
                pipe.cmd("XADD")
                    .arg(outbox_key(link))
                    .arg("*")
                    .arg(entry_fields(&dead.entry))
                    .ignore();
                pipe.cmd("XDEL")
                    .arg(dlq_key(link))
                    .arg(&dead.dlq_id)
                    .ignore();
                moved += 1;
            }
            pipe.query_async::<()>(&mut self.con).await?;
        }
    }

    /// Deletes every dead letter of a link; returns how many.
    pub async fn dlq_drop(&mut self, link: &str) -> Result<usize> {
        let key = dlq_key(link);
        let (count, _): (usize, ()) = redis::pipe()
            .atomic()
            .xlen(&key)
            .del(&key)
            .query_async(&mut self.con)
            .await?;
        Ok(count)
    }
}

/// What `chatbridge outbox` shows for a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub link: String,
    /// Entries not yet acknowledged (waiting or in flight).
    pub depth: usize,
    /// Entries read by a worker and not yet acknowledged (in flight, or left by a crash).
    pub pending: usize,
    /// Entries in the dead-letter stream.
    pub dead: usize,
    /// Events delivered since the stats began.
    pub delivered: u64,
    /// The event id last delivered (the link's checkpoint).
    pub last_id: Option<String>,
    pub last_at: Option<String>,
    /// Why the link is disabled, if it is.
    pub disabled: Option<String>,
}

/// A stream entry that cannot be read back as an event (only chatbridge writes these streams,
/// so this means someone else damaged it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The stream entry id.
    pub id: String,
    pub why: String,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}: {}", self.id, self.why)
    }
}

/// One dead letter: the event and why the target refused it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The entry id in the dead-letter stream.
    pub dlq_id: String,
    pub entry: Outbound,
    pub status: Option<u16>,
    pub detail: String,
    pub failed_at: String,
}

impl DeadLetter {
    fn from_fields(dlq_id: String, mut fields: HashMap<String, String>) -> Result<Self> {
        let status = fields.get("status").and_then(|s| s.parse().ok());
        let detail = fields.remove("detail").unwrap_or_default();
        let failed_at = fields.remove("failed_at").unwrap_or_default();
        let entry = outbound_from_fields(dlq_id.clone(), fields)?;
        Ok(Self {
            dlq_id,
            entry,
            status,
            detail,
            failed_at,
        })
    }
}

/// Adds to `pipe` the acknowledgement and deletion of outbox entries: once settled, an entry
/// leaves both the pending list and the stream.
fn remove_entries<'p, I: redis::ToRedisArgs>(
    pipe: &'p mut redis::Pipeline,
    link: &str,
    entry_ids: &[I],
) -> &'p mut redis::Pipeline {
    let key = outbox_key(link);
    pipe.cmd("XACK")
        .arg(&key)
        .arg(GROUP)
        .arg(entry_ids)
        .ignore()
        .cmd("XDEL")
        .arg(&key)
        .arg(entry_ids)
        .ignore()
}

fn entry_fields(entry: &Outbound) -> Vec<(&'static str, String)> {
    vec![
        ("id", entry.event_id.clone()),
        ("scope", entry.scope.channel()),
        ("kind", entry.kind.as_str().to_owned()),
        ("at", entry.enqueued_at.timestamp_millis().to_string()),
        ("payload", entry.payload.clone()),
    ]
}

/// Where a worker reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries this consumer read earlier and never acknowledged (a crash left them), with
    /// stream ids after this one (`0-0` for all).
    PendingAfter(String),
    /// Entries never read yet.
    New,
}

impl ReadFrom {
    /// Every pending entry, from the first.
    pub fn pending() -> Self {
        Self::PendingAfter("0-0".to_owned())
    }
}

/// A worker's blocking reader: it owns its own connection, because a blocking read would
/// stall every other command queued behind it on a shared one.
pub struct Reader {
    con: ConnectionManager,
    key: String,
}

impl Reader {
    pub fn new(con: ConnectionManager, link: &str) -> Self {
        Self {
            con,
            key: outbox_key(link),
        }
    }

    /// Reads up to `count` entries, waiting up to `block_ms` for new ones. Entries that fail
    /// to parse are returned as errors in place, so the caller can dead-letter them.
    pub async fn read(
        &mut self,
        from: &ReadFrom,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<std::result::Result<Outbound, (String, String)>>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(CONSUMER)
            .arg("COUNT")
            .arg(count);
        let start = match from {
            ReadFrom::New => {
                cmd.arg("BLOCK").arg(block_ms);
                ">"
            }
            ReadFrom::PendingAfter(id) => id.as_str(),
        };
        cmd.arg("STREAMS").arg(&self.key).arg(start);
        let reply: Value = cmd.query_async(&mut self.con).await?;
        let streams = match reply {
            Value::Nil => return Ok(Vec::new()),
            other => other,
        };
        let mut out = Vec::new();
        for (_, entries) in parse_streams(streams)? {
            for (id, fields) in parse_entries(entries)? {
                out.push(outbound_from_fields(id.clone(), fields).map_err(|e| (id, e.to_string())));
            }
        }
        Ok(out)
    }
}

/// `[[key, entries], …]` (RESP2) or `{key: entries}` (RESP3).
fn parse_streams(reply: Value) -> Result<Vec<(String, Value)>> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let v = kv.pop().unwrap_or(Value::Nil);
                    let k = kv.pop().unwrap_or(Value::Nil);
                    Ok((k, v))
                }
                other => Err(OutboxError::Reply(format!("{other:?}"))),
            })
            .collect::<Result<_>>()?,
        Value::Map(pairs) => pairs,
        other => return Err(OutboxError::Reply(format!("{other:?}"))),
    };
    pairs.into_iter().map(|(k, v)| Ok((text(k)?, v))).collect()
}

/// `[[id, [field, value, …]], …]`; deleted entries come back with nil fields and are skipped.
fn parse_entries(entries: Value) -> Result<Vec<(String, HashMap<String, String>)>> {
    if entries == Value::Nil {
        return Ok(Vec::new());
    }
    let Value::Array(entries) = entries else {
        return Err(OutboxError::Reply("entries are not an array".into()));
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            return Err(OutboxError::Reply("entry is not an array".into()));
        };
        if parts.len() != 2 {
            return Err(OutboxError::Reply("entry is not [id, fields]".into()));
        }
        let fields = parts.pop().unwrap_or(Value::Nil);
        let id = text(parts.pop().unwrap_or(Value::Nil))?;
        let Value::Array(flat) = fields else {
            continue;
        };
        let mut map = HashMap::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            map.insert(text(k)?, text(v)?);
        }
        out.push((id, map));
    }
    Ok(out)
}

fn text(value: Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| OutboxError::Reply("non-UTF-8 field".into()))
        }
        Value::SimpleString(s) => Ok(s),
        other => Err(OutboxError::Reply(format!("expected text, got {other:?}"))),
    }
}

fn outbound_from_fields(entry_id: String, mut f: HashMap<String, String>) -> Result<Outbound> {
    let missing = |name: &str| OutboxError::Reply(format!("outbox entry lacks `{name}`"));
    let scope = f.get("scope").ok_or_else(|| missing("scope"))?;
    let scope = Scope::from_channel(scope).ok_or_else(|| missing("valid scope"))?;
    let kind = f.get("kind").ok_or_else(|| missing("kind"))?;
    let kind = OutboundKind::parse(kind).ok_or_else(|| missing("valid kind"))?;
    let at: i64 = f.get("at").and_then(|a| a.parse().ok()).unwrap_or(0);
    let enqueued_at: DateTime<Utc> = Utc.timestamp_millis_opt(at).single().unwrap_or_default();
    Ok(Outbound {
        entry_id,
        event_id: f.remove("id").ok_or_else(|| missing("id"))?,
        scope,
        kind,
        payload: f.remove("payload").ok_or_else(|| missing("payload"))?,
        enqueued_at,
    })
}
