//! What the HTTP server knows about each open connection, so that no client can hold one for
//! free: a connection is either waiting for a request's head or answering a request
//! ([`Activity`]). A connection that waits too long is cut off ([`Activity::expired`]):
//! - its first request's head must be complete within `header_timeout` of the connection's
//!   start (a client that sends nothing, or its headers a byte at a time, gets no longer);
//! - a keep-alive connection may then idle `idle_timeout` for its next request, whose head
//!   must be complete within `header_timeout` of its first byte.
//!
//! Answering has no deadline here: the inbound routes have `request_timeout` and the health
//! routes answer at once.
//!
//! [`Connections`] caps how many are open. When the cap is reached, the oldest connection that
//! is waiting for a request (it has not sent a complete head yet, or idles between requests)
//! gives way to the new one; failing that, the oldest request not answered for [`STALLED`]
//! (a slow body); only when every open connection is answering a younger request is the new
//! one refused. So hostile clients holding every slot cannot lock out a health check (which
//! sends its request at once and is answered at once), and file descriptors stay bounded.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ops::metrics::{
    HTTP_CONNECTIONS_CLOSED, HTTP_CONNECTIONS_OPEN, HTTP_CONNECTIONS_REFUSED,
};

/// How long a request must have been unanswered before its connection may give way to a new
/// one at the cap: far longer than the inbound routes take (milliseconds), far shorter than a
/// slow body; it is also the longest a burst of slow bodies can get new connections refused.
pub const STALLED: Duration = Duration::from_millis(250);

/// The deadlines of [`Activity::expired`].
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a request's head (`[http] header_timeout_secs`).
    pub header: Duration,
    /// For an idle keep-alive connection (`[http] idle_timeout_secs`).
    pub idle: Duration,
}

/// Why the server cut a connection off (the `reason` label of
/// [`HTTP_CONNECTIONS_CLOSED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A request's head did not arrive in time.
    HeaderTimeout,
    /// A keep-alive connection idled too long.
    IdleTimeout,
    /// It gave way to a new connection at the cap.
    Evicted,
}

impl Closed {
    fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Evicted => "evicted",
        }
    }
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's head.
    Waiting {
        /// Since the connection started or its last response was ready.
        since: Instant,
        /// When the first byte of the head came, if it did.
        first_byte: Option<Instant>,
        /// No request yet on this connection.
        fresh: bool,
    },
    /// A request's head was read; its response is not ready yet.
    Answering {
        /// Since the head was read.
        since: Instant,
    },
}

impl Phase {
    /// When the connection is cut off if nothing changes, and why.
    fn deadline(self, timeouts: Timeouts) -> Option<(Instant, Closed)> {
        match self {
            Self::Answering { .. } => None,
            Self::Waiting { since, fresh, .. } if fresh => {
                Some((since + timeouts.header, Closed::HeaderTimeout))
            }
            Self::Waiting {
                since, first_byte, ..
            } => {
                let idle = (since + timeouts.idle, Closed::IdleTimeout);
                let head = first_byte.map(|at| (at + timeouts.header, Closed::HeaderTimeout));
                Some(head.map_or(idle, |head| if head.0 < idle.0 { head } else { idle }))
            }
        }
    }
}

/// One connection's [`Phase`], shared by its socket ([`Tracked`]), its service and its
/// deadline watch.
#[derive(Debug)]
pub struct Activity {
    /// What the connection does now.
    phase: Mutex<Phase>,
    /// Woken when a deadline may have moved.
    changed: Notify,
}

