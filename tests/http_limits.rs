//! The HTTP server against hostile clients, through the real `chatbridge run` binary and raw
//! loopback sockets: a client that sends nothing or its headers slowly is cut off after
//! `header_timeout_secs`, an idle keep-alive connection after `idle_timeout_secs`;
//! `max_connections` caps what is open (a waiting connection gives way to a new one, a new one
//! is refused while every slot answers a young request); and an attack under a 256
//! open-file limit (thousands of idle sockets, hundreds of slow-header and slow-body clients)
//! stops neither delivery nor `/healthz`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, wait_ready};
use common::metrics::{scrape, value};
use common::receiver::Receiver;
use common::redis::{RedisServer, free_port};
use common::seed;
use prometheus_parse::Scrape;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: chatbridge\r\n\r\n";
const HEALTHZ_BODY: &[u8] = br#"{"status":"ok"}"#;

/// `[redis]`, `[http]` (listen plus `http`) and a room `general` mirrored to the webhook link
/// `out` (to `receiver`) and the inbound-only link `hook` (for slow bodies at `/hooks/hook`).
fn config(redis: &RedisServer, port: u16, http: &str, receiver: &Receiver) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n{http}\n\n\
         [delivery]\nretry_max_backoff_secs = 1\nshutdown_grace_secs = 2\n\n\
         [links.out]\nkind = \"webhook\"\nurl = \"{}\"\nevents = [\"message\"]\n\n\
         [links.hook]\nkind = \"webhook\"\nurl = \"{}\"\nevents = [\"join\"]\n\
         inbound = true\nsecret = \"{SECRET}\"\n\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"out\", \"hook\"]\n",
        redis.url(),
        receiver.url("/out"),
        receiver.url("/hook"),
    )
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to chatbridge")
}

/// A connection, unless connecting fails or takes over 2 s (a full listen backlog).
async fn connect_within(port: u16) -> Option<TcpStream> {
    let connect = TcpStream::connect(("127.0.0.1", port));
    tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()
}

/// Reads until the server closes the connection (end of stream or reset); how long that took
/// and what it sent, or `None` if it is still open after `limit`.
async fn closed_within(
    stream: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some((started.elapsed(), got))
}

