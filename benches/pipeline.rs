//! End-to-end benchmark of the whole pipeline: a private `redis-server`, the real
//! `chatbridge run` with one webhook link `bench`, an in-process HTTP sink, and a load generator
//! writing messages the way the seed's `ChatRoom.send_message` does.
//!
//! `cargo bench --bench pipeline -- [--quick] [SCENARIO…]` (or `scripts/bench`) prints one JSON
//! line per scenario, then `{"summary": [...]}`. Each message's `content` is
//! `"<seq> <send unix nanos>"`; the sink records when each one arrives.

#[path = "pipeline/daemon.rs"]
mod daemon;
#[path = "../tests/common/fake_slack.rs"]
#[allow(dead_code)] // shared with the tests; the bench needs the Web API and its counters
mod fake_slack;
#[path = "pipeline/inbound.rs"]
mod inbound;
#[path = "pipeline/load.rs"]
mod load;
#[path = "pipeline/peer.rs"]
mod peer;
#[path = "../tests/common/redis.rs"]
#[allow(dead_code)] // shared with the tests, which use all of it
mod redis_server;
#[path = "pipeline/report.rs"]
mod report;
#[path = "../tests/common/seed.rs"]
#[allow(dead_code)] // shared with the tests; the bench needs `create_message` only
mod seed;
#[path = "pipeline/sink.rs"]
mod sink;
#[path = "pipeline/slack.rs"]
mod slack;
#[path = "../tests/common/tls.rs"]
#[allow(dead_code)] // the redis harness can serve TLS with it; the bench does not
mod tls;

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;

use daemon::{Daemon, RssWatch, cpu_ticks, ticks_per_second};
use load::{FloorProbe, Generator, sequential_client, unix_nanos};
use redis_server::RedisServer;
use report::{Run, round, summarise};
use sink::Sink;

/// With no new event for this long, whatever has not arrived counts as lost.
const QUIET: Duration = Duration::from_secs(3);
/// The longest any scenario waits for deliveries.
const WAIT_CAP: Duration = Duration::from_secs(600);
/// Rooms of the throughput, latency, drain and idle scenarios.
const ROOMS: usize = 10;

/// The scenarios, in the order they run.
const SCENARIOS: [&str; 10] = [
    "throughput",
    "throughput-single",
    "throughput-ordered",
    "latency",
    "rooms",
    "drain",
    "idle",
    "slack",
    "inbound",
    "compare",
];
/// Messages of the slack scenario's burst (the same in `--quick`: it is small).
const SLACK_BURST: usize = 1_000;

/// How big the scenarios are: the full run, or `--quick`.
struct Sizes {
    /// Messages of the throughput scenarios.
    burst: usize,
    /// Messages published while the sink is down.
    drain: usize,
    /// How long the latency scenario sends.
    latency_for: Duration,
    /// Rooms configured in the rooms scenario.
    rooms_configured: usize,
    /// Rooms with traffic (1 message/s each) in the rooms scenario.
    rooms_active: usize,
    /// How long the rooms scenario sends.
    rooms_for: Duration,
    /// How long the idle scenario watches.
    idle_for: Duration,
    /// How long each phase of the inbound scenario (saturated, paced) sends.
    inbound_for: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                burst: 20_000,
                drain: 10_000,
                latency_for: Duration::from_secs(5),
                rooms_configured: 1_000,
                rooms_active: 100,
                rooms_for: Duration::from_secs(5),
                idle_for: Duration::from_secs(3),
                inbound_for: Duration::from_secs(3),
            }
        } else {
            Self {
                burst: 200_000,
                drain: 100_000,
                latency_for: Duration::from_secs(20),
                rooms_configured: 10_000,
                rooms_active: 1_000,
                rooms_for: Duration::from_secs(20),
                idle_for: Duration::from_secs(10),
                inbound_for: Duration::from_secs(10),
            }
        }
    }
}

/// What the bench runs on.
struct Bench {
    /// Scenario sizes.
    sizes: Sizes,
    /// The sink's multi-thread runtime, apart from the generator's.
    sink_runtime: Runtime,
    /// The generator's (and the sequential client's) runtime.
    load_runtime: Runtime,
    /// `CLK_TCK`, to turn `/proc` ticks into seconds.
    ticks_per_second: f64,
}

