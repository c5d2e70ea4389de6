//! The HTTP endpoint the daemon's webhook link posts to: an axum server on the bench's sink
//! runtime that parses every body (one `chat.message` envelope or a `chat.batch` of them, or a
//! bare chat message as the `compare` scenario's Python peer posts it) and
//! records, per event, the sequence number and send time the generator put into `content`, plus
//! when the request arrived.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpSocket;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::load::unix_nanos;

/// The path the webhook link posts to.
const PATH: &str = "/hook";
/// Sequence numbers at or above this are not the generator's (and would not fit `seen`).
const MAX_SEQ: u64 = 1 << 28;
/// How often [`Sink::wait_quiet`] looks at the progress.
const POLL: Duration = Duration::from_millis(50);

/// One generated event as the sink received it.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// The generator's sequence number: the global publish order.
    pub seq: u64,
    /// When the generator built the message (Unix nanoseconds).
    pub sent_ns: u64,
    /// When the request carrying it reached the handler (Unix nanoseconds).
    pub received_ns: u64,
}

/// Everything received so far.
#[derive(Default)]
struct Journal {
    /// Every generated event in arrival order, duplicates included.
    arrivals: Vec<Arrival>,
    /// `seen[seq]`: whether that sequence number arrived at least once.
    seen: Vec<bool>,
    /// How many distinct sequence numbers arrived: the quiescence check reads it cheaply.
    distinct: usize,
    /// Events that were not the generator's (gap notices, foreign messages).
    foreign: usize,
    /// Bodies that did not parse as a webhook envelope.
    malformed: usize,
}

/// A recording HTTP endpoint on 127.0.0.1, bound at once, listening when told to.
pub struct Sink {
    /// The bound address; the daemon's config points at it before it listens.
    addr: SocketAddr,
    /// Shared with the request handler.
    journal: Arc<Mutex<Journal>>,
    /// The bound, not yet listening socket: connects to it are refused (the drain scenario).
    pending: Option<TcpSocket>,
    /// The runtime the server runs on, apart from the load generator's.
    runtime: Handle,
    /// The accept loop; aborted on drop.
    server: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink that already accepts requests.
    pub fn start(runtime: &Handle) -> Self {
        let mut sink = Self::bind(runtime);
        sink.listen();
        sink
    }

    /// Reserves a loopback port without listening on it: the daemon's requests are refused.
    pub fn bind(runtime: &Handle) -> Self {
        let socket = TcpSocket::new_v4().expect("create the sink socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind the sink to 127.0.0.1");
        Self {
            addr: socket.local_addr().expect("the sink's address"),
            journal: Arc::default(),
            pending: Some(socket),
            runtime: runtime.clone(),
            server: None,
        }
    }

    /// Starts accepting requests (once; later calls do nothing).
    pub fn listen(&mut self) {
        let Some(socket) = self.pending.take() else {
            return;
        };
        let _entered = self.runtime.enter();
        let listener = socket.listen(1024).expect("listen on the sink socket");
        let app = Router::new()
            .route(PATH, post(receive))
            .with_state(self.journal.clone());
        self.server = Some(self.runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench: the sink stopped: {e}");
            }
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// A copy of every arrival so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.journal).arrivals.clone()
    }

    /// (foreign events, malformed bodies) so far: both should stay 0.
    pub fn anomalies(&self) -> (usize, usize) {
        let journal = lock(&self.journal);
        (journal.foreign, journal.malformed)
    }

