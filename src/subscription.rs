//! The Pub/Sub subscription, run as sessions: connect, PSUBSCRIBE, read until the connection
//! ends, say why it ended, reconnect with backoff (0.5 s → 30 s, reset only after a session
//! proved healthy), every sleep and connect raced against shutdown. A periodic PING detects a
//! connection that died without closing.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, interval, sleep, timeout};
use tokio_util::sync::CancellationToken;

/// The channel patterns every session subscribes to.
pub const PATTERNS: [&str; 2] = ["chat:room:*", "chat:dm:*"];

/// How often the session PINGs, and how long a PONG may take.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the reconnect backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the subscription hands to the intake, in order.
#[derive(Debug)]
pub enum Feed {
    /// A (re)subscription is active: whatever was published before it may have been missed,
    /// so the intake catches up from history now.
    Subscribed,
    /// One published payload.
    Payload { channel: String, payload: Vec<u8> },
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    Shutdown,
    /// The intake is gone (the daemon is stopping).
    Closed,
    Disconnected(String),
}

/// Runs sessions until shutdown.
pub async fn run(client: redis::Client, feed: mpsc::Sender<Feed>, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let end = tokio::select! {
            end = session(&client, &feed) => end,
            () = shutdown.cancelled() => End::Shutdown,
        };
        match end {
            End::Shutdown | End::Closed => return,
            End::Disconnected(why) => {
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff = BACKOFF_MIN;
                }
                tracing::warn!(reason = %why, retry_in = ?backoff, "redis subscription ended");
            }
        }
        tokio::select! {
            () = sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn session(client: &redis::Client, feed: &mpsc::Sender<Feed>) -> End {
    let pubsub = match timeout(crate::connect::CONNECT_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return End::Disconnected(format!("connect: {e}")),
        Err(_) => return End::Disconnected("connect: timed out".into()),
    };
    let (mut sink, mut stream) = pubsub.split();
    for pattern in PATTERNS {
        match timeout(PING_TIMEOUT, sink.psubscribe(pattern)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return End::Disconnected(format!("psubscribe: {e}")),
            Err(_) => return End::Disconnected("psubscribe: timed out".into()),
        }
    }
    tracing::info!(patterns = ?PATTERNS, "subscribed");
    if feed.send(Feed::Subscribed).await.is_err() {
        return End::Closed;
    }
    let mut ping = interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return End::Disconnected("connection closed".into());
                };
                let channel = message.get_channel_name().to_owned();
                let payload = message.get_payload_bytes().to_vec();
                if feed.send(Feed::Payload { channel, payload }).await.is_err() {
                    return End::Closed;
                }
            }
            _ = ping.tick() => {
                // In subscribed mode Redis answers PING with `["pong", ""]`, not `PONG`:
                // any answer proves the connection alive.
                match timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return End::Disconnected(format!("ping: {e}")),
                    Err(_) => return End::Disconnected("ping: no answer".into()),
                }
            }
        }
    }
}