/// The bench link's delivery settings.
#[derive(Clone, Copy)]
struct Link {
    /// Events per request.
    batch_max: usize,
    /// Requests outstanding at once; 1 keeps order.
    max_in_flight: usize,
}

impl Link {
    const BATCHED: Self = Self {
        batch_max: 100,
        max_in_flight: 1,
    };
}

/// One scenario's processes, dropped (killed) in field order: sampler, daemon, sink, redis.
struct Rig {
    /// Samples the daemon's memory.
    watch: RssWatch,
    /// `chatbridge run`.
    daemon: Daemon,
    /// The HTTP endpoint of the `bench` link.
    sink: Sink,
    /// The seed-like client.
    generator: Generator,
    /// The daemon's CPU ticks when the scenario started (after startup settled).
    ticks_at_start: u64,
    /// The private redis-server.
    _redis: RedisServer,
}

impl Bench {
    /// Starts redis, the sink (listening or only bound), the daemon with `rooms` rooms, waits
    /// until it is subscribed and idle, and connects a generator writing to `active` rooms.
    fn rig(&self, link: Link, rooms: usize, active: usize, listening: bool) -> Rig {
        let redis = RedisServer::start();
        let sink = if listening {
            Sink::start(self.sink_runtime.handle())
        } else {
            Sink::bind(self.sink_runtime.handle())
        };
        let mut daemon = Daemon::start(&config(&redis.url(), &sink.url(), link, rooms));
        daemon.wait_ready();
        daemon.settle();
        let generator = self
            .load_runtime
            .block_on(Generator::connect(&redis.url(), active));
        Rig {
            watch: RssWatch::start(daemon.pid()),
            ticks_at_start: cpu_ticks(daemon.pid()),
            daemon,
            sink,
            generator,
            _redis: redis,
        }
    }

    fn cpu_s(&self, rig: &Rig) -> f64 {
        let ticks = cpu_ticks(rig.daemon.pid()).saturating_sub(rig.ticks_at_start);
        ticks as f64 / self.ticks_per_second
    }

    /// Waits for quiescence and summarises, measuring the rate from `rate_from_ns` (the first
    /// send when `None`).
    fn finish(
        &self,
        name: &str,
        rig: Rig,
        ordered: bool,
        rate_from_ns: Option<u64>,
    ) -> Map<String, Value> {
        let sent = rig.generator.sent();
        rig.sink.wait_quiet(sent, QUIET, WAIT_CAP);
        let cpu_s = self.cpu_s(&rig);
        warn_anomalies(name, &rig);
        if std::env::var_os("BENCH_REDIS_STATS").is_some() {
            redis_stats(name, &rig._redis);
        }
        let arrivals = rig.sink.arrivals();
        let rate_from_ns = rate_from_ns
            .or(rig.generator.first_sent_ns())
            .unwrap_or_else(unix_nanos);
        summarise(&Run {
            name,
            sent,
            arrivals: &arrivals,
            rate_from_ns,
            ordered,
            rss_mb: rig.watch.peak_mb(),
            cpu_s,
        })
    }

    fn run(&self, scenario: &str) -> Map<String, Value> {
        let burst = self.sizes.burst;
        match scenario {
            "throughput" => self.burst(scenario, Link::BATCHED, burst),
            "throughput-single" => {
                let link = Link {
                    batch_max: 1,
                    max_in_flight: 32,
                };
                self.burst(scenario, link, burst)
            }
            "throughput-ordered" => self.ordered(scenario),
            "latency" => self.paced(scenario, ROOMS, ROOMS, 2_000, self.sizes.latency_for),
            "rooms" => {
                let (configured, active) = (self.sizes.rooms_configured, self.sizes.rooms_active);
                self.paced(scenario, configured, active, active, self.sizes.rooms_for)
            }
            "drain" => self.drain(scenario),
            "idle" => self.idle(scenario),
            "slack" => slack::run(
                scenario,
                SLACK_BURST,
                &self.sink_runtime,
                &self.load_runtime,
            ),
            "inbound" => inbound::run(
                scenario,
                self.sizes.inbound_for,
                &self.sink_runtime,
                &self.load_runtime,
            ),
            "compare" => self.compare(),
            other => unreachable!("unknown scenario {other}"),
        }
    }

