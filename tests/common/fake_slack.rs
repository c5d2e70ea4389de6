//! A fake Slack on loopback that enforces the contract in EXTERNAL_APIS.md: the Web API's
//! `chat.postMessage` (bearer token, JSON `ok`/`ok: false` answers with a `ts`) and an incoming
//! webhook (`ok` as plain text, errors as a status plus a bare string). Both share one rate
//! limit like Slack's per channel: a token bucket of [`BURST`] posts refilled at one per
//! second; a post beyond it gets 429 with `Retry-After: 1` and is counted.
//!
//! [`FakeSlack::strict`] enforces Slack's window strictly instead, the way Slack's edge sees
//! it: each request is held a random 0 to `jitter` (the Internet's path is never even), then
//! judged by a sliding window with no tolerance: in every window from an earlier post's
//! arrival to now, at most [`STRICT_BURST`] posts plus one per second elapsed. A post beyond
//! it gets 429 with `Retry-After` in whole seconds, until it would pass.
//!
//! ```ignore
//! let slack = FakeSlack::start("xoxb-test").await;
//! let strict = FakeSlack::strict("xoxb-test", Duration::from_millis(100)).await;
//! slack.fail_next(FakeReply::api_error("channel_not_found"));     // one post refused
//! slack.fail_with(Some(FakeReply::status(404, "no_service")));    // until changed
//! slack.force_429(2);                                              // next post: Retry-After: 2
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Posts the lenient bucket lets through at once after a quiet spell (ours sends at most 2).
pub const BURST: f64 = 5.0;
/// The strict window's burst: "about one per second, short bursts allowed" read as the
/// tightest bucket a bridge may assume, 3 at once, then exactly one per second.
pub const STRICT_BURST: usize = 3;
/// What Slack truncates at; the bridge must stay under 4,000 anyway.
const TEXT_MAX: usize = 40_000;

/// One post Slack accepted.
#[derive(Debug, Clone)]
pub struct SlackPost {
    /// The JSON body.
    pub body: Value,
    /// When it arrived.
    pub arrived: Instant,
    /// `api` or `webhook`.
    pub via: &'static str,
    /// The `ts` answered (Web API).
    pub ts: Option<String>,
}

impl SlackPost {
    pub fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or_default()
    }

    pub fn username(&self) -> Option<&str> {
        self.body["username"].as_str()
    }
}

/// An answer the test programs.
#[derive(Debug, Clone)]
pub enum FakeReply {
    /// HTTP 200 `{"ok": false, "error": …}` (Web API).
    ApiError(String),
    /// A status with a bare string body (incoming webhook errors, 5xx).
    Status(u16, String),
}

impl FakeReply {
    pub fn api_error(error: &str) -> Self {
        Self::ApiError(error.into())
    }

    pub fn status(status: u16, body: &str) -> Self {
        Self::Status(status, body.into())
    }
}

#[derive(Default)]
struct Fake {
    token: String,
    accepted: Vec<SlackPost>,
    /// Every request, accepted or not, with when it arrived.
    requests: Vec<Instant>,
    rate_limited: usize,
    tokens: f64,
    refilled: Option<Instant>,
    next: VecDeque<FakeReply>,
    standing: Option<FakeReply>,
    forced_429: Option<u64>,
    /// After a 429, no request may come before this.
    not_before: Option<Instant>,
    /// Requests that came before a Retry-After had passed.
    early: usize,
    ts: u64,
    /// `users.info`: user id → display name.
    users: std::collections::HashMap<String, String>,
    /// `users.info` calls answered.
    user_lookups: usize,
    /// The strict window's jitter, when the fake is [`FakeSlack::strict`].
    strict: Option<Duration>,
    /// Strict window: when each request that passed it arrived.
    passed: Vec<Instant>,
}

/// The fake Slack server.
#[derive(Clone)]
pub struct FakeSlack {
    addr: SocketAddr,
    state: Arc<Mutex<Fake>>,
}

impl FakeSlack {
    /// Starts the fake on 127.0.0.1; the Web API accepts `token` only.
    pub async fn start(token: &str) -> Self {
        Self::serve(token, None).await
    }

