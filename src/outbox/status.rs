//! Per-link delivery stats, the disabled flag, and the failure state a worker keeps: whether
//! the link is failing, and since when each failing event has failed (the give-up rule).

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use redis::{AsyncCommands, Value};

use super::{GROUP, Outbox, Result};
use crate::redis::keys;

/// Link hash fields: since when the link fails as a whole, and its last error.
const FAILING_SINCE: &str = "failing_since";
const LAST_ERROR: &str = "last_error";
/// Link hash fields: until when the target asked us to wait (429), and what it answered.
const PAUSED_UNTIL: &str = "paused_until";
const PAUSED_REASON: &str = "paused_reason";
/// Prefix of the link hash fields `event_failing_since:{entry id}` → Unix milliseconds.
const EVENT_FAILING_SINCE: &str = "event_failing_since:";

/// The link hash field holding since when an outbox entry keeps failing.
pub(super) fn event_failing_field(entry_id: &str) -> String {
    format!("{EVENT_FAILING_SINCE}{entry_id}")
}

impl Outbox {
    /// Marks a link disabled (the target said it is gone); its outbox keeps filling.
    pub async fn disable(&mut self, link: &str, reason: &str) -> Result<()> {
        let _: () = self
            .con
            .hset_multiple(
                keys::link(link),
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
        Ok(self.con.hget(keys::link(link), "disabled").await?)
    }

    /// Re-enables a disabled link; returns whether it was disabled.
    pub async fn enable(&mut self, link: &str) -> Result<bool> {
        let removed: usize = self
            .con
            .hdel(keys::link(link), &["disabled", "disabled_at"])
            .await?;
        Ok(removed > 0)
    }

    /// Marks the link as failing as a whole (credentials, URL, connection): since when, and
    /// the last error, which the link has already stripped of the URL and any secret.
    pub async fn link_failing(&mut self, link: &str, since: &str, error: &str) -> Result<()> {
        let _: () = self
            .con
            .hset_multiple(
                keys::link(link),
                &[(FAILING_SINCE, since), (LAST_ERROR, error)],
            )
            .await?;
        Ok(())
    }

    /// Clears the failing mark: the link works again.
    pub async fn link_recovered(&mut self, link: &str) -> Result<()> {
        let _: () = self
            .con
            .hdel(keys::link(link), &[FAILING_SINCE, LAST_ERROR])
            .await?;
        Ok(())
    }

    /// Marks the link paused: its target rate-limits it (429) and the next try waits until
    /// `until` (RFC 3339).
    pub async fn link_paused(&mut self, link: &str, until: &str, reason: &str) -> Result<()> {
        let _: () = self
            .con
            .hset_multiple(
                keys::link(link),
                &[(PAUSED_UNTIL, until), (PAUSED_REASON, reason)],
            )
            .await?;
        Ok(())
    }

    /// Clears the paused mark: the target answered without rate-limiting.
    pub async fn link_resumed(&mut self, link: &str) -> Result<()> {
        let _: () = self
            .con
            .hdel(keys::link(link), &[PAUSED_UNTIL, PAUSED_REASON])
            .await?;
        Ok(())
    }

    /// Records since when (Unix milliseconds) each of these outbox entries keeps failing.
    pub async fn event_failing_since(&mut self, link: &str, since: &[(String, i64)]) -> Result<()> {
        if since.is_empty() {
            return Ok(());
        }
        let fields: Vec<(String, i64)> = since
            .iter()
            .map(|(id, ms)| (event_failing_field(id), *ms))
            .collect();
        let _: () = self.con.hset_multiple(keys::link(link), &fields).await?;
        Ok(())
    }

    /// Forgets the failure clocks of these outbox entries (they were delivered).
    pub async fn events_settled(&mut self, link: &str, entry_ids: &[String]) -> Result<()> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let fields: Vec<String> = entry_ids.iter().map(|id| event_failing_field(id)).collect();
        let _: () = self.con.hdel(keys::link(link), &fields).await?;
        Ok(())
    }

