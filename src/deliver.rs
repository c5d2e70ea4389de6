//! Delivery: one worker per link reads the link's outbox in order, hands batches to the link,
//! and acknowledges an entry only after the target accepted it.
//!
//! - Retryable failures are retried with backoff (honouring `Retry-After`) without skipping
//!   ahead: per-link order holds and nothing is dropped.
//! - A refused batch is retried one event at a time, so only the event the target refuses goes
//!   to the dead-letter stream; delivery then continues.
//! - A target that says it is gone (410) disables the link, loudly; its outbox keeps filling.
//! - On start the worker first re-delivers what a crashed predecessor left pending.
//! - On shutdown an in-flight send is allowed to finish (the daemon bounds how long).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::links::{SendOutcome, Target};
use crate::model::Outbound;
use crate::outbox::{Outbox, OutboxError, ReadFrom, Reader};
use crate::retry::{Backoff, Verdict};

/// Entries fetched per outbox read.
const READ_COUNT: usize = 512;
/// How long a read waits for new entries before checking for shutdown again.
const BLOCK_MS: u64 = 1000;
/// Backoff for Redis errors (the outbox itself unreachable).
const REDIS_BACKOFF_MIN: Duration = Duration::from_millis(500);
const REDIS_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The first retry of a failing target waits about this long, doubling from there.
const TARGET_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// How often a disabled link checks whether an operator enabled it again.
const DISABLED_POLL: Duration = Duration::from_secs(2);

/// Whether the worker goes on.
enum Flow {
    Continue,
    /// The target said it is gone: the link is disabled until an operator enables it.
    Disabled,
    Stop,
}

/// How a send ended after retries.
enum Settled {
    Delivered,
    Refused(SendOutcome),
    Gone(SendOutcome),
    Shutdown,
}

/// One link's delivery loop.
pub struct Worker {
    /// The link's name, for keys and logs.
    link: String,
    target: Arc<Target>,
    /// For acks, dead letters and the disabled flag.
    outbox: Outbox,
    /// The worker's own connection for blocking reads.
    reader: Reader,
    shutdown: CancellationToken,
    /// The longest wait between retries of a failing target.
    max_backoff: Duration,
}

impl Worker {
    pub fn new(
        target: Arc<Target>,
        outbox: Outbox,
        reader: Reader,
        shutdown: CancellationToken,
        max_backoff: Duration,
    ) -> Self {
        Self {
            link: target.name().to_owned(),
            target,
            outbox,
            reader,
            shutdown,
            max_backoff,
        }
    }

