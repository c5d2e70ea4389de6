//! A fake Slack Socket Mode on loopback, per EXTERNAL_APIS.md: `POST /api/apps.connections.open`
//! (bearer app token; `{"ok": true, "url": "ws://…"}`, `wss://localhost:…` when started with
//! TLS, or `{"ok": false, "error": "invalid_auth"}`) and the websocket it names
//! (tokio-tungstenite's server side, over TLS with [`FakeSocketMode::start_tls`]). Each accepted
//! connection is sent `hello` at once and handed to the test as a [`Connection`], which sends
//! envelopes on it; what the client sends back (acknowledgements) and when connections open
//! and close are recorded in one ordered log.
//!
//! ```ignore
//! let fake = FakeSocketMode::start("xapp-test").await;
//! let first = fake.next_connection().await;
//! first.send(events_api("env-1", payload));
//! fake.wait_acked(&["env-1"]).await;
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::tls::Incoming;
use super::wait::eventually;

#[derive(Default)]
struct Fake {
    app_token: String,
    /// `apps.connections.open` calls answered with a URL.
    opens: usize,
    /// Calls refused (wrong token).
    refused: usize,
    /// `connected N`, `ack N <envelope_id>`, `closed N` (and with TLS `tls-accepted sni=S` or
    /// `tls-failed K: <error>` per handshake), in the order they happened.
    log: Vec<String>,
}

/// The fake: its Web API and its websocket listener.
pub struct FakeSocketMode {
    api: SocketAddr,
    state: Arc<Mutex<Fake>>,
    connections: tokio::sync::Mutex<mpsc::UnboundedReceiver<Connection>>,
}

/// One websocket connection the bridge opened.
pub struct Connection {
    /// 1 for the first connection accepted, then 2, …
    pub number: usize,
    frames: mpsc::UnboundedSender<Option<Value>>,
}

impl Connection {
    /// Sends one frame (an envelope) to the bridge.
    pub fn send(&self, frame: Value) {
        let _ = self.frames.send(Some(frame));
    }

    /// Closes the connection from Slack's side.
    pub fn close(&self) {
        let _ = self.frames.send(None);
    }
}

/// An `events_api` envelope carrying `payload` (an Events API `event_callback`).
pub fn events_api(envelope_id: &str, retry_attempt: u32, payload: Value) -> Value {
    json!({"envelope_id": envelope_id, "type": "events_api", "accepts_response_payload": false,
           "retry_attempt": retry_attempt, "retry_reason": if retry_attempt > 0 { "timeout" } else { "" },
           "payload": payload})
}

/// Slack's `disconnect` asking for a refresh.
pub fn disconnect() -> Value {
    json!({"type": "disconnect", "reason": "refresh_requested",
           "debug_info": {"host": "applink-fake"}})
}

impl FakeSocketMode {
    /// Starts the fake on 127.0.0.1; `apps.connections.open` accepts `app_token` only.
    pub async fn start(app_token: &str) -> Self {
        Self::start_with(app_token, None).await
    }

    /// Same, but the websocket listener speaks TLS (`acceptor`'s certificate, for `localhost`)
    /// and `apps.connections.open` answers `wss://localhost:PORT/link/?ticket=…`. The Web API
    /// stays plain http. Each TLS handshake is logged `tls-accepted sni=<server name the
    /// client sent>` or `tls-failed K: <error>`.
    pub async fn start_tls(app_token: &str, acceptor: TlsAcceptor) -> Self {
        Self::start_with(app_token, Some(acceptor)).await
    }

