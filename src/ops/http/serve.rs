//! The accept loop: `axum::serve` has no header or idle timeout and no connection cap, so
//! chatbridge drives hyper's HTTP/1 connections itself. Each accepted socket is admitted by
//! [`Connections`] (or closed at once), served by hyper with its [`Activity`] tracked, and
//! closed when it waits past a deadline or must give way. On stop the loop stops accepting,
//! idle connections close, and requests being answered finish (their connections then close).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::connections::{Admitted, Connections, Timeouts, Tracked};

/// Largest read buffer per connection (hyper's minimum is 8 KiB, its default ~400 KiB): a
/// request head larger than this gets 431, and a thousand slow clients cost at most this each.
const MAX_BUF: usize = 64 * 1024;

/// How long the loop pauses after an accept error that is not the client's (out of file
/// descriptors, most often), so it does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once (after [`crate::ops::fdlimit::connection_cap`]).
    pub max_connections: usize,
    /// The header and idle timeouts.
    pub timeouts: Timeouts,
}

/// Serves `app` on `listener` until `stop`, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> io::Result<()> {
    let connections = Connections::new(limits.max_connections);
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.max_buf_size(MAX_BUF);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Over the cap with nothing to give way: dropped here, closed at once.
        let Some((admitted, evicted)) = connections.admit() else {
            continue;
        };
        let connection = Connection {
            admitted,
            app: app.clone(),
            http: http.clone(),
            timeouts: limits.timeouts,
            connections: connections.clone(),
        };
        tokio::spawn(connection.serve(stream, graceful.watcher()));
        if evicted {
            // Let the evicted connection's task run and close its socket before the next.
            tokio::task::yield_now().await;
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// One admitted connection and what serving it needs.
struct Connection {
    /// Its place under the cap, freed when this is dropped.
    admitted: Admitted,
    app: Router,
    http: http1::Builder,
    timeouts: Timeouts,
    /// Where cut-offs are counted.
    connections: Arc<Connections>,
}

impl Connection {
    /// Serves the connection until it ends, waits past a deadline, or must give way; on
    /// shutdown (`watcher`) it finishes the request it answers and closes.
    async fn serve(self, stream: TcpStream, watcher: Watcher) {
        let Self {
            admitted,
            app,
            http,
            timeouts,
            connections,
        } = self;
        let activity = admitted.activity.clone();
        let io = TokioIo::new(Tracked::new(stream, activity.clone()));
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let answering = activity.answering();
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                drop(answering);
                response
            }
        });
        let connection = watcher.watch(http.serve_connection(io, service));
        tokio::select! {
            served = connection => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
            }
            why = admitted.activity.expired(timeouts) => {
                tracing::debug!(reason = ?why, "http connection cut off");
                connections.count_closed(why);
            }
            () = admitted.evict.cancelled() => {
                tracing::debug!("http connection gave way to a new one (max_connections)");
            }
        }
    }
}

/// Logs an accept error; pauses unless it was only the one client's.
async fn accept_failed(e: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "http server cannot accept a connection");
    tokio::time::sleep(ACCEPT_PAUSE).await;
}
