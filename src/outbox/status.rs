//! Per-link delivery stats and the disabled flag.

use std::collections::HashMap;

use chrono::Utc;
use redis::{AsyncCommands, Value};

use super::{GROUP, Outbox, Result, dlq_key, link_key, outbox_key};

impl Outbox {
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
            dropped: stats
                .get("dropped")
                .and_then(|d| d.parse().ok())
                .unwrap_or(0),
            last_id: stats.get("last_id").cloned(),
            last_at: stats.get("last_at").cloned(),
            disabled: stats.get("disabled").cloned(),
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
}
