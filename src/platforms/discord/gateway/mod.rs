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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use twilight_gateway::{Intents, Message as GatewayMessage, Shard, ShardId};

use crate::config::{Config, DiscordTarget, GatewaySettings, is_snowflake};
use crate::inbound::lease::Leased;
use crate::inbound::{Inbound, Shared, Write, Written};
use crate::metrics::ConnectedGauge;
use crate::model::{ChatEvent, Message, Presence, Scope, SystemLine, Timestamp, UserId};
use crate::platforms::NotBefore;
use crate::platforms::discord::{
    DISCORD_USER_AGENT, RateBucket, api_pause, note_refusal, retry_after,
};
use crate::retry::Backoff;

/// The metric's `route` label.
const ROUTE: &str = "discord_gateway";
/// How long a message id (or a member event) is remembered against a second write.
const DEDUP_SECS: u64 = 86_400;
/// Messages per backfill request: Discord's maximum.
const PAGE: usize = 100;
/// How long one REST request may take.
const REST_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the session's sequence number is saved while dispatches are written.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Discord's epoch (2015-01-01) in Unix milliseconds: snowflakes count from it.
const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;

/// Sets the channel's last seen id only when the new one is newer (ids are decimal strings:
/// longer is newer, equal lengths compare as text).
const SET_NEWER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and (#cur > #ARGV[1] or (#cur == #ARGV[1] and cur >= ARGV[1])) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

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
}

/// What the reader hands the processor.
#[derive(Debug)]
enum Dispatch {
    /// A new session: our bot's user id, and what a later RESUME needs.
    Ready {
        user_id: String,
        session_id: String,
        resume_url: String,
    },
    /// The session resumed after a dropped connection.
    Resumed,
    /// A server and its channels (for member events).
    Guild {
        id: String,
        channels: Vec<String>,
    },
    Message(Box<DiscordMessage>),
    /// A member joined (`join`) or left a server; `dedup` names this dispatch (session, seq).
    Member {
        join: bool,
        guild_id: String,
        user: DiscordUser,
        dedup: String,
    },
}

/// One dispatch frame as queued for the processor: its sequence number, and what it carries
/// when the processor acts on it.
#[derive(Debug)]
struct Queued {
    seq: Option<u64>,
    dispatch: Option<Dispatch>,
}

/// The session as saved in Redis (`chatbridge:discord:session:{gateway}`), so the next process
/// RESUMEs it instead of identifying again: `seq` is the last dispatch written, never one
/// still queued (a RESUME replays what follows it; the writes de-duplicate).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct SavedSession {
    id: String,
    seq: u64,
    resume_url: String,
    /// Our bot's user id, from the READY that began the session.
    user_id: String,
    /// The intents the session was identified with: a session with others (`inbound_joins`
    /// changed) is not resumed, or it would go on without the events now asked for.
    intents: u64,
}

/// The fields of a Discord message object that are mirrored.
#[derive(Debug, Deserialize)]
struct DiscordMessage {
    id: String,
    channel_id: String,
    #[serde(default)]
    guild_id: Option<String>,
    author: DiscordUser,
    #[serde(default)]
    content: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    webhook_id: Option<String>,
    /// 0 (default) and 19 (reply) are what people write; the rest are system messages.
    #[serde(default, rename = "type")]
    kind: u8,
    #[serde(default)]
    attachments: Vec<Attachment>,
    #[serde(default)]
    mentions: Vec<DiscordUser>,
}

#[derive(Debug, Clone, Deserialize)]
struct DiscordUser {
    id: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    global_name: Option<String>,
    #[serde(default)]
    bot: bool,
}

impl DiscordUser {
    /// The name shown: the global (display) name, else the username, else the id.
    fn name(&self) -> String {
        [self.global_name.as_deref(), Some(self.username.as_str())]
            .into_iter()
            .flatten()
            .map(str::trim)
            .find(|n| !n.is_empty())
            .unwrap_or(&self.id)
            .to_owned()
    }
}

#[derive(Debug, Deserialize)]
struct Attachment {
    url: String,
}

