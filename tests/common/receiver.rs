//! A fake webhook endpoint on loopback: records every request and answers as a test programs it.
//!
//! ```ignore
//! let receiver = Receiver::start().await;
//! receiver.respond_next(3, Reply::status(503));           // three failures, then the default
//! receiver.respond_with(Reply::status(429).header("Retry-After", "2")); // until changed
//! receiver.respond_when_body_contains("\"id\": \"bad\"", Reply::status(400).body("invalid_payload"));
//! let got = receiver.wait_for(5, Duration::from_secs(10)).await;
//! ```
//! Precedence per request: a matching body rule, then the queued `respond_next` replies, then the
//! standing reply (200 with an empty body unless changed).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, normally.
    pub method: Method,
    /// The request path (no query).
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Every header as sent.
    pub headers: HeaderMap,
    /// The exact body bytes (what signatures are computed over).
    pub body: Bytes,
    /// When it arrived, for spacing assertions (backoff, Retry-After).
    pub arrived: Instant,
}

impl Recorded {
    /// The body as JSON; panics with the body text when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every header as (lower-case name, value) text pairs, for handing to other verifiers.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }

    /// The webhook items the body carried: each entry of a `chat.batch`, or the body itself.
    pub fn items(&self) -> Vec<serde_json::Value> {
        let body = self.json();
        if body["type"] == "chat.batch" {
            body["data"]
                .as_array()
                .expect("a batch's data is a list")
                .clone()
        } else {
            vec![body]
        }
    }

    fn summary(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(200).collect();
        format!("{} {} {body}", self.method, self.path)
    }
}

/// The chat content of a webhook item (`data.event.content`); empty when it has none.
pub fn content_of(item: &serde_json::Value) -> String {
    item["data"]["event"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The chat content of each request's body (`data.event.content`), in order; empty where a
/// body has none.
pub fn contents_of(requests: &[Recorded]) -> Vec<String> {
    requests.iter().map(|r| content_of(&r.json())).collect()
}

/// A programmed answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status to answer with.
    status: u16,
    /// Extra response headers (e.g. `Retry-After`).
    headers: Vec<(String, String)>,
    /// The response body.
    body: String,
    /// How long to wait before answering, to provoke client timeouts.
    delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// What the responder answers; shared between the test and the server task.
#[derive(Debug)]
struct Script {
    /// Persistent rules: a request whose body contains the needle gets the reply.
    body_rules: Vec<(Vec<u8>, Reply)>,
    /// Replies for the next requests, one each, in order.
    queued: VecDeque<Reply>,
    /// The answer when nothing else applies.
    standing: Reply,
}

impl Script {
    fn reply_for(&mut self, body: &[u8]) -> Reply {
        let rule = self
            .body_rules
            .iter()
            .find(|(needle, _)| contains(body, needle));
        match rule {
            Some((_, reply)) => reply.clone(),
            None => self
                .queued
                .pop_front()
                .unwrap_or_else(|| self.standing.clone()),
        }
    }
}

/// State the server task shares with the test.
#[derive(Debug, Clone)]
struct Shared {
    /// Every request so far, in arrival order.
    recorded: Arc<Mutex<Vec<Recorded>>>,
    /// The programmed answers.
    script: Arc<Mutex<Script>>,
}

/// The running fake endpoint; stops when dropped.
pub struct Receiver {
    /// Where it listens (127.0.0.1, a free port).
    addr: SocketAddr,
    /// Shared with the server task.
    shared: Shared,
    /// Fired on drop to shut the server down gracefully.
    stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts on a chosen loopback port (0: any free one), e.g. the port a link has been
    /// failing to connect to, to end its outage.
    pub async fn start_on(port: u16) -> Self {
        let shared = Shared {
            recorded: Arc::default(),
            script: Arc::new(Mutex::new(Script {
                body_rules: Vec::new(),
                queued: VecDeque::new(),
                standing: Reply::status(200),
            })),
        };
        let app = axum::Router::new()
            .fallback(record_and_reply)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the fake receiver on loopback");
        let addr = listener.local_addr().expect("receiver address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Self {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.recorded).clone()
    }

    /// The chat content of every webhook event received so far (`data.event.content`), in
    /// arrival order.
    pub fn contents(&self) -> Vec<String> {
        contents_of(&self.requests())
    }

    /// Waits until at least `n` requests arrived and returns them all; panics after `timeout`
    /// listing what did arrive.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            if Instant::now() >= deadline {
                let listing: Vec<String> = got.iter().map(Recorded::summary).collect();
                panic!(
                    "receiver expected {n} request(s) within {timeout:?}, got {}:\n{}",
                    got.len(),
                    listing.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Answers every request with `reply` from now on (until changed); clears queued replies.
    pub fn respond_with(&self, reply: Reply) {
        let mut script = lock(&self.shared.script);
        script.queued.clear();
        script.standing = reply;
    }

    /// Answers the next `n` requests (after any already queued) with `reply`, then falls back.
    pub fn respond_next(&self, n: usize, reply: Reply) {
        let mut script = lock(&self.shared.script);
        script.queued.extend(std::iter::repeat_n(reply, n));
    }

    /// Answers every request whose body contains `needle` with `reply` (e.g. a 400 for one
    /// specific event), ahead of everything else.
    pub fn respond_when_body_contains(&self, needle: &str, reply: Reply) {
        lock(&self.shared.script)
            .body_rules
            .push((needle.as_bytes().to_vec(), reply));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn record_and_reply(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = lock(&shared.script).reply_for(&body);
    lock(&shared.recorded).push(Recorded {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
        arrived: Instant::now(),
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).expect("a valid status in the test's Reply");
    let mut response = (status, reply.body).into_response();
    for (name, value) in &reply.headers {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = axum::http::HeaderValue::from_str(value).expect("header value");
        response.headers_mut().append(name, value);
    }
    response
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// Locks, ignoring poisoning: a panicking test thread must not hide the requests from others.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