    async fn start_with(app_token: &str, tls: Option<TlsAcceptor>) -> Self {
        let state = Arc::new(Mutex::new(Fake {
            app_token: app_token.into(),
            ..Fake::default()
        }));
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake socket mode");
        let ws_addr = ws.local_addr().expect("ws address");
        let ws_base = match tls {
            Some(_) => format!("wss://localhost:{}", ws_addr.port()),
            None => format!("ws://{ws_addr}"),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(accept(ws, state.clone(), tx, tls));
        let app = Router::new()
            .route("/api/apps.connections.open", post(open))
            .with_state((state.clone(), ws_base));
        let api = super::serve(app).await;
        Self {
            api,
            state,
            connections: tokio::sync::Mutex::new(rx),
        }
    }

    fn state(&self) -> MutexGuard<'_, Fake> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A bridge config with Socket Mode on through this fake (`app_token`, our bot `B_OURS`):
    /// one Slack link on channel C1 (its Web API at `slack_api_url`) mirrored to `general`,
    /// the HTTP server on `http_port`, a 2 s lease.
    pub fn bridge_config(
        &self,
        redis_url: &str,
        http_port: u16,
        app_token: &str,
        slack_api_url: &str,
    ) -> String {
        format!(
            "[redis]\nurl = \"{redis_url}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
             [delivery]\nlease_secs = 2\n\n\
             [slack]\napp_token = \"{app_token}\"\napi_base = \"{}\"\nbot_id = \"B_OURS\"\n\n\
             [links.slack]\nkind = \"slack\"\nbot_token = \"xoxb-test\"\nchannel = \"C1\"\n\
             api_url = \"{slack_api_url}\"\n\n\
             [[rooms]]\nname = \"general\"\nlinks = [\"slack\"]\n",
            self.api_base(),
        )
    }

    /// `[slack] api_base`: `http://127.0.0.1:PORT/api`.
    pub fn api_base(&self) -> String {
        format!("http://{}/api", self.api)
    }

    /// The next connection the bridge opens; panics after `timeout`.
    pub async fn next_connection(&self, timeout: Duration) -> Connection {
        tokio::time::timeout(timeout, self.connections.lock().await.recv())
            .await
            .expect("timed out waiting for a Socket Mode connection")
            .expect("fake closed")
    }

    /// The ordered log: `connected N`, `ack N <id>`, `closed N`.
    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    /// How many connections were accepted so far.
    pub fn connections_opened(&self) -> usize {
        self.log()
            .iter()
            .filter(|l| l.starts_with("connected "))
            .count()
    }

    /// `apps.connections.open` calls answered with a URL, and refused.
    pub fn opens(&self) -> (usize, usize) {
        let state = self.state();
        (state.opens, state.refused)
    }

    /// The envelope ids acknowledged, in order (with repeats).
    pub fn acked(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter_map(|l| l.strip_prefix("ack "))
            .filter_map(|l| l.split_once(' ').map(|(_, id)| id.to_owned()))
            .collect()
    }

    /// Waits until every id in `ids` has been acknowledged.
    pub async fn wait_acked(&self, ids: &[&str], timeout: Duration) {
        eventually("envelopes acknowledged", timeout, async || {
            let acked = self.acked();
            ids.iter()
                .all(|id| acked.iter().any(|a| a == id))
                .then_some(())
        })
        .await;
    }
}

/// `apps.connections.open`: a fresh websocket URL for the right app token.
async fn open(
    State((state, ws)): State<(Arc<Mutex<Fake>>, String)>,
    headers: HeaderMap,
) -> axum::Json<Value> {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(state.app_token.as_str()) {
        state.refused += 1;
        return axum::Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    state.opens += 1;
    axum::Json(json!({"ok": true,
        "url": format!("{ws}/link/?ticket=fake-{}&app_id=A_OURS", state.opens)}))
}

/// Accepts websocket connections (with `tls`, after a TLS handshake): each gets `hello`, then
/// what the test sends.
async fn accept(
    listener: tokio::net::TcpListener,
    state: Arc<Mutex<Fake>>,
    connections: mpsc::UnboundedSender<Connection>,
    tls: Option<TlsAcceptor>,
) {
    let mut incoming = Incoming::new(listener, tls);
    let mut number = 0;
    let record = |line| {
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .push(line)
    };
    while let Some(stream) = incoming.next(record).await {
        upgrade(stream, &mut number, &state, &connections).await;
    }
}

/// The websocket handshake on `stream` (TCP or TLS); a connection that completes it is
/// numbered, handed to the test and served by its own task.
async fn upgrade<S>(
    stream: S,
    number: &mut usize,
    state: &Arc<Mutex<Fake>>,
    connections: &mpsc::UnboundedSender<Connection>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    *number += 1;
    let number = *number;
    let record = {
        let state = state.clone();
        move |line: String| {
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .log
                .push(line)
        }
    };
    record(format!("connected {number}"));
    let (frames_tx, frames) = mpsc::unbounded_channel::<Option<Value>>();
    let _ = connections.send(Connection {
        number,
        frames: frames_tx,
    });
    tokio::spawn(serve(socket, number, frames, record));
}

/// One connection: `hello`, then the frames the test sends; acks and the close are recorded.
async fn serve<S>(
    socket: WebSocketStream<S>,
    number: usize,
    mut frames: mpsc::UnboundedReceiver<Option<Value>>,
    record: impl Fn(String),
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = socket.split();
    let hello = json!({"type": "hello", "num_connections": 1,
        "connection_info": {"app_id": "A_OURS"}, "debug_info": {"host": "applink-fake"}});
    let _ = sink.send(Message::text(hello.to_string())).await;
    let mut sending = true;
    loop {
        tokio::select! {
            frame = frames.recv(), if sending => match frame {
                Some(Some(frame)) => {
                    let _ = sink.send(Message::text(frame.to_string())).await;
                }
                Some(None) | None => {
                    sending = false;
                    let _ = sink.close().await;
                }
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let id = serde_json::from_str::<Value>(text.as_str())
                        .ok()
                        .and_then(|v| v["envelope_id"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| format!("<not an ack: {text}>"));
                    record(format!("ack {number} {id}"));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    record(format!("closed {number}"));
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}