/// Sends `GET /healthz` on `stream` and reads its whole answer.
async fn healthz_on(stream: &mut TcpStream) {
    stream.write_all(HEALTHZ).await.expect("send the request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(HEALTHZ_BODY) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read the answer");
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// A client that sends a request head one header line every `every`, until the server closes
/// the connection; how long after connecting that was, and what the server sent (`None`:
/// still open after `limit`). `None` outside: it could not connect (a full listen backlog).
async fn slow_headers(
    port: u16,
    every: Duration,
    limit: Duration,
    connected: Arc<AtomicUsize>,
) -> Option<Option<(Duration, Vec<u8>)>> {
    let started = Instant::now();
    let stream = connect_within(port).await;
    connected.fetch_add(1, Ordering::SeqCst);
    let stream = stream?;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        if write.write_all(b"GET /healthz HTTP/1.1\r\n").await.is_err() {
            return;
        }
        for i in 0.. {
            tokio::time::sleep(every).await;
            let line = format!("x-slow-{i}: y\r\n");
            if write.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let closed = closed_within(&mut read, limit).await;
    writer.abort();
    Some(closed.map(|(_, got)| (started.elapsed(), got)))
}

/// A client that sends a signed-hook request head with a 60000-byte body, then the body 16
/// bytes every `every`, until the server closes the connection or `limit` passes.
async fn slow_body(port: u16, every: Duration, limit: Duration, connected: Arc<AtomicUsize>) {
    let stream = connect_within(port).await;
    connected.fetch_add(1, Ordering::SeqCst);
    let Some(mut stream) = stream else {
        return;
    };
    let head = "POST /hooks/hook HTTP/1.1\r\nHost: chatbridge\r\ncontent-type: application/json\r\n\
                content-length: 60000\r\n\r\n";
    let deadline = Instant::now() + limit;
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    while Instant::now() < deadline {
        tokio::time::sleep(every).await;
        if stream.write_all(&[b'x'; 16]).await.is_err() {
            return;
        }
    }
}

/// A counter's or gauge's value in `scraped`; panics when it is not there.
fn metric(scraped: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scraped, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in /metrics"))
}

/// A client that opens a new connection for every request (as a health checker does).
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_header_clients_are_cut_off_and_idle_keep_alive_closes() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let port = free_port();
    let http = "header_timeout_secs = 1\nidle_timeout_secs = 3\n";
    let daemon = Daemon::start(&config(&redis, port, http, &receiver));
    wait_ready(&daemon);

    let silent = async {
        let mut stream = connect(port).await;
        closed_within(&mut stream, Duration::from_secs(10)).await
    };
    let slow = slow_headers(
        port,
        Duration::from_millis(200),
        Duration::from_secs(10),
        Arc::default(),
    );
    let kept_alive = async {
        let mut stream = connect(port).await;
        healthz_on(&mut stream).await;
        // Longer than the header timeout: an idle connection is not waiting for a head.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        healthz_on(&mut stream).await;
        closed_within(&mut stream, Duration::from_secs(10)).await
    };
    let (silent, slow, kept_alive) = tokio::join!(silent, slow, kept_alive);

    let (after, sent) = silent.expect("a silent client is cut off");
    assert!(sent.is_empty());
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "after the 1 s header timeout: {after:?}"
    );
    let slow = slow.expect("connected");
    let (after, sent) = slow.expect("a client sending its headers slowly is cut off");
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "after the 1 s header timeout, however many bytes came: {after:?}"
    );
    let (after, _) = kept_alive.expect("an idle keep-alive connection is closed");
    assert!(
        after >= Duration::from_millis(2500) && after < Duration::from_secs(6),
        "after the 3 s idle timeout: {after:?}"
    );
    let scraped = scrape(port).await;
    let closed = |reason| {
        metric(
            &scraped,
            "chatbridge_http_connections_closed_total",
            &[("reason", reason)],
        )
    };
    assert!(closed("header_timeout") >= 2.0);
    assert!(closed("idle_timeout") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_what_is_open_and_waiting_or_slow_connections_give_way() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let port = free_port();
    let http = "max_connections = 4\nheader_timeout_secs = 30\nrequest_timeout_secs = 30\n";
    let daemon = Daemon::start(&config(&redis, port, http, &receiver));
    wait_ready(&daemon);
    let client = fresh_connections();
    let healthz = format!("http://127.0.0.1:{port}/healthz");

    // A connection waiting for its request gives way at once to a new one.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect(port).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = client.get(&healthz).send().await.expect("GET /healthz");
    assert_eq!(answer.status().as_u16(), 200);
    drop(answer);
    let evicted = closed_within(&mut silent[0], Duration::from_secs(2)).await;
    assert!(evicted.is_some(), "the oldest waiting connection gave way");
    drop(silent);

    // Four slow bodies hold every slot; once unanswered for a while, the oldest gives way.
    let mut bodies = JoinSet::new();
    for _ in 0..4 {
        let every = Duration::from_millis(200);
        bodies.spawn(slow_body(
            port,
            every,
            Duration::from_secs(10),
            Arc::default(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = client.get(&healthz).send().await.expect("GET /healthz");
    assert_eq!(answer.status().as_u16(), 200);
    drop(answer);

    // However many connect, no more than four are open.
    let mut more = Vec::new();
    for _ in 0..20 {
        more.push(connect(port).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scraped = scrape(port).await;
    assert!(metric(&scraped, "chatbridge_http_connections_open", &[]) <= 4.0);
    let evicted = metric(
        &scraped,
        "chatbridge_http_connections_closed_total",
        &[("reason", "evicted")],
    );
    assert!(evicted >= 2.0 + 20.0, "{evicted}");
    // Refusal (every slot answering a young request) is timing-bound: unit-tested in
    // http::connections; here only its counter's presence.
    metric(&scraped, "chatbridge_http_connections_refused_total", &[]);
    bodies.abort_all();
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Raises this test process's own open-file limit, so it can open thousands of sockets.
fn raise_own_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attack_under_a_256_file_limit_stops_neither_delivery_nor_health() {
    const MESSAGES: usize = 100;
    const SLOW_HEADERS: usize = 200;
    const SLOW_BODIES: usize = 200;
    const ATTACK: Duration = Duration::from_secs(8);
    let own_limit = raise_own_limit();
    let idle_sockets = 3000.min(own_limit.saturating_sub(SLOW_HEADERS as u64 * 2 + 800) as usize);
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let port = free_port();
    let http = "header_timeout_secs = 2\nrequest_timeout_secs = 3\n";
    let daemon = Daemon::start_with_open_file_limit(&config(&redis, port, http, &receiver), 256);
    wait_ready(&daemon);
    daemon.wait_for_log("max_connections lowered to 128", 1, WAIT);
    let pid = daemon.pid();
    let rss_before = rss_kib(pid);
    let started = Instant::now();

    // Thousands of sockets that send nothing, held until the end; hundreds of clients sending
    // their headers or their bodies slowly. `connected`: how many have connected (or failed to).
    let connected = Arc::new(AtomicUsize::new(0));
    let attackers = idle_sockets + SLOW_HEADERS + SLOW_BODIES;
    let mut idle = JoinSet::new();
    for _ in 0..idle_sockets {
        let connected = connected.clone();
        idle.spawn(async move {
            let stream = connect_within(port).await;
            connected.fetch_add(1, Ordering::SeqCst);
            if let Some(stream) = stream {
                tokio::time::sleep(ATTACK).await;
                drop(stream);
            }
        });
    }
    let mut slow = JoinSet::new();
    for _ in 0..SLOW_HEADERS {
        let every = Duration::from_millis(300);
        slow.spawn(slow_headers(
            port,
            every,
            Duration::from_secs(6),
            connected.clone(),
        ));
    }
    let mut bodies = JoinSet::new();
    for _ in 0..SLOW_BODIES {
        let every = Duration::from_millis(300);
        bodies.spawn(slow_body(port, every, ATTACK, connected.clone()));
    }

    // Messages flow meanwhile.
    let mut con = redis.connection().await;
    let mut sent = BTreeSet::new();
    let mut health = Vec::new();
    let mut rss_max = rss_before;
    // When every attacker had connected; health checks refused at once, retried.
    let mut held: Option<Instant> = None;
    let mut refused = 0;
    let checker = fresh_connections();
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    for i in 0..MESSAGES {
        let message =
            seed::send_message(&mut con, "general", json!(1001), "alice", &format!("m{i}")).await;
        sent.insert(message["id"].as_str().expect("id").to_owned());
        // Health is checked while the attackers hold their connections (a burst of new
        // slow bodies can get new connections refused for up to 250 ms: see docs/operations.md).
        if i % 3 == 2 && connected.load(Ordering::SeqCst) == attackers {
            held.get_or_insert_with(Instant::now);
        }
        if i % 3 == 2 && held.is_some_and(|at| at.elapsed() > Duration::from_millis(300)) {
            let asked = Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    match checker.get(&healthz).send().await {
                        Ok(answer) => return answer.status().as_u16(),
                        // Closed at once (a burst of slow bodies, see docs/operations.md): again.
                        Err(_) => refused += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            health.push((asked.elapsed(), answer.ok()));
            rss_max = rss_max.max(rss_kib(pid));
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    let got = receiver.wait_for(MESSAGES, WAIT).await;
    let arrived: BTreeSet<String> = got
        .iter()
        .filter(|r| r.path == "/out")
        .filter_map(|r| r.json()["data"]["event"]["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(arrived, sent, "every message arrived during the attack");
    let failed: Vec<_> = health.iter().filter(|(_, s)| *s != Some(200)).collect();
    assert!(
        failed.is_empty(),
        "/healthz within a second, every time: {health:?}"
    );
    assert!(health.len() >= 10, "checked often enough: {health:?}");
    let slowest = health.iter().map(|(t, _)| *t).max().unwrap_or_default();

    let mut closed = Vec::new();
    while let Some(result) = slow.join_next().await {
        // Only those that connected (the rest found the listen backlog full).
        closed.extend(result.expect("slow-header client"));
    }
    assert!(
        closed.len() >= SLOW_HEADERS / 2,
        "{} connected",
        closed.len()
    );
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "every slow-header client was cut off");
    for (after, sent) in closed.into_iter().flatten() {
        assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
        assert!(
            after < Duration::from_millis(3500),
            "header timeout 2 s: {after:?}"
        );
    }
    let rss_after = rss_kib(pid);
    eprintln!(
        "attack: {idle_sockets} idle sockets, {SLOW_HEADERS} slow-header and {SLOW_BODIES} \
         slow-body clients; {MESSAGES} messages delivered; slowest /healthz {slowest:?} \
         ({} checks, {refused} connections refused at once and retried); \
         RSS {rss_before} KiB before, {rss_max} KiB at most, {rss_after} KiB after; {:?}",
        health.len(),
        started.elapsed()
    );
    assert!(rss_max < 256 * 1024, "RSS bounded: {rss_max} KiB");
    idle.abort_all();
    bodies.abort_all();
}
