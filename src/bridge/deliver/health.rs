//! What a link's concurrent sends share about its failures: whether the link fails as a whole
//! or is paused by its target's rate limit (both kept in Redis for `chatbridge outbox` and
//! `status`), when a failure was last logged (at most once a
//! minute per link, plus one line when it recovers), and since when each failing outbox entry
//! has failed (the clocks of the give-up rule, kept in Redis so restarts cannot reset them).
//!
//! Redis is only written after failures and on the first success after them: a link that
//! works costs one uncontended lock per batch here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::bridge::outbox::{FailureState, Outbox};
use crate::bridge::retry::Verdict;
use crate::chat::model::Outbound;
use crate::ops::metrics::LinkMetrics;
use crate::platforms::SendOutcome;

/// The least time between two failure lines of one link.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// One link's failure state, shared by its sends.
pub(super) struct Health {
    /// The link's name, for keys and logs.
    link: Arc<str>,
    /// Where the failing mark and the event clocks are kept (its own clone of the handle).
    outbox: Outbox,
    /// Never held across an await.
    state: Mutex<State>,
    /// The link's delivery metrics (registered once, with the link's name as label).
    pub(super) metrics: LinkMetrics,
}

/// The part of [`Health`] that changes.
struct State {
    /// Since when the link fails as a whole (RFC 3339), while it does; mirrored in Redis.
    failing_since: Option<String>,
    /// When a failure was last logged, so the next waits a minute.
    last_logged: Option<Instant>,
    /// Failures since the last line that were not logged, counted into the next one.
    unlogged: u64,
    /// Whether a failure was logged since the last success: recovery is then logged once.
    announced: bool,
    /// Failures since the last success (for the recovery line).
    streak: u64,
    /// Outbox entry id → since when it keeps failing (Unix ms); mirrored in Redis.
    event_failing_since: HashMap<String, i64>,
    /// Whether the link may be marked paused (rate-limited) in Redis: true at start, so the
    /// first answer clears a mark a previous process left.
    paused: bool,
}

