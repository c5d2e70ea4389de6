//! Delivery: one worker per link reads the link's outbox, hands batches to the link, and
//! acknowledges an entry only after the target accepted it.
//!
//! - Failures are retried in place with backoff (honouring `Retry-After`) without skipping
//!   ahead: per-link order holds and nothing is dropped. A failing link (401, 404, connection
//!   refused, … see [`crate::bridge::retry`]) and rate limits (429) are retried for as long as they
//!   last; the link is shown failing meanwhile. An event that keeps failing with event failures
//!   (5xx, 408, timeouts) for longer than `give_up_after` is given up: dead-lettered with its
//!   last error, so one poison event cannot block an ordered link forever.
//! - A refused or given-up batch is retried one event at a time, so only the events at fault
//!   go to the dead-letter stream; delivery then continues.
//! - A target that says it is gone (410) disables the link, loudly; its outbox keeps filling
//!   until an operator runs `chatbridge enable`.
//! - On start the worker first re-delivers what a crashed predecessor left pending.
//! - Links with `max_in_flight > 1` send that many batches at once (order is then not kept);
//!   each is still acknowledged only after its own 2xx.
//! - On shutdown in-flight sends are allowed to finish (the daemon bounds how long), their
//!   acknowledgements are written, then the link's lease is released.
//!
//! At most one process delivers a link at a time: the worker holds the link's lease
//! ([`lease`]) while it delivers. Without it, the worker waits as a hot standby; when it
//! loses the lease (it could not renew in time), it stops sending at once and waits again.
//!
//! Redis stays off the send path: a fetch task reads the outbox ahead of the sender (a few reads
//! buffered) and an ack task writes acknowledgements behind it, coalesced. Both buffers are
//! bounded: the fetch task waits when the sender is behind, the sender when the ack task is.
//! A crash before an acknowledgement is written only means that event is delivered again (at
//! least once).
//!
//! Files: this one (the worker's loop: lease, disabled, the tasks around a session),
//! `session.rs` (one session: fetch task, sending in order or in parallel), `fetch.rs`, `send.rs`,
//! `acks.rs`, `outcome.rs` (what a settled batch leads to: ack, failure record, dead letter,
//! disable), `health.rs` (the link's failure state), `lease.rs`, `identity.rs`.
//!
//! A worker returns only on shutdown, or when one of its tasks failed (panicked or ended on its
//! own): it then logs which, and returns at once rather than go on half-working; the daemon
//! treats a worker that returns before shutdown as failed.

mod acks;
mod fetch;
mod health;
mod lease;
mod outcome;
mod send;
mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::bridge::outbox::{Outbox, OutboxError, Reader};
use crate::bridge::retry::Backoff;
use crate::ops::notify::Part;
use crate::platforms::{SendOutcome, Target};

pub use crate::redis::identity::Identity;
use acks::{Ack, acknowledge};
use health::Health;
use lease::{Lease, Tenure};
use send::Sender;

/// Entries fetched per outbox read.
const READ_COUNT: usize = 512;
/// Reads the fetch task may hold ready ahead of the sender.
const PREFETCH: usize = 4;
/// Delivered batches the ack task may be behind by before the sender waits for it.
const ACK_BACKLOG: usize = 1024;
/// After a failure, how long the ack task may take to write what it still holds.
const ACK_DRAIN_ON_FAILURE: Duration = Duration::from_secs(2);
/// The longest a read waits for new entries before checking for shutdown again (shorter
/// with a short lease: [`lease::ReadFence`]).
const BLOCK_MS: u64 = 1000;
/// Backoff for Redis errors (the outbox itself unreachable).
const REDIS_BACKOFF_MIN: Duration = Duration::from_millis(500);
const REDIS_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The first retry of a failing target waits about this long, doubling from there.
const TARGET_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// How often a disabled link checks whether an operator enabled it again.
const DISABLED_POLL: Duration = Duration::from_secs(2);
/// The watchdog's allowance, beyond the link's request deadline (`timeout_secs`), for one
/// send attempt to make progress (a post going out): a Discord bucket waited inline (at most
/// 5 s), Slack's per-channel pacing, recording a Slack post's `ts` in Redis (a command,
/// 5 s), scheduling. Waits between retries are not part of an attempt.
const SEND_MARGIN: Duration = Duration::from_secs(15);
/// The watchdog's bound for one Redis step of a worker: a command's response timeout (5 s,
/// plus up to 2 s of blocking for reads), one reconnect (3 s) and retry, and some margin.
const REDIS_STEP: Duration = Duration::from_secs(20);

/// Whether the worker goes on.
enum Flow {
    Continue,
    /// The target said it is gone: the link is disabled until an operator enables it.
    Disabled,
    /// Shutdown, or the lease is no longer ours.
    Stop,
    /// A task of the worker failed (already logged): the worker ends now.
    Failed,
}

