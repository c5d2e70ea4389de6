//! A worker's blocking outbox reads, and parsing stream entries back into events.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use redis::Value;
use redis::aio::ConnectionManager;

use super::{CONSUMER, GROUP, OutboxError, Result, outbox_key};
use crate::model::{Outbound, OutboundKind, Scope};

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
pub(super) fn parse_entries(entries: Value) -> Result<Vec<(String, HashMap<String, String>)>> {
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

pub(super) fn outbound_from_fields(
    entry_id: String,
    mut f: HashMap<String, String>,
) -> Result<Outbound> {
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