    /// Delivers until shutdown. While the link is disabled it waits for `chatbridge enable`.
    pub async fn run(mut self) {
        let mut from = ReadFrom::Pending;
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        let mut enabled = false;
        while !self.shutdown.is_cancelled() {
            if !enabled {
                match self.wait_until_enabled().await {
                    Ok(true) => return,
                    Ok(false) => enabled = true,
                    Err(e) => {
                        if self.pause_after_redis_error(&e, &mut backoff).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let read = tokio::select! {
                read = self.reader.read(from, READ_COUNT, BLOCK_MS) => read,
                () = self.shutdown.cancelled() => return,
            };
            let entries = match read {
                Ok(entries) => entries,
                Err(e) => {
                    if self.pause_after_redis_error(&e, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            if entries.is_empty() {
                from = ReadFrom::New;
                continue;
            }
            let mut good = Vec::with_capacity(entries.len());
            for entry in entries {
                match entry {
                    Ok(outbound) => good.push(outbound),
                    Err((id, why)) => {
                        tracing::error!(
                            link = self.link,
                            entry = id,
                            why,
                            "unreadable outbox entry"
                        )
                    }
                }
            }
            for batch in good.chunks(self.target.batch_max().max(1)) {
                match self.deliver(batch).await {
                    Flow::Continue => {}
                    Flow::Stop => return,
                    Flow::Disabled => {
                        // What was read stays pending: re-read it once enabled again.
                        enabled = false;
                        from = ReadFrom::Pending;
                        break;
                    }
                }
            }
        }
    }

    /// Waits while the link is marked disabled; true when shutdown came first.
    async fn wait_until_enabled(&mut self) -> Result<bool, OutboxError> {
        let mut announced = false;
        while let Some(reason) = self.outbox.disabled(&self.link).await? {
            if !announced {
                tracing::error!(
                    link = self.link,
                    reason,
                    "link is DISABLED: its outbox keeps every event; run `chatbridge enable {}` once fixed",
                    self.link
                );
                announced = true;
            }
            if self.sleep(DISABLED_POLL).await {
                return Ok(true);
            }
        }
        if announced {
            tracing::info!(link = self.link, "link enabled again: resuming delivery");
        }
        Ok(false)
    }

    /// Logs a Redis error and waits before the next try; true when shutdown came first.
    async fn pause_after_redis_error(&mut self, e: &OutboxError, backoff: &mut Backoff) -> bool {
        if let OutboxError::Redis(re) = e
            && re.code() == Some("NOGROUP")
            && self.outbox.ensure_group(&self.link).await.is_ok()
        {
            return false;
        }
        let wait = backoff.next(None);
        tracing::warn!(link = self.link, error = %e, retry_in = ?wait, "outbox unavailable");
        self.sleep(wait).await
    }

    /// Sleeps unless shutdown comes first; true when it did.
    async fn sleep(&self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => false,
            () = self.shutdown.cancelled() => true,
        }
    }

    /// Delivers one batch in order: all of it, or event by event when the target refuses the
    /// batch, dead-lettering only what it refuses alone.
    async fn deliver(&mut self, batch: &[Outbound]) -> Flow {
        match self.settle(batch).await {
            Settled::Delivered => self.finish(batch, None).await,
            Settled::Refused(_) if batch.len() > 1 => {
                for single in batch.chunks(1) {
                    let flow = match self.settle(single).await {
                        Settled::Delivered => self.finish(single, None).await,
                        Settled::Refused(outcome) => self.finish(single, Some(&outcome)).await,
                        Settled::Gone(outcome) => self.disable(&outcome).await,
                        Settled::Shutdown => Flow::Stop,
                    };
                    if !matches!(flow, Flow::Continue) {
                        return flow;
                    }
                }
                Flow::Continue
            }
            Settled::Refused(outcome) => self.finish(batch, Some(&outcome)).await,
            Settled::Gone(outcome) => self.disable(&outcome).await,
            Settled::Shutdown => Flow::Stop,
        }
    }

    /// Sends until the target accepts, refuses or is gone, waiting between retryable failures.
    async fn settle(&mut self, batch: &[Outbound]) -> Settled {
        let mut backoff = Backoff::new(TARGET_BACKOFF_MIN, self.max_backoff);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.target.send(batch).await;
            let after = match outcome.verdict {
                Verdict::Delivered => {
                    if attempt > 1 {
                        tracing::info!(link = self.link, attempt, "target recovered");
                    }
                    return Settled::Delivered;
                }
                Verdict::Reject => return Settled::Refused(outcome),
                Verdict::Disable => return Settled::Gone(outcome),
                Verdict::Retry { after } => after,
            };
            let wait = backoff.next(after);
            if attempt == 1 || attempt.is_power_of_two() {
                tracing::warn!(
                    link = self.link,
                    detail = outcome.detail,
                    attempt,
                    retry_in = ?wait,
                    "send failed, will retry"
                );
            }
            if self.sleep(wait).await {
                return Settled::Shutdown;
            }
        }
    }

    /// Acknowledges a delivered batch, or dead-letters a refused one, retrying Redis errors
    /// (an unacknowledged entry is sent again after a restart, never lost).
    async fn finish(&mut self, batch: &[Outbound], refused: Option<&SendOutcome>) -> Flow {
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        loop {
            let link = self.link.clone();
            let done = match refused {
                None => self.outbox.ack(&link, batch).await,
                Some(outcome) => {
                    tracing::error!(
                        link,
                        event = batch.first().map(|o| o.event_id.as_str()),
                        detail = outcome.detail,
                        "target refused the event: moved to the dead-letter stream"
                    );
                    self.outbox
                        .dead_letter(&link, batch, outcome.status, &outcome.detail)
                        .await
                }
            };
            match done {
                Ok(()) => return Flow::Continue,
                Err(e) => {
                    if self.pause_after_redis_error(&e, &mut backoff).await {
                        return Flow::Stop;
                    }
                }
            }
        }
    }

    async fn disable(&mut self, outcome: &SendOutcome) -> Flow {
        let link = self.link.clone();
        tracing::error!(
            link,
            detail = outcome.detail,
            "target is gone: DISABLING the link"
        );
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        while let Err(e) = self.outbox.disable(&link, &outcome.detail).await {
            if self.pause_after_redis_error(&e, &mut backoff).await {
                return Flow::Stop;
            }
        }
        Flow::Disabled
    }
}
