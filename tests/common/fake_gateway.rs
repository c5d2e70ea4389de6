//! A fake Discord Gateway v10 (JSON encoding, no compression; tokio-tungstenite's server side) and
//! the one REST endpoint the bridge uses (`GET /api/v10/channels/{id}/messages`), on loopback, per
//! EXTERNAL_APIS.md and Discord's gateway documentation. What it enforces:
//!
//! - Every connection is sent HELLO (`heartbeat_interval` as configured); op 1 is answered op 11.
//! - IDENTIFY (op 2) and RESUME (op 6) must carry the bot token (with or without `Bot `), else the
//!   socket is closed with 4004; any other payload before either is closed with 4003, a second
//!   IDENTIFY/RESUME on one socket with 4005, an unknown opcode with 4001, a frame that is not JSON
//!   with 4002.
//! - IDENTIFY opens session `sess-N` (N = connection number): READY (`s: 1`), then one
//!   GUILD_CREATE per guild. Every dispatch of a session advances its own sequence and is kept in
//!   its replay log, whether a connection is live or not; RESUME with a valid session replays the
//!   dispatches after the given `seq` (same sequence numbers), then RESUMED. An invalid or
//!   unknown session is answered `{"op": 9, "d": false}`.
//! - Intents: MESSAGE_CREATE goes only to sessions with GUILD_MESSAGES and has `content` (and
//!   embeds, attachments, components) emptied without MESSAGE_CONTENT, unless the bot wrote the
//!   message; GUILD_MEMBER_* only to sessions with GUILD_MEMBERS; GUILD_CREATE/CHANNEL_CREATE for
//!   channels added after READY only with GUILDS.
//! - REST: `Authorization: Bot <token>` (401), a `User-Agent` starting `DiscordBot` (400), a known
//!   channel (404 code 10003); one bucket of 5 requests per 1 s window announced in
//!   `X-RateLimit-*`, a 429 for a 6th request in the window. A request that arrives while the
//!   bucket is exhausted or before a 429's `retry_after` has passed is a violation.
//!
//! ```ignore
//! let fake = FakeGateway::start("bot-token", 1000).await;
//! fake.add_channel("100", "200");
//! // … the daemon connects to fake.gateway_url(), REST at fake.api_base() …
//! fake.wait_log("ready ", 1, Duration::from_secs(20)).await;
//! let id = fake.post("200", &Author::user("300", "alice", Some("Alice")), "hello");
//! fake.drop_connection();                       // close 4000: the client RESUMEs
//! fake.wait_log("resumed ", 1, Duration::from_secs(20)).await;
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::tls::Incoming;
use super::wait::eventually;

pub const BOT_USER_ID: &str = "900000000000000001";
pub const APPLICATION_ID: &str = "900000000000000002";
pub const INTENT_GUILDS: u64 = 1;
pub const INTENT_GUILD_MEMBERS: u64 = 1 << 1;
pub const INTENT_GUILD_MESSAGES: u64 = 1 << 9;
pub const INTENT_MESSAGE_CONTENT: u64 = 1 << 15;

/// Discord's epoch (2015-01-01T00:00:00Z) in unix milliseconds.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// The REST bucket: this many requests per window.
const BUCKET_LIMIT: u32 = 5;
const BUCKET_WINDOW: Duration = Duration::from_secs(1);

/// Who posts a message.
#[derive(Clone, Debug)]
pub struct Author {
    pub id: String,
    pub username: String,
    pub global_name: Option<String>,
    pub bot: bool,
}

impl Author {
    /// A human user.
    pub fn user(id: &str, username: &str, global_name: Option<&str>) -> Self {
        Self {
            id: id.into(),
            username: username.into(),
            global_name: global_name.map(str::to_owned),
            bot: false,
        }
    }
}

