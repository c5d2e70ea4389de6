//! Supervision of the daemon's long-running parts: the subscription, the intake and one
//! delivery worker per link, each a named task.
//!
//! The contract every part follows: its future resolves to `()`, and only after the daemon's
//! stop token is cancelled. A part that returns before that has failed, and so has a part that
//! panics. The first failure wins: it is logged naming the part, every other part is told to
//! stop and given the grace period to finish, and the daemon exits non-zero, so the service
//! manager (systemd's `Restart=on-failure`) starts it again instead of leaving a process that
//! runs on without mirroring anything.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// Why a part failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Its future completed while the daemon was running: it will never work again.
    #[error("{part} returned while chatbridge was running")]
    Returned { part: String },
    /// It panicked; `message` is the panic's text.
    #[error("{part} panicked: {message}")]
    Panicked { part: String, message: String },
    /// Its task was cancelled from outside the supervisor (the runtime shutting down).
    #[error("{part} was cancelled while chatbridge was running")]
    Cancelled { part: String },
}

impl Failure {
    /// The name of the part that failed.
    pub fn part(&self) -> &str {
        match self {
            Self::Returned { part } | Self::Panicked { part, .. } | Self::Cancelled { part } => {
                part
            }
        }
    }
}

/// The running parts, by name, and the token that tells them to stop.
pub struct Supervisor {
    /// The parts' tasks; dropping the supervisor aborts whatever still runs.
    tasks: JoinSet<()>,
    /// Each task's part name (`intake`, `worker audit`), to say which one ended.
    names: HashMap<Id, String>,
    /// The daemon's stop token: a part that ends before it is cancelled has failed.
    stop: CancellationToken,
}

