//! Intake: the one task between the subscription and the outboxes. It decodes each payload,
//! routes it, and enqueues in batches (whatever arrived together, one script call). After
//! every (re)subscribe, and every [`SWEEP_EVERY`], it runs a catch-up from history. Being one
//! task, live events and catch-up never race each other.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catchup::{CatchUp, Limits, Watched};
use crate::decode::Decoder;
use crate::model::OutboundKind;
use crate::outbox::{Enqueue, Outbox};
use crate::retry::Backoff;
use crate::route::Routes;
use crate::subscription::Feed;

/// Most events enqueued in one script call.
const BATCH: usize = 1024;
/// The safety-net catch-up period: finds messages stored but never published, or published
/// just before a subscription took effect.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The intake's state.
pub struct Intake {
    /// For history reads during catch-up.
    pub con: ConnectionManager,
    pub outbox: Outbox,
    pub routes: Routes,
    pub decoder: Decoder,
    pub limits: Limits,
    /// The de-dup window (recent ids remembered per scope).
    pub window: usize,
    /// The scopes this process has caught up before.
    pub watched: Watched,
}

impl Intake {
    /// Runs until the subscription closes its side of `feed` (it does on shutdown); whatever
    /// was received by then is still enqueued. `shutdown` only cuts Redis retries short.
    pub async fn run(mut self, mut feed: mpsc::Receiver<Feed>, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.reset();
        let mut pending: Vec<Enqueue> = Vec::with_capacity(BATCH);
        loop {
            let first = tokio::select! {
                item = feed.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
                _ = sweep.tick() => {
                    self.catch_up().await;
                    continue;
                }
            };
            let mut item = Some(first);
            while let Some(current) = item.take() {
                match current {
                    Feed::Payload { channel, payload } => {
                        if let Some(enqueue) = self.route(&channel, &payload) {
                            pending.push(enqueue);
                        }
                    }
                    Feed::Subscribed => {
                        self.flush(&mut pending, &shutdown).await;
                        self.catch_up().await;
                    }
                }
                if pending.len() < BATCH {
                    item = feed.try_recv().ok();
                }
            }
            self.flush(&mut pending, &shutdown).await;
        }
    }

    /// Decodes and routes one payload; `None` when nothing wants it.
    fn route(&mut self, channel: &str, payload: &[u8]) -> Option<Enqueue> {
        let received = self.decoder.decode(channel, payload)?;
        if !self.routes.watches(&received.scope) {
            return None;
        }
        let Some(kind) = received.event.kind() else {
            self.decoder.skip(
                "unrouted_system_line",
                channel,
                "system line that is neither join nor leave",
            );
            return None;
        };
        let kind = OutboundKind::Event(kind);
        let links = self
            .routes
            .links_for(&received.scope, kind, received.event.origin());
        if links.is_empty() {
            return None;
        }
        Some(Enqueue {
            event_id: received.dedupe_id(),
            scope: received.scope,
            kind,
            payload: received.raw,
            links,
        })
    }

    /// Enqueues what is pending, retrying Redis errors until it works or shutdown comes
    /// (messages then still sit in history, and the next start's catch-up finds them).
    async fn flush(&mut self, pending: &mut Vec<Enqueue>, shutdown: &CancellationToken) {
        if pending.is_empty() {
            return;
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.outbox.enqueue(pending, self.window).await {
                Ok(done) => {
                    if done.duplicates > 0 {
                        tracing::debug!(
                            duplicates = done.duplicates,
                            "skipped already-enqueued events"
                        );
                    }
                    pending.clear();
                    return;
                }
                Err(e) => {
                    let wait = backoff.next(None);
                    tracing::warn!(error = %e, events = pending.len(), retry_in = ?wait, "enqueue failed");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => {
                            tracing::warn!(events = pending.len(), "shutdown before enqueue: left to the next catch-up");
                            pending.clear();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// One catch-up pass; a failure is logged and left to the next pass (a reconnect or the
    /// sweep), never fatal.
    async fn catch_up(&mut self) {
        let mut pass = CatchUp {
            con: &mut self.con,
            outbox: &mut self.outbox,
            routes: &self.routes,
            decoder: &mut self.decoder,
            limits: self.limits,
            window: self.window,
            watched: &mut self.watched,
        };
        match pass.all().await {
            Ok(summary) if summary.enqueued > 0 || summary.gaps > 0 => {
                tracing::info!(
                    scopes = summary.scopes,
                    enqueued = summary.enqueued,
                    gaps = summary.gaps,
                    "caught up from history"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "catch-up failed; will try again"),
        }
    }
}
