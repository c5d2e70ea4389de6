//! Delivery: one worker per link reads the link's outbox, hands batches to the link, and
//! acknowledges an entry only after the target accepted it.
//!
//! - Retryable failures are retried with backoff (honouring `Retry-After`) without skipping
//!   ahead: per-link order holds and nothing is dropped.
//! - A refused batch is retried one event at a time, so only the event the target refuses goes
//!   to the dead-letter stream; delivery then continues.
//! - A target that says it is gone (410) disables the link, loudly; its outbox keeps filling
//!   until an operator runs `chatbridge enable`.
//! - On start the worker first re-delivers what a crashed predecessor left pending.
//! - Links with `max_in_flight > 1` send that many batches at once (order is then not kept);
//!   each is still acknowledged only after its own 2xx.
//! - Acknowledgements are gathered and written per [`ACK_EVERY`] events (and at the end of
//!   each read), so an ordered link does not pay a Redis round trip per event. A crash before
//!   that write only means those events are delivered again (at least once).
//! - On shutdown in-flight sends are allowed to finish (the daemon bounds how long).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::links::{SendOutcome, Target};
use crate::model::Outbound;
use crate::outbox::{Outbox, OutboxError, ReadFrom, Reader};
use crate::retry::{Backoff, Verdict};

/// Entries fetched per outbox read.
const READ_COUNT: usize = 512;
/// Delivered entries gathered before their acknowledgement is written (and at the end of
/// every read): bounds what a crash makes us send twice.
const ACK_EVERY: usize = 64;
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

/// Sends batches to one target, retrying until each settles. Cheap to clone, so several
/// sends can be in flight at once.
#[derive(Clone)]
struct Sender {
    /// The link's name, for logs.
    link: Arc<str>,
    target: Arc<Target>,
    shutdown: CancellationToken,
    /// The longest wait between retries of a failing target.
    max_backoff: Duration,
}

impl Sender {
    /// Sends until the target accepts, refuses or is gone, waiting between retryable failures.
    async fn settle(&self, batch: &[Outbound]) -> Settled {
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
                Verdict::Retry { after } => after,
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

/// Sleeps unless shutdown comes first; true when it did.
async fn sleep_or_shutdown(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = shutdown.cancelled() => true,
    }
}

/// One link's delivery loop.
pub struct Worker {
    /// The link's name, for keys and logs.
    link: String,
    sender: Sender,
    /// For acks, dead letters and the disabled flag.
    outbox: Outbox,
    /// The worker's own connection for blocking reads.
    reader: Reader,
    /// Delivered entries whose acknowledgement is not yet written.
    delivered: Vec<Outbound>,
}

impl Worker {
    pub fn new(
        target: Arc<Target>,
        outbox: Outbox,
        reader: Reader,
        shutdown: CancellationToken,
        max_backoff: Duration,
    ) -> Self {
        let link = target.name().to_owned();
        Self {
            sender: Sender {
                link: link.as_str().into(),
                target,
                shutdown,
                max_backoff,
            },
            link,
            outbox,
            reader,
            delivered: Vec::new(),
        }
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.sender.shutdown
    }