    /// Waits until `expected` distinct events arrived, or nothing new arrived for `quiet`, or
    /// `cap` passed.
    pub fn wait_quiet(&self, expected: u64, quiet: Duration, cap: Duration) {
        let start = Instant::now();
        let mut last = (usize::MAX, start);
        loop {
            let (distinct, total) = {
                let journal = lock(&self.journal);
                (journal.distinct, journal.arrivals.len() + journal.foreign)
            };
            if distinct as u64 >= expected {
                return;
            }
            let now = Instant::now();
            if total != last.0 {
                last = (total, now);
            } else if now - last.1 >= quiet || now - start >= cap {
                return;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn receive(State(journal): State<Arc<Mutex<Journal>>>, body: Bytes) -> StatusCode {
    let received_ns = unix_nanos();
    let mut events = Vec::new();
    let parsed = collect(&body, &mut events);
    let mut journal = lock(&journal);
    let foreign = match parsed {
        Ok(foreign) => foreign,
        Err(_) => {
            journal.malformed += 1;
            0
        }
    };
    journal.foreign += foreign;
    for (seq, sent_ns) in events {
        journal.record(Arrival {
            seq,
            sent_ns,
            received_ns,
        });
    }
    StatusCode::OK
}

impl Journal {
    fn record(&mut self, arrival: Arrival) {
        // Below MAX_SEQ (see `parse_stamp`), so it fits.
        let index = arrival.seq as usize;
        if index >= self.seen.len() {
            self.seen.resize(index + 1, false);
        }
        if !self.seen[index] {
            self.seen[index] = true;
            self.distinct += 1;
        }
        self.arrivals.push(arrival);
    }
}

/// A webhook body, one event or a batch: only what the sink needs.
#[derive(Deserialize)]
struct Envelope<'a> {
    /// `chat.message`, `chat.notice`, …, or `chat.batch`.
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// One event's data, or the list of envelopes of a batch.
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `data` of a one-event envelope.
#[derive(Deserialize)]
struct EventData<'a> {
    /// The chat event as published.
    #[serde(borrow)]
    event: Event<'a>,
}

/// The one field of a chat message the generator fills with `"<seq> <send nanos>"`.
#[derive(Deserialize)]
struct Event<'a> {
    /// Absent on events that are not messages.
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
}

/// Appends (seq, send nanos) of every generated event in `body`; returns how many other
/// events it carried.
fn collect(body: &[u8], out: &mut Vec<(u64, u64)>) -> Result<usize, serde_json::Error> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        // The Python peer of the `compare` scenario posts the seed's message itself.
        Err(e) => return bare(body, out).ok_or(e),
    };
    if envelope.kind != "chat.batch" {
        return one(&envelope, out);
    }
    let items: Vec<Envelope> = serde_json::from_str(envelope.data.get())?;
    let mut foreign = 0;
    for item in &items {
        foreign += one(item, out)?;
    }
    Ok(foreign)
}

fn one(envelope: &Envelope, out: &mut Vec<(u64, u64)>) -> Result<usize, serde_json::Error> {
    let data: EventData = serde_json::from_str(envelope.data.get())?;
    let stamp = (envelope.kind == "chat.message")
        .then_some(data.event.content)
        .flatten()
        .and_then(|content| parse_stamp(&content));
    match stamp {
        Some(stamp) => {
            out.push(stamp);
            Ok(0)
        }
        None => Ok(1),
    }
}

/// A chat message posted as published (no envelope), as the Python peer does.
#[derive(Deserialize)]
struct Bare<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
}

/// Appends the stamp of a bare message; `None` when `body` is not one.
fn bare(body: &[u8], out: &mut Vec<(u64, u64)>) -> Option<usize> {
    let message: Bare = serde_json::from_slice(body).ok()?;
    let stamp = (message.kind == "message")
        .then_some(message.content)
        .flatten()
        .and_then(|content| parse_stamp(&content));
    match stamp {
        Some(stamp) => out.push(stamp),
        None => return Some(1),
    }
    Some(0)
}

/// `"<seq> <send nanos>"` → (seq, send nanos).
fn parse_stamp(content: &str) -> Option<(u64, u64)> {
    let (seq, sent) = content.split_once(' ')?;
    let seq = seq.parse().ok().filter(|seq| *seq < MAX_SEQ)?;
    Some((seq, sent.parse().ok()?))
}

/// Locks, ignoring poisoning: a panicked handler must not hide what was recorded.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
