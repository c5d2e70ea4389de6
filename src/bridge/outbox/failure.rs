//! The failure state a worker keeps in the link's hash, so a restarted or standby process
//! resumes it: whether the link fails as a whole or is paused by its target's rate limit, and
//! since when each failing event has failed (the give-up rule).

use std::collections::HashMap;

use redis::{AsyncCommands, Value};

use super::{Outbox, Result};
use crate::redis::keys;

/// Link hash fields: since when the link fails as a whole, and its last error.
pub(super) const FAILING_SINCE: &str = "failing_since";
pub(super) const LAST_ERROR: &str = "last_error";
/// Link hash fields: until when the target asked us to wait (429), and what it answered.
pub(super) const PAUSED_UNTIL: &str = "paused_until";
pub(super) const PAUSED_REASON: &str = "paused_reason";
/// Prefix of the link hash fields `event_failing_since:{entry id}` → Unix milliseconds.
const EVENT_FAILING_SINCE: &str = "event_failing_since:";

/// The link hash field holding since when an outbox entry keeps failing.
pub(super) fn event_failing_field(entry_id: &str) -> String {
    format!("{EVENT_FAILING_SINCE}{entry_id}")
}

impl Outbox {
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
}

/// The failure state a worker resumes from after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureState {
    /// Since when the link was failing (RFC 3339), if it was when the last process stopped.
    pub failing_since: Option<String>,
    /// Outbox entry id → since when (Unix milliseconds) it keeps failing, for the give-up rule.
    pub event_failing_since: HashMap<String, i64>,
}
