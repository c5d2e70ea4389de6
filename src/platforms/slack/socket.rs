//! Slack Socket Mode (`[slack] app_token`): Slack events without a public URL.
//!
//! One process per deployment holds the app's lease in Redis (`SET NX PX`, renewed, released
//! on stop): only the holder connects, so two bridges on one app token never split events; the
//! others stay passive and take over once the lease expires. The lease is fenced by this
//! process's monotonic clock: when a renewal has not been answered by `lease − margin` the
//! connection is dropped.
//!
//! The holder calls `apps.connections.open` with the app token, connects to the `wss://` URL it
//! answers and, for each `events_api` envelope, hands the payload to the Events API handling
//! ([`super::events::callback`]: de-dup on `event_id`, echo guard, the atomic Redis write) and
//! only then acknowledges `{"envelope_id": …}`. When Redis cannot take the write the envelope
//! is left unacknowledged, so Slack sends it again. On `disconnect` the new connection is opened
//! first and the old one closed after; a broken connection is reopened with backoff.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::bridge::retry::Backoff;
use crate::config::Config;
use crate::inbound::Shared;
use crate::inbound::lease::Leased;
use crate::ops::metrics::ConnectedGauge;
use crate::secret::{BotToken, SecretUrl};

/// The metric's `route` label for envelopes.
const ROUTE: &str = "slack_socket";
/// How long opening a connection (the API call, then the websocket handshake) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The Socket Mode client of one Slack app.
pub struct SocketMode {
    /// The app-level token (`xapp-…`).
    token: BotToken,
    /// Where `apps.connections.open` is.
    api_base: SecretUrl,
    /// `chatbridge:lease:slack-socket:{app}`.
    lease_key: String,
    /// How long the lease lasts unrenewed (`[delivery] lease_secs`).
    ttl: Duration,
    /// The inbound settings in force (reloads apply at once).
    inbound: Shared,
    /// For the lease.
    con: ConnectionManager,
    /// For `apps.connections.open`.
    http: reqwest::Client,
}

impl crate::platforms::source::Source for SocketMode {
    fn task(&self) -> &'static str {
        "slack socket mode"
    }

    fn run(
        self: Box<Self>,
        stop: CancellationToken,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(SocketMode::run(*self, stop))
    }
}

/// What to do after one frame.
enum Flow {
    Continue,
    /// Slack asked for a new connection (`disconnect`).
    Refresh,
    /// The connection is unusable.
    Broken,
}

impl SocketMode {
    /// The client `config` asks for (`[slack] app_token`); `None` without one.
    pub fn from_config(
        config: &Config,
        inbound: Shared,
        con: ConnectionManager,
        http: reqwest::Client,
    ) -> Option<Self> {
        let app = config.sections.slack.as_ref()?;
        let token = app.app_token.clone()?;
        let app_key = app.app_id.clone().unwrap_or_else(|| token.fingerprint());
        Some(Self {
            token,
            api_base: app.api_base.clone(),
            lease_key: crate::redis::keys::inbound_lease("slack-socket", &app_key),
            ttl: config.delivery.lease,
            inbound,
            con,
            http,
        })
    }

