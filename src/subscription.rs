//! The Pub/Sub subscription, run as sessions: connect, subscribe, read until the connection
//! ends, say why it ended, reconnect with backoff (0.5 s → 30 s, reset only after a session
//! proved healthy), every sleep and connect raced against shutdown. A periodic PING detects a
//! connection that died without closing.
//!
//! Payloads nothing would mirror (a room without links, DMs when they are not mirrored) and
//! payloads over [`MAX_PAYLOAD_BYTES`] are counted and skipped before they are copied; what
//! is handed on is bounded by [`FEED_BYTES`] as well as by count.
//!
//! On reload it gets the new routes ([`Reroute`]): it widens its filter to what the running
//! and the new routes watch, subscribes to DMs if they are newly mirrored, and only then hands
//! the reroute to the intake, in order with the payloads. So every payload the intake might
//! route by the new routes comes after the reroute; the intake narrows the filter again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, interval, timeout};
use tokio_util::sync::CancellationToken;

use crate::decode::MAX_PAYLOAD_BYTES;
use crate::notify::Health;
use crate::retry::Backoff;
use crate::route::{Filter, Reroute};

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
    /// New routes (a reload): the filter already lets through what they watch.
    Reroute(Reroute),
}

/// What a session listens to.
#[derive(Clone)]
pub struct Listen {
    /// Decides which channels are worth copying; the intake narrows it after a reload.
    pub routes: Filter,
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
    mut reroutes: mpsc::Receiver<Reroute>,
    feed: mpsc::Sender<Feed>,
    health: Health,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let budget = Arc::new(Semaphore::new(FEED_BYTES));
    let mut skipped = Skipped::default();
    let mut parts = Session {
        listen: &listen,
        feed: &feed,
        budget: &budget,
        skipped: &mut skipped,
        health: &health,
        reroutes: &mut reroutes,
    };
    loop {
        let started = Instant::now();
        let end = tokio::select! {
            end = parts.run(&client) => end,
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
                let resume = Instant::now() + wait;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(resume) => break,
                        () = shutdown.cancelled() => return,
                        Some(reroute) = parts.reroutes.recv() => {
                            // The next session subscribes to what the widened filter watches.
                            if !parts.reroute(reroute).await {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What a session works with, borrowed from [`run`] for the whole task.
struct Session<'a> {
    listen: &'a Listen,
    feed: &'a mpsc::Sender<Feed>,
    budget: &'a Arc<Semaphore>,
    skipped: &'a mut Skipped,
    health: &'a Health,
    reroutes: &'a mut mpsc::Receiver<Reroute>,
}

impl Session<'_> {
    /// Widens the filter to what the running and the new routes watch and hands the reroute
    /// to the intake; false when the intake is gone.
    async fn reroute(&mut self, reroute: Reroute) -> bool {
        let widened = self.listen.routes.load().union(&reroute.routes);
        self.listen.routes.store(Arc::new(widened));
        self.feed.send(Feed::Reroute(reroute)).await.is_ok()
    }

    /// One session: connect, subscribe, forward until the connection ends.
    async fn run(&mut self, client: &redis::Client) -> End {
        let Err(end) = self.forward(client).await;
        end
    }

    /// Connects and subscribes to the rooms, to DMs if mirrored, and to the barrier channel;
    /// hands [`Feed::Subscribed`] on. Returns the sink and stream, and whether DMs are
    /// subscribed.
    async fn subscribe(&mut self, client: &redis::Client) -> Result<Subscribed, End> {
        let listen = self.listen;
        let pubsub = match timeout(crate::connect::CONNECT_TIMEOUT, client.get_async_pubsub()).await
        {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(End::Disconnected(format!("connect: {e}"))),
            Err(_) => return Err(End::Disconnected("connect: timed out".into())),
        };
        let (mut sink, stream) = pubsub.split();
        let mut patterns = vec![ROOMS];
        let dms = listen.routes.load().mirrors_dms();
        if dms {
            patterns.push(DMS);
        }
        for pattern in &patterns {
            within("psubscribe", sink.psubscribe(*pattern)).await?;
        }
        within("subscribe", sink.subscribe(&listen.barrier)).await?;
        tracing::info!(patterns = ?patterns, "subscribed");
        if self.feed.send(Feed::Subscribed).await.is_err() {
            return Err(End::Closed);
        }
        Ok(Subscribed { sink, stream, dms })
    }

    /// Forwards what the subscription receives until the session ends (the `Err`).
    async fn forward(&mut self, client: &redis::Client) -> Result<std::convert::Infallible, End> {
        let Subscribed {
            mut sink,
            mut stream,
            mut dms,
        } = self.subscribe(client).await?;
        let listen = self.listen;
        let (feed, budget, health) = (self.feed, self.budget, self.health);
        health.subscription_alive();
        let mut ping = interval(PING_EVERY);
        ping.reset();
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err(End::Disconnected("connection closed".into()));
                    };
                    let channel = message.get_channel_name();
                    let item = if channel == listen.barrier {
                        Feed::Barrier(String::from_utf8_lossy(message.get_payload_bytes()).into_owned())
                    } else {
                        if !listen.routes.load().watches_channel(channel) {
                            continue;
                        }
                        let bytes = message.get_payload_bytes();
                        if bytes.len() > MAX_PAYLOAD_BYTES {
                            self.skipped.oversized(channel, bytes.len());
                            continue;
                        }
                        // At most MAX_PAYLOAD_BYTES, far below u32::MAX; empty payloads take one.
                        let permits = u32::try_from(bytes.len().max(1)).unwrap_or(u32::MAX);
                        let Ok(share) = Arc::clone(budget).acquire_many_owned(permits).await else {
                            return Err(End::Closed);
                        };
                        Feed::Payload {
                            channel: channel.to_owned(),
                            payload: bytes.to_vec(),
                            budget: share,
                        }
                    };
                    if feed.send(item).await.is_err() {
                        return Err(End::Closed);
                    }
                    health.subscription_alive();
                }
                Some(reroute) = self.reroutes.recv() => {
                    if reroute.routes.mirrors_dms() && !dms {
                        // Before the intake switches: no DM published after it is missed.
                        within("psubscribe", sink.psubscribe(DMS)).await?;
                        tracing::info!(pattern = DMS, "now receiving direct messages");
                        dms = true;
                    }
                    if !self.reroute(reroute).await {
                        return Err(End::Closed);
                    }
                }
                _ = ping.tick() => {
                    // In subscribed mode Redis answers PING with `["pong", ""]`, not `PONG`:
                    // any answer proves the connection alive.
                    within("ping", sink.ping::<redis::Value>()).await?;
                    health.subscription_alive();
                    if dms && !listen.routes.load().mirrors_dms() {
                        // DMs are no longer mirrored (a reload): stop receiving them.
                        within("punsubscribe", sink.punsubscribe(DMS)).await?;
                        tracing::info!(pattern = DMS, "no longer receiving direct messages");
                        dms = false;
                    }
                }
            }
        }
    }
}

/// A session's subscribed connection.
struct Subscribed {
    sink: redis::aio::PubSubSink,
    stream: redis::aio::PubSubStream,
    /// Whether [`DMS`] is subscribed.
    dms: bool,
}

/// Runs one command of a session within [`PING_TIMEOUT`]; an error or no answer ends the
/// session.
async fn within<T>(
    what: &str,
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, End> {
    match timeout(PING_TIMEOUT, command).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(End::Disconnected(format!("{what}: {e}"))),
        Err(_) => Err(End::Disconnected(format!("{what}: no answer"))),
    }
}
