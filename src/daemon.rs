//! `chatbridge run`: wires subscription → intake → outboxes → workers together, supervises
//! them, and shuts them down in order: stop intake, let in-flight sends finish within the
//! grace period, log what was cut off, return. Whatever was not sent stays in the outbox for
//! the next start. A part that fails stops the whole daemon ([`crate::supervise`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catchup::Limits;
use crate::config::Config;
use crate::connect;
use crate::decode::Decoder;
use crate::deliver::{Identity, Worker};
use crate::eviction;
use crate::intake::Intake;
use crate::links::{self, Target};
use crate::notify::{self, Health};
use crate::outbox::{Caps, Outbox, Reader};
use crate::retry::Backoff;
use crate::route::Routes;
use crate::subscription::Listen;
use crate::supervise::{Failure, Supervisor};

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
    /// Redis refused the credentials or permissions at start; retrying cannot help.
    #[error(transparent)]
    Denied(#[from] connect::Denied),
    /// A part of the running daemon failed; the daemon stopped.
    #[error("{0}; stopped")]
    PartFailed(#[from] Failure),
}

/// Runs the bridge until `shutdown` completes, then drains and returns. Returns early with an
/// error if the Redis server may evict keys (and `allow_eviction` is off), and with the first
/// failure if a part of the bridge fails while running.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let client = crate::connect::client(&config.redis.url)?;
    let stop = CancellationToken::new();
    let shutdown = async {
        shutdown.await;
        notify::stopping();
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let parts = tokio::select! {
        started = start(&config, &client, &stop) => started?,
        () = &mut shutdown => return Ok(()),
    };
    tracing::info!(
        links = config.links.len(),
        rooms = config.rooms.len(),
        "chatbridge running"
    );
    parts.run(shutdown, config.delivery.shutdown_grace).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Connects (retrying until Redis answers), checks the eviction policy and spawns every part.
async fn start(
    config: &Config,
    client: &redis::Client,
    stop: &CancellationToken,
) -> Result<Supervisor, DaemonError> {
    let url = config.redis.redacted_url();
    let mut con = connect_retrying(client, Duration::ZERO, &url).await?;
    eviction::check(&mut con, config.redis.allow_eviction, &url).await?;
    let outbox = Outbox::with_caps(con.clone(), caps(config));
    let http = links::http_client();
    let mut parts = Supervisor::new(stop.clone());
    let me = Identity::of_this_process(config.delivery.lease);
    for (name, link) in &config.links {
        let target = Arc::new(Target::from_config(name, link, http.clone(), con.clone()));
        let mut outbox = outbox.clone();
        while let Err(e) = outbox.ensure_group(name).await {
            tracing::warn!(link = name, error = %e, "cannot create the outbox group yet");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let reader_con = connect_retrying(client, Duration::from_secs(2), &url).await?;
        let reader = Reader::new(reader_con, name);
        let worker = Worker::new(
            target,
            outbox,
            reader,
            stop.clone(),
            config.delivery.retry_max_backoff,
            config.delivery.give_up_after,
            me.clone(),
        );
        parts.spawn(format!("worker {name}"), worker.run());
    }
    let (feed_tx, feed_rx) = mpsc::channel(FEED_CAPACITY);
    let routes = Arc::new(Routes::new(config));
    let barrier = format!("chatbridge:barrier:{}", uuid::Uuid::new_v4());
    let health = Health::new();
    let status = notify::Status {
        con: con.clone(),
        links: config.links.keys().cloned().collect(),
    };
    parts.spawn("notify", notify::run(health.clone(), status, stop.clone()));
    let listen = Listen {
        routes: routes.clone(),
        barrier: barrier.clone(),
    };
    parts.spawn(
        "subscription",
        crate::subscription::run(
            client.clone(),
            listen,
            feed_tx,
            health.clone(),
            stop.clone(),
        ),
    );
    let intake = Intake {
        con,
        outbox,
        routes,
        decoder: Decoder::default(),
        limits: Limits {
            room: config.history.room_limit,
            dm: config.history.dm_limit,
        },
        watched: Default::default(),
        barrier,
        sweep: config.history.sweep,
        health,
    };
    parts.spawn("intake", intake.run(feed_rx, stop.clone()));
    Ok(parts)
}

/// The outbox bounds from the config.
pub fn caps(config: &Config) -> Caps {
    Caps {
        outbox_max_len: config.delivery.outbox_max_len,
        outbox_max_age: config.delivery.outbox_max_age,
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
        if let Some(reason) = connect::denial(&e) {
            let url = url.to_owned();
            return Err(connect::Denied { url, reason });
        }
        let wait = backoff.next(None);
        tracing::warn!(error = %e, retry_in = ?wait, "redis unavailable");
        tokio::time::sleep(wait).await;
    }
}
