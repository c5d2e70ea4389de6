//! Discord inbound through the Gateway: a Discord link with `bot_token` + `channel_id` brings
//! that channel's messages into its room, without a public URL (Discord has no webhook for
//! channel messages).
//!
//! One connection per bot token, held by one process per deployment (a Redis lease, as Socket
//! Mode does). The websocket protocol is `twilight-gateway`'s: HELLO, IDENTIFY with intents
//! `GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT` (+ `GUILD_MEMBERS` when a link mirrors joins),
//! heartbeats, RESUME after a dropped connection (Discord replays what was missed), and a new
//! IDENTIFY only when the session is invalid.
//!
//! A reader task polls the shard without pause (so heartbeats are never late) and queues each
//! dispatch; the processor writes them in order:
//! - `MESSAGE_CREATE` in a mapped channel → the seed message in the room, through the one
//!   atomic inbound write (`external_id` = the message id, which is also the de-dup key;
//!   `origin` = the link). Posts of our own webhooks, of our bot, and of other bots and
//!   webhooks (unless `inbound_bots`) are dropped.
//! - The newest message id seen per channel is kept in Redis
//!   (`chatbridge:discord:last:{channel}`), and in memory for a Redis that restarts empty.
//!   Every READY (a new session: at first start, or after a RESUME failed) first fetches each channel's messages after that id over REST (`GET
//!   /channels/{id}/messages?after=`, following Discord's rate-limit headers and 429s), so
//!   what was sent while no session was open is written, oldest first, before anything newer.
//!   A channel seen for the first time starts from now.
//! - `GUILD_MEMBER_ADD` / `GUILD_MEMBER_REMOVE` (with `inbound_joins`) → join and leave lines
//!   in the rooms of that server's mapped channels.
//!
//! The session (id, resume URL, last sequence written) is saved in Redis, so the next holder
//! (after a restart, a crash or a takeover) RESUMEs it and Discord replays the gap; only when
//! Discord refuses does a new IDENTIFY and the REST catch-up follow.
//!
//! A write Redis refuses is retried until it succeeds: queued dispatches wait in memory, and a
//! crash loses nothing either: the saved sequence and the last id seen only ever name what
//! was written.
//!
//! The parts: this file holds the connection (lease, shard after shard, the shared Redis and
//! REST helpers); [`session`] reads and processes the shard's dispatches and saves the
//! session; [`catchup`] fetches what a new session missed over REST; [`events`] maps Discord
//! messages and member events to chat events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use twilight_gateway::Intents;

use crate::bridge::retry::Backoff;
use crate::config::Config;
use crate::inbound::lease::Leased;
use crate::inbound::{Inbound, Shared, Write, Written};
use crate::platforms::discord::Limits;
use crate::platforms::discord::config::{DiscordTarget, GatewaySettings};

mod catchup;
mod events;
mod session;

/// The metric's `route` label.
const ROUTE: &str = "discord_gateway";

/// One Gateway connection (one bot token) and the channels it reads.
pub struct Gateway {
    settings: GatewaySettings,
    /// `[delivery] lease_secs`.
    ttl: Duration,
    /// The inbound settings in force: the channel → room mapping follows reloads.
    inbound: Shared,
    con: ConnectionManager,
    http: reqwest::Client,
    /// The newest message id handled per channel, in this process: where the catch-up starts
    /// when Redis lost `chatbridge:discord:last:{channel}` (restarted without persistence).
    seen: std::sync::Mutex<BTreeMap<String, String>>,
    /// This process's Discord-wide limits, shared with the Discord links.
    limits: Limits,
}

impl crate::platforms::source::Source for Gateway {
    fn task(&self) -> &'static str {
        "discord gateway"
    }

    fn run(
        self: Box<Self>,
        stop: CancellationToken,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(Gateway::run(*self, stop))
    }
}

/// The field of `chatbridge:inbound:state` where the connection for bot token `key` (its
/// fingerprint) reports its state.
pub(crate) fn state_field(key: &str) -> String {
    format!("discord-gateway:{key}")
}

/// The Gateway connections `config` asks for.
pub fn from_config(
    config: &Config,
    inbound: &Shared,
    con: &ConnectionManager,
    http: &reqwest::Client,
    limits: &Limits,
) -> Vec<Gateway> {
    super::channels::gateways(&config.links, None)
        .into_iter()
        .map(|settings| Gateway {
            settings,
            ttl: config.delivery.lease,
            inbound: inbound.clone(),
            con: con.clone(),
            http: http.clone(),
            seen: std::sync::Mutex::default(),
            limits: limits.clone(),
        })
        .collect()
}

