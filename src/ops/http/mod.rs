//! The HTTP server (`[http] listen`, default `127.0.0.1:8700`), started only when `[http]` is
//! configured or something inbound is (then with `[http]`'s defaults). It is bound before
//! chatbridge connects to Redis, so `/readyz` answers (503) while Redis is still unreachable,
//! and before systemd hears `READY=1`.
//!
//! Routes: [`health`] (`GET /healthz`, `GET /readyz`, `GET /metrics`). Other parts add their
//! own routes with [`router`]'s `extra` (the daemon adds [`crate::inbound::routes`]
//! and [`crate::platforms::routes`]). Every
//! route shares [`AppState`] and the body cap (over `max_body_bytes`: 413). The `extra` routes
//! also share a request limit: at most `max_concurrent_requests` are handled at once (the rest
//! wait their turn), and a request not answered within `request_timeout_secs`, waiting
//! included, gets 408. The health routes stay outside that limit, so slow inbound clients
//! cannot make a health check time out (and the service manager restart a working bridge).
//!
//! Connections are bounded by [`serve`]: header and idle timeouts, and at most
//! `max_connections` open ([`connections`]), lowered at start to what the open-file limit
//! holds beside [`crate::ops::fdlimit::RESERVE`].

mod connections;
mod health;
mod serve;
mod workers;

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;
use redis::aio::ConnectionManager;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::{Config, HttpConfig};
use crate::ops::notify::Health;
use crate::ops::supervise::Supervisor;

pub use workers::{WorkerState, Workers};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr} ([http] listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
}

/// What every route can read; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The subscription's and the intake's health (the same record systemd's watchdog reads).
    pub health: Health,
    /// Which delivery workers run.
    pub workers: Workers,
    /// Renders `/metrics`; `None` when no recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled when the daemon stops: no longer ready.
    pub stopping: CancellationToken,
    /// What the inbound routes accept: the configuration in force, set once Redis is
    /// connected and replaced on reload.
    pub inbound: crate::inbound::Shared,
}

/// The inbound routes read only what they accept, not the whole server state.
impl axum::extract::FromRef<AppState> for crate::inbound::Shared {
    fn from_ref(state: &AppState) -> Self {
        state.inbound.clone()
    }
}

/// The router: the operations routes plus `extra` under the request limit, all under the
/// body cap.
pub fn router(state: AppState, extra: Router<AppState>, limits: &HttpConfig) -> Router {
    let limited = extra
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ))
        // Outermost: the time a request waits for its turn counts too.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    health::routes()
        .merge(limited)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .with_state(state)
}

