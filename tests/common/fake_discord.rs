//! A fake Discord execute-webhook endpoint on loopback (`POST /api/v10/webhooks/{id}/{token}`)
//! that enforces the contract in EXTERNAL_APIS.md: 204 on success; a per-webhook rate-limit
//! bucket of `limit` requests per `window` announced in `X-RateLimit-*` headers, and a 429 with
//! the JSON body `{"message", "retry_after": <float>, "global": false}` plus `Retry-After` for a
//! request into an empty bucket (counted); 400 `{"code": 50035}` for content over 2000 UTF-16
//! units, `{"code": 50006}` for an empty message; JSON errors with codes as programmed.
//!
//! ```ignore
//! let discord = FakeDiscord::start(5, Duration::from_secs(2)).await;
//! discord.force_429(1.5);                                     // next request: retry_after 1.5
//! discord.fail_with(Some((404, 10015, "Unknown Webhook")));   // until changed
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Discord's content limit, in UTF-16 units here (Discord counts characters).
const CONTENT_MAX: usize = 2000;

/// One request that reached the fake.
#[derive(Debug, Clone)]
pub struct DiscordPost {
    pub body: Value,
    pub headers: HeaderMap,
    pub arrived: Instant,
    /// The webhook token in the path.
    pub token: String,
    /// The status answered.
    pub status: u16,
}

impl DiscordPost {
    pub fn content(&self) -> &str {
        self.body["content"].as_str().unwrap_or_default()
    }

    pub fn username(&self) -> Option<&str> {
        self.body["username"].as_str()
    }
}

struct Fake {
    limit: u32,
    window: Duration,
    remaining: u32,
    window_ends: Option<Instant>,
    requests: Vec<DiscordPost>,
    rate_limited: usize,
    forced_429: Option<(f64, bool)>,
    not_before: Option<Instant>,
    early: usize,
    standing: Option<(u16, u64, String)>,
}

/// The fake Discord server.
#[derive(Clone)]
pub struct FakeDiscord {
    addr: SocketAddr,
    state: Arc<Mutex<Fake>>,
}

impl FakeDiscord {
    /// Starts the fake with a bucket of `limit` requests per `window`.
    pub async fn start(limit: u32, window: Duration) -> Self {
        let state = Arc::new(Mutex::new(Fake {
            limit,
            window,
            remaining: limit,
            window_ends: None,
            requests: Vec::new(),
            rate_limited: 0,
            forced_429: None,
            not_before: None,
            early: 0,
            standing: None,
        }));
        let app = Router::new()
            .route("/api/v10/webhooks/{id}/{token}", post(execute))
            .with_state(state.clone());
        let addr = super::serve(app).await;
        Self { addr, state }
    }

    fn state(&self) -> MutexGuard<'_, Fake> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A webhook URL as Discord shows it (unversioned: the bridge must add v10).
    pub fn webhook_url(&self, token: &str) -> String {
        format!("http://{}/api/webhooks/1234567890/{token}", self.addr)
    }

    /// Every request, in arrival order, whatever the answer.
    pub fn requests(&self) -> Vec<DiscordPost> {
        self.state().requests.clone()
    }

    /// The requests answered 204.
    pub fn accepted(&self) -> Vec<DiscordPost> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 204)
            .collect()
    }

    /// 429s answered because a request came into an empty bucket.
    pub fn rate_limited(&self) -> usize {
        self.state().rate_limited
    }

    /// Requests that came before a 429's retry_after had passed.
    pub fn early(&self) -> usize {
        self.state().early
    }

    /// The next request gets a 429 with this `retry_after` (not counted as provoked).
    pub fn force_429(&self, retry_after: f64) {
        self.state().forced_429 = Some((retry_after, false));
    }

    /// The next request gets a global 429 (`"global": true`) with this `retry_after`.
    pub fn force_global_429(&self, retry_after: f64) {
        self.state().forced_429 = Some((retry_after, true));
    }

    /// Answers every request with (status, code, message) until changed.
    pub fn fail_with(&self, error: Option<(u16, u64, &str)>) {
        self.state().standing = error.map(|(s, c, m)| (s, c, m.to_owned()));
    }
}

fn units(text: &str) -> usize {
    text.encode_utf16().count()
}

fn error(status: u16, code: u64, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({"message": message, "code": code}),
    )
}

async fn execute(
    State(state): State<Arc<Mutex<Fake>>>,
    Path((_id, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut fake = state.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if fake.not_before.is_some_and(|t| now < t) {
        fake.early += 1;
    }
    if fake.window_ends.is_none_or(|end| now >= end) {
        fake.window_ends = Some(now + fake.window);
        fake.remaining = fake.limit;
    }
    // Rounded up to the millisecond the header shows, so a client that waits it is never early.
    let reset_after = fake.window_ends.map_or(0.0, |end| {
        (end.duration_since(now).as_secs_f64() * 1000.0).ceil() / 1000.0
    });
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let forced = fake.forced_429.take();
    let global = forced.is_some_and(|(_, global)| global);
    let (status, answer, retry_after) = if let Some((retry_after, _)) = forced {
        (StatusCode::TOO_MANY_REQUESTS, None, Some(retry_after))
    } else if fake.remaining == 0 {
        fake.rate_limited += 1;
        (StatusCode::TOO_MANY_REQUESTS, None, Some(reset_after))
    } else {
        fake.remaining -= 1;
        let content = body["content"].as_str().unwrap_or_default();
        let (status, answer) = if let Some((status, code, message)) = fake.standing.clone() {
            error(status, code, &message)
        } else if !body.is_object() {
            error(400, 50109, "The request body contains invalid JSON.")
        } else if units(content) > CONTENT_MAX {
            error(400, 50035, "Invalid Form Body")
        } else if content.is_empty() {
            error(400, 50006, "Cannot send an empty message")
        } else {
            (StatusCode::NO_CONTENT, Value::Null)
        };
        (status, Some(answer), None)
    };
    if let Some(wait) = retry_after {
        fake.not_before = Some(now + Duration::from_secs_f64(wait));
    }
    fake.requests.push(DiscordPost {
        body,
        headers,
        arrived: now,
        token,
        status: status.as_u16(),
    });
    let reset_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        + reset_after;
    let mut response = match (retry_after, answer) {
        (Some(wait), _) => (
            status,
            axum::Json(json!({"message": "You are being rate limited.", "retry_after": wait, "global": global})),
        )
            .into_response(),
        (None, Some(Value::Null)) | (None, None) => status.into_response(),
        (None, Some(answer)) => (status, axum::Json(answer)).into_response(),
    };
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    };
    set("x-ratelimit-limit", fake.limit.to_string());
    set("x-ratelimit-remaining", fake.remaining.to_string());
    set("x-ratelimit-reset", format!("{reset_epoch:.3}"));
    set("x-ratelimit-reset-after", format!("{reset_after:.3}"));
    set("x-ratelimit-bucket", "fakebucket0001".into());
    if let Some(wait) = retry_after {
        set("retry-after", format!("{}", wait.ceil() as u64));
        set(
            "x-ratelimit-scope",
            if global { "global" } else { "user" }.into(),
        );
        if global {
            set("x-ratelimit-global", "true".into());
        }
    }
    response
}