    /// Waits for the lease, holds the connection while it is ours, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let lease = Leased::new(
            self.lease_key.clone(),
            self.ttl,
            self.con.clone(),
            "Slack Socket Mode",
        );
        lease.run(stop, |lost| self.connected(lost)).await;
    }

    /// Keeps a connection open (reopening with backoff) until `lost`.
    async fn connected(&self, lost: CancellationToken) {
        let gauge = ConnectedGauge::new(ROUTE);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(60));
        let mut next: Option<Socket> = None;
        while !lost.is_cancelled() {
            let mut socket = match next.take() {
                Some(socket) => socket,
                None => match self.open().await {
                    Ok(socket) => socket,
                    Err(why) => {
                        let wait = backoff.next(None);
                        tracing::warn!(error = %why, retry_in_ms = wait.as_millis() as u64, "Slack Socket Mode: cannot connect");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                },
            };
            next = self.serve(&mut socket, &mut backoff, &gauge).await;
            if next.is_none() {
                gauge.set(false);
                let wait = backoff.next(None);
                tracing::warn!(
                    retry_in_ms = wait.as_millis() as u64,
                    "Slack Socket Mode: connection lost; reconnecting"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Reads `socket` until it ends (`None`) or Slack asks for a refresh (the new connection,
    /// already open; the old one is closed).
    async fn serve(
        &self,
        socket: &mut Socket,
        backoff: &mut Backoff,
        gauge: &ConnectedGauge,
    ) -> Option<Socket> {
        while let Some(frame) = socket.next().await {
            let text = match frame {
                Ok(Frame::Text(text)) => text,
                Ok(Frame::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            };
            match self.envelope(socket, text.as_str(), gauge).await {
                Flow::Continue => backoff.reset(),
                Flow::Broken => return None,
                Flow::Refresh => {
                    let fresh = match self.open().await {
                        Ok(fresh) => Some(fresh),
                        Err(why) => {
                            tracing::warn!(error = %why, "Slack Socket Mode: cannot open the refreshed connection");
                            None
                        }
                    };
                    let _ = socket.close(None).await;
                    return fresh;
                }
            }
        }
        None
    }

    /// Handles one frame of Slack's.
    async fn envelope(&self, socket: &mut Socket, text: &str, gauge: &ConnectedGauge) -> Flow {
        let Ok(envelope) = serde_json::from_str::<Value>(text) else {
            tracing::warn!("Slack Socket Mode: a frame that is not JSON, skipped");
            count("bad_request");
            return Flow::Continue;
        };
        match envelope["type"].as_str() {
            Some("hello") => {
                tracing::info!("Slack Socket Mode: connected");
                gauge.set(true);
                return Flow::Continue;
            }
            Some("disconnect") => {
                tracing::info!(
                    reason = envelope["reason"].as_str().unwrap_or_default(),
                    "Slack Socket Mode: Slack asks for a new connection"
                );
                return Flow::Refresh;
            }
            _ => {}
        }
        let Some(envelope_id) = envelope["envelope_id"].as_str() else {
            tracing::debug!("Slack Socket Mode: a frame without envelope_id, ignored");
            return Flow::Continue;
        };
        let result = if envelope["type"] == "events_api" {
            let Some(inbound) = self.inbound.load_full() else {
                count("unavailable");
                return Flow::Continue;
            };
            let Some(app) = &inbound.platforms.slack.app else {
                count("not_found");
                return Flow::Continue;
            };
            match super::events::callback(&inbound, app, &envelope["payload"]).await {
                Ok(outcome) => outcome.result,
                Err(outcome) if outcome.status.is_server_error() => {
                    // Not acknowledged: Slack sends the envelope again.
                    count(outcome.result);
                    return Flow::Continue;
                }
                Err(outcome) => {
                    tracing::warn!(
                        why = %outcome.body["error"].as_str().unwrap_or_default(),
                        "Slack Socket Mode: envelope refused"
                    );
                    outcome.result
                }
            }
        } else {
            "ignored"
        };
        count(result);
        let ack = json!({ "envelope_id": envelope_id }).to_string();
        match socket.send(Frame::text(ack)).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Broken,
        }
    }

    /// `apps.connections.open`, then the websocket it names.
    async fn open(&self) -> Result<Socket, String> {
        tokio::time::timeout(OPEN_TIMEOUT, async {
            let endpoint = format!("{}/apps.connections.open", self.api_base.expose());
            let answer: Value = self
                .http
                .post(endpoint)
                .bearer_auth(self.token.expose())
                .header("content-type", "application/x-www-form-urlencoded")
                .send()
                .await
                .map_err(|e| format!("apps.connections.open: {}", e.without_url()))?
                .json()
                .await
                .map_err(|e| format!("apps.connections.open answered: {}", e.without_url()))?;
            if answer["ok"] != true {
                return Err(format!(
                    "apps.connections.open: {}",
                    answer["error"].as_str().unwrap_or("not ok")
                ));
            }
            let url = answer["url"]
                .as_str()
                .ok_or("apps.connections.open answered no url")?;
            let (socket, _) = tokio_tungstenite::connect_async(url)
                .await
                .map_err(|e| format!("websocket: {e}"))?;
            Ok(socket)
        })
        .await
        .map_err(|_| "timed out".to_owned())?
    }
}

fn count(result: &'static str) {
    metrics::counter!(crate::ops::metrics::INBOUND_REQUESTS, "route" => ROUTE, "result" => result)
        .increment(1);
}