impl Supervisor {
    /// A supervisor whose parts stop when `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            stop,
        }
    }

    /// Starts `future` as the part called `part`.
    pub fn spawn<F>(&mut self, part: impl Into<String>, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.tasks.spawn(future);
        self.names.insert(handle.id(), part.into());
    }

    /// Runs until `shutdown` completes or a part fails, whichever comes first; then cancels
    /// the stop token and gives the parts `grace` to finish, aborting those still running.
    /// `Ok` after a clean shutdown; otherwise the first failure (a panic while draining
    /// counts too).
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), Failure> {
        let failed = tokio::select! {
            () = shutdown => None,
            failure = self.first_failure() => Some(failure),
        };
        match &failed {
            Some(failure) => tracing::error!(
                part = failure.part(),
                "{failure}; stopping chatbridge (exit code 70, for the service manager to restart it)"
            ),
            None => tracing::info!(?grace, "shutting down: finishing in-flight sends"),
        }
        self.stop.cancel();
        let late = self.drain(grace).await;
        match failed.or(late) {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Waits for the first part to end while the stop token is not cancelled. Never
    /// completes while every part keeps running.
    async fn first_failure(&mut self) -> Failure {
        while let Some(ended) = self.tasks.join_next_with_id().await {
            if let Some(failure) = self.failure(ended) {
                return failure;
            }
        }
        std::future::pending().await
    }

    /// Waits up to `grace` for every part to end, then aborts the rest; returns the first
    /// failure among them (parts that return now are done, not failed).
    async fn drain(&mut self, grace: Duration) -> Option<Failure> {
        let mut first = None;
        let ended = tokio::time::timeout(grace, async {
            while let Some(ended) = self.tasks.join_next_with_id().await {
                if let Some(failure) = self.failure(ended) {
                    tracing::error!(part = failure.part(), "{failure} while stopping");
                    first.get_or_insert(failure);
                }
            }
        })
        .await;
        if ended.is_err() {
            let mut cut_off: Vec<&str> = self.names.values().map(String::as_str).collect();
            cut_off.sort_unstable();
            tracing::warn!(
                ?cut_off,
                "grace period over: cutting off what is still running; unsent events stay in the outbox"
            );
            self.tasks.shutdown().await;
        }
        first
    }

    /// Names how a part ended and decides whether that was a failure.
    fn failure(&mut self, ended: Result<(Id, ()), JoinError>) -> Option<Failure> {
        let id = match &ended {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let part = self
            .names
            .remove(&id)
            .unwrap_or_else(|| format!("task {id}"));
        match ended {
            Ok(_) if self.stop.is_cancelled() => None,
            Ok(_) => Some(Failure::Returned { part }),
            Err(e) => match e.try_into_panic() {
                Ok(payload) => Some(Failure::Panicked {
                    part,
                    message: panic_message(payload.as_ref()),
                }),
                Err(_) => Some(Failure::Cancelled { part }),
            },
        }
    }
}

/// The text a panic was raised with (`panic!("…")` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    /// A well-behaved part: runs until told to stop, then counts itself finished.
    fn until_stopped(
        stop: &CancellationToken,
        finished: &Arc<AtomicUsize>,
    ) -> impl Future<Output = ()> + use<> {
        let (stop, finished) = (stop.clone(), finished.clone());
        async move {
            stop.cancelled().await;
            finished.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn never() -> impl Future<Output = ()> {
        std::future::pending()
    }

    /// A shutdown that comes long after the parts under test had their chance to fail (the
    /// clock is paused, so an idle test jumps to it at once).
    fn late_shutdown() -> impl Future<Output = ()> {
        tokio::time::sleep(Duration::from_secs(3600))
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_returns_early_fails_the_run_and_the_others_are_stopped() {
        let stop = CancellationToken::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let mut parts = Supervisor::new(stop.clone());
        parts.spawn("worker audit", until_stopped(&stop, &finished));
        parts.spawn("intake", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        parts.spawn("subscription", until_stopped(&stop, &finished));

        let outcome = parts.run(late_shutdown(), GRACE).await;
        assert_eq!(
            outcome,
            Err(Failure::Returned {
                part: "intake".into()
            })
        );
        assert!(stop.is_cancelled());
        assert_eq!(
            finished.load(Ordering::SeqCst),
            2,
            "the others ran to their end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_panics_fails_the_run_with_its_message() {
        let stop = CancellationToken::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let mut parts = Supervisor::new(stop.clone());
        parts.spawn("intake", until_stopped(&stop, &finished));
        parts.spawn("worker audit", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let entries: Vec<u8> = Vec::new();
            panic!("no entry {} in a read of {}", 3, entries.len());
        });

        let outcome = parts.run(late_shutdown(), GRACE).await;
        assert_eq!(
            outcome,
            Err(Failure::Panicked {
                part: "worker audit".into(),
                message: "no entry 3 in a read of 0".into()
            })
        );
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_shutdown_where_every_part_returns_after_cancel_is_ok() {
        let stop = CancellationToken::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let mut parts = Supervisor::new(stop.clone());
        for part in ["worker a", "worker b", "subscription", "intake"] {
            parts.spawn(part, until_stopped(&stop, &finished));
        }
        let shutdown = tokio::time::sleep(Duration::from_secs(5));

        assert_eq!(parts.run(shutdown, GRACE).await, Ok(()));
        assert_eq!(finished.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_still_running_after_the_grace_period_is_cut_off() {
        let stop = CancellationToken::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let mut parts = Supervisor::new(stop.clone());
        parts.spawn("intake", until_stopped(&stop, &finished));
        parts.spawn("worker stuck", never());
        let started = tokio::time::Instant::now();

        assert_eq!(parts.run(async {}, GRACE).await, Ok(()));
        assert_eq!(
            started.elapsed(),
            GRACE,
            "waited the grace period, no longer"
        );
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_while_stopping_is_a_failure_and_the_first_failure_wins() {
        let stop = CancellationToken::new();
        let mut parts = Supervisor::new(stop.clone());
        let token = stop.clone();
        parts.spawn("worker audit", async move {
            token.cancelled().await;
            panic!("ack writer gone");
        });
        assert_eq!(
            parts.run(async {}, GRACE).await,
            Err(Failure::Panicked {
                part: "worker audit".into(),
                message: "ack writer gone".into()
            })
        );

        let stop = CancellationToken::new();
        let mut parts = Supervisor::new(stop.clone());
        let token = stop.clone();
        parts.spawn("subscription", async {});
        parts.spawn("worker audit", async move {
            token.cancelled().await;
            panic!("later");
        });
        assert_eq!(
            parts.run(late_shutdown(), GRACE).await,
            Err(Failure::Returned {
                part: "subscription".into()
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_parts_the_run_waits_for_shutdown() {
        let parts = Supervisor::new(CancellationToken::new());
        assert_eq!(parts.run(late_shutdown(), GRACE).await, Ok(()));
    }
}