/// How a send ended after retries.
enum Settled {
    Delivered,
    Refused(SendOutcome),
    /// Kept failing with event failures for this long (beyond `give_up_after`); the last one.
    GaveUp(SendOutcome, Duration),
    Gone(SendOutcome),
    Shutdown,
    /// The lease ran out before the target answered: the batch stays pending for the next
    /// holder.
    LeaseLost,
}

/// Sleeps unless shutdown comes first; true when it did.
async fn sleep_or_shutdown(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = shutdown.cancelled() => true,
    }
}

/// Logs a Redis error and waits before the next try (recreating the consumer group when Redis
/// lost it); true when shutdown came first.
async fn pause_after_redis_error(
    link: &str,
    outbox: &mut Outbox,
    e: &OutboxError,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> bool {
    if let OutboxError::Redis(re) = e
        && re.code() == Some("NOGROUP")
        && outbox.ensure_group(link).await.is_ok()
    {
        return false;
    }
    let wait = backoff.next(None);
    tracing::warn!(link, error = %e, retry_in = ?wait, "outbox unavailable");
    sleep_or_shutdown(wait, shutdown).await
}

/// One link's delivery loop.
pub struct Worker {
    /// The link's name, for keys and logs.
    link: String,
    /// The daemon's shutdown (the sender's `stop` also fires when the lease is lost).
    shutdown: CancellationToken,
    /// Which process may deliver this link.
    lease: Lease,
    /// Sends batches until they settle; cloned into each concurrent send.
    sender: Sender,
    /// For dead letters and the disabled flag (each task has its own clone).
    outbox: Outbox,
    /// The connection for blocking reads, lent to each session's fetch task.
    reader: Option<Reader>,
    /// To the ack task; bounded, so a slow Redis holds the sender back instead of piling up.
    acks: mpsc::Sender<Ack>,
    /// The ack task's end of `acks`, until `run` starts it.
    pending_acks: Option<mpsc::Receiver<Ack>>,
    /// The worker's watched parts (see [`crate::ops::notify::Part`]): the worker's and the lease's
    /// Redis calls, the fetch task's reads, the ack task's writes (sending is the sender's).
    redis: Arc<Part>,
    reading: Arc<Part>,
    writing: Arc<Part>,
}

impl Worker {
    /// A worker for `target`'s outbox that delivers while this process (`me`) holds the
    /// link's lease: retries wait at most `max_backoff`, and an event that keeps failing with
    /// event failures for longer than `give_up_after` is dead-lettered. Its parts are watched
    /// in `health` for as long as it runs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: Arc<Target>,
        outbox: Outbox,
        reader: Reader,
        shutdown: CancellationToken,
        max_backoff: Duration,
        give_up_after: Duration,
        me: Identity,
        health: &crate::ops::notify::Health,
    ) -> Self {
        let link = target.name().to_owned();
        let (acks, pending_acks) = mpsc::channel(ACK_BACKLOG);
        let redis = health.watch_part(&link, "redis call", REDIS_STEP);
        let lease = Lease::new(&link, me, outbox.clone(), redis.clone());
        let sending = health.watch_part(&link, "sending", target.request_timeout() + SEND_MARGIN);
        Self {
            reading: health.watch_part(&link, "outbox read", REDIS_STEP),
            writing: health.watch_part(&link, "acknowledgement write", REDIS_STEP),
            redis,
            sender: Sender {
                sending,
                target,
                stop: shutdown.child_token(),
                clock: lease.clock.clone(),
                max_backoff,
                give_up_after,
                health: Arc::new(Health::new(link.as_str().into(), outbox.clone())),
            },
            shutdown,
            lease,
            link,
            outbox,
            reader: Some(reader),
            acks,
            pending_acks: Some(pending_acks),
        }
    }

    /// Cancelled on shutdown and when the lease is lost: time to stop delivering.
    fn stop(&self) -> &CancellationToken {
        &self.sender.stop
    }

    /// Delivers until shutdown, then waits for the acknowledgements to be written. While the
    /// link is disabled it waits for `chatbridge enable`. Returns early only when one of its
    /// tasks failed, after logging which.
    pub async fn run(mut self) {
        let link = self.link.clone();
        let shutdown = self.shutdown.clone();
        let Some(pending) = self.pending_acks.take() else {
            tracing::error!(link, "delivery worker started twice");
            return;
        };
        // Dropping the set aborts the ack task: it cannot outlive the worker.
        let mut acker = JoinSet::new();
        acker.spawn(acknowledge(
            link.clone(),
            self.outbox.clone(),
            pending,
            shutdown.clone(),
            self.writing.clone(),
        ));
        let flow = {
            let delivery = self.deliver_until_stopped();
            tokio::pin!(delivery);
            tokio::select! {
                flow = &mut delivery => flow,
                ended = acker.join_next() => {
                    if !shutdown.is_cancelled() {
                        part_failed(&link, "acknowledgement writer", ended.map(|e| e.err()));
                        return;
                    }
                    // Shutdown cut a failing Redis short: let the sends in flight finish.
                    delivery.await
                }
            }
        };
        drop(self);
        let drained = match flow {
            Flow::Failed => tokio::time::timeout(ACK_DRAIN_ON_FAILURE, acker.join_next()).await,
            _ => Ok(acker.join_next().await),
        };
        if let Ok(Some(Err(e))) = drained {
            part_failed(&link, "acknowledgement writer", Some(Some(e)));
        }
        if matches!(flow, Flow::Failed) {
            tracing::error!(
                link,
                "delivery worker stopped after a failure; undelivered events stay in the outbox"
            );
        }
    }

    /// Waits for the lease, delivers while it holds it, and waits again when it loses it;
    /// until shutdown or a failure.
    async fn deliver_until_stopped(&mut self) -> Flow {
        while !self.shutdown.is_cancelled() {
            let Some(tenure) = self.lease.acquire(&self.shutdown).await else {
                return Flow::Stop;
            };
            let flow = self.hold(tenure).await;
            if matches!(flow, Flow::Failed) {
                return flow;
            }
        }
        Flow::Stop
    }

    /// Delivers while `tenure` lasts, renewing it; then writes the acknowledgements of what
    /// was delivered and gives the lease back (if still ours), so a standby takes over at once.
    async fn hold(&mut self, tenure: Tenure) -> Flow {
        let lost = self.shutdown.child_token();
        self.sender.stop = lost.clone();
        let done = CancellationToken::new();
        // Dropping the set aborts the renewal task: it cannot outlive the tenure.
        let mut keeper = JoinSet::new();
        keeper.spawn(self.lease.keeper(&tenure, lost, done.clone()));
        let flow = self.deliver_while_held().await;
        let flow = match flow {
            Flow::Failed => flow,
            _ => self.flush_acks().await.unwrap_or(flow),
        };
        done.cancel();
        let _ = keeper.join_next().await;
        self.lease.release(tenure).await;
        flow
    }

    /// Waits until the ack task wrote everything handed to it; `Some(flow)` when it is gone.
    async fn flush_acks(&self) -> Option<Flow> {
        let (done, written) = oneshot::channel();
        if self.acks.send(Ack::Flush(done)).await.is_err() || written.await.is_err() {
            return Some(self.ack_task_gone());
        }
        None
    }

    /// Runs sessions until shutdown, the lease is lost or a failure, waiting while the link
    /// is disabled.
    async fn deliver_while_held(&mut self) -> Flow {
        while !self.stop().is_cancelled() {
            match self.ready_to_deliver().await {
                Ok(true) => return Flow::Stop,
                Ok(false) => {}
                Err(e) => {
                    let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
                    let stop = self.stop().clone();
                    let link = self.link.clone();
                    if pause_after_redis_error(&link, &mut self.outbox, &e, &mut backoff, &stop)
                        .await
                    {
                        return Flow::Stop;
                    }
                    continue;
                }
            }
            match self.session().await {
                Flow::Continue | Flow::Disabled => {}
                stopped @ (Flow::Stop | Flow::Failed) => return stopped,
            }
        }
        Flow::Stop
    }

    /// Waits while the link is disabled, then takes over the failure state a previous process
    /// (or session) left; true when shutdown came first.
    async fn ready_to_deliver(&mut self) -> Result<bool, OutboxError> {
        if self.wait_until_enabled().await? {
            return Ok(true);
        }
        let state = self
            .redis
            .during(self.outbox.failure_state(&self.link))
            .await?;
        self.sender.health.resume(state);
        Ok(false)
    }

    /// Waits while the link is marked disabled; true when shutdown came first.
    async fn wait_until_enabled(&mut self) -> Result<bool, OutboxError> {
        let mut announced = false;
        while let Some(reason) = self.redis.during(self.outbox.disabled(&self.link)).await? {
            if !announced {
                tracing::error!(
                    link = self.link,
                    reason,
                    "link is DISABLED: its outbox keeps every event; run `chatbridge enable {}` once fixed",
                    self.link
                );
                announced = true;
            }
            if sleep_or_shutdown(DISABLED_POLL, self.stop()).await {
                return Ok(true);
            }
        }
        if announced {
            tracing::info!(link = self.link, "link enabled again: resuming delivery");
        }
        Ok(false)
    }
}

/// Logs that a part of a link's worker ended before shutdown: `ended` is `None` when the task
/// is missing, `Some(None)` when it returned on its own, `Some(Some(e))` when it panicked or
/// was cancelled.
fn part_failed(link: &str, part: &str, ended: Option<Option<JoinError>>) {
    match ended {
        Some(Some(e)) => tracing::error!(link, part, error = %e, "delivery worker task failed"),
        Some(None) | None => {
            tracing::error!(link, part, "delivery worker task ended unexpectedly");
        }
    }
}