    /// `count` messages over [`ROOMS`] rooms as fast as the generator goes.
    fn burst(&self, name: &str, link: Link, count: usize) -> Map<String, Value> {
        let mut rig = self.rig(link, ROOMS, ROOMS, true);
        let started = std::time::Instant::now();
        self.load_runtime.block_on(rig.generator.burst(count));
        let took = started.elapsed().as_secs_f64();
        let rate = count as f64 / took;
        eprintln!(
            "bench: {name}: the generator sent {count} messages in {took:.2} s ({rate:.0}/s)"
        );
        self.finish(name, rig, link.max_in_flight == 1, None)
    }

    /// The Python seed-pattern bridge, then chatbridge single-POST (`max_in_flight = 32`) and
    /// batched (`batch_max = 100`), the same burst over [`ROOMS`] rooms each.
    fn compare(&self) -> Map<String, Value> {
        let count = self.sizes.burst;
        eprintln!("bench: compare: the Python peer");
        let peer = peer::peer_run(
            count,
            ROOMS,
            QUIET,
            WAIT_CAP,
            &self.sink_runtime,
            &self.load_runtime,
        );
        eprintln!("bench: compare: chatbridge, one POST per event");
        let single = Link {
            batch_max: 1,
            max_in_flight: 32,
        };
        let single = self.burst("compare-single", single, count);
        eprintln!("bench: compare: chatbridge, batched");
        let batched = self.burst("compare-batched", Link::BATCHED, count);
        peer::compare_line(peer, single, batched)
    }

    /// One event per request, one request at a time; compared with a bare sequential client
    /// posting the same bodies to a sink of its own.
    fn ordered(&self, name: &str) -> Map<String, Value> {
        let link = Link {
            batch_max: 1,
            max_in_flight: 1,
        };
        let mut line = self.burst(name, link, self.sizes.burst);
        let baseline = self.baseline(self.sizes.burst);
        let daemon_rate = line.get("msgs_per_sec").and_then(Value::as_f64);
        line.insert("baseline_msgs_per_sec".into(), json!(baseline));
        let ratio = daemon_rate.zip(baseline).map(|(d, b)| round(d / b, 3));
        line.insert("ratio".into(), json!(ratio));
        line
    }

    /// The sequential client's delivered messages per second.
    fn baseline(&self, count: usize) -> Option<f64> {
        let sink = Sink::start(self.sink_runtime.handle());
        let first_sent_ns =
            self.load_runtime
                .block_on(sequential_client(&sink.url(), count, ROOMS));
        sink.wait_quiet(count as u64, QUIET, WAIT_CAP);
        let arrivals = sink.arrivals();
        let line = summarise(&Run {
            name: "baseline",
            sent: count as u64,
            arrivals: &arrivals,
            rate_from_ns: first_sent_ns,
            ordered: true,
            rss_mb: 0.0,
            cpu_s: 0.0,
        });
        line.get("msgs_per_sec").and_then(Value::as_f64)
    }

    /// `per_second` messages a second, round-robin over `active` of `rooms` rooms.
    fn paced(
        &self,
        name: &str,
        rooms: usize,
        active: usize,
        per_second: usize,
        time: Duration,
    ) -> Map<String, Value> {
        let mut rig = self.rig(Link::BATCHED, rooms, active, true);
        let probe = FloorProbe::start(self.sink_runtime.handle(), &rig._redis.url());
        self.load_runtime
            .block_on(rig.generator.paced(per_second, time));
        let mut line = self.finish(name, rig, true, None);
        let (p50, p99) = probe.finish();
        line.insert("subscriber_p50_ms".into(), json!(p50));
        line.insert("subscriber_p99_ms".into(), json!(p99));
        line
    }

    /// Publishes while the sink refuses connections, waits until the daemon queued everything,
    /// then starts the sink and measures how fast the backlog drains.
    fn drain(&self, name: &str) -> Map<String, Value> {
        let mut rig = self.rig(Link::BATCHED, ROOMS, ROOMS, false);
        let count = self.sizes.drain;
        self.load_runtime.block_on(async {
            rig.generator.burst(count).await;
            wait_for_outbox(&mut rig.generator, count as u64).await;
        });
        rig.sink.listen();
        let sink_started_ns = unix_nanos();
        self.finish(name, rig, true, Some(sink_started_ns))
    }