impl Gateway {
    /// Waits for the lease, holds the connection while it is ours, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let lease = Leased::new(
            crate::redis::keys::inbound_lease("discord-gateway", &self.settings.key),
            self.ttl,
            self.con.clone(),
            "Discord Gateway",
        );
        if lease.run(stop, |_lost| self.connected()).await {
            self.report("stopped").await;
        }
    }

    /// Records this connection's state for `chatbridge status` (`chatbridge:inbound:state`).
    async fn report(&self, state: &str) {
        let links: Vec<&str> = self.settings.links.iter().map(String::as_str).collect();
        let value = format!(
            "{state} since {}; links {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            links.join(", ")
        );
        let field = state_field(&self.settings.key);
        // Bounded: the reader calls this between polls of the shard, whose heartbeats must not
        // wait on a Redis that is away.
        let mut con = self.con.clone();
        let written = tokio::time::timeout(
            Duration::from_secs(1),
            con.hset::<_, _, _, ()>(crate::bridge::outbox::INBOUND_STATE_KEY, field, value),
        )
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::debug!("Discord Gateway: cannot record the connection's state now");
        }
    }

    /// One shard after the other: a shard reconnects and resumes by itself and only ends on a
    /// close Discord says not to retry (bad token, intents not enabled); then a new one is
    /// tried after a growing pause, in case the operator fixed it in the Developer Portal.
    async fn connected(&self) {
        let gauge = crate::ops::metrics::ConnectedGauge::new(ROUTE);
        let gauge = &gauge;
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(600));
        loop {
            let (tx, rx) = mpsc::unbounded_channel();
            let started = Instant::now();
            let saved = self.load_session().await;
            tokio::join!(
                self.read(tx, gauge, saved.clone()),
                self.process(rx, gauge, saved)
            );
            if started.elapsed() > Duration::from_secs(600) {
                backoff.reset();
            }
            let wait = backoff.next(None);
            tracing::warn!(
                gateway = %self.settings.key,
                retry_in_secs = wait.as_secs(),
                "Discord Gateway: will try a new session"
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn intents(&self) -> Intents {
        let mut intents = Intents::GUILDS | Intents::GUILD_MESSAGES | Intents::MESSAGE_CONTENT;
        if self.settings.joins {
            intents |= Intents::GUILD_MEMBERS;
        }
        intents
    }

    /// The inbound settings in force (set once Redis is connected, before this starts).
    async fn inbound(&self) -> Arc<Inbound> {
        loop {
            if let Some(inbound) = self.inbound.load_full() {
                return inbound;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The channels this connection reads, and where each goes.
    fn channels<'a>(
        &self,
        inbound: &'a Inbound,
    ) -> impl Iterator<Item = (&'a String, &'a DiscordTarget)> {
        let key = self.settings.key.clone();
        inbound
            .platforms
            .discord
            .channels
            .iter()
            .filter(move |(_, target)| target.gateway == key)
    }

    /// The inbound write, retried until Redis takes it.
    async fn write(&self, inbound: &Inbound, write: &Write) -> Written {
        retrying("write a message to Redis", || inbound.writer.write(write)).await
    }

    /// A Redis call on this connection's own handle, retried until it succeeds.
    async fn retrying<T, F, Fut>(&self, what: &str, mut call: F) -> T
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        retrying(what, || call(self.con.clone())).await
    }
}

/// `chatbridge:discord:last:{channel}`: the newest message id seen in the channel.
fn last_key(channel: &str) -> String {
    crate::redis::keys::discord_last(channel)
}

/// A Redis call retried with backoff until it succeeds: what the Gateway reads must not be
/// dropped because Redis is away for a while.
async fn retrying<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match call().await {
            Ok(value) => return value,
            Err(e) => {
                let wait = backoff.next(None);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                    "Discord Gateway: cannot {what}; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn count(result: &'static str) {
    metrics::counter!(crate::ops::metrics::INBOUND_REQUESTS, "route" => ROUTE, "result" => result)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::catchup::snowflake_now;
    use super::session::close_meaning;

    #[test]
    fn snowflakes_count_from_discords_epoch_and_newer_is_larger() {
        let now: u64 = snowflake_now().parse().unwrap();
        // 2026: well past 2^60 ms-shifted ids of 2015, below u64::MAX.
        assert!(now > 1_400_000_000_000_000_000);
        assert_eq!(
            close_meaning(Some(4004)),
            "authentication failed: check the link's bot_token"
        );
    }
}
