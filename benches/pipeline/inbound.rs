//! The `inbound` scenario: signed generic webhooks (`POST /hooks/hook`, Standard Webhooks)
//! from keep-alive clients, each written atomically into room `r0` by the daemon and seen by a
//! seed-style subscriber of `chat:room:r0`. Two phases: saturated (`CONCURRENCY` clients as
//! fast as they go: accepted requests per second) and paced (1,000 requests/s: latency from
//! the request leaving the client to the subscriber receiving the event). Reports loss and
//! duplicates over both.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;

use chatbridge::platforms::webhook::signing;
use chatbridge::secret::WebhookSecret;

use crate::daemon::{Daemon, cpu_ticks, ticks_per_second};
use crate::load::unix_nanos;
use crate::redis_server::RedisServer;
use crate::report::round;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// Clients sending at once in the saturated phase.
const CONCURRENCY: usize = 32;
/// Requests per second in the paced phase.
const PACED_RATE: u64 = 1_000;
/// With no new event for this long, what has not arrived counts as lost.
const QUIET: Duration = Duration::from_secs(3);

/// What the subscriber saw: (sequence number, latency in ns) per event.
type Seen = Arc<Mutex<Vec<(u64, u64)>>>;

/// Runs both phases, each for `phase`.
pub fn run(
    name: &str,
    phase: Duration,
    sink_runtime: &Runtime,
    load_runtime: &Runtime,
) -> Map<String, Value> {
    let redis = RedisServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let toml = format!(
        "[redis]\nurl = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
         max_concurrent_requests = 256\n\n\
         [links.hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/unused\"\n\
         secret = \"{SECRET}\"\ninbound = true\nevents = [\"message\"]\n\n\
         [[rooms]]\nname = \"r0\"\nlinks = [\"hook\"]\n",
        redis.url()
    );
    let mut daemon = Daemon::start(&toml);
    daemon.wait_ready();
    daemon.settle();
    let seen = subscribe(sink_runtime, &redis.url());
    let url = format!("http://127.0.0.1:{port}/hooks/hook");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client");
    let ticks = cpu_ticks(daemon.pid());
    let started = Instant::now();
    let saturated = load_runtime.block_on(saturate(&client, &url, phase));
    let took = started.elapsed().as_secs_f64();
    let cpu_s = cpu_ticks(daemon.pid()).saturating_sub(ticks) as f64 / ticks_per_second();
    let first_paced = saturated.sent;
    let paced = load_runtime.block_on(pace(&client, &url, phase, first_paced));
    let accepted = saturated.accepted + paced.accepted;
    let events = wait_quiet(&seen, accepted);
    let unique: HashSet<u64> = events.iter().map(|(seq, _)| *seq).collect();
    let mut latencies: Vec<u64> = events
        .iter()
        .filter(|(seq, _)| *seq >= first_paced)
        .map(|(_, ns)| *ns)
        .collect();
    latencies.sort_unstable();
    let ms = |q: f64| {
        (!latencies.is_empty()).then(|| {
            let i = ((latencies.len() - 1) as f64 * q).round() as usize;
            round(latencies[i] as f64 / 1e6, 3)
        })
    };
    let mut line = Map::new();
    line.insert("scenario".into(), json!(name));
    line.insert("sent".into(), json!(saturated.sent + paced.sent));
    line.insert("accepted".into(), json!(accepted));
    line.insert("refused".into(), json!(saturated.refused + paced.refused));
    line.insert("delivered".into(), json!(unique.len()));
    line.insert(
        "lost".into(),
        json!(accepted.saturating_sub(unique.len() as u64)),
    );
    line.insert("duplicates".into(), json!(events.len() - unique.len()));
    line.insert(
        "msgs_per_sec".into(),
        json!(round(saturated.accepted as f64 / took, 0)),
    );
    line.insert("saturated_cpu_s".into(), json!(round(cpu_s, 2)));
    line.insert("paced_per_sec".into(), json!(PACED_RATE));
    line.insert("p50_ms".into(), json!(ms(0.50)));
    line.insert("p99_ms".into(), json!(ms(0.99)));
    line.insert("max_ms".into(), json!(ms(1.0)));
    drop(daemon);
    line
}

/// A seed-style subscriber of `chat:room:r0`, subscribed before this returns.
fn subscribe(runtime: &Runtime, url: &str) -> Seen {
    let client = redis::Client::open(url).expect("a valid redis URL");
    let mut pubsub = runtime
        .block_on(client.get_async_pubsub())
        .expect("the subscriber");
    runtime
        .block_on(pubsub.subscribe("chat:room:r0"))
        .expect("SUBSCRIBE");
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    runtime.spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let received = unix_nanos();
            let parsed = serde_json::from_slice::<Value>(message.get_payload_bytes())
                .ok()
                .and_then(|v| {
                    let content = v.get("content")?.as_str()?.to_owned();
                    let mut parts = content.split(' ');
                    let seq = parts.next()?.parse::<u64>().ok()?;
                    let sent = parts.next()?.parse::<u64>().ok()?;
                    Some((seq, received.saturating_sub(sent)))
                });
            if let (Some(event), Ok(mut all)) = (parsed, sink.lock()) {
                all.push(event);
            }
        }
    });
    seen
}