    /// What a starting worker resumes from: whether the link was failing, and the failure
    /// clocks of entries still in the outbox. Clocks of entries that are gone (settled by a
    /// process that stopped before it could forget them) are removed.
    pub async fn failure_state(&mut self, link: &str) -> Result<FailureState> {
        let stats: HashMap<String, String> = self.con.hgetall(keys::link(link)).await?;
        let mut clocks: HashMap<String, i64> = stats
            .iter()
            .filter_map(|(field, value)| {
                let id = field.strip_prefix(EVENT_FAILING_SINCE)?;
                Some((id.to_owned(), value.parse().ok()?))
            })
            .collect();
        let failing_since = stats.get(FAILING_SINCE).cloned();
        if clocks.is_empty() {
            return Ok(FailureState {
                failing_since,
                event_failing_since: clocks,
            });
        }
        let mut ids: Vec<String> = clocks.keys().cloned().collect();
        ids.sort();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("XRANGE").arg(keys::outbox(link)).arg(id).arg(id);
        }
        let found: Vec<Vec<Value>> = pipe.query_async(&mut self.con).await?;
        let gone: Vec<String> = ids
            .into_iter()
            .zip(found)
            .filter(|(_, entries)| entries.is_empty())
            .map(|(id, _)| id)
            .collect();
        for id in &gone {
            clocks.remove(id);
        }
        self.events_settled(link, &gone).await?;
        Ok(FailureState {
            failing_since,
            event_failing_since: clocks,
        })
    }

    /// How many events wait in a link's outbox and how long the oldest has waited, by the Redis
    /// server's clock (the clock that stamped the entry ids): one round trip.
    pub async fn queue(&mut self, link: &str) -> Result<Queue> {
        let key = keys::outbox(link);
        let (depth, oldest, time): (usize, Value, (u64, u64)) = redis::pipe()
            .xlen(&key)
            .cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("TIME")
            .query_async(&mut self.con)
            .await?;
        let now_ms = time.0 * 1000 + time.1 / 1000;
        let oldest_age = first_entry_ms(&oldest)
            .map(|stamped| Duration::from_millis(now_ms.saturating_sub(stamped)));
        Ok(Queue { depth, oldest_age })
    }

    /// Depth, pending, dead letters and progress of one link.
    pub async fn status(&mut self, link: &str) -> Result<LinkStatus> {
        let key = keys::outbox(link);
        let (depth, dead, stats): (usize, usize, HashMap<String, String>) = redis::pipe()
            .xlen(&key)
            .xlen(keys::dlq(link))
            .hgetall(keys::link(link))
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
            dropped: stats
                .get("dropped")
                .and_then(|d| d.parse().ok())
                .unwrap_or(0),
            last_id: stats.get("last_id").cloned(),
            last_at: stats.get("last_at").cloned(),
            disabled: stats.get("disabled").cloned(),
            failing_since: stats.get(FAILING_SINCE).cloned(),
            last_error: stats.get(LAST_ERROR).cloned(),
            paused_until: stats.get(PAUSED_UNTIL).cloned(),
            paused_reason: stats.get(PAUSED_REASON).cloned(),
        })
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
    /// Events dropped unsent because the outbox was over `outbox_max_len` or
    /// `outbox_max_age_secs` (a link disabled or failing for that long).
    pub dropped: u64,
    /// The event id last delivered (the link's checkpoint).
    pub last_id: Option<String>,
    pub last_at: Option<String>,
    /// Why the link is disabled, if it is.
    pub disabled: Option<String>,
    /// Since when the link fails as a whole (RFC 3339), while it does: events wait, in order.
    pub failing_since: Option<String>,
    /// The last error while it fails, without the URL or any secret.
    pub last_error: Option<String>,
    /// Until when the target asked for a pause (429, RFC 3339), while it rate-limits.
    pub paused_until: Option<String>,
    /// What it answered then (`HTTP 429 …`).
    pub paused_reason: Option<String>,
}

/// A link's queue at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// Events in the outbox (waiting or in flight).
    pub depth: usize,
    /// How long the oldest has waited; `None` when the outbox is empty.
    pub oldest_age: Option<Duration>,
}

/// The millisecond part of the first entry id of an XRANGE reply (`1700000000000-0`).
fn first_entry_ms(reply: &Value) -> Option<u64> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let Value::Array(entry) = entries.first()? else {
        return None;
    };
    let id = match entry.first()? {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?,
        Value::SimpleString(text) => text.as_str(),
        _ => return None,
    };
    id.split('-').next()?.parse().ok()
}

/// The failure state a worker resumes from after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureState {
    /// Since when the link was failing (RFC 3339), if it was when the last process stopped.
    pub failing_since: Option<String>,
    /// Outbox entry id → since when (Unix milliseconds) it keeps failing, for the give-up rule.
    pub event_failing_since: HashMap<String, i64>,
}