/// What a connection task is told to send.
enum Out {
    Text(String),
    Close(u16, &'static str),
}

struct Session {
    intents: u64,
    seq: u64,
    valid: bool,
    /// The connection currently receiving this session's dispatches.
    live: Option<usize>,
    /// Every dispatch of the session: (seq, full payload).
    replay: Vec<(u64, String)>,
}

struct Connection {
    out: mpsc::UnboundedSender<Out>,
    /// The session identified or resumed on this connection.
    session: Option<String>,
}

#[derive(Default)]
struct Fake {
    token: String,
    heartbeat_ms: u64,
    gateway_url: String,
    /// guild id → its channel ids, in the order added.
    guilds: BTreeMap<String, Vec<String>>,
    /// channel id → (guild id, messages oldest first, as REST shows them plus guild_id/member).
    channels: HashMap<String, (String, Vec<Value>)>,
    sessions: HashMap<String, Session>,
    /// The session of the last IDENTIFY.
    current: Option<String>,
    connections: HashMap<usize, Connection>,
    log: Vec<String>,
    last_snowflake: u64,
    // REST.
    rest_requests: Vec<String>,
    window_ends: Option<Instant>,
    remaining: u32,
    forced: usize,
    forced_retry_after: f64,
    /// The next this many requests answer this status, Discord error code and message.
    failing: Option<(usize, u16, u64, String)>,
    not_before: Option<Instant>,
    violations: usize,
}

impl Fake {
    fn snowflake(&mut self) -> String {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let candidate = (ms.saturating_sub(DISCORD_EPOCH_MS) << 22) + 1;
        self.last_snowflake = candidate.max(self.last_snowflake + 1);
        self.last_snowflake.to_string()
    }

    fn send(&self, connection: usize, out: Out) {
        if let Some(c) = self.connections.get(&connection) {
            let _ = c.out.send(out);
        }
    }

    /// Appends a dispatch to `session_id`'s log (next sequence) and sends it if live.
    fn dispatch_to(&mut self, session_id: &str, event: &str, data: Value) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        session.seq += 1;
        let payload = json!({"op": 0, "t": event, "s": session.seq, "d": data}).to_string();
        session.replay.push((session.seq, payload.clone()));
        if let Some(live) = session.live {
            self.send(live, Out::Text(payload));
        }
    }

    /// `event` to every valid session that is live or current and whose intents let it through.
    fn dispatch(&mut self, event: &str, data: &Value) {
        let targets: Vec<(String, u64)> = self
            .sessions
            .iter()
            .filter(|(id, s)| s.valid && (s.live.is_some() || self.current.as_ref() == Some(*id)))
            .map(|(id, s)| (id.clone(), s.intents))
            .collect();
        for (id, intents) in targets {
            if let Some(data) = gate(event, data, intents) {
                self.dispatch_to(&id, event, data);
            }
        }
    }

    fn guild_create(&self, guild_id: &str) -> Value {
        let channels: Vec<Value> = self.guilds[guild_id]
            .iter()
            .enumerate()
            .map(|(position, id)| channel_object(guild_id, id, position))
            .collect();
        // In parts: one json! of all of it exceeds the macro recursion limit.
        let mut guild = json!({
            "id": guild_id, "name": format!("Guild {guild_id}"), "icon": null, "splash": null,
            "discovery_splash": null, "banner": null, "description": null,
            "owner_id": "900000000000000003", "application_id": null, "region": "deprecated",
            "afk_channel_id": null, "afk_timeout": 300, "system_channel_id": null,
            "system_channel_flags": 0, "rules_channel_id": null, "public_updates_channel_id": null,
            "safety_alerts_channel_id": null, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0,
            "nsfw_level": 0, "premium_tier": 0, "premium_subscription_count": 0,
            "premium_progress_bar_enabled": false, "preferred_locale": "en-US",
            "vanity_url_code": null, "features": [], "max_members": 500000,
            "max_video_channel_users": 25, "max_stage_video_channel_users": 50,
        });
        let more = json!({
            "roles": [{"id": guild_id, "name": "@everyone", "permissions": "2248473465835073",
                       "position": 0, "color": 0,
                       "colors": {"primary_color": 0, "secondary_color": null,
                                  "tertiary_color": null},
                       "hoist": false, "managed": false,
                       "mentionable": false, "icon": null, "unicode_emoji": null, "flags": 0}],
            "emojis": [], "stickers": [],
            "joined_at": "2025-01-01T00:00:00.000000+00:00", "large": false, "unavailable": false,
            "member_count": 2, "lazy": true, "members": [], "voice_states": [],
            "channels": channels, "threads": [], "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "soundboard_sounds": [], "incidents_data": null,
            "home_header": null, "latest_onboarding_question_id": null,
            "embedded_activities": [], "activity_instances": [], "version": 1
        });
        if let (Some(guild), Value::Object(more)) = (guild.as_object_mut(), more) {
            guild.extend(more);
        }
        guild
    }

