//! Supervision of the daemon's long-running parts: the subscription, the intake, the notify
//! task and one delivery worker per link, each a named task.
//!
//! The contract every part follows: its future resolves to `()`, and only after it was told to
//! stop: the daemon's stop token is cancelled, or (for a part started with
//! [`Supervisor::spawn_stoppable`], such as a link's worker) its own token, a child of it. A
//! part that returns before that has failed, and so has a part that panics. The first failure
//! wins: it is logged naming the part, every other part is told to stop and given the grace
//! period to finish, and the daemon exits non-zero, so the service manager (systemd's
//! `Restart=on-failure`) starts it again instead of leaving a process that runs on without
//! mirroring anything.
//!
//! A reload stops single parts ([`Supervisor::stop`]): they get the same grace period, and one
//! still running after it is cut off; that is not a failure.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio::time::Instant;
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

/// A running part, as [`Supervisor::stop`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartId(Id);

/// What the supervisor knows about one running part.
struct Part {
    /// `intake`, `worker audit`: to say which one ended.
    name: String,
    /// What tells it to stop: the daemon's token, or its own child of it.
    stop: CancellationToken,
    /// To cut it off when it outlives the grace period of its own stop.
    abort: AbortHandle,
}

/// The running parts, by name, and the token that tells them all to stop.
pub struct Supervisor {
    /// The parts' tasks; dropping the supervisor aborts whatever still runs.
    tasks: JoinSet<()>,
    /// Each running task's part.
    parts: HashMap<Id, Part>,
    /// The daemon's stop token: a part that ends before its token is cancelled has failed.
    stop: CancellationToken,
}

impl Supervisor {
    /// A supervisor whose parts stop when `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            parts: HashMap::new(),
            stop,
        }
    }

    /// The token that stops every part (cancelled by [`Supervisor::shut_down`]).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts `future` as the part called `part`; it stops with the daemon.
    pub fn spawn<F>(&mut self, part: impl Into<String>, future: F) -> PartId
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.start(part.into(), stop, future)
    }

    /// Starts the part called `part` that can be stopped on its own ([`Supervisor::stop`]):
    /// `make` gets its stop token, which is also cancelled when the daemon stops.
    pub fn spawn_stoppable<F>(
        &mut self,
        part: impl Into<String>,
        make: impl FnOnce(CancellationToken) -> F,
    ) -> PartId
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.child_token();
        let future = make(stop.clone());
        self.start(part.into(), stop, future)
    }

    fn start<F>(&mut self, name: String, stop: CancellationToken, future: F) -> PartId
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let abort = self.tasks.spawn(future);
        let id = abort.id();
        self.parts.insert(id, Part { name, stop, abort });
        PartId(id)
    }

    /// Tells these parts to stop and waits until they ended, each at most `grace` (a part
    /// still running then is cut off and logged). `Err` with the first failure of any part
    /// meanwhile, these included (a panic while stopping); the daemon then stops.
    pub async fn stop(&mut self, ids: &[PartId], grace: Duration) -> Result<(), Failure> {
        let mut waiting: Vec<Id> = Vec::new();
        for PartId(id) in ids {
            if let Some(part) = self.parts.get(id) {
                part.stop.cancel();
                waiting.push(*id);
            }
        }
        let mut deadline = Some(Instant::now() + grace);
        while !waiting.is_empty() {
            let next = self.tasks.join_next_with_id();
            let ended = match deadline {
                Some(at) => match tokio::time::timeout_at(at, next).await {
                    Ok(ended) => ended,
                    Err(_) => {
                        self.cut_off(&waiting);
                        deadline = None;
                        continue;
                    }
                },
                None => next.await,
            };
            let Some(ended) = ended else {
                return Ok(());
            };
            let id = ended_id(&ended);
            waiting.retain(|w| *w != id);
            if let Some(failure) = self.failure(ended) {
                return Err(failure);
            }
        }
        Ok(())
    }

    /// Aborts the parts still running after their grace period.
    fn cut_off(&self, ids: &[Id]) {
        for id in ids {
            if let Some(part) = self.parts.get(id) {
                tracing::warn!(
                    part = part.name,
                    "grace period over: cutting it off; its unsent events stay in the outbox"
                );
                part.abort.abort();
            }
        }
    }
    /// Runs until `shutdown` completes or a part fails, whichever comes first; then
    /// [`Supervisor::shut_down`]: `Ok` after a clean shutdown, otherwise the first failure.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), Failure> {
        let failed = tokio::select! {
            () = shutdown => None,
            failure = self.first_failure() => Some(failure),
        };
        self.shut_down(failed, grace).await
    }

    /// Stops every part: logs why (`failed`, or a requested shutdown), cancels the stop token
    /// and gives the parts `grace` to finish, aborting those still running. `Ok` after a clean
    /// shutdown; otherwise the first failure (a panic while draining counts too).
    pub async fn shut_down(
        mut self,
        failed: Option<Failure>,
        grace: Duration,
    ) -> Result<(), Failure> {
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

    /// Waits for the first part to end without having been told to stop. Never completes
    /// while every part keeps running (or ends only when told to).
    pub async fn first_failure(&mut self) -> Failure {
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
            let mut cut_off: Vec<&str> = self.parts.values().map(|p| p.name.as_str()).collect();
            cut_off.sort_unstable();
            tracing::warn!(
                ?cut_off,
                "grace period over: cutting off what is still running; unsent events stay in the outbox"
            );
            self.tasks.shutdown().await;
        }
        first
    }

    /// Names how a part ended and decides whether that was a failure: ending (or being cut
    /// off) after it was told to stop is not.
    fn failure(&mut self, ended: Result<(Id, ()), JoinError>) -> Option<Failure> {
        let id = ended_id(&ended);
        let (part, told) = match self.parts.remove(&id) {
            Some(part) => (part.name, part.stop.is_cancelled()),
            None => (format!("task {id}"), self.stop.is_cancelled()),
        };
        match ended {
            Ok(_) if told => None,
            Ok(_) => Some(Failure::Returned { part }),
            Err(e) => match e.try_into_panic() {
                Ok(payload) => Some(Failure::Panicked {
                    part,
                    message: panic_message(payload.as_ref()),
                }),
                Err(_) if told => None,
                Err(_) => Some(Failure::Cancelled { part }),
            },
        }
    }
}

