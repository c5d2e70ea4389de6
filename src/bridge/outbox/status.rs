//! Per-link delivery stats and the disabled flag: what `chatbridge outbox` and `chatbridge
//! status` show of a link (the failure marks they show are written by [`super::failure`]).

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use redis::{AsyncCommands, Value};

use super::failure::{FAILING_SINCE, LAST_ERROR, PAUSED_REASON, PAUSED_UNTIL};
use super::{GROUP, Outbox, Result};
use crate::redis::keys;

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
