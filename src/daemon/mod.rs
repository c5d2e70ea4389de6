//! `chatbridge run`: wires subscription → intake → outboxes → workers together, supervises
//! them, reloads the configuration when asked, and shuts them down in order: stop intake, let
//! in-flight sends finish within the grace period, log what was cut off, return. Whatever was
//! not sent stays in the outbox for the next start. A part that fails stops the whole daemon
//! ([`crate::ops::supervise`]).
//!
//! The running [`Bridge`] owns one handle per link (a worker part with its own stop token) and
//! the routes, so a reload changes only what the file changed:
//! - an invalid file is refused: every problem is logged, the running configuration stays, and
//!   the service manager's status says so;
//! - links added start a worker, links removed stop theirs (their outboxes stay in Redis, for
//!   `chatbridge outbox` and `dlq`), links changed stop theirs and start a new one (in-flight
//!   sends finish, their acknowledgements are written and the lease is given back first);
//!   untouched links keep running, connections and all;
//! - new routes switch at one point of the event stream ([`crate::bridge::route::Reroute`]), and rooms
//!   they add start from now;
//! - settings read only at start (the Redis URL, …) keep their running value, with a warning
//!   that a restart is needed.
//!
//! The reload itself is in [`reload`].

mod reload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::{Stream, StreamExt};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bridge::catchup::Limits;
use crate::bridge::decode::Decoder;
use crate::bridge::deliver::{Identity, Worker};
use crate::bridge::intake::Intake;
use crate::bridge::outbox::{Caps, Outbox, Reader};
use crate::bridge::retry::Backoff;
use crate::bridge::route::{Reroute, Routes};
use crate::bridge::subscription::Listen;
use crate::config::{Config, ConfigErrors};
use crate::ops::eviction;
use crate::ops::http::Operations;
use crate::ops::notify::{self, Health};
use crate::ops::supervise::{Failure, PartId, Supervisor};
use crate::platforms::{self, Platforms, Target};
use crate::redis::connect;
use crate::redis::keys;

