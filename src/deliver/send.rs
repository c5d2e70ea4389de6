//! The sender: one batch to the target, retried until it settles.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Settled, TARGET_BACKOFF_MIN, sleep_or_shutdown};
use crate::links::Target;
use crate::model::Outbound;
use crate::retry::{Backoff, Verdict};

/// Sends batches to one target, retrying until each settles. Cheap to clone, so several
/// sends can be in flight at once.
#[derive(Clone)]
pub(super) struct Sender {
    /// The link's name, for logs.
    pub(super) link: Arc<str>,
    pub(super) target: Arc<Target>,
    pub(super) shutdown: CancellationToken,
    /// The longest wait between retries of a failing target.
    pub(super) max_backoff: Duration,
}

impl Sender {
    /// Sends until the target accepts, refuses or is gone, waiting between retryable failures.
    pub(super) async fn settle(&self, batch: &[Outbound]) -> Settled {
        let mut backoff = Backoff::new(TARGET_BACKOFF_MIN, self.max_backoff);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.target.send(batch).await;
            let after = match outcome.verdict {
                Verdict::Delivered => {
                    if attempt > 1 {
                        tracing::info!(link = &*self.link, attempt, "target recovered");
                    }
                    return Settled::Delivered;
                }
                Verdict::Reject => return Settled::Refused(outcome),
                Verdict::Disable => return Settled::Gone(outcome),
                Verdict::LinkFailure { after }
                | Verdict::EventFailure { after }
                | Verdict::RateLimited { after } => after,
            };
            let wait = backoff.next(after);
            if attempt == 1 || attempt.is_power_of_two() {
                tracing::warn!(
                    link = &*self.link,
                    detail = outcome.detail,
                    attempt,
                    retry_in = ?wait,
                    "send failed, will retry"
                );
            }
            if sleep_or_shutdown(wait, &self.shutdown).await {
                return Settled::Shutdown;
            }
        }
    }
}
