//! The `compare` scenario: the Python bridge written the seed's way
//! (`../shared/bench/seed_bridge.py`: redis-py PSUBSCRIBE → aiohttp POST of each message, 64 in
//! flight, no durability) and chatbridge, one after the other in the same run, against the same
//! kind of private redis-server, the same sink and the same load (a burst over 10 rooms written
//! as the seed writes messages). Prints both rates and their ratios, so the ratio is measured,
//! not remembered.
//!
//! The peer runs in a venv of its own (`target/peer-venv`, created with `redis` and `aiohttp`
//! from PyPI on first use). Set `CHATBRIDGE_PEER` to another copy of `seed_bridge.py` if the
//! shared one is elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;

use crate::load::Generator;
use crate::redis_server::RedisServer;
use crate::report::{Run, round, summarise};
use crate::sink::Sink;

/// Where the peer is, relative to the repository.
const PEER: &str = "../shared/bench/seed_bridge.py";
/// How long the peer may take to subscribe.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(30);

/// The peer's Python, installing its venv when missing; `None` (said on stderr) when that fails.
fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/peer-venv");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import redis, aiohttp"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return Some(python);
    }
    eprintln!(
        "bench: compare: creating the peer's venv in {}",
        venv.display()
    );
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status();
    let installed = made.is_ok_and(|s| s.success())
        && Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "redis>=5",
                "aiohttp>=3.9",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if installed && ready(&python) {
        Some(python)
    } else {
        eprintln!("bench: compare: could not set up the peer's venv (python3-venv, PyPI)");
        None
    }
}

/// The peer bridge, killed on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the peer against `redis` posting to `sink`, and waits until it is subscribed.
fn start_peer(python: &Path, redis: &RedisServer, sink: &Sink) -> Option<Peer> {
    let script = std::env::var_os("CHATBRIDGE_PEER").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(PEER),
        PathBuf::from,
    );
    let child = Command::new(python)
        .arg(&script)
        .arg(redis.port().to_string())
        .arg(sink.url())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("bench: compare: cannot start {}: {e}", script.display()))
        .ok()?;
    let peer = Peer(child);
    let client = redis.client();
    let mut con = client.get_connection().ok()?;
    let deadline = Instant::now() + SUBSCRIBE_WAIT;
    while Instant::now() < deadline {
        let patterns: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut con).ok()?;
        if patterns >= 1 {
            return Some(peer);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("bench: compare: the peer did not subscribe");
    None
}

/// The peer's line for a burst of `count` messages over `rooms` rooms: its delivered rate.
pub fn peer_run(
    count: usize,
    rooms: usize,
    quiet: Duration,
    cap: Duration,
    sink_runtime: &Runtime,
    load_runtime: &Runtime,
) -> Option<Map<String, Value>> {
    let python = python()?;
    let redis = RedisServer::start();
    let sink = Sink::start(sink_runtime.handle());
    let peer = start_peer(&python, &redis, &sink)?;
    let mut generator = load_runtime.block_on(Generator::connect(&redis.url(), rooms));
    load_runtime.block_on(generator.burst(count));
    sink.wait_quiet(generator.sent(), quiet, cap);
    let arrivals = sink.arrivals();
    let line = summarise(&Run {
        name: "peer",
        sent: generator.sent(),
        arrivals: &arrivals,
        rate_from_ns: generator.first_sent_ns().unwrap_or_default(),
        ordered: false,
        rss_mb: 0.0,
        cpu_s: 0.0,
    });
    drop(peer);
    Some(line)
}

/// The `compare` line: the peer's rate, chatbridge's single-POST and batched rates (their
/// full lines nested), and the two ratios.
pub fn compare_line(
    peer: Option<Map<String, Value>>,
    single: Map<String, Value>,
    batched: Map<String, Value>,
) -> Map<String, Value> {
    let rate = |line: &Map<String, Value>| line.get("msgs_per_sec").and_then(Value::as_f64);
    let peer_rate = peer.as_ref().and_then(rate);
    let ratio = |line: &Map<String, Value>| {
        rate(line)
            .zip(peer_rate)
            .map(|(ours, theirs)| round(ours / theirs, 2))
    };
    let mut line = Map::new();
    line.insert("scenario".into(), json!("compare"));
    line.insert("peer_msgs_per_sec".into(), json!(peer_rate));
    line.insert("single_msgs_per_sec".into(), json!(rate(&single)));
    line.insert("single_ratio".into(), json!(ratio(&single)));
    line.insert("batched_msgs_per_sec".into(), json!(rate(&batched)));
    line.insert("batched_ratio".into(), json!(ratio(&batched)));
    line.insert("peer".into(), json!(peer));
    line.insert("single".into(), Value::Object(single));
    line.insert("batched".into(), Value::Object(batched));
    line
}