/// Payloads buffered between the subscription and the intake. When full, the subscription
/// stops reading and Redis buffers (or drops the connection, after which catch-up recovers).
const FEED_CAPACITY: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("redis URL: {0}")]
    RedisUrl(#[from] redis::RedisError),
    /// The Redis server may evict keys and the config does not allow that.
    #[error(transparent)]
    Evicting(#[from] eviction::Refused),
    /// Redis refused the credentials or permissions (at start, or when a reload starts a link);
    /// retrying cannot help.
    #[error(transparent)]
    Denied(#[from] connect::Denied),
    /// The HTTP server could not start (`[http]`).
    #[error(transparent)]
    Http(#[from] crate::ops::http::HttpError),
    /// The configuration has a link this build cannot run.
    #[error("cannot run this configuration: {}", .0.join("; "))]
    NotRunnable(Vec<String>),
    /// A part of the running daemon failed; the daemon stopped.
    #[error("{0}; stopped")]
    PartFailed(#[from] Failure),
}

/// What the daemon is asked to do while it runs (by signals, in production).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Drain and return.
    Stop,
    /// Read the configuration again (with `load`) and apply what changed.
    Reload,
}

/// Runs the bridge until a [`Request::Stop`] (or the end of `requests`), then drains and
/// returns; on each [`Request::Reload`] it calls `load` and applies the difference. Returns
/// early with an error if the Redis server may evict keys (and `allow_eviction` is off), and
/// with the first failure if a part of the bridge fails while running.
pub async fn run(
    config: Config,
    requests: impl Stream<Item = Request> + Unpin,
    mut load: impl FnMut() -> Result<Config, ConfigErrors>,
) -> Result<(), DaemonError> {
    let refused = crate::platforms::link::not_runnable(&config.links);
    if !refused.is_empty() {
        return Err(DaemonError::NotRunnable(refused));
    }
    let client = connect::client(&config.redis)?;
    let mut requests = Requests {
        stream: requests,
        reload: false,
    };
    let stop = CancellationToken::new();
    // Sockets are files: before any is opened, so Redis, outbound HTTP and the HTTP server's
    // cap all see the raised limit.
    crate::ops::fdlimit::raise();
    // Bound first: /readyz answers while Redis is still unreachable.
    let ops = Operations::start_with_routes(
        &config,
        &stop,
        crate::inbound::routes().merge(crate::platforms::routes()),
    )
    .await?;
    let mut bridge = tokio::select! {
        started = Bridge::start(config, client, ops, stop.clone()) => started.inspect_err(|_| stop.cancel())?,
        () = requests.stop() => {
            stop.cancel();
            notify::stopping();
            return Ok(());
        }
    };
    tracing::info!(
        links = bridge.config.links.len(),
        rooms = bridge.config.rooms.len(),
        "chatbridge running"
    );
    let ended = bridge.serve(&mut requests, &mut load).await;
    let grace = bridge.grace();
    let (failed, error) = match ended {
        Ok(()) => {
            notify::stopping();
            (None, None)
        }
        Err(DaemonError::PartFailed(failure)) => (Some(failure), None),
        Err(other) => (None, Some(other)),
    };
    bridge.parts.shut_down(failed, grace).await?;
    if let Some(error) = error {
        return Err(error);
    }
    tracing::info!("stopped");
    Ok(())
}

/// The requests, with a reload asked for while another one ran kept for afterwards.
struct Requests<S> {
    stream: S,
    /// A reload is due.
    reload: bool,
}

impl<S: Stream<Item = Request> + Unpin> Requests<S> {
    /// The next request (a due reload first); the end of the stream is a stop.
    async fn next(&mut self) -> Request {
        if std::mem::take(&mut self.reload) {
            return Request::Reload;
        }
        self.stream.next().await.unwrap_or(Request::Stop)
    }

    /// Completes on a stop request; reloads asked for meanwhile are kept.
    async fn stop(&mut self) {
        loop {
            match self.stream.next().await {
                Some(Request::Reload) => self.reload = true,
                Some(Request::Stop) | None => return,
            }
        }
    }
}

/// The running bridge: its parts, one handle per link, and what a reload needs to change them.
struct Bridge {
    /// The configuration in force.
    config: Config,
    /// Every running part: subscription, intake, notify, one worker per link.
    parts: Supervisor,
    /// Each link's worker, by link name; stopped on its own when a reload removes or changes
    /// the link.
    links: BTreeMap<String, PartId>,
    /// For new workers' reader connections.
    client: redis::Client,
    /// Shared by the workers (multiplexed).
    outbox: Outbox,
    /// Shared by the webhook links (connection pool).
    http: reqwest::Client,
    /// What every link and source of this process shares: pacing and rate limits.
    platforms: Platforms,
    /// This process, as the delivery leases name it.
    me: Identity,
    /// Hands new routes to the subscription, which hands them on to the intake.
    reroutes: mpsc::Sender<Reroute>,
    /// What the subscription and the intake report: readiness (a reload is announced to the
    /// service manager only once it was told READY=1).
    health: Health,
    /// The service manager's status line, updated on reload.
    status: notify::Status,
    /// Readiness and metrics (`[http]`): which workers run.
    ops: Operations,
}

impl Bridge {
    /// Connects (retrying until Redis answers), checks the eviction policy and spawns every
    /// part.
    async fn start(
        config: Config,
        client: redis::Client,
        ops: Operations,
        stop: CancellationToken,
    ) -> Result<Self, DaemonError> {
        let url = config.redis.redacted_url();
        let mut con = connect_retrying(&client, Duration::ZERO, &url).await?;
        eviction::check(&mut con, config.redis.allow_eviction, &url).await?;
        let (reroutes, reroutes_rx) = mpsc::channel(1);
        let inbound = crate::inbound::Inbound::from_config(&config, con.clone(), None);
        ops.inbound().store(Some(Arc::new(inbound)));
        let links = config.links.keys().cloned().collect();
        let mut bridge = Self {
            outbox: Outbox::with_caps(con.clone(), caps(&config)),
            me: Identity::of_this_process(config.delivery.lease),
            parts: Supervisor::new(stop),
            links: BTreeMap::new(),
            client,
            http: platforms::http_client(),
            platforms: Platforms::default(),
            reroutes,
            health: ops.health(),
            status: notify::Status::new(con.clone(), links),
            config,
            ops,
        };
        let names: Vec<String> = bridge.config.links.keys().cloned().collect();
        for name in &names {
            bridge.start_link(name).await?;
        }
        bridge.start_data_path(con, reroutes_rx);
        Ok(bridge)
    }

    /// Spawns the notify task, the subscription and the intake.
    fn start_data_path(&mut self, con: ConnectionManager, reroutes: mpsc::Receiver<Reroute>) {
        let config = &self.config;
        let stop = self.parts.stop_token();
        let (feed_tx, feed_rx) = mpsc::channel(FEED_CAPACITY);
        let routes = Arc::new(Routes::new(config));
        let filter = Arc::new(ArcSwap::new(routes.clone()));
        let trimmer = crate::bridge::trim::Trimmer {
            history: config.history.clone(),
            routes: filter.clone(),
        };
        self.parts
            .spawn("trim", trimmer.run(self.client.clone(), stop.clone()));
        for source in platforms::sources(
            config,
            self.ops.inbound(),
            &con,
            &self.http,
            &self.platforms,
        ) {
            self.parts.spawn(source.task(), source.run(stop.clone()));
        }
        self.ops
            .supervise(&mut self.parts, con.clone(), self.status.clone(), &stop);
        let barrier = keys::barrier(&uuid::Uuid::new_v4().to_string());
        self.parts.spawn(
            "notify",
            notify::run(self.health.clone(), self.status.clone(), stop.clone()),
        );
        let listen = Listen {
            routes: filter.clone(),
            barrier: barrier.clone(),
        };
        self.parts.spawn(
            "subscription",
            crate::bridge::subscription::run(
                self.client.clone(),
                listen,
                reroutes,
                feed_tx,
                self.health.clone(),
                stop.clone(),
            ),
        );
        let intake = Intake {
            con,
            outbox: self.outbox.clone(),
            routes,
            filter,
            decoder: Decoder::default(),
            limits: Limits {
                room: config.history.room_limit,
                dm: config.history.dm_limit,
            },
            watched: Default::default(),
            barrier,
            sweep: config.history.sweep,
            health: self.health.clone(),
        };
        self.parts.spawn("intake", intake.run(feed_rx, stop));
    }

    /// Starts link `name`'s worker (as configured now) once its outbox group exists and its
    /// reader is connected.
    async fn start_link(&mut self, name: &str) -> Result<(), connect::Denied> {
        let Some(link) = self.config.links.get(name) else {
            return Ok(());
        };
        let target = Arc::new(Target::from_config(
            name,
            link,
            self.http.clone(),
            self.outbox.con.clone(),
            &self.platforms,
        ));
        let mut outbox = self.outbox.clone();
        while let Err(e) = outbox.ensure_group(name).await {
            tracing::warn!(link = name, error = %e, "cannot create the outbox group yet");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let url = self.config.redis.redacted_url();
        let reader_con = connect_retrying(&self.client, Duration::from_secs(2), &url).await?;
        let reader = Reader::new(reader_con, name);
        let name_owned = name.to_owned();
        let delivery = &self.config.delivery;
        let (max_backoff, give_up_after) = (delivery.retry_max_backoff, delivery.give_up_after);
        let me = self.me.clone();
        let health = self.health.clone();
        let workers = self.ops.workers().clone();
        self.ops.workers().expect([&name.to_owned()]);
        let part = self
            .parts
            .spawn_stoppable(format!("worker {name}"), move |stop| {
                let worker = Worker::new(
                    target,
                    outbox,
                    reader,
                    stop.clone(),
                    max_backoff,
                    give_up_after,
                    me,
                    &health,
                );
                workers.track(&name_owned, stop, worker.run())
            });
        self.links.insert(name.to_owned(), part);
        Ok(())
    }

    /// Serves requests until a stop request (`Ok`) or a failure.
    async fn serve<S: Stream<Item = Request> + Unpin>(
        &mut self,
        requests: &mut Requests<S>,
        load: &mut impl FnMut() -> Result<Config, ConfigErrors>,
    ) -> Result<(), DaemonError> {
        loop {
            let request = tokio::select! {
                failure = self.parts.first_failure() => return Err(failure.into()),
                request = requests.next() => request,
            };
            if request == Request::Stop {
                return Ok(());
            }
            tokio::select! {
                reloaded = self.reload(load) => reloaded?,
                () = requests.stop() => return Ok(()),
            }
        }
    }

    /// How long stopping parts may take.
    fn grace(&self) -> Duration {
        self.config.delivery.shutdown_grace
    }
}

/// The outbox bounds from the config.
pub fn caps(config: &Config) -> Caps {
    Caps {
        outbox_max_len: config.delivery.outbox_max_len,
        outbox_max_age: config.delivery.outbox_max_age,
        dlq_max_len: config.delivery.dlq_max_len,
        ..Caps::default()
    }
}

/// Connects, retrying while Redis is unreachable; gives up at once when Redis refuses the
/// credentials or permissions ([`connect::denial`]).
async fn connect_retrying(
    client: &redis::Client,
    extra_wait: Duration,
    url: &str,
) -> Result<ConnectionManager, connect::Denied> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let connected = match connect::manager(client, extra_wait).await {
            Ok(mut con) => connect::probe(&mut con).await.map(|()| con),
            Err(e) => Err(e),
        };
        let e = match connected {
            Ok(con) => return Ok(con),
            Err(e) => e,
        };
        if let Some((reason, fix)) = connect::denial(&e) {
            let url = url.to_owned();
            return Err(connect::Denied { url, reason, fix });
        }
        let wait = backoff.next(None);
        tracing::warn!(error = %e, retry_in = ?wait, "redis unavailable");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream;

    use super::*;

    #[tokio::test]
    async fn a_reload_asked_for_while_waiting_for_a_stop_comes_next() {
        let mut requests = Requests {
            stream: stream::iter([Request::Reload, Request::Reload, Request::Stop]),
            reload: false,
        };
        requests.stop().await;
        assert_eq!(requests.next().await, Request::Reload, "kept, once");
        assert_eq!(requests.next().await, Request::Stop, "the stream ended");
    }

    #[tokio::test]
    async fn requests_come_in_order_and_their_end_is_a_stop() {
        let mut requests = Requests {
            stream: stream::iter([Request::Reload, Request::Stop, Request::Reload]),
            reload: false,
        };
        assert_eq!(requests.next().await, Request::Reload);
        assert_eq!(requests.next().await, Request::Stop);
        assert_eq!(requests.next().await, Request::Reload);
        assert_eq!(requests.next().await, Request::Stop);
    }
}