/// Waits until `expected` events arrived, or none came for [`QUIET`]; returns them.
fn wait_quiet(seen: &Seen, expected: u64) -> Vec<(u64, u64)> {
    let mut last = (0, Instant::now());
    loop {
        let count = seen.lock().map(|s| s.len()).unwrap_or_default();
        if count as u64 >= expected || last.1.elapsed() >= QUIET {
            return seen.lock().map(|s| s.clone()).unwrap_or_default();
        }
        if count != last.0 {
            last = (count, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Requests sent, accepted (202) and refused (anything else, or failed).
#[derive(Default)]
struct Tally {
    /// Requests made.
    sent: u64,
    /// Answered 202.
    accepted: u64,
    /// Answered otherwise, or failed.
    refused: u64,
}

/// One signed request for sequence number `seq`; `true` when it was accepted.
async fn post(client: &reqwest::Client, url: &str, secret: &WebhookSecret, seq: u64) -> bool {
    let sent = unix_nanos();
    let body = format!(
        "{{\"type\": \"message\", \"room\": \"r0\", \"user_id\": 1, \"username\": \"bench\", \
         \"content\": \"{seq} {sent}\"}}"
    );
    let id = format!("msg_bench_{seq}");
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signing::sign(secret, &id, timestamp, body.as_bytes());
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    matches!(response, Ok(r) if r.status().as_u16() == 202)
}

/// [`CONCURRENCY`] keep-alive clients posting back to back for `phase`.
async fn saturate(client: &reqwest::Client, url: &str, phase: Duration) -> Tally {
    let secret = Arc::new(WebhookSecret::parse(SECRET).expect("the bench secret"));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + phase;
    let mut clients = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, secret, next) =
            (client.clone(), url.to_owned(), secret.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let seq = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tally.sent += 1;
                if post(&client, &url, &secret, seq).await {
                    tally.accepted += 1;
                } else {
                    tally.refused += 1;
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for client in clients {
        let tally = client.await.unwrap_or_default();
        total.sent += tally.sent;
        total.accepted += tally.accepted;
        total.refused += tally.refused;
    }
    total
}

/// [`PACED_RATE`] requests a second for `phase`, numbered from `first`.
async fn pace(client: &reqwest::Client, url: &str, phase: Duration, first: u64) -> Tally {
    let secret = Arc::new(WebhookSecret::parse(SECRET).expect("the bench secret"));
    let count = PACED_RATE * phase.as_secs().max(1);
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / PACED_RATE));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::new();
    for seq in first..first + count {
        ticker.tick().await;
        let (client, url, secret) = (client.clone(), url.to_owned(), secret.clone());
        requests.push(tokio::spawn(async move {
            post(&client, &url, &secret, seq).await
        }));
    }
    let mut tally = Tally {
        sent: count,
        ..Tally::default()
    };
    for request in requests {
        if request.await.unwrap_or(false) {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
    }
    tally
}