    /// A message in `channel_id` kept in history and dispatched as MESSAGE_CREATE.
    fn post(
        &mut self,
        channel_id: &str,
        author: Value,
        member: bool,
        webhook: Option<&str>,
        content: &str,
    ) -> String {
        let Some(guild_id) = self.channels.get(channel_id).map(|(g, _)| g.clone()) else {
            panic!("fake gateway: post to channel {channel_id} which add_channel never named");
        };
        let id = self.snowflake();
        let mut message = json!({
            "id": id, "channel_id": channel_id, "guild_id": guild_id, "author": author,
            "content": content, "timestamp": now_iso8601(), "edited_timestamp": null,
            "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
            "attachments": [], "embeds": [], "components": [], "pinned": false,
            "type": 0, "flags": 0,
        });
        if member {
            message["member"] = json!({
                "roles": [], "joined_at": "2025-06-01T12:00:00.000000+00:00", "nick": null,
                "avatar": null, "banner": null, "premium_since": null, "deaf": false,
                "mute": false, "pending": false, "flags": 0,
                "communication_disabled_until": null
            });
        }
        if let Some(webhook_id) = webhook {
            message["webhook_id"] = json!(webhook_id);
        }
        if let Some((_, history)) = self.channels.get_mut(channel_id) {
            history.push(message.clone());
        }
        self.dispatch("MESSAGE_CREATE", &message);
        id
    }

    fn record(&mut self, line: String) {
        self.log.push(line);
    }
}

/// The data `event` carries to a session with `intents`, or `None` if the intents exclude it.
fn gate(event: &str, data: &Value, intents: u64) -> Option<Value> {
    let needs = match event {
        "MESSAGE_CREATE" | "MESSAGE_UPDATE" | "MESSAGE_DELETE" | "MESSAGE_DELETE_BULK" => {
            INTENT_GUILD_MESSAGES
        }
        "GUILD_MEMBER_ADD" | "GUILD_MEMBER_UPDATE" | "GUILD_MEMBER_REMOVE" => INTENT_GUILD_MEMBERS,
        "GUILD_CREATE" | "GUILD_UPDATE" | "GUILD_DELETE" | "CHANNEL_CREATE" | "CHANNEL_UPDATE"
        | "CHANNEL_DELETE" => INTENT_GUILDS,
        _ => 0,
    };
    if intents & needs != needs {
        return None;
    }
    let mut data = data.clone();
    let by_bot = data["author"]["id"].as_str() == Some(BOT_USER_ID);
    if matches!(event, "MESSAGE_CREATE" | "MESSAGE_UPDATE")
        && intents & INTENT_MESSAGE_CONTENT == 0
        && !by_bot
        && let Some(message) = data.as_object_mut()
    {
        for (field, empty) in [
            ("content", json!("")),
            ("embeds", json!([])),
            ("attachments", json!([])),
            ("components", json!([])),
        ] {
            if message.contains_key(field) {
                message.insert(field.into(), empty);
            }
        }
    }
    Some(data)
}

fn channel_object(guild_id: &str, id: &str, position: usize) -> Value {
    json!({"id": id, "type": 0, "name": format!("channel-{id}"), "guild_id": guild_id,
           "position": position, "permission_overwrites": [], "topic": null, "nsfw": false,
           "last_message_id": null, "rate_limit_per_user": 0, "parent_id": null, "flags": 0})
}