/// The task id of an ended task.
fn ended_id(ended: &Result<(Id, ()), JoinError>) -> Id {
    match ended {
        Ok((id, ())) => *id,
        Err(e) => e.id(),
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
    async fn a_stoppable_part_stops_alone_and_the_others_keep_running() {
        let stop = CancellationToken::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let mut parts = Supervisor::new(stop.clone());
        parts.spawn("intake", until_stopped(&stop, &finished));
        let counted = finished.clone();
        let worker = parts.spawn_stoppable("worker audit", move |own| async move {
            own.cancelled().await;
            counted.fetch_add(10, Ordering::SeqCst);
        });

        assert_eq!(parts.stop(&[worker], GRACE).await, Ok(()));
        assert_eq!(finished.load(Ordering::SeqCst), 10, "only the worker ended");
        assert!(!stop.is_cancelled());
        assert_eq!(parts.stop(&[worker], GRACE).await, Ok(()), "stopping twice");
        assert_eq!(parts.run(async {}, GRACE).await, Ok(()));
        assert_eq!(finished.load(Ordering::SeqCst), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_part_that_outlives_the_grace_period_is_cut_off_not_failed() {
        let stop = CancellationToken::new();
        let mut parts = Supervisor::new(stop.clone());
        let stuck = parts.spawn_stoppable("worker stuck", |_| never());
        let started = tokio::time::Instant::now();

        assert_eq!(parts.stop(&[stuck], GRACE).await, Ok(()));
        assert_eq!(started.elapsed(), GRACE);
        assert_eq!(parts.run(late_shutdown(), GRACE).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stoppable_part_that_returns_unasked_fails_and_so_does_one_failing_meanwhile() {
        let stop = CancellationToken::new();
        let mut parts = Supervisor::new(stop.clone());
        parts.spawn_stoppable("worker audit", |_| async {});
        assert_eq!(
            parts.run(late_shutdown(), GRACE).await,
            Err(Failure::Returned {
                part: "worker audit".into()
            })
        );

        let stop = CancellationToken::new();
        let mut parts = Supervisor::new(stop.clone());
        let slow = parts.spawn_stoppable("worker slow", |own| async move {
            own.cancelled().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        parts.spawn("subscription", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        assert_eq!(
            parts.stop(&[slow], GRACE).await,
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