/// Whether a message goes into the chat, and why not.
enum Verdict {
    Write(Box<Write>),
    Skip(&'static str),
}

/// The Gateway connections `config` asks for.
pub fn from_config(
    config: &Config,
    inbound: &Shared,
    con: &ConnectionManager,
    http: &reqwest::Client,
) -> Vec<Gateway> {
    config
        .discord_gateways()
        .into_iter()
        .map(|settings| Gateway {
            settings,
            ttl: config.delivery.lease,
            inbound: inbound.clone(),
            con: con.clone(),
            http: http.clone(),
            seen: std::sync::Mutex::default(),
        })
        .collect()
}

impl Gateway {
    /// Waits for the lease, holds the connection while it is ours, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let lease = Leased::new(
            format!("chatbridge:lease:discord-gateway:{}", self.settings.key),
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
        let field = format!("discord-gateway:{}", self.settings.key);
        // Bounded: the reader calls this between polls of the shard, whose heartbeats must not
        // wait on a Redis that is away.
        let mut con = self.con.clone();
        let written = tokio::time::timeout(
            Duration::from_secs(1),
            con.hset::<_, _, _, ()>(crate::outbox::INBOUND_STATE_KEY, field, value),
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
        let gauge = crate::metrics::ConnectedGauge::new(ROUTE);
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

    /// Polls the shard, queueing each dispatch, until it closes for good.
    async fn read(
        &self,
        queue: mpsc::UnboundedSender<Queued>,
        gauge: &ConnectedGauge,
        saved: Option<SavedSession>,
    ) {
        let token = self.settings.bot_token.expose().to_owned();
        let mut builder = twilight_gateway::ConfigBuilder::new(token, self.intents());
        if let Some(url) = &self.settings.gateway_url {
            builder = builder.proxy_url(url.clone());
        }
        let mut session = String::new();
        if let Some(saved) = saved {
            // Resumed where the last holder (this process before a restart, or another) was.
            tracing::info!(gateway = %self.settings.key, "Discord Gateway: resuming the saved session");
            builder = builder
                .session(twilight_gateway::Session::new(saved.seq, saved.id.clone()))
                .resume_url(saved.resume_url);
            session = saved.id;
        }
        let mut shard = Shard::with_config(ShardId::ONE, builder.build());
        self.report("connecting").await;
        let mut last_close: Option<u16> = None;
        while let Some(item) = shard.next().await {
            match item {
                Ok(GatewayMessage::Text(text)) => {
                    if let Some(queued) = parse(&text, &mut session)
                        && queue.send(queued).is_err()
                    {
                        return;
                    }
                }
                Ok(GatewayMessage::Close(frame)) => {
                    last_close = frame.as_ref().map(|f| f.code);
                    tracing::info!(
                        code = last_close,
                        "Discord Gateway: connection closed; resuming"
                    );
                    let code =
                        last_close.map_or_else(String::new, |c| format!(" (close code {c})"));
                    gauge.set(false);
                    self.report(&format!("reconnecting{code}")).await;
                }
                Err(e) => match e.kind() {
                    twilight_gateway::error::ReceiveMessageErrorType::Reconnect => {
                        let why = std::error::Error::source(&e)
                            .map(ToString::to_string)
                            .unwrap_or_default();
                        tracing::warn!(error = %why, "Discord Gateway: cannot connect; retrying");
                        gauge.set(false);
                        self.report("reconnecting (cannot connect)").await;
                    }
                    _ => {
                        tracing::warn!("Discord Gateway: an event that could not be read, skipped");
                        count("bad_request");
                    }
                },
            }
        }
        tracing::error!(
            code = last_close,
            why = close_meaning(last_close),
            "Discord Gateway: Discord closed the session for good"
        );
        gauge.set(false);
        let code = last_close.map_or_else(String::new, |c| format!(" (close code {c})"));
        self.report(&format!("CLOSED: {}{code}", close_meaning(last_close)))
            .await;
    }

    /// Writes the queued dispatches in order.
    async fn process(
        &self,
        mut queue: mpsc::UnboundedReceiver<Queued>,
        gauge: &ConnectedGauge,
        saved: Option<SavedSession>,
    ) {
        let mut me: Option<String> = saved.as_ref().map(|s| s.user_id.clone());
        let mut current = saved;
        let mut last_saved = Instant::now();
        let mut guilds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut warned_empty = false;
        while let Some(Queued { seq, dispatch }) = queue.recv().await {
            let inbound = self.inbound().await;
            let mut save_now = false;
            match dispatch {
                None => {}
                Some(Dispatch::Ready {
                    user_id,
                    session_id,
                    resume_url,
                }) => {
                    tracing::info!(gateway = %self.settings.key, "Discord Gateway: session ready");
                    me = Some(user_id.clone());
                    current = Some(SavedSession {
                        id: session_id,
                        seq: seq.unwrap_or_default(),
                        resume_url,
                        user_id,
                        intents: self.intents().bits(),
                    });
                    self.backfill(&inbound, me.as_deref()).await;
                    gauge.set(true);
                    self.report("connected").await;
                    save_now = true;
                }
                Some(Dispatch::Resumed) => {
                    gauge.set(true);
                    self.report("connected (resumed)").await;
                    save_now = true;
                }
                Some(Dispatch::Guild { id, channels }) => {
                    guilds.entry(id).or_default().extend(channels);
                }
                Some(Dispatch::Message(message)) => {
                    if let Some(guild) = &message.guild_id {
                        guilds
                            .entry(guild.clone())
                            .or_default()
                            .insert(message.channel_id.clone());
                    }
                    if message.content.is_empty()
                        && message.attachments.is_empty()
                        && message.kind == 0
                        && !message.author.bot
                        && !warned_empty
                        && inbound.discord.contains_key(&message.channel_id)
                    {
                        warned_empty = true;
                        tracing::warn!(
                            "Discord Gateway: a message came without content: enable the Message \
                             Content intent of the bot (Developer Portal → Bot → Privileged Gateway Intents)"
                        );
                    }
                    self.message(&inbound, me.as_deref(), &message).await;
                }
                Some(Dispatch::Member {
                    join,
                    guild_id,
                    user,
                    dedup,
                }) => {
                    let channels = guilds.get(&guild_id).cloned().unwrap_or_default();
                    self.member(&inbound, me.as_deref(), join, &channels, &user, &dedup)
                        .await;
                }
            }
            // Written: from now on a RESUME may start after it.
            if let (Some(seq), Some(current)) = (seq, current.as_mut()) {
                current.seq = current.seq.max(seq);
            }
            if (save_now || last_saved.elapsed() >= SAVE_EVERY)
                && let Some(current) = &current
            {
                self.save_session(current).await;
                last_saved = Instant::now();
            }
        }
    }

    /// `chatbridge:discord:session:{gateway}`.
    fn session_key(&self) -> String {
        format!("chatbridge:discord:session:{}", self.settings.key)
    }

    /// The session the last holder saved, if any (a RESUME is tried; Discord refusing it means
    /// a new IDENTIFY and the catch-up over REST).
    async fn load_session(&self) -> Option<SavedSession> {
        let mut con = self.con.clone();
        let raw: Option<String> =
            tokio::time::timeout(Duration::from_secs(2), con.get(self.session_key()))
                .await
                .ok()?
                .ok()?;
        let saved: SavedSession = serde_json::from_str(&raw?).ok()?;
        (saved.intents == self.intents().bits()).then_some(saved)
    }

    /// Saves the session (at most [`SAVE_EVERY`] apart, and at READY and RESUMED); bounded
    /// and best effort: a stale save only makes a RESUME replay more.
    async fn save_session(&self, session: &SavedSession) {
        let Ok(value) = serde_json::to_string(session) else {
            return;
        };
        let mut con = self.con.clone();
        let saved = tokio::time::timeout(
            Duration::from_secs(1),
            con.set::<_, _, ()>(self.session_key(), value),
        )
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::debug!("Discord Gateway: cannot save the session now");
        }
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
            .discord
            .iter()
            .filter(move |(_, target)| target.gateway == key)
    }