fn now_iso8601() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// The fake: a Gateway websocket listener and a REST server.
pub struct FakeGateway {
    /// `ws://127.0.0.1:PORT`, or `wss://localhost:PORT` when started with TLS.
    gateway_url: String,
    api: SocketAddr,
    state: Arc<Mutex<Fake>>,
}

impl FakeGateway {
    /// Gateway + REST on 127.0.0.1; only `bot_token` is accepted (IDENTIFY/RESUME token, REST
    /// `Authorization: Bot <token>`). HELLO's heartbeat_interval is `heartbeat_ms`.
    pub async fn start(bot_token: &str, heartbeat_ms: u64) -> Self {
        Self::start_with(bot_token, heartbeat_ms, None).await
    }

    /// Same, but the Gateway listener speaks TLS (`acceptor`'s certificate, for `localhost`):
    /// `gateway_url()` and READY's `resume_gateway_url` are `wss://localhost:PORT`. REST stays
    /// plain http. Each TLS handshake is logged: `tls-accepted sni=<server name the client
    /// sent>`, or `tls-failed K: <error>` (K counts failures; no websocket, no number).
    pub async fn start_tls(bot_token: &str, heartbeat_ms: u64, acceptor: TlsAcceptor) -> Self {
        Self::start_with(bot_token, heartbeat_ms, Some(acceptor)).await
    }

    async fn start_with(bot_token: &str, heartbeat_ms: u64, tls: Option<TlsAcceptor>) -> Self {
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake gateway");
        let gateway = ws.local_addr().expect("gateway address");
        let gateway_url = match tls {
            Some(_) => format!("wss://localhost:{}", gateway.port()),
            None => format!("ws://{gateway}"),
        };
        let state = Arc::new(Mutex::new(Fake {
            token: bot_token.into(),
            heartbeat_ms,
            gateway_url: gateway_url.clone(),
            remaining: BUCKET_LIMIT,
            ..Fake::default()
        }));
        tokio::spawn(accept(ws, state.clone(), tls));
        let app = Router::new()
            .route("/api/v10/channels/{id}/messages", get(messages))
            .with_state(state.clone());
        let api = super::serve(app).await;
        Self {
            gateway_url,
            api,
            state,
        }
    }

    fn state(&self) -> MutexGuard<'_, Fake> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `ws://127.0.0.1:PORT` (`wss://localhost:PORT` with TLS; no trailing slash): the
    /// client's proxy URL and READY's `resume_gateway_url`.
    pub fn gateway_url(&self) -> String {
        self.gateway_url.clone()
    }

    /// `http://127.0.0.1:PORT/api` (the client adds `/v10/…`).
    /// The keys of a Discord link that reads `channel_id` through this fake as `bot_token`.
    pub fn link_keys(&self, bot_token: &str, channel_id: &str) -> String {
        format!(
            "bot_token = \"{bot_token}\"\nchannel_id = \"{channel_id}\"\napi_base = \"{}\"\n\
             gateway_url = \"{}\"\n",
            self.api_base(),
            self.gateway_url()
        )
    }

    pub fn api_base(&self) -> String {
        format!("http://{}/api", self.api)
    }

    /// A text channel of `guild_id`, listed in that guild's GUILD_CREATE; once a session is
    /// ready, a new guild is dispatched as GUILD_CREATE and a new channel as CHANNEL_CREATE.
    pub fn add_channel(&self, guild_id: &str, channel_id: &str) {
        let mut state = self.state();
        if state.channels.contains_key(channel_id) {
            return;
        }
        let new_guild = !state.guilds.contains_key(guild_id);
        let channels = state.guilds.entry(guild_id.into()).or_default();
        channels.push(channel_id.into());
        let position = channels.len() - 1;
        state
            .channels
            .insert(channel_id.into(), (guild_id.into(), Vec::new()));
        if new_guild {
            let guild = state.guild_create(guild_id);
            state.dispatch("GUILD_CREATE", &guild);
        } else {
            let channel = channel_object(guild_id, channel_id, position);
            state.dispatch("CHANNEL_CREATE", &channel);
        }
    }