    /// Starts the fake with the strict window (module docs), each request held up to `jitter`.
    pub async fn strict(token: &str, jitter: Duration) -> Self {
        Self::serve(token, Some(jitter)).await
    }

    async fn serve(token: &str, strict: Option<Duration>) -> Self {
        let state = Arc::new(Mutex::new(Fake {
            token: token.into(),
            tokens: BURST,
            ts: 1_700_000_000_000_100,
            strict,
            ..Fake::default()
        }));
        let app = Router::new()
            .route("/api/chat.postMessage", post(api))
            .route("/services/{team}/{bot}/{secret}", post(webhook))
            .route("/api/users.info", axum::routing::get(users_info))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake slack");
        let addr = listener.local_addr().expect("fake slack address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    fn state(&self) -> MutexGuard<'_, Fake> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `api_url` for a link: `http://127.0.0.1:PORT/api`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// An incoming-webhook URL with `secret` as its token.
    pub fn webhook_url(&self, secret: &str) -> String {
        format!("http://{}/services/T0001/B0001/{secret}", self.addr)
    }

    pub fn posts(&self) -> Vec<SlackPost> {
        self.state().accepted.clone()
    }

    /// Every request's arrival time, accepted or not.
    pub fn requests(&self) -> Vec<Instant> {
        self.state().requests.clone()
    }

    /// How many 429s the fake answered because the rate limit was exceeded.
    pub fn rate_limited(&self) -> usize {
        self.state().rate_limited
    }

    /// How many requests came before a Retry-After had passed.
    pub fn early(&self) -> usize {
        self.state().early
    }

    pub fn fail_next(&self, reply: FakeReply) {
        self.state().next.push_back(reply);
    }

    pub fn fail_with(&self, reply: Option<FakeReply>) {
        self.state().standing = reply;
    }

    /// `users.info` answers this display name for `user`.
    pub fn set_user(&self, user: &str, display_name: &str) {
        self.state().users.insert(user.into(), display_name.into());
    }

    /// How many `users.info` calls were answered.
    pub fn user_lookups(&self) -> usize {
        self.state().user_lookups
    }

    /// The next request gets 429 with `Retry-After: secs` (not counted as provoked).
    pub fn force_429(&self, secs: u64) {
        self.state().forced_429 = Some(secs);
    }
}

/// What the fake decides before looking at the body: a rate limit, or a programmed reply.
enum Gate {
    Limited(u64),
    Reply(FakeReply),
    Open,
}

async fn gate(state: &Arc<Mutex<Fake>>) -> Gate {
    let jitter = state.lock().unwrap_or_else(|p| p.into_inner()).strict;
    if let Some(jitter) = jitter {
        let held = rand::random_range(0.0..=jitter.as_secs_f64());
        tokio::time::sleep(Duration::from_secs_f64(held)).await;
    }
    let mut fake = state.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    fake.requests.push(now);
    if fake.not_before.is_some_and(|t| now < t) {
        fake.early += 1;
    }
    if let Some(secs) = fake.forced_429.take() {
        fake.not_before = Some(now + Duration::from_secs(secs));
        return Gate::Limited(secs);
    }
    if let Some(wait) = fake.over_limit(now) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        fake.rate_limited += 1;
        fake.not_before = Some(now + Duration::from_secs(secs));
        return Gate::Limited(secs);
    }
    if let Some(reply) = fake.next.pop_front() {
        return Gate::Reply(reply);
    }
    match fake.standing.clone() {
        Some(reply) => Gate::Reply(reply),
        None => Gate::Open,
    }
}

impl Fake {
    /// How long until a post arriving at `now` would pass the limit, when it would not now;
    /// records it as passed otherwise.
    fn over_limit(&mut self, now: Instant) -> Option<Duration> {
        if self.strict.is_some() {
            let wait = strict_wait(&self.passed, now);
            if wait.is_none() {
                self.passed.push(now);
            }
            return wait;
        }
        let elapsed = self
            .refilled
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.tokens = (self.tokens + elapsed).min(BURST);
        self.refilled = Some(now);
        if self.tokens < 1.0 {
            return Some(Duration::from_secs_f64(1.0 - self.tokens));
        }
        self.tokens -= 1.0;
        None
    }
}

/// The strict window: a post at `now` passes when, for every earlier passed post, the posts
/// since it (this one included) are at most [`STRICT_BURST`] plus the seconds elapsed since
/// it. Otherwise: how long until it would.
fn strict_wait(passed: &[Instant], now: Instant) -> Option<Duration> {
    let mut wait: f64 = 0.0;
    for (index, at) in passed.iter().enumerate() {
        let posts = (passed.len() - index + 1) as f64;
        let allowed = STRICT_BURST as f64 + now.duration_since(*at).as_secs_f64();
        wait = wait.max(posts - allowed);
    }
    (wait > 0.0).then(|| Duration::from_secs_f64(wait))
}

fn too_many(secs: u64) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [("Retry-After", secs.to_string())],
        "rate_limited",
    )
        .into_response()
}