impl Activity {
    /// A connection that just started.
    pub fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                first_byte: None,
                fresh: true,
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes came in: the first ones of a head start its clock.
    fn bytes_arrived(&self) {
        let mut phase = self.phase();
        if let Phase::Waiting {
            first_byte: first @ None,
            ..
        } = &mut *phase
        {
            *first = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A request's head was read; until the guard is dropped (its response is ready) the
    /// connection is answering.
    pub fn answering(self: &Arc<Self>) -> Answering {
        *self.phase() = Phase::Answering {
            since: Instant::now(),
        };
        Answering(self.clone())
    }

    /// Completes when the connection has waited past its deadline, saying which.
    pub async fn expired(&self, timeouts: Timeouts) -> Closed {
        loop {
            let deadline = self.phase().deadline(timeouts);
            match deadline {
                None => self.changed.notified().await,
                Some((at, why)) if Instant::now() >= at => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// A request being answered ([`Activity::answering`]); dropped once its response is ready.
pub struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        *self.0.phase() = Phase::Waiting {
            since: Instant::now(),
            first_byte: None,
            fresh: false,
        };
        self.0.changed.notify_one();
    }
}

/// A connection's socket, telling its [`Activity`] when bytes come in.
pub struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Tracked {
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The open connections, at most `cap` of them.
pub struct Connections {
    /// `max_connections` as in force ([`crate::ops::fdlimit::connection_cap`]).
    cap: usize,
    /// By connection number: oldest first.
    open: Mutex<Open>,
    /// [`HTTP_CONNECTIONS_OPEN`].
    gauge: Gauge,
    /// [`HTTP_CONNECTIONS_REFUSED`].
    refused: Counter,
    /// [`HTTP_CONNECTIONS_CLOSED`] by [`Closed`], in its order.
    closed: [Counter; 3],
}

/// The open connections and the next one's number.
#[derive(Default)]
struct Open {
    next: u64,
    entries: BTreeMap<u64, Entry>,
}

/// One open connection, as the cap sees it.
struct Entry {
    activity: Arc<Activity>,
    /// Cancelled when it must give way.
    evict: CancellationToken,
}

impl Connections {
    /// No connection yet; the metrics registered (at 0).
    pub fn new(cap: usize) -> Arc<Self> {
        let closed = [Closed::HeaderTimeout, Closed::IdleTimeout, Closed::Evicted]
            .map(|why| metrics::counter!(HTTP_CONNECTIONS_CLOSED, "reason" => why.as_str()));
        let gauge = metrics::gauge!(HTTP_CONNECTIONS_OPEN);
        gauge.set(0.0);
        Arc::new(Self {
            cap,
            open: Mutex::new(Open::default()),
            gauge,
            refused: metrics::counter!(HTTP_CONNECTIONS_REFUSED),
            closed,
        })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection, making room at the cap by evicting the oldest stalled one
    /// (its task closes it); `None` (counted) when none can give way. The second value says
    /// whether one was evicted.
    pub fn admit(self: &Arc<Self>) -> Option<(Admitted, bool)> {
        let mut open = self.open();
        let mut evicted = false;
        if open.entries.len() >= self.cap {
            let now = Instant::now();
            let phases = open
                .entries
                .iter()
                .map(|(id, e)| (*id, *e.activity.phase()));
            let Some(victim) = victim(phases, now) else {
                self.refused.increment(1);
                return None;
            };
            if let Some(entry) = open.entries.remove(&victim) {
                let phase = *entry.activity.phase();
                tracing::debug!(
                    ?phase,
                    open = open.entries.len() + 1,
                    "max_connections open: one gives way"
                );
                entry.evict.cancel();
                self.count_closed(Closed::Evicted);
                evicted = true;
            }
        }
        let id = open.next;
        open.next += 1;
        let activity = Arc::new(Activity::new());
        let evict = CancellationToken::new();
        let entry = Entry {
            activity: activity.clone(),
            evict: evict.clone(),
        };
        open.entries.insert(id, entry);
        self.gauge.set(open.entries.len() as f64);
        let admitted = Admitted {
            id,
            activity,
            evict,
            connections: self.clone(),
        };
        Some((admitted, evicted))
    }

    /// Counts a connection the server cut off.
    pub fn count_closed(&self, why: Closed) {
        self.closed[why as usize].increment(1);
    }
}

/// Which open connection gives way to a new one: the oldest waiting for a request, else the
/// oldest answering one for [`STALLED`] or more; `phases` oldest first.
fn victim(phases: impl Iterator<Item = (u64, Phase)>, now: Instant) -> Option<u64> {
    let mut answering = None;
    for (id, phase) in phases {
        match phase {
            Phase::Waiting { .. } => return Some(id),
            Phase::Answering { since } if now.saturating_duration_since(since) >= STALLED => {
                answering.get_or_insert(id);
            }
            Phase::Answering { .. } => {}
        }
    }
    answering
}

/// An admitted connection: its activity, and the token that says it must give way. Dropping
/// it (the connection closed) frees its place.
pub struct Admitted {
    id: u64,
    pub activity: Arc<Activity>,
    pub evict: CancellationToken,
    connections: Arc<Connections>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.open();
        open.entries.remove(&self.id);
        self.connections.gauge.set(open.entries.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(5),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_gets_the_header_timeout_and_a_kept_alive_one_the_idle_timeout() {
        let start = Instant::now();
        let activity = Arc::new(Activity::new());
        assert_eq!(activity.expired(TIMEOUTS).await, Closed::HeaderTimeout);
        assert_eq!(start.elapsed(), TIMEOUTS.header);

        let activity = Arc::new(Activity::new());
        drop(activity.answering());
        let answered = Instant::now();
        assert_eq!(activity.expired(TIMEOUTS).await, Closed::IdleTimeout);
        assert_eq!(answered.elapsed(), TIMEOUTS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_later_head_starts_its_clock_and_answering_has_none() {
        let activity = Arc::new(Activity::new());
        drop(activity.answering());
        tokio::time::advance(Duration::from_secs(30)).await;
        activity.bytes_arrived();
        let first_byte = Instant::now();
        assert_eq!(activity.expired(TIMEOUTS).await, Closed::HeaderTimeout);
        assert_eq!(first_byte.elapsed(), TIMEOUTS.header);

        let answering = activity.answering();
        let watch = tokio::time::timeout(Duration::from_secs(3600), activity.expired(TIMEOUTS));
        assert!(watch.await.is_err(), "no deadline while answering");
        drop(answering);
        assert_eq!(activity.expired(TIMEOUTS).await, Closed::IdleTimeout);
    }

    fn waiting(since: Instant) -> Phase {
        Phase::Waiting {
            since,
            first_byte: None,
            fresh: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_waiting_connection_gives_way_first_then_the_oldest_slow_request() {
        let now = Instant::now() + Duration::from_secs(10);
        let old = now - STALLED * 3;
        let young = now - STALLED / 2;
        let slow = Phase::Answering { since: old };
        let quick = Phase::Answering { since: young };
        let phases = [(1, slow), (2, waiting(young)), (3, waiting(old))];
        assert_eq!(
            victim(phases.into_iter(), now),
            Some(2),
            "waiting, however young"
        );
        let phases = [(1, quick), (2, slow), (3, slow)];
        assert_eq!(victim(phases.into_iter(), now), Some(2), "a slow request");
        let phases = [(1, quick), (2, quick)];
        assert_eq!(
            victim(phases.into_iter(), now),
            None,
            "all answering young: refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_a_waiting_connection_is_evicted_else_the_new_one_refused() {
        let connections = Connections::new(2);
        let (first, evicted) = connections.admit().expect("room");
        assert!(!evicted);
        let (second, _) = connections.admit().expect("room");
        let (third, evicted) = connections.admit().expect("the first gives way");
        assert!(evicted);
        assert!(first.evict.is_cancelled());
        drop(first);
        assert_eq!(connections.open().entries.len(), 2);
        let _answering = [second.activity.answering(), third.activity.answering()];
        assert!(connections.admit().is_none(), "both answering, young");
        tokio::time::advance(STALLED).await;
        let (_fourth, evicted) = connections.admit().expect("a slow request gives way");
        assert!(evicted);
        assert!(second.evict.is_cancelled());
    }
}