    /// A user message: new snowflake id (increasing), stored in the channel's history (REST),
    /// dispatched as MESSAGE_CREATE to every identified live session; when the current session
    /// is disconnected but still valid, kept in its replay log (a RESUME replays it). Returns the
    /// id. Panics if `channel_id` was never added.
    pub fn post(&self, channel_id: &str, author: &Author, content: &str) -> String {
        let mut user = json!({
            "id": author.id, "username": author.username, "global_name": author.global_name,
            "discriminator": "0", "avatar": null, "avatar_decoration_data": null,
            "banner": null, "accent_color": null, "public_flags": 0, "flags": 0,
            "clan": null, "primary_guild": null, "collectibles": null,
        });
        if author.bot {
            user["bot"] = json!(true);
        }
        self.state().post(channel_id, user, true, None, content)
    }

    /// Same, as a webhook post: `webhook_id` set, author {id: webhook_id, username, bot: true},
    /// no `member`.
    pub fn post_webhook(
        &self,
        channel_id: &str,
        webhook_id: &str,
        username: &str,
        content: &str,
    ) -> String {
        let author = json!({"id": webhook_id, "username": username, "global_name": null,
                            "discriminator": "0000", "avatar": null, "bot": true});
        self.state()
            .post(channel_id, author, false, Some(webhook_id), content)
    }

    /// Any other dispatch (e.g. "GUILD_MEMBER_ADD" with data) to sessions / replay log likewise.
    pub fn dispatch(&self, event: &str, data: Value) {
        self.state().dispatch(event, &data);
    }

    /// Closes the live connection(s) from Discord's side with close code 4000 (resumable); the
    /// session stays valid and collects what is dispatched until a RESUME.
    pub fn drop_connection(&self) {
        let mut state = self.state();
        let live: Vec<usize> = state.connections.keys().copied().collect();
        for number in live {
            state.send(number, Out::Close(4000, "Unknown error."));
            if let Some(connection) = state.connections.remove(&number)
                && let Some(session) = connection.session
                && let Some(session) = state.sessions.get_mut(&session)
                && session.live == Some(number)
            {
                session.live = None;
            }
        }
    }

    /// Marks the current session (every session, in fact) invalid and drops the connection with
    /// 4000: the next RESUME is answered with op 9 `d: false`; messages posted from now until a
    /// new IDENTIFY reach only REST history.
    pub fn invalidate_session(&self) {
        {
            let mut state = self.state();
            for session in state.sessions.values_mut() {
                session.valid = false;
            }
        }
        self.drop_connection();
    }

    /// Ordered log lines: "connect N", "identify N intents=I", "ready N session=S",
    /// "resume N session=S seq=Q", "resumed N replayed=K", "invalid N", "heartbeat N seq=Q",
    /// "refused N code=C" (closed by the fake: bad token or protocol error), "closed N"
    /// (N = connection number from 1); with TLS also "tls-accepted sni=S" for each handshake
    /// and "tls-failed K: <error>" for one that failed (such a connection gets no number).
    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    /// Log lines starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.state()
            .log
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// Waits until at least `at_least` log lines start with `prefix`; panics after `timeout`.
    pub async fn wait_log(&self, prefix: &str, at_least: usize, timeout: Duration) {
        let what = format!("{at_least} gateway log line(s) starting {prefix:?}");
        eventually(&what, timeout, async || {
            (self.count(prefix) >= at_least).then_some(())
        })
        .await;
    }

    /// REST requests in arrival order, whatever the answer:
    /// "GET /api/v10/channels/C/messages?after=X&limit=100" (path and query as received).
    pub fn rest_requests(&self) -> Vec<String> {
        self.state().rest_requests.clone()
    }

