//! The load: messages written exactly as the seed's `ChatRoom.send_message` writes them
//! (PUBLISH, LPUSH, LTRIM 0 999, the JSON in Python's format), pipelined over ONE connection so
//! the global publish order is the sequence order; and the bare sequential HTTP client the
//! ordered scenario compares against.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{SecondsFormat, Utc};
use redis::aio::MultiplexedConnection;
use serde_json::json;
use tokio::time::{MissedTickBehavior, interval};

use crate::seed::create_message;

/// Messages per pipeline when sending as fast as possible.
const PIPELINE: usize = 100;
/// The pacing tick of [`Generator::paced`].
const TICK: Duration = Duration::from_millis(10);

/// Now, in nanoseconds since the Unix epoch (the clock both ends of a measurement read).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A seed client writing numbered messages round-robin over some rooms.
pub struct Generator {
    /// The one connection every message goes through.
    con: MultiplexedConnection,
    /// The rooms, `r0..`; message `seq` goes to `rooms[seq % len]`.
    rooms: Vec<String>,
    /// The next sequence number: how many messages were sent so far.
    next: u64,
    /// When the first message was built (Unix nanoseconds).
    first_sent_ns: Option<u64>,
}

impl Generator {
    /// Connects to the bench's redis; messages go to rooms `r0..r{rooms-1}`.
    pub async fn connect(url: &str, rooms: usize) -> Self {
        let client = redis::Client::open(url).expect("a valid redis URL");
        let con = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect the generator to redis");
        Self {
            con,
            rooms: (0..rooms.max(1)).map(|i| format!("r{i}")).collect(),
            next: 0,
            first_sent_ns: None,
        }
    }

    pub fn sent(&self) -> u64 {
        self.next
    }

    pub fn first_sent_ns(&self) -> Option<u64> {
        self.first_sent_ns
    }

    /// Sends `total` messages as fast as one connection can, [`PIPELINE`] per round trip.
    pub async fn burst(&mut self, total: usize) {
        let mut left = total;
        while left > 0 {
            let count = left.min(PIPELINE);
            self.send(count).await;
            left -= count;
        }
    }

    /// Sends `per_second` messages a second for `duration`, in one pipeline every [`TICK`].
    pub async fn paced(&mut self, per_second: usize, duration: Duration) {
        let ticks_per_second = (Duration::from_secs(1).as_nanos() / TICK.as_nanos()) as usize;
        let per_tick = per_second.div_ceil(ticks_per_second).max(1);
        let total = per_second * duration.as_secs() as usize;
        let mut ticker = interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut left = total;
        while left > 0 {
            ticker.tick().await;
            let count = left.min(per_tick);
            self.send(count).await;
            left -= count;
        }
    }

    /// Sends the next `count` messages in one pipeline.
    async fn send(&mut self, count: usize) {
        let mut pipe = redis::pipe();
        for _ in 0..count {
            let seq = self.next;
            self.next += 1;
            let sent_ns = unix_nanos();
            self.first_sent_ns.get_or_insert(sent_ns);
            let room = &self.rooms[(seq % self.rooms.len() as u64) as usize];
            let json = message_json(seq, sent_ns, room);
            let history = format!("chat:room:{room}:history");
            pipe.cmd("PUBLISH")
                .arg(format!("chat:room:{room}"))
                .arg(&json)
                .ignore();
            pipe.cmd("LPUSH").arg(&history).arg(&json).ignore();
            pipe.cmd("LTRIM").arg(&history).arg(0).arg(999).ignore();
        }
        pipe.query_async::<()>(&mut self.con)
            .await
            .expect("the generator's pipeline");
    }

    /// `XLEN` of the bench link's outbox.
    pub async fn outbox_len(&mut self) -> u64 {
        redis::cmd("XLEN")
            .arg("chatbridge:outbox:bench")
            .query_async(&mut self.con)
            .await
            .expect("XLEN of the outbox")
    }
}

/// The seed's message JSON, `content` = `"<seq> <send nanos>"`.
fn message_json(seq: u64, sent_ns: u64, room: &str) -> String {
    let user_id = json!(1000 + seq % 50);
    let message = create_message(user_id, "bench", &format!("{seq} {sent_ns}"), Some(room));
    chatbridge::chat::pyjson::to_string(&message)
}

/// POSTs `count` single-event webhook bodies (as the daemon renders them) to `url`, one after
/// another over one keep-alive connection; returns when the first body was built (Unix
/// nanoseconds).
pub async fn sequential_client(url: &str, count: usize, rooms: usize) -> u64 {
    let client = reqwest::Client::new();
    let first_sent_ns = unix_nanos();
    for seq in 0..count as u64 {
        let room = format!("r{}", seq % rooms.max(1) as u64);
        let event = message_json(seq, unix_nanos(), &room);
        let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let body = format!(
            r#"{{"type":"chat.message","timestamp":"{timestamp}","data":{{"room":"{room}","event":{event}}}}}"#
        );
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the sequential client's POST");
        assert!(
            response.status().is_success(),
            "the sink answered {}",
            response.status()
        );
        // Reading the (empty) body to the end lets the connection be reused.
        let _ = response.bytes().await;
    }
    first_sent_ns
}

/// A plain Pub/Sub subscriber beside the daemon, recording how long each message took from
/// the generator to it: the floor of the first hop (generator → Redis → a subscriber) under the
/// same load, which no bridge can beat.
pub struct FloorProbe {
    /// Nanoseconds from build to receipt, one per message.
    latencies: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    /// The reading task.
    task: tokio::task::JoinHandle<()>,
}

impl FloorProbe {
    /// Subscribes (on `runtime`) before returning, so nothing published afterwards is missed.
    pub fn start(runtime: &tokio::runtime::Handle, url: &str) -> Self {
        use futures_util::StreamExt;
        let client = redis::Client::open(url).expect("a valid redis URL");
        let mut pubsub = runtime
            .block_on(client.get_async_pubsub())
            .expect("the floor probe's subscription");
        runtime
            .block_on(pubsub.psubscribe("chat:room:*"))
            .expect("PSUBSCRIBE");
        let latencies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = latencies.clone();
        let task = runtime.spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let received = unix_nanos();
                let sent = serde_json::from_slice::<serde_json::Value>(message.get_payload_bytes())
                    .ok()
                    .and_then(|v| {
                        let content = v.get("content")?.as_str()?.to_owned();
                        content.split(' ').nth(1)?.parse::<u64>().ok()
                    });
                if let (Some(sent), Ok(mut all)) = (sent, sink.lock()) {
                    all.push(received.saturating_sub(sent));
                }
            }
        });
        Self { latencies, task }
    }

    /// Stops and returns (p50, p99) in milliseconds.
    pub fn finish(self) -> (Option<f64>, Option<f64>) {
        self.task.abort();
        let mut all = self.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        all.sort_unstable();
        let pick = |q: f64| {
            (!all.is_empty()).then(|| {
                let i = ((all.len() - 1) as f64 * q).round() as usize;
                (all[i] as f64 / 1e4).round() / 100.0
            })
        };
        (pick(0.50), pick(0.99))
    }
}