impl Health {
    pub(super) fn new(link: Arc<str>, outbox: Outbox) -> Self {
        Self {
            metrics: LinkMetrics::new(&link),
            link,
            outbox,
            state: Mutex::new(State {
                failing_since: None,
                last_logged: None,
                unlogged: 0,
                announced: false,
                streak: 0,
                event_failing_since: HashMap::new(),
                paused: true,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave this state half-updated in a way that matters.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes over what a previous process left: the failing mark (cleared by the next success)
    /// and the event clocks.
    pub(super) fn resume(&self, resumed: FailureState) {
        let mut state = self.state();
        state.failing_since = resumed.failing_since;
        state.event_failing_since = resumed.event_failing_since;
    }

    /// Notes a failed attempt that will be retried after `wait`: logs it (at most once a
    /// minute) and, for a link failure, marks the link failing with this error.
    pub(super) async fn failed(&self, outcome: &SendOutcome, wait: Duration) {
        self.metrics.retried();
        let link_failure = matches!(outcome.verdict, Verdict::LinkFailure { .. });
        let since = {
            let mut state = self.state();
            state.streak += 1;
            let since = link_failure.then(|| {
                state
                    .failing_since
                    .get_or_insert_with(|| Utc::now().to_rfc3339())
                    .clone()
            });
            self.log_failure(&mut state, outcome, wait);
            since
        };
        match since {
            Some(since) => {
                let marked = self
                    .outbox
                    .clone()
                    .link_failing(&self.link, &since, &outcome.detail)
                    .await;
                if let Err(e) = marked {
                    tracing::warn!(link = &*self.link, error = %e, "could not mark the link failing");
                }
                self.not_paused().await;
            }
            None if matches!(outcome.verdict, Verdict::RateLimited { .. }) => {
                self.not_failing().await;
                self.paused(&outcome.detail, wait).await;
            }
            None => self.link_works().await,
        }
    }

    /// Marks the link paused by its target's rate limit until `wait` from now.
    async fn paused(&self, detail: &str, wait: Duration) {
        let until = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let until = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.state().paused = true;
        if let Err(e) = self
            .outbox
            .clone()
            .link_paused(&self.link, &until, detail)
            .await
        {
            tracing::warn!(link = &*self.link, error = %e, "could not mark the link paused");
        }
    }

    /// Clears the paused mark, if set (or possibly left by a previous process).
    async fn not_paused(&self) {
        if !self.state().paused {
            return;
        }
        match self.outbox.clone().link_resumed(&self.link).await {
            Ok(()) => self.state().paused = false,
            Err(e) => {
                tracing::warn!(link = &*self.link, error = %e, "could not clear the paused mark");
            }
        }
    }

    fn log_failure(&self, state: &mut State, outcome: &SendOutcome, wait: Duration) {
        state.unlogged += 1;
        if state.last_logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        let kind = match outcome.verdict {
            Verdict::LinkFailure { .. } => "link failure",
            Verdict::RateLimited { .. } => "rate limited",
            _ => "event failure",
        };
        tracing::warn!(
            link = &*self.link,
            kind,
            detail = outcome.detail,
            failures = state.unlogged,
            failing_since = state.failing_since,
            retry_in = ?wait,
            "send failed, will retry (logged at most once a minute)"
        );
        state.last_logged = Some(Instant::now());
        state.unlogged = 0;
        state.announced = true;
    }

    /// Notes a delivered batch: the link works, the batch's clocks stop.
    pub(super) async fn delivered(&self, batch: &[Outbound]) {
        self.metrics.delivered(batch);
        let settled = {
            let mut state = self.state();
            if std::mem::take(&mut state.announced) {
                tracing::info!(
                    link = &*self.link,
                    failures = state.streak,
                    "target recovered"
                );
            }
            state.streak = 0;
            state.stop_clocks(batch)
        };
        self.link_works().await;
        if !settled.is_empty()
            && let Err(e) = self
                .outbox
                .clone()
                .events_settled(&self.link, &settled)
                .await
        {
            tracing::debug!(link = &*self.link, error = %e, "could not clear event clocks");
        }
    }

    /// Clears the failing and paused marks, if set: an answer that is neither a link failure
    /// nor a rate limit shows the link reaches its receiver again, and it takes our requests.
    pub(super) async fn link_works(&self) {
        self.not_failing().await;
        self.not_paused().await;
    }

    /// Clears the failing mark, if set.
    async fn not_failing(&self) {
        if self.state().failing_since.is_none() {
            return;
        }
        match self.outbox.clone().link_recovered(&self.link).await {
            Ok(()) => {
                self.state().failing_since = None;
            }
            Err(e) => {
                tracing::warn!(link = &*self.link, error = %e, "could not clear the failing mark");
            }
        }
    }

    /// Notes an event failure of `batch` at `now` (Unix ms), leaving out `uncounted` ms before
    /// it; returns since when the batch's oldest event keeps failing. Entries failing for the
    /// first time start their clock now; the clocks are kept in Redis.
    pub(super) async fn event_failed(&self, batch: &[Outbound], now: i64, uncounted: i64) -> i64 {
        let (oldest, changed) = {
            let mut state = self.state();
            let mut changed = Vec::with_capacity(batch.len());
            let mut oldest = now;
            for entry in batch {
                let since = match state.event_failing_since.get(&entry.entry_id) {
                    Some(&since) => (since + uncounted).min(now),
                    None => now,
                };
                if state
                    .event_failing_since
                    .insert(entry.entry_id.clone(), since)
                    != Some(since)
                {
                    changed.push((entry.entry_id.clone(), since));
                }
                oldest = oldest.min(since);
            }
            (oldest, changed)
        };
        if let Err(e) = self
            .outbox
            .clone()
            .event_failing_since(&self.link, &changed)
            .await
        {
            tracing::warn!(link = &*self.link, error = %e, "could not save event clocks");
        }
        oldest
    }

    /// Forgets the clocks of a batch that left the outbox some other way (dead letter: its
    /// Redis fields go in the same write).
    pub(super) fn forget(&self, batch: &[Outbound]) {
        self.state().stop_clocks(batch);
    }
}

impl State {
    /// Removes the batch's clocks; returns the entries that had one.
    fn stop_clocks(&mut self, batch: &[Outbound]) -> Vec<String> {
        if self.event_failing_since.is_empty() {
            return Vec::new();
        }
        batch
            .iter()
            .filter(|entry| self.event_failing_since.remove(&entry.entry_id).is_some())
            .map(|entry| entry.entry_id.clone())
            .collect()
    }
}