/// The operations side of a running daemon: the readiness record every part reports to, and
/// the HTTP server with its metrics when `[http]` is configured.
pub struct Operations {
    /// Shared with the server's routes.
    state: AppState,
    /// The server task, until [`Operations::supervise`] hands it to the supervisor.
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Operations {
    /// Installs the metrics recorder and binds and starts the server when `[http]` is set (or
    /// anything inbound is configured); the server stops (finishing the requests it is
    /// answering) when `stop` is cancelled.
    pub async fn start(config: &Config, stop: &CancellationToken) -> Result<Self, HttpError> {
        Self::start_with_routes(config, stop, Router::new()).await
    }

    /// [`Operations::start`] with more routes on the same server, state and limits.
    pub async fn start_with_routes(
        config: &Config,
        stop: &CancellationToken,
        extra: Router<AppState>,
    ) -> Result<Self, HttpError> {
        let workers = Workers::default();
        workers.expect(config.links.keys());
        let mut state = AppState {
            health: Health::new(),
            workers,
            metrics: None,
            stopping: stop.clone(),
            inbound: crate::inbound::Shared::default(),
        };
        let Some(http) = &config.http_server() else {
            return Ok(Self {
                state,
                server: None,
            });
        };
        state.metrics = Some(recorder()?);
        let listener = TcpListener::bind(http.listen)
            .await
            .map_err(|source| HttpError::Bind {
                addr: http.listen,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(http.listen);
        let inbound = if config.has_inbound() {
            format!(
                " /hooks/{{link}} {}",
                crate::platforms::ROUTE_PATHS.join(" ")
            )
        } else {
            String::new()
        };
        tracing::info!(%addr, "http server listening: /healthz /readyz /metrics{inbound}");
        let app = router(state.clone(), extra, http);
        let limits = connection_limits(http);
        let server = tokio::spawn(serve::serve(listener, app, limits, stop.clone()));
        Ok(Self {
            state,
            server: Some(server),
        })
    }

    /// The health record the subscription and the intake update.
    pub fn health(&self) -> Health {
        self.state.health.clone()
    }

    /// What the inbound routes accept; the daemon sets it once connected and on reload.
    pub fn inbound(&self) -> &crate::inbound::Shared {
        &self.state.inbound
    }

    /// Where delivery workers are tracked ([`Workers::track`]).
    pub fn workers(&self) -> &Workers {
        &self.state.workers
    }

    /// Hands the server to the supervisor (a server that stops while the daemon runs fails
    /// the daemon) and starts the outbox sampler behind the metrics.
    pub fn supervise(
        &mut self,
        parts: &mut Supervisor,
        con: ConnectionManager,
        status: crate::ops::notify::Status,
        stop: &CancellationToken,
    ) {
        if let Some(server) = self.server.take() {
            parts.spawn("http server", async move {
                match server.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "http server failed"),
                    Err(e) => tracing::error!(error = %e, "http server task failed"),
                }
            });
        }
        if let Some(handle) = self.state.metrics.clone() {
            parts.spawn(
                "metrics sampler",
                crate::ops::metrics::sample(con, status, handle, stop.clone()),
            );
        }
    }
}

/// The connection bounds of `http`, with `max_connections` lowered (and a warning logged)
/// when the open-file limit cannot hold it beside [`crate::ops::fdlimit::RESERVE`].
fn connection_limits(http: &HttpConfig) -> serve::ConnectionLimits {
    let soft = crate::ops::fdlimit::soft_limit();
    let cap = crate::ops::fdlimit::connection_cap(http.max_connections, soft);
    if cap.lowered {
        tracing::warn!(
            max_connections = http.max_connections,
            effective = cap.connections,
            open_file_limit = soft,
            reserve = crate::ops::fdlimit::RESERVE,
            "[http] max_connections lowered to {}: the open-file limit is {} and {} descriptors \
             are kept for Redis and outbound HTTP (raise LimitNOFILE to allow more)",
            cap.connections,
            soft.unwrap_or_default(),
            crate::ops::fdlimit::RESERVE,
        );
    }
    serve::ConnectionLimits {
        max_connections: cap.connections,
        timeouts: connections::Timeouts {
            header: http.header_timeout,
            idle: http.idle_timeout,
        },
    }
}

/// The process's Prometheus recorder, installed on first use.
fn recorder() -> Result<PrometheusHandle, HttpError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = crate::ops::metrics::install().map_err(|e| HttpError::Metrics(e.to_string()))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    fn limits() -> HttpConfig {
        HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_body_bytes: 1024,
            request_timeout: Duration::from_secs(2),
            max_concurrent_requests: 1,
            ..HttpConfig::default()
        }
    }

    fn state() -> AppState {
        AppState {
            health: Health::new(),
            workers: Workers::default(),
            metrics: None,
            stopping: CancellationToken::new(),
            inbound: crate::inbound::Shared::default(),
        }
    }

    /// A route another part adds: answers after `delay`, echoing the body length.
    fn slow(delay: Duration) -> Router<AppState> {
        Router::new()
            .route(
                "/slow",
                get(move || async move {
                    tokio::time::sleep(delay).await;
                    "done"
                }),
            )
            .route(
                "/echo",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
    }

    async fn call(app: &Router, request: Request<Body>) -> StatusCode {
        app.clone()
            .oneshot(request)
            .await
            .expect("infallible")
            .status()
    }

    #[tokio::test(start_paused = true)]
    async fn extra_routes_share_the_timeout_and_the_body_cap() {
        let app = router(state(), slow(Duration::from_secs(5)), &limits());
        let slow = Request::get("/slow").body(Body::empty()).unwrap();
        assert_eq!(call(&app, slow).await, StatusCode::REQUEST_TIMEOUT);
        let small = Request::post("/echo")
            .body(Body::from(vec![b'x'; 1024]))
            .unwrap();
        assert_eq!(call(&app, small).await, StatusCode::OK);
        let large = Request::post("/echo")
            .body(Body::from(vec![b'x'; 1025]))
            .unwrap();
        assert_eq!(call(&app, large).await, StatusCode::PAYLOAD_TOO_LARGE);
        let healthz = Request::get("/healthz").body(Body::empty()).unwrap();
        assert_eq!(call(&app, healthz).await, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_over_the_concurrency_limit_wait_their_turn() {
        let app = router(state(), slow(Duration::from_millis(800)), &limits());
        let started = tokio::time::Instant::now();
        let first = tokio::spawn(call_owned(app.clone()));
        let second = tokio::spawn(call_owned(app.clone()));
        assert_eq!(first.await.unwrap(), StatusCode::OK);
        assert_eq!(second.await.unwrap(), StatusCode::OK);
        let (third, fourth, fifth) = tokio::join!(
            call_owned(app.clone()),
            call_owned(app.clone()),
            call_owned(app.clone())
        );
        assert_eq!(
            (third, fourth, fifth),
            (StatusCode::OK, StatusCode::OK, StatusCode::REQUEST_TIMEOUT),
            "waiting for a turn counts toward the timeout"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(1600 + 2000),
            "one at a time: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn health_routes_answer_while_every_request_slot_is_taken() {
        let app = router(state(), slow(Duration::from_secs(60)), &limits());
        let busy = tokio::spawn(call_owned(app.clone()));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let started = tokio::time::Instant::now();
        for path in ["/healthz", "/readyz", "/metrics"] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            let status = call(&app, request).await;
            assert_ne!(status, StatusCode::REQUEST_TIMEOUT, "{path}");
        }
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "health routes do not wait for a request slot"
        );
        assert_eq!(busy.await.unwrap(), StatusCode::REQUEST_TIMEOUT);
    }

    async fn call_owned(app: Router) -> StatusCode {
        call(&app, Request::get("/slow").body(Body::empty()).unwrap()).await
    }

    #[tokio::test]
    async fn readyz_says_why_it_is_not_ready() {
        let state = state();
        state.workers.expect([&"audit".to_owned()]);
        let app = router(state.clone(), Router::new(), &limits());
        let response = app
            .clone()
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        state.health.subscription_alive();
        state.health.caught_up();
        let stop = CancellationToken::new();
        let worker = tokio::spawn(state.workers.track(
            "audit",
            stop.clone(),
            std::future::pending(),
        ));
        tokio::task::yield_now().await;
        let ready = Request::get("/readyz").body(Body::empty()).unwrap();
        assert_eq!(call(&app, ready).await, StatusCode::OK);
        worker.abort();
        let _ = worker.await;
        let ended = Request::get("/readyz").body(Body::empty()).unwrap();
        assert_eq!(call(&app, ended).await, StatusCode::SERVICE_UNAVAILABLE);

        let stopping = AppState {
            workers: Workers::default(),
            ..state
        };
        let app = router(stopping.clone(), Router::new(), &limits());
        let ready = Request::get("/readyz").body(Body::empty()).unwrap();
        assert_eq!(call(&app, ready).await, StatusCode::OK);
        stopping.stopping.cancel();
        let ready = Request::get("/readyz").body(Body::empty()).unwrap();
        assert_eq!(call(&app, ready).await, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test(start_paused = true)]
    async fn readyz_names_a_stuck_delivery_worker() {
        let state = state();
        state.health.subscription_alive();
        state.health.caught_up();
        let part = state
            .health
            .watch_part("audit", "sending", Duration::from_secs(10));
        let app = router(state.clone(), Router::new(), &limits());
        let _busy = part.busy();
        tokio::time::advance(Duration::from_secs(9)).await;
        state.health.subscription_alive();
        let ready = Request::get("/readyz").body(Body::empty()).unwrap();
        assert_eq!(call(&app, ready).await, StatusCode::OK, "within its bound");
        tokio::time::advance(Duration::from_secs(3)).await;
        state.health.subscription_alive();
        let response = app
            .clone()
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["subscription"], "ok", "{body}");
        assert_eq!(
            body["reasons"],
            serde_json::json!(["link audit: delivery worker stuck (sending) for 12s"]),
            "{body}"
        );
    }
}