    /// Nothing flows: the daemon's own CPU use and memory.
    fn idle(&self, name: &str) -> Map<String, Value> {
        let rig = self.rig(Link::BATCHED, ROOMS, ROOMS, true);
        std::thread::sleep(self.sizes.idle_for);
        let cpu_s = self.cpu_s(&rig);
        let mut line = self.finish(name, rig, true, None);
        line.insert("cpu_s".into(), json!(round(cpu_s, 2)));
        let pct = 100.0 * cpu_s / self.sizes.idle_for.as_secs_f64();
        line.insert("cpu_pct".into(), json!(round(pct, 2)));
        line
    }
}

/// Waits until the outbox holds `count` entries, or its length stopped changing for [`QUIET`].
async fn wait_for_outbox(generator: &mut Generator, count: u64) {
    let mut last = (u64::MAX, tokio::time::Instant::now());
    loop {
        let len = generator.outbox_len().await;
        let now = tokio::time::Instant::now();
        if len >= count {
            return;
        }
        if len != last.0 {
            last = (len, now);
        } else if now - last.1 >= QUIET {
            eprintln!("bench: the outbox stopped growing at {len} of {count} entries");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Says on stderr when the sink got something other than the generator's messages, and what
/// the daemon warned about.
fn warn_anomalies(name: &str, rig: &Rig) {
    let log = rig.daemon.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    if let Some(first) = warnings.first() {
        eprintln!(
            "bench: {name}: the daemon logged {} warnings/errors; the first:\n  {first}",
            warnings.len()
        );
    }
    let (foreign, malformed) = rig.sink.anomalies();
    if foreign > 0 || malformed > 0 {
        eprintln!(
            "bench: {name}: the sink also got {foreign} other events and {malformed} malformed bodies"
        );
    }
}

/// The daemon's config: one unsigned webhook link `bench` for messages, rooms `r0..`.
fn config(redis_url: &str, sink_url: &str, link: Link, rooms: usize) -> String {
    let mut toml = format!(
        "[redis]\nurl = \"{redis_url}\"\n\n\
         [delivery]\n# Short waits after a refused connection, so the drain starts promptly.\n\
         retry_max_backoff_secs = 1\n\n\
         [links.bench]\nkind = \"webhook\"\nurl = \"{sink_url}\"\nevents = [\"message\"]\n\
         batch_max = {}\nmax_in_flight = {}\ntimeout_secs = 15\n",
        link.batch_max, link.max_in_flight
    );
    for room in 0..rooms {
        let _ = write!(
            toml,
            "\n[[rooms]]\nname = \"r{room}\"\nlinks = [\"bench\"]\n"
        );
    }
    toml
}

fn main() {
    let mut quick = false;
    let mut chosen = Vec::new();
    // `cargo bench` passes `--bench`; other flags are ignored too.
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            flag if flag.starts_with('-') => {}
            name if SCENARIOS.contains(&name) => chosen.push(name.to_owned()),
            name => panic!("unknown scenario {name:?}; known: {}", SCENARIOS.join(", ")),
        }
    }
    let bench = Bench {
        sizes: Sizes::new(quick),
        sink_runtime: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sink")
            .enable_all()
            .build()
            .expect("the sink runtime"),
        load_runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the load runtime"),
        ticks_per_second: ticks_per_second(),
    };
    let mut summary = Vec::new();
    for scenario in SCENARIOS {
        if !chosen.is_empty() && !chosen.iter().any(|c| c == scenario) {
            continue;
        }
        eprintln!("bench: running {scenario}");
        let line = Value::Object(bench.run(scenario));
        println!("{line}");
        summary.push(line);
    }
    println!("{}", json!({ "summary": summary }));
}

/// With `BENCH_REDIS_STATS` set: the scenario's Redis command statistics on stderr (which
/// commands the daemon ran, how often, and Redis's own time per call).
fn redis_stats(name: &str, redis: &RedisServer) {
    let Ok(mut con) = redis.client().get_connection() else {
        return;
    };
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .unwrap_or_default();
    for line in info.lines().filter(|l| l.starts_with("cmdstat_")) {
        eprintln!("bench: {name}: redis {line}");
    }
}
