//! The service manager's view of the daemon, over systemd's notify protocol (`sd_notify`; a
//! no-op when `NOTIFY_SOCKET` is not set):
//! - `READY=1` once Redis is subscribed and the first catch-up pass after it is resolved (the
//!   HTTP server, when `[http]` is set, is bound before Redis is even connected);
//! - `STATUS=` a one-line summary (`subscribed; 2 links; 14 queued`), every [`STATUS_EVERY`];
//! - `WATCHDOG=1` at half of `WATCHDOG_USEC`, but only while [`Health`] says the subscription
//!   session is alive and making progress, the intake is not stuck in one step and no delivery
//!   worker part is stuck ([`Part`]): a wedged process stops feeding the watchdog and systemd
//!   restarts it;
//! - `RELOADING=1` with `MONOTONIC_USEC` when a reload begins ([`reloading`]), then `READY=1`
//!   with the status line when it is over ([`reloaded`]); a refused reload stays in the status
//!   line until the next one succeeds;
//! - `STOPPING=1` when shutdown begins ([`stopping`]).
//!
//! It reads [`Health`] ([`crate::ops::health`]), the record the data path updates.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::redis::keys;
use redis::aio::ConnectionManager;
use sd_notify::NotifyState;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

pub use super::health::{Health, Part, Unhealthy, progress, with_part};

/// How often `STATUS=` is refreshed.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How long the status line waits for the outbox depths.
const DEPTH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the status line reports besides health; clones share the links and the note, which
/// a reload updates.
#[derive(Clone)]
pub struct Status {
    /// For the outbox depths (`XLEN` of each link's outbox).
    con: ConnectionManager,
    /// The configured links, by name, and what the last reload left to say.
    shown: Arc<Mutex<Shown>>,
}

/// The parts of the status line a reload changes.
struct Shown {
    links: Vec<String>,
    /// Appended to the line: why the configuration in force is not the file's.
    note: Option<String>,
}

impl Status {
    pub fn new(con: ConnectionManager, links: Vec<String>) -> Self {
        Self {
            con,
            shown: Arc::new(Mutex::new(Shown { links, note: None })),
        }
    }

    /// The configured links, by name.
    pub fn links(&self) -> Vec<String> {
        self.shown().links.clone()
    }

    /// The configured links changed.
    pub fn set_links(&self, links: Vec<String>) {
        self.shown().links = links;
    }

    /// Says `note` at the end of every status line from now on (`None`: nothing).
    pub fn set_note(&self, note: Option<String>) {
        self.shown().note = note;
    }

    fn shown(&self) -> std::sync::MutexGuard<'_, Shown> {
        self.shown.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `subscribed; 2 links; 14 queued`, or what is wrong instead of `subscribed`; then the
    /// note, if any.
    async fn line(&mut self, health: &Health) -> String {
        let state = match health.check() {
            Ok(()) => "subscribed".to_owned(),
            Err(why) => why.to_string(),
        };
        let (links, note) = {
            let shown = self.shown();
            (shown.links.clone(), shown.note.clone())
        };
        let count = match links.len() {
            1 => "1 link".to_owned(),
            n => format!("{n} links"),
        };
        let line = match self.queued(&links).await {
            Some(queued) => format!("{state}; {count}; {queued} queued"),
            None => format!("{state}; {count}; queue depth unknown (redis not answering)"),
        };
        match note {
            Some(note) => format!("{line}; {note}"),
            None => line,
        }
    }

    /// Events waiting in every outbox; `None` when Redis does not answer in time.
    async fn queued(&mut self, links: &[String]) -> Option<u64> {
        let mut pipe = redis::pipe();
        for link in links {
            pipe.xlen(keys::outbox(link));
        }
        let depths: Vec<u64> = timeout(DEPTH_TIMEOUT, pipe.query_async(&mut self.con))
            .await
            .ok()?
            .ok()?;
        Some(depths.iter().sum())
    }
}

/// The notify part of the daemon: waits for readiness, then feeds the watchdog (if systemd
/// asked for one) and refreshes the status until `stop`.
pub async fn run(health: Health, mut status: Status, stop: CancellationToken) {
    send(&[NotifyState::Status("connecting to redis; catching up")]);
    tokio::select! {
        () = health.wait_caught_up() => {}
        () = stop.cancelled() => return,
    }
    let line = status.line(&health).await;
    send(&[NotifyState::Ready, NotifyState::Status(&line)]);
    tracing::info!("ready");
    // Two loops, so a slow status query never delays the watchdog.
    tokio::select! {
        () = feed_watchdog(&health) => {}
        () = refresh_status(&health, &mut status) => {}
        () = stop.cancelled() => {}
    }
}

/// Feeds the watchdog at half of `WATCHDOG_USEC` while healthy; forever idle if systemd asked
/// for no watchdog.
async fn feed_watchdog(health: &Health) {
    let Some(every) = sd_notify::watchdog_enabled()
        .map(|timeout| timeout / 2)
        .filter(|every| !every.is_zero())
    else {
        return std::future::pending().await;
    };
    let mut feed = tokio::time::interval(every);
    let mut withheld = false;
    loop {
        feed.tick().await;
        withheld = watch(health, withheld);
    }
}

/// Refreshes `STATUS=` every [`STATUS_EVERY`].
async fn refresh_status(health: &Health, status: &mut Status) {
    let mut refresh = tokio::time::interval(STATUS_EVERY);
    refresh.reset();
    loop {
        refresh.tick().await;
        let line = status.line(health).await;
        send(&[NotifyState::Status(&line)]);
    }
}

/// Feeds the watchdog if healthy; logs when it starts or stops withholding. Returns whether
/// it withholds now.
fn watch(health: &Health, withheld: bool) -> bool {
    match health.check() {
        Ok(()) => {
            if withheld {
                tracing::info!("healthy again: feeding the systemd watchdog");
            }
            send(&[NotifyState::Watchdog]);
            false
        }
        Err(why) => {
            if !withheld {
                tracing::warn!(reason = %why, "unhealthy: not feeding the systemd watchdog");
            }
            true
        }
    }
}

/// Tells the service manager that a reload began: `RELOADING=1` with `MONOTONIC_USEC` (the
/// `CLOCK_MONOTONIC` time, which systemd requires with it).
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(e) => tracing::debug!(error = %e, "cannot read the monotonic clock"),
    }
    send(&states);
}

/// Tells the service manager that the reload is over: `READY=1` with the status line.
pub async fn reloaded(status: &mut Status, health: &Health) {
    let line = status.line(health).await;
    send(&[NotifyState::Ready, NotifyState::Status(&line)]);
}

/// Tells the service manager that shutdown began.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing in-flight sends"),
    ]);
}

/// Sends `states`; a failure is logged at debug level only (the socket is the service
/// manager's business, and a missing one must not disturb the bridge).
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