    /// The next `n` REST requests answer 429 with this `retry_after` (not violations themselves).
    pub fn force_429(&self, n: usize, retry_after: f64) {
        let mut state = self.state();
        state.forced = n;
        state.forced_retry_after = retry_after;
    }

    /// The next `n` authorised REST requests answer `status` with Discord's error body
    /// `{"message", "code"}` (e.g. 500, or 403 / 50001 "Missing Access").
    pub fn fail_next(&self, n: usize, status: u16, code: u64, message: &str) {
        self.state().failing = Some((n, status, code, message.to_owned()));
    }

    /// REST requests that arrived before a 429's retry_after or an exhausted bucket's reset had
    /// passed.
    pub fn rate_limit_violations(&self) -> usize {
        self.state().violations
    }
}

/// Accepts websocket connections, any path and query, each served by its own task; with `tls`,
/// after a TLS handshake.
async fn accept(
    listener: tokio::net::TcpListener,
    state: Arc<Mutex<Fake>>,
    tls: Option<TlsAcceptor>,
) {
    let mut incoming = Incoming::new(listener, tls);
    let mut number = 0;
    let record = |line| state.lock().unwrap_or_else(|p| p.into_inner()).record(line);
    while let Some(stream) = incoming.next(record).await {
        upgrade(stream, &mut number, &state).await;
    }
}

/// The websocket handshake on `stream` (TCP or TLS); a connection that completes it is numbered
/// and served.
async fn upgrade<S>(stream: S, number: &mut usize, state: &Arc<Mutex<Fake>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    *number += 1;
    tokio::spawn(serve(socket, *number, state.clone()));
}

