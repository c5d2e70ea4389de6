//! The HTTP server (`[http] listen`, default `127.0.0.1:8700`), started only when `[http]` is
//! configured. It is bound before chatbridge connects to Redis, so `/readyz` answers (503)
//! while Redis is still unreachable, and before systemd hears `READY=1`.
//!
//! Routes: [`health`] (`GET /healthz`, `GET /readyz`, `GET /metrics`). Other parts add their
//! own routes with [`router`]'s `extra` (the inbound webhooks will): every route shares
//! [`AppState`] and the same limits — a body over `max_body_bytes` gets 413, a request
//! slower than `request_timeout_secs` gets 408, and at most `max_concurrent_requests` are
//! handled at once (the rest wait).

mod health;
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
use crate::notify::Health;
use crate::supervise::Supervisor;

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
}

/// The router: the operations routes plus `extra`, under the shared limits.
pub fn router(state: AppState, extra: Router<AppState>, limits: &HttpConfig) -> Router {
    health::routes()
        .merge(extra)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ))
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
    /// Installs the metrics recorder and binds and starts the server when `[http]` is set; the
    /// server stops (finishing the requests it is answering) when `stop` is cancelled.
    pub async fn start(config: &Config, stop: &CancellationToken) -> Result<Self, HttpError> {
        let workers = Workers::default();
        workers.expect(config.links.keys());
        let mut state = AppState {
            health: Health::new(),
            workers,
            metrics: None,
        };
        let Some(http) = &config.http else {
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
        tracing::info!(%addr, "http server listening: /healthz /readyz /metrics");
        let app = router(state.clone(), Router::new(), http);
        let stop = stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(Self {
            state,
            server: Some(server),
        })
    }

    /// The health record the subscription and the intake update.
    pub fn health(&self) -> Health {
        self.state.health.clone()
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
        links: Vec<String>,
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
                crate::metrics::sample(con, links, handle, stop.clone()),
            );
        }
    }
}

/// The process's Prometheus recorder, installed on first use.
fn recorder() -> Result<PrometheusHandle, HttpError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = crate::metrics::install().map_err(|e| HttpError::Metrics(e.to_string()))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}