    /// One message, live or fetched: written (or skipped) and recorded as seen.
    async fn message(&self, inbound: &Inbound, me: Option<&str>, message: &DiscordMessage) {
        if !well_formed(message) {
            // Its ids go into key names and the catch-up's `after=`: only Discord's digits.
            tracing::warn!("Discord Gateway: a message whose ids are not snowflakes, skipped");
            count("bad_request");
            return;
        }
        let Some(target) = inbound
            .discord
            .get(&message.channel_id)
            .filter(|t| t.gateway == self.settings.key)
        else {
            count("ignored");
            return;
        };
        let result = match verdict(inbound, target, me, message) {
            Verdict::Write(write) => match self.write(inbound, &write).await {
                Written::New(_) => "accepted",
                Written::Duplicate(_) => "duplicate",
            },
            Verdict::Skip(why) => {
                tracing::debug!(why, "Discord message not mirrored");
                if why == "ours" { "echo" } else { "ignored" }
            }
        };
        count(result);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let newest = seen.entry(message.channel_id.clone()).or_default();
            if (newest.len(), newest.as_str()) < (message.id.len(), message.id.as_str()) {
                newest.clone_from(&message.id);
            }
        }
        let key = last_key(&message.channel_id);
        self.retrying("record the last seen message", |mut con| {
            let (key, id) = (key.clone(), message.id.clone());
            async move {
                Script::new(SET_NEWER)
                    .key(key)
                    .arg(id)
                    .invoke_async::<i64>(&mut con)
                    .await
                    .map(drop)
            }
        })
        .await;
    }