fn reply(reply: FakeReply) -> Response {
    match reply {
        FakeReply::ApiError(error) => {
            axum::Json(json!({"ok": false, "error": error})).into_response()
        }
        FakeReply::Status(status, body) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
    }
}

/// Checks a body as Slack would; `Err(error)` names Slack's error.
fn check(body: &Value) -> Result<(), &'static str> {
    if !body.is_object() {
        return Err("invalid_payload");
    }
    let text = body["text"].as_str().unwrap_or_default();
    if text.trim().is_empty() {
        return Err("no_text");
    }
    if text.chars().count() > TEXT_MAX {
        return Err("msg_too_long");
    }
    Ok(())
}

async fn api(State(state): State<Arc<Mutex<Fake>>>, headers: HeaderMap, body: Bytes) -> Response {
    match gate(&state).await {
        Gate::Limited(secs) => return too_many(secs),
        Gate::Reply(programmed) => return reply(programmed),
        Gate::Open => {}
    }
    let mut fake = state.lock().unwrap_or_else(|p| p.into_inner());
    let bearer = format!("Bearer {}", fake.token);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(bearer.as_str()) {
        return reply(FakeReply::api_error(if auth.is_none() {
            "not_authed"
        } else {
            "invalid_auth"
        }));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return reply(FakeReply::api_error("invalid_json"));
    };
    if body["channel"].as_str().is_none_or(str::is_empty) {
        return reply(FakeReply::api_error("channel_not_found"));
    }
    if let Err(error) = check(&body) {
        return reply(FakeReply::api_error(error));
    }
    fake.ts += 100;
    let ts = format!("{}.{:06}", fake.ts / 1_000_000, fake.ts % 1_000_000);
    fake.accepted.push(SlackPost {
        body: body.clone(),
        arrived: Instant::now(),
        via: "api",
        ts: Some(ts.clone()),
    });
    axum::Json(json!({"ok": true, "channel": body["channel"], "ts": ts, "message": {"text": body["text"]}}))
        .into_response()
}

async fn webhook(State(state): State<Arc<Mutex<Fake>>>, body: Bytes) -> Response {
    match gate(&state).await {
        Gate::Limited(secs) => return too_many(secs),
        Gate::Reply(programmed) => return reply(programmed),
        Gate::Open => {}
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return reply(FakeReply::status(400, "invalid_payload"));
    };
    if let Err(error) = check(&body) {
        return reply(FakeReply::status(400, error));
    }
    let mut fake = state.lock().unwrap_or_else(|p| p.into_inner());
    fake.accepted.push(SlackPost {
        body,
        arrived: Instant::now(),
        via: "webhook",
        ts: None,
    });
    "ok".into_response()
}

/// `users.info?user=U…` (bearer token): the user's profile, or `user_not_found`.
async fn users_info(
    State(state): State<Arc<Mutex<Fake>>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let mut fake = state.lock().unwrap_or_else(|p| p.into_inner());
    let bearer = format!("Bearer {}", fake.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return reply(FakeReply::api_error("invalid_auth"));
    }
    fake.user_lookups += 1;
    let user = query.get("user").cloned().unwrap_or_default();
    match fake.users.get(&user) {
        Some(name) => axum::Json(json!({"ok": true, "user": {"id": user, "name": "handle",
            "profile": {"display_name": name, "real_name": "Real Name"}}}))
        .into_response(),
        None => reply(FakeReply::api_error("user_not_found")),
    }
}