    /// Delivers until shutdown. While the link is disabled it waits for `chatbridge enable`.
    pub async fn run(mut self) {
        let mut from = ReadFrom::Pending;
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        let mut enabled = false;
        while !self.shutdown().is_cancelled() {
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
            let shutdown = self.shutdown().clone();
            let read = tokio::select! {
                read = self.reader.read(from, READ_COUNT, BLOCK_MS) => read,
                () = shutdown.cancelled() => return,
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
            let entries = self.drop_unreadable(entries).await;
            let flow = self.deliver_all(&entries).await;
            let acked = self.write_acks().await;
            match (flow, acked) {
                (Flow::Stop, _) | (_, false) => return,
                (Flow::Disabled, true) => {
                    // What was read and not delivered stays pending: re-read it once enabled.
                    enabled = false;
                    from = ReadFrom::Pending;
                }
                (Flow::Continue, true) => {}
            }
        }
    }

    /// Entries that cannot be parsed (only chatbridge writes outboxes, so this means damage)
    /// are logged and removed, so they do not come back after every restart.
    async fn drop_unreadable(
        &mut self,
        entries: Vec<Result<Outbound, (String, String)>>,
    ) -> Vec<Outbound> {
        let mut good = Vec::with_capacity(entries.len());
        let mut bad = Vec::new();
        for entry in entries {
            match entry {
                Ok(outbound) => good.push(outbound),
                Err((id, why)) => {
                    tracing::error!(
                        link = self.link,
                        entry = id,
                        why,
                        "dropping unreadable outbox entry"
                    );
                    bad.push(id);
                }
            }
        }
        if !bad.is_empty()
            && let Err(e) = self.outbox.discard(&self.link, &bad).await
        {
            tracing::warn!(link = self.link, error = %e, "could not drop unreadable entries");
        }
        good
    }

    /// Delivers what one read returned: batch after batch in order, or up to
    /// `max_in_flight` batches at once.
    async fn deliver_all(&mut self, entries: &[Outbound]) -> Flow {
        let size = self.sender.target.batch_max().max(1);
        let parallel = self.sender.target.max_in_flight().max(1);
        if parallel == 1 {
            for batch in entries.chunks(size) {
                let settled = self.sender.settle(batch).await;
                let flow = self.settled(batch, settled).await;
                if !matches!(flow, Flow::Continue) {
                    return flow;
                }
            }
            return Flow::Continue;
        }
        let sender = self.sender.clone();
        // Owned batches: the sends run concurrently, detached from `entries`' lifetime.
        let batches: Vec<Vec<Outbound>> = entries.chunks(size).map(<[_]>::to_vec).collect();
        let mut sends = futures_util::stream::iter(batches)
            .map(move |batch| {
                let sender = sender.clone();
                async move {
                    let settled = sender.settle(&batch).await;
                    (batch, settled)
                }
            })
            .buffer_unordered(parallel);
        let mut outcome = Flow::Continue;
        while let Some((batch, settled)) = sends.next().await {
            match self.settled(&batch, settled).await {
                Flow::Continue => {}
                // Let the sends already in flight finish and be recorded.
                other => outcome = other,
            }
        }
        outcome
    }

    /// Records how a batch settled: gathers it for acknowledgement, or splits a refused batch
    /// into single events, dead-letters a refused event, or disables the link.
    async fn settled(&mut self, batch: &[Outbound], settled: Settled) -> Flow {
        match settled {
            Settled::Delivered => self.gather(batch).await,
            Settled::Refused(_) if batch.len() > 1 => {
                for single in batch.chunks(1) {
                    let flow = match self.sender.settle(single).await {
                        Settled::Delivered => self.gather(single).await,
                        Settled::Refused(outcome) => self.dead_letter(single, &outcome).await,
                        Settled::Gone(outcome) => self.disable(&outcome).await,
                        Settled::Shutdown => Flow::Stop,
                    };
                    if !matches!(flow, Flow::Continue) {
                        return flow;
                    }
                }
                Flow::Continue
            }
            Settled::Refused(outcome) => self.dead_letter(batch, &outcome).await,
            Settled::Gone(outcome) => self.disable(&outcome).await,
            Settled::Shutdown => Flow::Stop,
        }
    }

    /// Gathers a delivered batch for acknowledgement, writing once [`ACK_EVERY`] are gathered.
    async fn gather(&mut self, batch: &[Outbound]) -> Flow {
        self.delivered.extend_from_slice(batch);
        if self.delivered.len() >= ACK_EVERY && !self.write_acks().await {
            return Flow::Stop;
        }
        Flow::Continue
    }

    /// Writes the gathered acknowledgements, retrying Redis errors; false when shutdown came
    /// first (the entries are then delivered again after a restart, never lost).
    async fn write_acks(&mut self) -> bool {
        if self.delivered.is_empty() {
            return true;
        }
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        loop {
            match self.outbox.ack(&self.link, &self.delivered).await {
                Ok(()) => {
                    self.delivered.clear();
                    return true;
                }
                Err(e) => {
                    if self.pause_after_redis_error(&e, &mut backoff).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Moves a refused event to the dead-letter stream, retrying Redis errors.
    async fn dead_letter(&mut self, batch: &[Outbound], outcome: &SendOutcome) -> Flow {
        tracing::error!(
            link = self.link,
            event = batch.first().map(|o| o.event_id.as_str()),
            detail = outcome.detail,
            "target refused the event: moved to the dead-letter stream"
        );
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        loop {
            let done = self
                .outbox
                .dead_letter(&self.link, batch, outcome.status, &outcome.detail)
                .await;
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
        tracing::error!(
            link = self.link,
            detail = outcome.detail,
            "target is gone: DISABLING the link"
        );
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        while let Err(e) = self.outbox.disable(&self.link, &outcome.detail).await {
            if self.pause_after_redis_error(&e, &mut backoff).await {
                return Flow::Stop;
            }
        }
        Flow::Disabled
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
            if sleep_or_shutdown(DISABLED_POLL, self.shutdown()).await {
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
        sleep_or_shutdown(wait, self.shutdown()).await
    }
}