/// One connection: HELLO, then what the client sends and what the fake dispatches.
async fn serve<S>(socket: WebSocketStream<S>, number: usize, state: Arc<Mutex<Fake>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out) = mpsc::unbounded_channel();
    {
        let mut fake = state.lock().unwrap_or_else(|p| p.into_inner());
        fake.record(format!("connect {number}"));
        let hello = json!({"op": 10, "d": {"heartbeat_interval": fake.heartbeat_ms},
                           "s": null, "t": null});
        let _ = out_tx.send(Out::Text(hello.to_string()));
        fake.connections.insert(
            number,
            Connection {
                out: out_tx,
                session: None,
            },
        );
    }
    let (mut sink, mut stream) = socket.split();
    let mut sending = true;
    // Whether this socket has identified or resumed (or tried to).
    let mut authenticated = false;
    loop {
        tokio::select! {
            next = out.recv(), if sending => match next {
                Some(Out::Text(text)) => {
                    let _ = sink.send(Message::text(text)).await;
                }
                Some(Out::Close(code, reason)) => {
                    sending = false;
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                None => sending = false,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let mut fake = state.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((code, reason)) =
                        receive(&mut fake, number, text.as_str(), &mut authenticated)
                    {
                        fake.record(format!("refused {number} code={code}"));
                        fake.send(number, Out::Close(code, reason));
                        forget(&mut fake, number);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let mut fake = state.lock().unwrap_or_else(|p| p.into_inner());
    forget(&mut fake, number);
    fake.record(format!("closed {number}"));
}

/// Connection `number` no longer receives dispatches.
fn forget(fake: &mut Fake, number: usize) {
    if let Some(connection) = fake.connections.remove(&number)
        && let Some(session) = connection.session
        && let Some(session) = fake.sessions.get_mut(&session)
        && session.live == Some(number)
    {
        session.live = None;
    }
}

/// Handles one frame from the client; `Some((code, reason))` closes the socket.
fn receive(
    fake: &mut Fake,
    number: usize,
    text: &str,
    authenticated: &mut bool,
) -> Option<(u16, &'static str)> {
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        return Some((4002, "Error while decoding payload."));
    };
    let d = &payload["d"];
    let token_ok = |fake: &Fake| {
        let token = d["token"].as_str().unwrap_or_default();
        token.strip_prefix("Bot ").unwrap_or(token) == fake.token
    };
    match payload["op"].as_u64() {
        Some(1) => {
            let seq = d.as_u64().map_or("null".into(), |s| s.to_string());
            fake.record(format!("heartbeat {number} seq={seq}"));
            let ack = json!({"op": 11, "d": null, "s": null, "t": null});
            fake.send(number, Out::Text(ack.to_string()));
        }
        Some(2) => {
            if std::mem::replace(authenticated, true) {
                return Some((4005, "Already authenticated."));
            }
            if !token_ok(fake) {
                return Some((4004, "Authentication failed."));
            }
            let intents = d["intents"].as_u64().unwrap_or(0);
            fake.record(format!("identify {number} intents={intents}"));
            let id = format!("sess-{number}");
            fake.sessions.insert(
                id.clone(),
                Session {
                    intents,
                    seq: 0,
                    valid: true,
                    live: Some(number),
                    replay: Vec::new(),
                },
            );
            fake.current = Some(id.clone());
            if let Some(connection) = fake.connections.get_mut(&number) {
                connection.session = Some(id.clone());
            }
            let guilds: Vec<Value> = fake
                .guilds
                .keys()
                .map(|g| json!({"id": g, "unavailable": true}))
                .collect();
            let ready = json!({
                "v": 10,
                "user": {"id": BOT_USER_ID, "username": "chatbridge", "discriminator": "0",
                         "global_name": null, "avatar": null, "bot": true, "verified": true,
                         "mfa_enabled": false, "flags": 0, "email": null},
                "guilds": guilds, "session_id": id, "session_type": "normal",
                "resume_gateway_url": fake.gateway_url, "shard": [0, 1],
                "application": {"id": APPLICATION_ID, "flags": 0},
                "private_channels": [], "relationships": [], "presences": [],
                "guild_join_requests": [], "geo_ordered_rtc_regions": ["fake"],
                "user_settings": {}, "auth_session_id_hash": "fake", "_trace": ["[\"fake-gateway\"]"]
            });
            fake.dispatch_to(&id, "READY", ready);
            fake.record(format!("ready {number} session={id}"));
            let guild_ids: Vec<String> = fake.guilds.keys().cloned().collect();
            for guild in guild_ids {
                let data = fake.guild_create(&guild);
                fake.dispatch_to(&id, "GUILD_CREATE", data);
            }
        }
        Some(6) => {
            if std::mem::replace(authenticated, true) {
                return Some((4005, "Already authenticated."));
            }
            let id = d["session_id"].as_str().unwrap_or_default().to_owned();
            let seq = d["seq"].as_u64().unwrap_or(0);
            fake.record(format!("resume {number} session={id} seq={seq}"));
            if !token_ok(fake) {
                return Some((4004, "Authentication failed."));
            }
            let Some(session) = fake.sessions.get_mut(&id).filter(|s| s.valid) else {
                fake.record(format!("invalid {number}"));
                let invalid = json!({"op": 9, "d": false, "s": null, "t": null});
                fake.send(number, Out::Text(invalid.to_string()));
                return None;
            };
            let previous = session.live.replace(number);
            let replay: Vec<String> = session
                .replay
                .iter()
                .filter(|(s, _)| *s > seq)
                .map(|(_, p)| p.clone())
                .collect();
            if let Some(previous) = previous.filter(|p| *p != number) {
                fake.send(previous, Out::Close(4000, "Unknown error."));
                fake.connections.remove(&previous);
            }
            if let Some(connection) = fake.connections.get_mut(&number) {
                connection.session = Some(id.clone());
            }
            let replayed = replay.len();
            for payload in replay {
                fake.send(number, Out::Text(payload));
            }
            fake.dispatch_to(&id, "RESUMED", json!({"_trace": ["[\"fake-gateway\"]"]}));
            fake.record(format!("resumed {number} replayed={replayed}"));
        }
        Some(3 | 4 | 8 | 31) if *authenticated => {}
        Some(3 | 4 | 8 | 31) => return Some((4003, "Not authenticated.")),
        _ => return Some((4001, "Unknown opcode.")),
    }
    None
}

/// A 401/400/404 with Discord's JSON error body.
fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"message": message, "code": code})),
    )
        .into_response()
}