    /// A member joining or leaving a server: a line in the room of each of its mapped channels
    /// whose link mirrors joins.
    async fn member(
        &self,
        inbound: &Inbound,
        me: Option<&str>,
        join: bool,
        channels: &BTreeSet<String>,
        user: &DiscordUser,
        dedup: &str,
    ) {
        if me == Some(user.id.as_str()) {
            count("echo");
            return;
        }
        let presence = if join {
            Presence::Join
        } else {
            Presence::Leave
        };
        let targets: Vec<(&String, &DiscordTarget)> = self
            .channels(inbound)
            .filter(|(channel, target)| {
                target.joins && channels.contains(*channel) && (target.bots || !user.bot)
            })
            .collect();
        if targets.is_empty() {
            count("ignored");
        }
        for (channel, target) in targets {
            let mut line =
                SystemLine::presence(presence, UserId::Text(user.id.clone()), &user.name());
            line.extra = origin(&target.link, dedup);
            let write = Write {
                scope: Scope::Room(target.room.clone()),
                event: ChatEvent::System(line),
                dedup_key: format!("chatbridge:inbound:discord:member:{dedup}:{channel}"),
                dedup_secs: DEDUP_SECS,
                history_limit: inbound.history.room_limit_of(&target.room),
            };
            let result = match self.write(inbound, &write).await {
                Written::New(_) => "accepted",
                Written::Duplicate(_) => "duplicate",
            };
            count(result);
        }
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

    /// After a READY: each channel's messages since the last one seen, oldest first. A channel
    /// never seen starts from now.
    async fn backfill(&self, inbound: &Inbound, me: Option<&str>) {
        let channels: Vec<String> = self.channels(inbound).map(|(c, _)| c.clone()).collect();
        let rest = Rest::default();
        for channel in channels {
            let key = last_key(&channel);
            let last: Option<String> = self
                .retrying("read the last seen message", |mut con| {
                    let key = key.clone();
                    async move { con.get::<_, Option<String>>(key).await }
                })
                .await
                .or_else(|| {
                    let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.get(&channel).cloned()
                });
            let Some(mut after) = last else {
                let now = snowflake_now();
                self.retrying("record where the channel starts", |mut con| {
                    let (key, now) = (key.clone(), now.clone());
                    async move { con.set_nx::<_, _, ()>(key, now).await }
                })
                .await;
                continue;
            };
            let mut fetched = 0usize;
            loop {
                let mut page = match self.fetch(&rest, &channel, &after).await {
                    Ok(page) => page,
                    Err(why) => {
                        tracing::error!(
                            channel = %channel,
                            error = %why,
                            "Discord Gateway: cannot fetch the messages sent while no session was \
                             open; they are not mirrored (does the bot have Read Message History?)"
                        );
                        break;
                    }
                };
                page.sort_by(|a, b| (a.id.len(), &a.id).cmp(&(b.id.len(), &b.id)));
                let full = page.len() >= PAGE;
                for message in &page {
                    self.message(inbound, me, message).await;
                    after.clone_from(&message.id);
                }
                fetched += page.len();
                if !full {
                    break;
                }
            }
            if fetched > 0 {
                tracing::info!(channel = %channel, fetched, "Discord Gateway: caught up on missed messages");
            }
        }
    }

    /// One page of `GET /channels/{id}/messages?after=`: rate limits waited out, 5xx and
    /// network errors retried; `Err` only for answers that will not change (401, 403, 404).
    async fn fetch(
        &self,
        rest: &Rest,
        channel: &str,
        after: &str,
    ) -> Result<Vec<DiscordMessage>, String> {
        let url = format!(
            "{}/v10/channels/{channel}/messages?after={after}&limit={PAGE}",
            self.settings
                .api_base
                .expose()
                .as_str()
                .trim_end_matches('/')
        );
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            if let Some(wait) = rest.wait().max(api_pause()) {
                tokio::time::sleep(wait).await;
            }
            let sent = self
                .http
                .get(&url)
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("Bot {}", self.settings.bot_token.expose()),
                )
                .header(reqwest::header::USER_AGENT, DISCORD_USER_AGENT)
                .timeout(REST_TIMEOUT)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    let wait = backoff.next(None);
                    tracing::warn!(error = %e.without_url(), retry_in_ms = wait.as_millis() as u64,
                        "Discord Gateway: message history request failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            rest.bucket.note(response.headers());
            let header_wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::platforms::seconds);
            let body = response.bytes().await.unwrap_or_default();
            match status {
                200 => {
                    return serde_json::from_slice(&body)
                        .map_err(|e| format!("the answer is not a list of messages: {e}"));
                }
                429 => {
                    let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let wait = retry_after(answer["retry_after"].as_f64(), header_wait);
                    let global = answer["global"] == true;
                    note_refusal(global.then_some(wait));
                    rest.not_before.wait(wait);
                    tracing::info!(
                        wait_ms = wait.as_millis() as u64,
                        global,
                        "Discord Gateway: rate limited; waiting"
                    );
                }
                401 | 403 | 404 => {
                    if status != 404 {
                        note_refusal(None);
                    }
                    let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
                    return Err(format!(
                        "HTTP {status}: {}",
                        answer["message"].as_str().unwrap_or("refused")
                    ));
                }
                _ => {
                    let wait = backoff.next(None);
                    tracing::warn!(
                        status,
                        retry_in_ms = wait.as_millis() as u64,
                        "Discord Gateway: message history request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The REST route's limits: its bucket, and the "not before" its 429s set.
#[derive(Default)]
struct Rest {
    bucket: RateBucket,
    not_before: NotBefore,
}

impl Rest {
    /// How long until the next request may go.
    fn wait(&self) -> Option<Duration> {
        self.bucket.wait().max(self.not_before.remaining())
    }
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

/// What to do with a message in a mapped channel.
fn verdict(
    inbound: &Inbound,
    target: &DiscordTarget,
    me: Option<&str>,
    message: &DiscordMessage,
) -> Verdict {
    let ours = message
        .webhook_id
        .as_ref()
        .is_some_and(|id| inbound.discord_webhooks.contains(id))
        || me == Some(message.author.id.as_str());
    if ours {
        return Verdict::Skip("ours");
    }
    if (message.author.bot || message.webhook_id.is_some()) && !target.bots {
        return Verdict::Skip("a bot or webhook post (inbound_bots = false)");
    }
    if !matches!(message.kind, 0 | 19) {
        return Verdict::Skip("a system message");
    }
    let content = content(message);
    if content.is_empty() {
        return Verdict::Skip("no content");
    }
    let timestamp = message
        .timestamp
        .as_deref()
        .and_then(|t| Timestamp::parse(t).ok())
        .unwrap_or_else(Timestamp::now);
    let chat = Message {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: UserId::Text(message.author.id.clone()),
        username: message.author.name(),
        content,
        room: Some(target.room.clone()),
        timestamp,
        extra: origin(&target.link, &message.id),
    };
    Verdict::Write(Box::new(Write {
        scope: Scope::Room(target.room.clone()),
        event: ChatEvent::Message(chat),
        dedup_key: format!("chatbridge:inbound:discord:{}", message.id),
        dedup_secs: DEDUP_SECS,
        history_limit: inbound.history.room_limit_of(&target.room),
    }))
}

/// Whether the message's own, channel and author ids are Discord ids (digits).
fn well_formed(message: &DiscordMessage) -> bool {
    [&message.id, &message.channel_id, &message.author.id]
        .into_iter()
        .all(|id| is_snowflake(id))
}

/// `origin` and `external_id`, the fields every inbound event carries.
fn origin(link: &str, external_id: &str) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("origin".into(), Value::String(link.to_owned()));
    extra.insert("external_id".into(), Value::String(external_id.to_owned()));
    extra
}

/// The text as the chat shows it: user mentions (`<@id>`, `<@!id>`) as `@name`, and each
/// attachment's URL on a line of its own.
fn content(message: &DiscordMessage) -> String {
    let mut text = message.content.clone();
    for user in &message.mentions {
        let name = format!("@{}", user.name());
        for form in [format!("<@{}>", user.id), format!("<@!{}>", user.id)] {
            text = text.replace(&form, &name);
        }
    }
    for attachment in &message.attachments {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&attachment.url);
    }
    text
}

/// Reads one Gateway frame: every dispatch is queued with its sequence number, with what the
/// processor needs from it; `None` for the rest (heartbeat ACKs, HELLO, frames that are not
/// JSON). `session` follows READY's `session_id`.
fn parse(text: &str, session: &mut String) -> Option<Queued> {
    #[derive(Deserialize)]
    struct Frame {
        op: u8,
        #[serde(default)]
        s: Option<u64>,
        #[serde(default)]
        t: Option<String>,
        #[serde(default)]
        d: Option<Box<RawValue>>,
    }
    let frame: Frame = serde_json::from_str(text).ok()?;
    if frame.op != 0 {
        return None;
    }
    let dispatch = dispatch(frame.t.as_deref(), frame.s, frame.d.as_deref(), session);
    Some(Queued {
        seq: frame.s,
        dispatch,
    })
}

/// What the processor needs from one dispatch (`t`, `s`, `d`), if anything.
fn dispatch(
    kind: Option<&str>,
    seq: Option<u64>,
    data: Option<&RawValue>,
    session: &mut String,
) -> Option<Dispatch> {
    #[derive(Deserialize)]
    struct Ready {
        session_id: String,
        resume_gateway_url: String,
        user: DiscordUser,
    }
    #[derive(Deserialize)]
    struct Channel {
        id: String,
    }
    #[derive(Deserialize)]
    struct Guild {
        id: String,
        #[serde(default)]
        channels: Vec<Channel>,
    }
    #[derive(Deserialize)]
    struct Member {
        guild_id: String,
        user: DiscordUser,
    }
    if kind == Some("RESUMED") {
        return Some(Dispatch::Resumed);
    }
    let data = data?;
    let read = |what: &str| {
        tracing::warn!(
            event = what,
            "Discord Gateway: an event that could not be read, skipped"
        );
        count("bad_request");
    };
    match kind? {
        "READY" => match serde_json::from_str::<Ready>(data.get()) {
            Ok(ready) => {
                session.clone_from(&ready.session_id);
                Some(Dispatch::Ready {
                    user_id: ready.user.id,
                    session_id: ready.session_id,
                    resume_url: ready.resume_gateway_url,
                })
            }
            Err(_) => {
                read("READY");
                None
            }
        },
        "GUILD_CREATE" => {
            serde_json::from_str::<Guild>(data.get())
                .ok()
                .map(|guild| Dispatch::Guild {
                    id: guild.id,
                    channels: guild.channels.into_iter().map(|c| c.id).collect(),
                })
        }
        "MESSAGE_CREATE" => match serde_json::from_str::<DiscordMessage>(data.get()) {
            Ok(message) => Some(Dispatch::Message(Box::new(message))),
            Err(_) => {
                read("MESSAGE_CREATE");
                None
            }
        },
        kind @ ("GUILD_MEMBER_ADD" | "GUILD_MEMBER_REMOVE") => {
            match serde_json::from_str::<Member>(data.get()) {
                Ok(member) => Some(Dispatch::Member {
                    join: kind == "GUILD_MEMBER_ADD",
                    guild_id: member.guild_id,
                    user: member.user,
                    dedup: format!("{session}:{}", seq.unwrap_or_default()),
                }),
                Err(_) => {
                    read(kind);
                    None
                }
            }
        }
        _ => None,
    }
}

/// What a close code Discord does not let us retry means for the operator.
fn close_meaning(code: Option<u16>) -> &'static str {
    match code {
        Some(4004) => "authentication failed: check the link's bot_token",
        Some(4013) => "invalid intents",
        Some(4014) => {
            "disallowed intents: enable Message Content (and Server Members for inbound_joins) \
             under Developer Portal → Bot → Privileged Gateway Intents"
        }
        Some(4010 | 4011) => "the bot needs sharding (too many servers for one connection)",
        Some(4012) => "invalid API version",
        _ => "see Discord's Gateway close codes",
    }
}

/// `chatbridge:discord:last:{channel}`: the newest message id seen in the channel.
fn last_key(channel: &str) -> String {
    format!("chatbridge:discord:last:{channel}")
}

/// A snowflake for this moment: messages sent from now on have larger ids.
fn snowflake_now() -> String {
    let ms = chrono::Utc::now().timestamp_millis() - DISCORD_EPOCH_MS;
    (u64::try_from(ms).unwrap_or(0) << 22).to_string()
}

fn count(result: &'static str) {
    metrics::counter!(crate::metrics::INBOUND_REQUESTS, "route" => ROUTE, "result" => result)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: Value) -> DiscordMessage {
        serde_json::from_value(json).expect("message")
    }

    #[test]
    fn mentions_become_names_and_attachments_urls() {
        let m = message(serde_json::json!({
            "id": "2", "channel_id": "1", "type": 0,
            "author": {"id": "5", "username": "ann", "global_name": null},
            "content": "hi <@7> and <@!8>",
            "mentions": [{"id": "7", "username": "bob", "global_name": "Bob B"},
                         {"id": "8", "username": "cy"}],
            "attachments": [{"url": "https://cdn.example/a.png", "filename": "a.png"}]
        }));
        assert_eq!(content(&m), "hi @Bob B and @cy\nhttps://cdn.example/a.png");
        assert_eq!(m.author.name(), "ann");
    }

    #[test]
    fn every_dispatch_is_queued_with_its_sequence_and_only_the_mirrored_ones_carry_data() {
        let mut session = String::new();
        assert!(parse(r#"{"op":11}"#, &mut session).is_none());
        assert!(parse("not json", &mut session).is_none());
        let ready = r#"{"op":0,"s":1,"t":"READY","d":{"session_id":"abc",
            "resume_gateway_url":"wss://r.example","user":{"id":"9","username":"b","bot":true}}}"#;
        assert!(matches!(
            parse(ready, &mut session),
            Some(Queued { seq: Some(1), dispatch: Some(Dispatch::Ready { user_id, resume_url, .. }) })
                if user_id == "9" && resume_url == "wss://r.example"
        ));
        assert_eq!(session, "abc");
        let member = r#"{"op":0,"s":7,"t":"GUILD_MEMBER_ADD","d":{"guild_id":"3","user":{"id":"4","username":"d"}}}"#;
        assert!(matches!(
            parse(member, &mut session),
            Some(Queued { dispatch: Some(Dispatch::Member { dedup, join: true, .. }), .. })
                if dedup == "abc:7"
        ));
        // Not mirrored, or not readable: still queued, so the saved sequence moves past it.
        let typing = r#"{"op":0,"s":8,"t":"TYPING_START","d":{}}"#;
        assert!(matches!(
            parse(typing, &mut session),
            Some(Queued {
                seq: Some(8),
                dispatch: None
            })
        ));
        let broken = r#"{"op":0,"s":9,"t":"MESSAGE_CREATE","d":{"id":1}}"#;
        assert!(matches!(
            parse(broken, &mut session),
            Some(Queued {
                seq: Some(9),
                dispatch: None
            })
        ));
    }

    #[test]
    fn ids_that_are_not_snowflakes_are_refused() {
        let with = |id: &str, channel: &str, author: &str| {
            well_formed(&message(serde_json::json!({
                "id": id, "channel_id": channel, "author": {"id": author, "username": "a"}
            })))
        };
        assert!(with("1", "22", "333"));
        assert!(!with("1:2", "22", "333"));
        assert!(!with("1", "*", "333"));
        assert!(!with("1", "22", ""));
    }

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
