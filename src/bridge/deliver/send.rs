//! The sender: one batch to the target, retried until it settles.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::lease::LeaseClock;
use super::{Settled, TARGET_BACKOFF_MIN, sleep_or_shutdown};
use crate::bridge::retry::{self, Backoff, GiveUpClock, Verdict};
use crate::chat::model::Outbound;
use crate::ops::notify::{Part, with_part};
use crate::platforms::{SendOutcome, Target};

/// Sends batches to one target, retrying until each settles. Cheap to clone, so several
/// sends can be in flight at once.
#[derive(Clone)]
pub(super) struct Sender {
    /// Where batches go.
    pub(super) target: Arc<Target>,
    /// Cancelled on shutdown and when the lease is lost: cuts waits between retries short (a
    /// send already on its way is let finish unless the lease runs out).
    pub(super) stop: CancellationToken,
    /// Whether the link's lease is still ours: every send is fenced by it.
    pub(super) clock: Arc<LeaseClock>,
    /// The longest wait between retries of a failing target.
    pub(super) max_backoff: Duration,
    /// How long an event may keep failing with event failures before it is given up.
    pub(super) give_up_after: Duration,
    /// The link's failure state, shared by all its sends.
    pub(super) health: Arc<Health>,
    /// The watchdog's view of the sends: busy during each attempt and while its outcome is
    /// recorded in Redis (not between retries), beating as each post goes out.
    pub(super) sending: Arc<Part>,
}

impl Sender {
    /// Sends until the target accepts, refuses or is gone, or the batch has kept failing with
    /// event failures for longer than `give_up_after`; waits between retries, honouring
    /// `Retry-After`. Link failures and rate limits are retried for as long as they last.
    /// Sends only while the lease is ours ([`LeaseClock::fenced`]).
    pub(super) async fn settle(&self, batch: &[Outbound]) -> Settled {
        let mut backoff = Backoff::new(TARGET_BACKOFF_MIN, self.max_backoff);
        let mut clock = GiveUpClock::default();
        loop {
            let attempt = self.clock.fenced(self.target.send(batch));
            let attempt = with_part(self.sending.clone(), attempt);
            let Some(outcome) = self.sending.during(attempt).await else {
                return Settled::LeaseLost;
            };
            self.health.metrics.attempt_failed(outcome.verdict);
            let Some(after) = outcome.verdict.retry_after() else {
                return self.sending.during(self.answered(batch, outcome)).await;
            };
            let now = Utc::now().timestamp_millis();
            if let Some(uncounted) = clock.failed(outcome.verdict, now) {
                let since = self
                    .sending
                    .during(self.health.event_failed(batch, now, uncounted))
                    .await;
                if retry::gives_up(since, now, self.give_up_after) {
                    let failing_for = Duration::from_millis((now - since).unsigned_abs());
                    return Settled::GaveUp(outcome, failing_for);
                }
            }
            let wait = backoff.next(after);
            self.sending
                .during(self.health.failed(&outcome, wait))
                .await;
            if sleep_or_shutdown(wait, &self.stop).await {
                return Settled::Shutdown;
            }
        }
    }

    /// A final answer: delivered, refused or gone. Either way the link is no longer failing.
    async fn answered(&self, batch: &[Outbound], outcome: SendOutcome) -> Settled {
        if outcome.verdict == Verdict::Delivered {
            self.health.delivered(batch).await;
            return Settled::Delivered;
        }
        self.health.link_works().await;
        if outcome.verdict == Verdict::Disable {
            Settled::Gone(outcome)
        } else {
            Settled::Refused(outcome)
        }
    }
}