/// `GET /api/v10/channels/{id}/messages?after=&limit=`.
async fn messages(
    State(state): State<Arc<Mutex<Fake>>>,
    Path(channel_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut fake = state.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    fake.rest_requests.push(format!("GET {target}"));
    // Any request inside a 429's retry_after or into an exhausted bucket, whatever it asks.
    let exhausted = fake.remaining == 0 && fake.window_ends.is_some_and(|end| now < end);
    if exhausted || fake.not_before.is_some_and(|t| now < t) {
        fake.violations += 1;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("authorization").and_then(|v| v.strip_prefix("Bot ")) != Some(fake.token.as_str()) {
        return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }
    if !header("user-agent").is_some_and(|ua| ua.starts_with("DiscordBot")) {
        return error(StatusCode::BAD_REQUEST, 0, "400: Bad Request");
    }
    if let Some((n, status, code, message)) = fake.failing.take() {
        if n > 1 {
            fake.failing = Some((n - 1, status, code, message.clone()));
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, code, &message);
    }
    if fake.window_ends.is_none_or(|end| now >= end) {
        fake.window_ends = Some(now + BUCKET_WINDOW);
        fake.remaining = BUCKET_LIMIT;
    }
    // Rounded up to the millisecond the header shows, so a client that waits it is never early.
    let reset_after = fake.window_ends.map_or(0.0, |end| {
        (end.duration_since(now).as_secs_f64() * 1000.0).ceil() / 1000.0
    });
    let retry_after = if fake.forced > 0 {
        fake.forced -= 1;
        Some(fake.forced_retry_after)
    } else if fake.remaining == 0 {
        Some(reset_after)
    } else {
        fake.remaining -= 1;
        None
    };
    let mut response = if let Some(wait) = retry_after {
        fake.not_before = Some(now + Duration::from_secs_f64(wait));
        (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"message": "You are being rate limited.",
                              "retry_after": wait, "global": false})),
        )
            .into_response()
    } else if let Some((_, history)) = fake.channels.get(&channel_id) {
        axum::Json(page(history, uri.query().unwrap_or_default())).into_response()
    } else {
        error(StatusCode::NOT_FOUND, 10003, "Unknown Channel")
    };
    let reset_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        + reset_after;
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    };
    set("x-ratelimit-limit", BUCKET_LIMIT.to_string());
    set("x-ratelimit-remaining", fake.remaining.to_string());
    set("x-ratelimit-reset", format!("{reset_epoch:.3}"));
    set("x-ratelimit-reset-after", format!("{reset_after:.3}"));
    set("x-ratelimit-bucket", "fakechannelmsgs01".into());
    if let Some(wait) = retry_after {
        set("retry-after", format!("{}", wait.ceil() as u64));
        set("x-ratelimit-scope", "user".into());
    }
    response
}

/// The messages a query selects, newest first as Discord answers: with `after`, the `limit`
/// oldest messages whose id is greater; without, the `limit` newest. `limit` defaults to 50 and
/// is clamped to 1..=100. REST message objects carry neither `guild_id` nor `member`.
fn page(history: &[Value], query: &str) -> Value {
    let mut after = None;
    let mut limit = 50;
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match key {
            "after" => after = value.parse::<u64>().ok(),
            "limit" => limit = value.parse::<usize>().unwrap_or(50).clamp(1, 100),
            _ => {}
        }
    }
    let id = |m: &Value| {
        m["id"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut selected: Vec<&Value> = match after {
        Some(after) => history
            .iter()
            .filter(|m| id(m) > after)
            .take(limit)
            .collect(),
        None => history.iter().rev().take(limit).rev().collect(),
    };
    selected.reverse();
    Value::Array(
        selected
            .into_iter()
            .map(|m| {
                let mut m = m.clone();
                if let Some(object) = m.as_object_mut() {
                    object.remove("guild_id");
                    object.remove("member");
                }
                m
            })
            .collect(),
    )
}
