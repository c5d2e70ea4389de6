//! The Pub/Sub subscription, run as sessions: connect, subscribe, read until the connection
//! ends, say why it ended, reconnect (at once after a session that proved healthy, then with
//! backoff 0.5 s → 30 s), every sleep and connect raced against shutdown. A periodic PING
//! detects a connection that died without closing.
//!
//! Pub/Sub is at most once: what is published while no session is subscribed is gone for
//! this process. Messages are also in history, and catch-up finds them; signals (join, leave,
//! typing, read receipts) and messages that are only published are not. So every end of a
//! session that is followed by a new one is a possible gap: it is counted by reason
//! ([`crate::ops::metrics::SUBSCRIPTION_GAPS`]) and logged with how long it lasted. The reason
//! comes from how the session ended and from what Redis says before and after (`INFO`): a
//! new `run_id` means Redis restarted; more `client_output_buffer_limit_disconnections`
//! (Redis 7.2 and later) means Redis dropped a subscriber that read too slowly.
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

use crate::bridge::decode::MAX_PAYLOAD_BYTES;
use crate::bridge::retry::Backoff;
use crate::bridge::route::{Filter, Reroute};
use crate::ops::notify::Health;

/// The room pattern every session subscribes to.
pub const ROOMS: &str = crate::redis::keys::ROOM_CHANNELS;
/// The DM pattern, subscribed only when DMs are mirrored.
pub const DMS: &str = crate::redis::keys::DM_CHANNELS;
/// The most payload bytes handed to the intake and not yet processed: beyond it a flood of
/// large payloads makes this loop wait. (redis-rs keeps reading the socket meanwhile, into its
/// own unbounded queue, so Redis only ever buffers for this process when the process cannot
/// run at all: stopped, starved of CPU, or its network stalled.)
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
    Disconnected(Cause, String),
}

impl End {
    /// A failure before the session was subscribed: no gap of its own.
    fn unsubscribed(self) -> Self {
        match self {
            Self::Disconnected(_, why) => Self::Disconnected(Cause::Connect, why),
            other => other,
        }
    }
}

/// How a session's connection failed, as far as the session itself can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Never subscribed: connecting or subscribing failed (no gap of its own: one was open
    /// already, or nothing was subscribed yet).
    Connect,
    /// The server (or something between) closed the connection.
    ClosedByPeer,
    /// A command (PING, SUBSCRIBE) got no answer in time.
    NoAnswer,
    /// The connection failed with an error.
    Error,
}

/// What Redis says about itself, read as each session starts: compared with the next session's,
/// it tells why the one between ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServerFacts {
    run_id: Option<String>,
    /// `client_output_buffer_limit_disconnections` (Redis 7.2 and later).
    buffer_limit_drops: Option<u64>,
}

impl ServerFacts {
    /// Reads `INFO` on a connection of its own; nothing known when that fails (an ACL user
    /// without `INFO`, for one).
    async fn read(client: &redis::Client) -> Self {
        let info = async {
            let mut con = client.get_multiplexed_async_connection().await?;
            redis::cmd("INFO").query_async::<String>(&mut con).await
        };
        match timeout(PING_TIMEOUT, info).await {
            Ok(Ok(info)) => Self::parse(&info),
            _ => Self::default(),
        }
    }

    fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        };
        Self {
            run_id: field("run_id"),
            buffer_limit_drops: field("client_output_buffer_limit_disconnections")
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// A subscription that ended and has not been replaced yet.
struct Gap {
    since: Instant,
    cause: Cause,
    why: String,
    /// What Redis said as the session that ended started.
    before: ServerFacts,
}

impl Gap {
    /// The reason label: what the session saw, sharpened by what Redis says now.
    fn reason(&self, now: &ServerFacts) -> &'static str {
        let (before, after) = (&self.before, now);
        if before.run_id.is_some() && after.run_id.is_some() && before.run_id != after.run_id {
            return "redis_restarted";
        }
        if let (Some(before), Some(after)) = (before.buffer_limit_drops, after.buffer_limit_drops)
            && after > before
        {
            return "output_buffer_limit";
        }
        match self.cause {
            Cause::ClosedByPeer | Cause::Connect => "connection_closed",
            Cause::NoAnswer => "no_answer",
            Cause::Error => "connection_error",
        }
    }

    /// Counts and logs the gap once a new session is subscribed (at `subscribed`).
    fn closed(self, now: &ServerFacts, subscribed: Instant) {
        let reason = self.reason(now);
        let lasted = subscribed.saturating_duration_since(self.since);
        crate::ops::metrics::subscription_gap(reason, lasted);
        tracing::warn!(
            reason,
            detail = %self.why,
            lasted = ?lasted,
            "redis subscription is back after a possible gap: signals (join, leave, typing, \
             read receipts) and publish-only messages published meanwhile are lost; stored \
             messages are caught up from history"
        );
    }
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
        metrics::counter!(crate::ops::metrics::MALFORMED, "kind" => "oversized").increment(1);
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
        gap: None,
        facts: ServerFacts::default(),
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
            End::Disconnected(cause, why) => {
                let healthy = started.elapsed() >= HEALTHY_AFTER;
                if cause != Cause::Connect {
                    crate::ops::metrics::redis_reconnect();
                    parts.gap.get_or_insert_with(|| Gap {
                        since: Instant::now(),
                        cause,
                        why: why.clone(),
                        before: parts.facts.clone(),
                    });
                }
                // After a session that proved healthy, at once: every moment without a
                // subscription may lose signals. Then with backoff, should Redis be down.
                let wait = if healthy && cause != Cause::Connect {
                    backoff.reset();
                    Duration::ZERO
                } else {
                    backoff.next(None)
                };
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
    /// Open since a session ended; closed (counted, logged) when the next one is subscribed.
    gap: Option<Gap>,
    /// What Redis said as the current session started.
    facts: ServerFacts,
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
        let pubsub = match timeout(
            crate::redis::connect::CONNECT_TIMEOUT,
            client.get_async_pubsub(),
        )
        .await
        {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(End::Disconnected(Cause::Connect, format!("connect: {e}"))),
            Err(_) => {
                return Err(End::Disconnected(
                    Cause::Connect,
                    "connect: timed out".into(),
                ));
            }
        };
        let (mut sink, stream) = pubsub.split();
        let mut patterns = vec![ROOMS];
        let dms = listen.routes.load().mirrors_dms();
        if dms {
            patterns.push(DMS);
        }
        for pattern in &patterns {
            within("psubscribe", sink.psubscribe(*pattern))
                .await
                .map_err(End::unsubscribed)?;
        }
        within("subscribe", sink.subscribe(&listen.barrier))
            .await
            .map_err(End::unsubscribed)?;
        tracing::info!(patterns = ?patterns, "subscribed");
        let subscribed = Instant::now();
        // Once subscribed, so the extra round trips do not widen the gap: the baseline for
        // telling why this session will end, and why the last one did.
        let facts = ServerFacts::read(client).await;
        if let Some(gap) = self.gap.take() {
            gap.closed(&facts, subscribed);
        }
        self.facts = facts;
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
                        return Err(End::Disconnected(Cause::ClosedByPeer, "connection closed".into()));
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
        Ok(Err(e)) => Err(End::Disconnected(Cause::Error, format!("{what}: {e}"))),
        Err(_) => Err(End::Disconnected(
            Cause::NoAnswer,
            format!("{what}: no answer"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(run_id: &str, drops: Option<u64>) -> ServerFacts {
        ServerFacts {
            run_id: Some(run_id.to_owned()),
            buffer_limit_drops: drops,
        }
    }

    fn gap(cause: Cause, before: ServerFacts) -> Gap {
        Gap {
            since: Instant::now(),
            cause,
            why: String::new(),
            before,
        }
    }

    #[test]
    fn info_gives_the_run_id_and_the_output_buffer_drops() {
        let info = "# Server\r\nredis_version:7.2.4\r\nrun_id:abc123\r\n\r\n# Stats\r\n\
                    client_output_buffer_limit_disconnections:3\r\n";
        assert_eq!(ServerFacts::parse(info), facts("abc123", Some(3)));
        let old = "# Server\r\nrun_id:abc123\r\n";
        assert_eq!(ServerFacts::parse(old), facts("abc123", None));
        assert_eq!(ServerFacts::parse(""), ServerFacts::default());
    }

    #[test]
    fn a_gap_is_named_by_what_redis_says_before_what_the_session_saw() {
        let before = facts("a", Some(1));
        let closed = gap(Cause::ClosedByPeer, before.clone());
        assert_eq!(closed.reason(&facts("b", Some(0))), "redis_restarted");
        assert_eq!(closed.reason(&facts("a", Some(2))), "output_buffer_limit");
        assert_eq!(closed.reason(&facts("a", Some(1))), "connection_closed");
        assert_eq!(closed.reason(&facts("a", None)), "connection_closed");
        // Nothing known (INFO denied): only what the session saw.
        assert_eq!(closed.reason(&ServerFacts::default()), "connection_closed");
        assert_eq!(
            gap(Cause::NoAnswer, before.clone()).reason(&before),
            "no_answer"
        );
        assert_eq!(
            gap(Cause::Error, before.clone()).reason(&facts("c", None)),
            "redis_restarted"
        );
        assert_eq!(
            gap(Cause::Error, before.clone()).reason(&before),
            "connection_error"
        );
        for cause in [
            Cause::Connect,
            Cause::ClosedByPeer,
            Cause::NoAnswer,
            Cause::Error,
        ] {
            let reason = gap(cause, before.clone()).reason(&facts("z", None));
            assert!(
                crate::ops::metrics::GAP_REASONS.contains(&reason),
                "{reason}"
            );
        }
    }
}
