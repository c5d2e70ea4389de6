//! The Pub/Sub subscription, run as sessions: connect, subscribe, read until the connection
//! ends, say why it ended, reconnect with backoff (0.5 s → 30 s, reset only after a session
//! proved healthy), every sleep and connect raced against shutdown. A periodic PING detects a
//! connection that died without closing.
//!
//! Payloads nothing would mirror (a room without links, DMs when they are not mirrored) and
//! payloads over [`MAX_PAYLOAD_BYTES`] are counted and skipped before they are copied; what
//! is handed on is bounded by [`FEED_BYTES`] as well as by count.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, interval, sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::decode::MAX_PAYLOAD_BYTES;
use crate::notify::Health;
use crate::retry::Backoff;
use crate::route::Routes;

/// The room pattern every session subscribes to.
pub const ROOMS: &str = "chat:room:*";
/// The DM pattern, subscribed only when DMs are mirrored.
pub const DMS: &str = "chat:dm:*";
/// The most payload bytes handed to the intake and not yet processed: a flood of large
/// payloads makes the subscription wait (Redis buffers, and past its limit drops the
/// connection, after which catch-up recovers) instead of growing memory.
pub const FEED_BYTES: usize = 64 * 1024 * 1024;

/// How often the session PINGs, and how long a PONG may take.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the reconnect backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often skipped payloads are logged (with their counts).
const SKIP_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the subscription hands to the intake, in order.
#[derive(Debug)]
pub enum Feed {
    /// A (re)subscription is active: whatever was published before it may have been missed,
    /// so the intake catches up from history now.
    Subscribed,
    /// One published payload, holding its share of [`FEED_BYTES`] until dropped.
    Payload {
        channel: String,
        payload: Vec<u8>,
        budget: OwnedSemaphorePermit,
    },
    /// A catch-up barrier published by this process: everything published before it has been
    /// handed on.
    Barrier(String),
}

/// What a session listens to.
#[derive(Clone)]
pub struct Listen {
    /// Decides which channels are worth copying (shared with the intake, not copied).
    pub routes: Arc<Routes>,
    /// This process's barrier channel.
    pub barrier: String,
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    Shutdown,
    /// The intake is gone (the daemon is stopping).
    Closed,
    Disconnected(String),
}

/// Payloads skipped before copying, by reason.
#[derive(Default)]
struct Skipped {
    oversized: u64,
    last_logged: Option<Instant>,
}

impl Skipped {
    fn oversized(&mut self, channel: &str, len: usize) {
        self.oversized += 1;
        metrics::counter!(crate::metrics::MALFORMED, "kind" => "oversized").increment(1);
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= SKIP_LOG_EVERY)
        {
            let channel: String = channel.chars().take(120).collect();
            tracing::warn!(
                kind = "oversized",
                channel,
                bytes = len,
                limit = MAX_PAYLOAD_BYTES,
                skipped_so_far = self.oversized,
                "skipping event (a message stays in history: catch-up dead-letters it)"
            );
            self.last_logged = Some(Instant::now());
        }
    }
}

/// Runs sessions until shutdown, reporting each session's signs of life to `health`.
pub async fn run(
    client: redis::Client,
    listen: Listen,
    feed: mpsc::Sender<Feed>,
    health: Health,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let budget = Arc::new(Semaphore::new(FEED_BYTES));
    let mut skipped = Skipped::default();
    loop {
        let started = Instant::now();
        let end = tokio::select! {
            end = session(&client, &listen, &feed, &budget, &mut skipped, &health) => end,
            () = shutdown.cancelled() => End::Shutdown,
        };
        health.subscription_ended();
        match end {
            End::Shutdown | End::Closed => return,
            End::Disconnected(why) => {
                crate::metrics::redis_reconnect();
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
                let wait = backoff.next(None);
                tracing::warn!(reason = %why, retry_in = ?wait, "redis subscription ended");
                tokio::select! {
                    () = sleep(wait) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

async fn session(
    client: &redis::Client,
    listen: &Listen,
    feed: &mpsc::Sender<Feed>,
    budget: &Arc<Semaphore>,
    skipped: &mut Skipped,
    health: &Health,
) -> End {
    let pubsub = match timeout(crate::connect::CONNECT_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return End::Disconnected(format!("connect: {e}")),
        Err(_) => return End::Disconnected("connect: timed out".into()),
    };
    let (mut sink, mut stream) = pubsub.split();
    let mut patterns = vec![ROOMS];
    if listen.routes.mirrors_dms() {
        patterns.push(DMS);
    }
    for pattern in &patterns {
        match timeout(PING_TIMEOUT, sink.psubscribe(*pattern)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return End::Disconnected(format!("psubscribe: {e}")),
            Err(_) => return End::Disconnected("psubscribe: timed out".into()),
        }
    }
    match timeout(PING_TIMEOUT, sink.subscribe(&listen.barrier)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return End::Disconnected(format!("subscribe: {e}")),
        Err(_) => return End::Disconnected("subscribe: timed out".into()),
    }
    tracing::info!(patterns = ?patterns, "subscribed");
    if feed.send(Feed::Subscribed).await.is_err() {
        return End::Closed;
    }
    health.subscription_alive();
    let mut ping = interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return End::Disconnected("connection closed".into());
                };
                let channel = message.get_channel_name();
                let item = if channel == listen.barrier {
                    Feed::Barrier(String::from_utf8_lossy(message.get_payload_bytes()).into_owned())
                } else {
                    if !listen.routes.watches_channel(channel) {
                        continue;
                    }
                    let bytes = message.get_payload_bytes();
                    if bytes.len() > MAX_PAYLOAD_BYTES {
                        skipped.oversized(channel, bytes.len());
                        continue;
                    }
                    // At most MAX_PAYLOAD_BYTES, far below u32::MAX; empty payloads take one.
                    let permits = u32::try_from(bytes.len().max(1)).unwrap_or(u32::MAX);
                    let Ok(share) = Arc::clone(budget).acquire_many_owned(permits).await else {
                        return End::Closed;
                    };
                    Feed::Payload {
                        channel: channel.to_owned(),
                        payload: bytes.to_vec(),
                        budget: share,
                    }
                };
                if feed.send(item).await.is_err() {
                    return End::Closed;
                }
                health.subscription_alive();
            }
            _ = ping.tick() => {
                // In subscribed mode Redis answers PING with `["pong", ""]`, not `PONG`:
                // any answer proves the connection alive.
                match timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => health.subscription_alive(),
                    Ok(Err(e)) => return End::Disconnected(format!("ping: {e}")),
                    Err(_) => return End::Disconnected("ping: no answer".into()),
                }
            }
        }
    }
}
