//! Health, metrics, status and logs through the real `chatbridge run` binary: `/metrics`
//! scraped and parsed as Prometheus text after known traffic, `/readyz` 503 while Redis is
//! down and 200 once it is up, `chatbridge status` for working, failing and disabled links,
//! JSON log lines, and no secret (URL token, query secret, signing secret) anywhere in the
//! daemon's output, its metrics or the CLI. Each test owns its redis-server, receivers and
//! daemon.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::daemon::{Daemon, cli_async, wait_ready};
use common::metrics::{scrape, value};
use common::receiver::{Receiver, Reply};
use common::redis::{RedisServer, free_port};
use common::seed;
use common::wait::eventually;
use prometheus_parse::Scrape;
use redis::AsyncCommands;
use serde_json::{Value, json};

/// How long any single condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);

/// A port nothing listens on (bound, then released): a link to it fails to connect.
fn closed_url(path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", free_port())
}

/// `[redis]`, `[http]` and `[delivery]` for a test; links, rooms and the rest follow.
fn config(redis: &RedisServer, http_port: u16, rest: &str) -> String {
    config_with(redis, http_port, "", rest)
}

/// [`config`] with more `[delivery]` keys.
fn config_with(redis: &RedisServer, http_port: u16, delivery: &str, rest: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         [delivery]\nretry_max_backoff_secs = 1\nshutdown_grace_secs = 2\n{delivery}\n\n{rest}",
        redis.url()
    )
}

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!("[links.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout_secs = 5\n{extra}\n")
}

fn room(name: &str, links: &[&str]) -> String {
    let links: Vec<String> = links.iter().map(|l| format!("\"{l}\"")).collect();
    format!(
        "[[rooms]]\nname = \"{name}\"\nlinks = [{}]\n",
        links.join(", ")
    )
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_per_kind_and_link() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let port = free_port();
    let rest = format!(
        "{}{}{}",
        webhook("audit", &receiver.url("/hook"), ""),
        webhook("down", &closed_url("/hook"), "events = [\"message\"]"),
        room("general", &["audit", "down"])
    );
    let daemon = Daemon::start(&config(&redis, port, &rest));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    for i in 0..5 {
        seed::send_message(&mut con, "general", json!(1001), "alice", &format!("m{i}")).await;
    }
    seed::typing(&mut con, "general", json!(1001)).await;
    let _: () = con
        .publish("chat:room:general", "{not json")
        .await
        .expect("PUBLISH");
    receiver.wait_for(6, WAIT).await;

    let scraped = eventually("6 deliveries counted for audit", WAIT, async || {
        let scraped = scrape(port).await;
        let delivered = value(&scraped, "chatbridge_delivered_total", &[("link", "audit")]);
        (delivered == Some(6.0)).then_some(scraped)
    })
    .await;
    let received = |kind| {
        value(
            &scraped,
            "chatbridge_events_received_total",
            &[("kind", kind)],
        )
    };
    assert_eq!(received("message"), Some(5.0));
    assert_eq!(received("typing"), Some(1.0));
    assert_eq!(received("join"), Some(0.0));
    assert_eq!(
        value(
            &scraped,
            "chatbridge_malformed_payloads_total",
            &[("kind", "not_json")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scraped,
            "chatbridge_delivery_latency_seconds",
            &[("link", "audit")]
        ),
        Some(6.0),
        "one latency observation per delivered event"
    );
    assert_eq!(
        value(&scraped, "chatbridge_delivered_total", &[("link", "down")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &scraped,
            "chatbridge_dead_lettered_total",
            &[("link", "audit")]
        ),
        Some(0.0)
    );
    assert!(
        value(
            &scraped,
            "chatbridge_catchup_runs_total",
            &[("trigger", "subscribe")]
        )
        .is_some_and(|runs| runs >= 1.0)
    );
    assert_eq!(
        value(&scraped, "chatbridge_redis_reconnects_total", &[]),
        Some(0.0)
    );

    // The link that cannot connect: its failures are counted and retried, its 5 messages
    // wait in its outbox (sampled every 5 s), the oldest for a while already.
    let scraped = eventually("the down link's queue sampled", WAIT, async || {
        let scraped = scrape(port).await;
        let depth = value(&scraped, "chatbridge_outbox_depth", &[("link", "down")]);
        (depth == Some(5.0)).then_some(scraped)
    })
    .await;
    let failures = value(
        &scraped,
        "chatbridge_delivery_failures_total",
        &[("link", "down"), ("reason", "link")],
    );
    assert!(failures.is_some_and(|n| n >= 1.0), "{failures:?}");
    let retries = value(
        &scraped,
        "chatbridge_delivery_retries_total",
        &[("link", "down")],
    );
    assert!(retries.is_some_and(|n| n >= 1.0), "{retries:?}");
    let age = value(
        &scraped,
        "chatbridge_outbox_oldest_age_seconds",
        &[("link", "down")],
    );
    assert!(age.is_some_and(|age| age > 0.0), "{age:?}");
    assert_eq!(
        value(&scraped, "chatbridge_outbox_depth", &[("link", "audit")]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_redis_is_down_and_200_once_it_is_up() {
    let mut redis = RedisServer::start();
    redis.kill();
    let receiver = Receiver::start().await;
    let port = free_port();
    let rest = format!(
        "{}{}",
        webhook("audit", &receiver.url("/hook"), ""),
        room("general", &["audit"])
    );
    let _daemon = Daemon::start(&config(&redis, port, &rest));

    let (status, body) = eventually("the http server to answer", WAIT, async || {
        let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    let reason: Value = serde_json::from_str(&body).expect("JSON reason");
    assert_eq!(reason["status"], "not ready");
    let reasons = reason["reasons"].to_string();
    assert!(reasons.contains("redis subscription down"), "{reason}");
    assert!(
        reasons.contains("link audit: delivery worker starting"),
        "{reason}"
    );
    let (status, _) = get(port, "/healthz").await;
    assert_eq!(status, 200, "the process itself is healthy");

    redis.start_again();
    let body = eventually("/readyz to say ready", WAIT, async || {
        let (status, body) = get(port, "/readyz").await;
        (status == 200).then_some(body)
    })
    .await;
    let ready: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["workers"]["audit"], "running");
    assert_eq!(ready["subscription"], "ok");
    let (status, _) = get(port, "/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(
        value(
            &scrape(port).await,
            "chatbridge_redis_reconnects_total",
            &[]
        ),
        Some(0.0)
    );

    // Redis restarts under the running daemon: the lost session is counted, and ready again.
    redis.restart();
    eventually("the reconnect counted", WAIT, async || {
        let reconnects = value(
            &scrape(port).await,
            "chatbridge_redis_reconnects_total",
            &[],
        );
        reconnects.is_some_and(|n| n >= 1.0).then_some(())
    })
    .await;
    eventually("/readyz ready again", WAIT, async || {
        (get(port, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let gaps = |reason: &'static str| async move {
        value(
            &scrape(port).await,
            "chatbridge_subscription_gaps_total",
            &[("reason", reason)],
        )
    };
    eventually("the gap counted as a restart", WAIT, async || {
        (gaps("redis_restarted").await == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(gaps("connection_closed").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dropping_a_stalled_subscriber_is_a_counted_logged_gap_and_history_fills_it() {
    // A small Pub/Sub output buffer: a subscriber that cannot read for a moment is dropped.
    let redis = RedisServer::start_with(&["--client-output-buffer-limit", "pubsub 256kb 128kb 1"]);
    let receiver = Receiver::start().await;
    let port = free_port();
    let rest = format!(
        "{}{}",
        webhook("audit", &receiver.url("/hook"), "batch_max = 100"),
        room("general", &["audit"])
    );
    let daemon = Daemon::start(&config(&redis, port, &rest));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    // A session that has run for 10 s is replaced at once when it ends, without backoff.
    tokio::time::sleep(Duration::from_millis(10_500)).await;

    // The process cannot read (as under a CPU hog, only certain): a flood on a room nothing
    // bridges fills the socket buffers and then Redis's, past the limit.
    daemon.signal(nix::sys::signal::Signal::SIGSTOP);
    let padding = "x".repeat(16 * 1024);
    let mut flood = redis::pipe();
    for i in 0..2000 {
        let typing = json!({"type": "typing", "user_id": i, "timestamp": "2026-12-04T00:00:00", "pad": padding});
        flood
            .publish("chat:room:elsewhere", typing.to_string())
            .ignore();
    }
    let _: () = flood.query_async(&mut con).await.unwrap();
    // Meanwhile stored messages: history has them, whatever the subscription missed.
    let stored: Vec<String> = (0..10).map(|i| format!("during {i}")).collect();
    for content in &stored {
        seed::send_message(&mut con, "general", json!(1), "a", content).await;
    }
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGCONT);

    let gaps = async || {
        let scraped = scrape(port).await;
        ["connection_closed", "output_buffer_limit"]
            .iter()
            .filter_map(|reason| {
                value(
                    &scraped,
                    "chatbridge_subscription_gaps_total",
                    &[("reason", reason)],
                )
            })
            .sum::<f64>()
    };
    eventually(
        "the dropped subscription counted as a gap",
        WAIT,
        async || (gaps().await >= 1.0).then_some(()),
    )
    .await;
    assert_eq!(
        gaps().await,
        1.0,
        "one gap; Redis's clients before: {clients}"
    );
    let log = daemon.log();
    assert!(log.contains("possible gap"), "{log}");
    assert!(
        log.contains("publish-only messages published meanwhile are lost"),
        "{log}"
    );

    // The subscription is back: a signal published now arrives, and catch-up delivered
    // every stored message the gap hid.
    seed::typing(&mut con, "general", json!(4242)).await;
    eventually(
        "the stored messages and the signal after the gap",
        WAIT,
        async || {
            let bodies: Vec<String> = receiver
                .requests()
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .collect();
            let all = bodies.concat();
            (stored.iter().all(|c| all.contains(&format!("\"{c}\""))) && all.contains("4242"))
                .then_some(())
        },
    )
    .await;
    let scraped = scrape(port).await;
    let lasted = value(&scraped, "chatbridge_subscription_gap_seconds_sum", &[]);
    assert!(
        lasted.is_some_and(|s| s < 0.25),
        "reconnected at once, not after a backoff (0.25 s at least): {lasted:?}"
    );
    let recovered = value(&scraped, "chatbridge_catchup_recovered_total", &[]);
    assert!(
        recovered.is_some_and(|n| n >= 1.0),
        "the gap hid stored messages that catch-up found: {recovered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_server_caps_bodies() {
    let redis = RedisServer::start();
    let port = free_port();
    let toml = config(&redis, port, "[links.console]\nkind = \"console\"\n");
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let client = reqwest::Client::new();
    let big = client
        .post(format!("http://127.0.0.1:{port}/healthz"))
        .body(vec![b'x'; 64 * 1024 + 1])
        .send()
        .await
        .expect("POST");
    assert_eq!(big.status().as_u16(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_state_queue_lease_catchup_and_malformed_counts() {
    let redis = RedisServer::start();
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.respond_with(Reply::status(401));
    let gone = Receiver::start().await;
    gone.respond_with(Reply::status(410));
    let limited = Receiver::start().await;
    limited.respond_with(Reply::status(429).header("retry-after", "30"));
    let port = free_port();
    let rest = format!(
        "[history]\nsweep_secs = 1\n\n{}{}{}{}{}",
        webhook("fine", &ok.url("/hook"), ""),
        webhook("failing", &failing.url("/hook"), ""),
        webhook("gone", &gone.url("/hook"), ""),
        webhook("limited", &limited.url("/hook"), ""),
        room("general", &["fine", "failing", "gone", "limited"])
    );
    let daemon = Daemon::start(&config(&redis, port, &rest));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "alice", "one").await;
    seed::send_message(&mut con, "general", json!(1), "alice", "two").await;
    let _: () = con
        .publish("chat:room:general", "\u{1b}[31mnot json")
        .await
        .expect("PUBLISH");
    let _: () = con
        .publish("chat:room:general", "{\"type\": \"message\"}")
        .await
        .expect("PUBLISH");
    ok.wait_for(2, WAIT).await;

    let out = eventually("status to show every fact", WAIT, async || {
        let (code, out, err) = cli_async(daemon.config_path(), &["status"]).await;
        assert_eq!(code, 0, "{err}");
        let done = out.contains("malformed payloads: 2")
            && out.contains("failing: FAILING since")
            && out.contains("gone: DISABLED")
            && out.contains("limited: PAUSED until");
        done.then_some(out)
    })
    .await;
    let section = |link: &str| -> String {
        let start = out
            .find(&format!("{link}: "))
            .unwrap_or_else(|| panic!("no {link} in {out}"));
        out[start..]
            .lines()
            .take_while(|line| line.starts_with(&format!("{link}: ")) || line.starts_with("  "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let fine = section("fine");
    assert!(fine.starts_with("fine: ok"), "{out}");
    assert!(fine.contains("queue: 0 queued"), "{out}");
    assert!(fine.contains("delivered: 2"), "{out}");
    assert!(
        fine.contains("delivery: held by ") && fine.contains(&format!("pid {}", daemon.pid())),
        "{out}"
    );
    let failing_section = section("failing");
    assert!(failing_section.contains("HTTP 401"), "{out}");
    assert!(
        failing_section.contains("queue: 2 queued, oldest "),
        "{out}"
    );
    let gone_section = section("gone");
    assert!(gone_section.contains("(chatbridge enable gone)"), "{out}");
    assert!(gone_section.contains("queue: 2 queued"), "{out}");
    let limited_section = section("limited");
    assert!(
        limited_section.contains("rate limited by the target (HTTP 429"),
        "{out}"
    );
    assert!(limited_section.contains("queue: 2 queued"), "{out}");
    let (_, outbox, _) = cli_async(daemon.config_path(), &["outbox"]).await;
    assert!(outbox.contains("  PAUSED until "), "{outbox}");
    assert!(out.contains("last catch-up: 20"), "{out}");
    assert!(out.contains("not_json 1"), "{out}");
    assert!(out.contains("missing_field 1"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "chat data never reaches the terminal raw"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_json_object_per_line() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.respond_next(1, Reply::status(503));
    let port = free_port();
    let rest = format!(
        "[log]\nformat = \"json\"\n\n{}{}",
        webhook("audit", &receiver.url("/hook"), ""),
        room("general", &["audit"])
    );
    let mut daemon = Daemon::start(&config(&redis, port, &rest));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "alice", "hi").await;
    receiver.wait_for(2, WAIT).await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait_exit(WAIT).success());

    let log = daemon.log();
    let mut messages = Vec::new();
    for line in log.lines().filter(|line| !line.trim().is_empty()) {
        let parsed: HashMap<String, Value> = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(parsed.contains_key("timestamp"), "{line}");
        assert!(parsed.contains_key("level"), "{line}");
        messages.push(parsed["message"].as_str().unwrap_or_default().to_owned());
    }
    for expected in [
        "http server listening",
        "subscribed",
        "send failed",
        "stopped",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "no {expected:?} among {messages:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_comes_from_the_config_unless_rust_log_is_set() {
    let redis = RedisServer::start();
    let rest = format!(
        "[log]\nlevel = \"warn\"\n\n[links.console]\nkind = \"console\"\n\n{}",
        room("general", &["console"])
    );
    let (quiet_port, chatty_port) = (free_port(), free_port());
    let quiet = Daemon::start_with_env(&config(&redis, quiet_port, &rest), &[("RUST_LOG", "")]);
    let chatty = Daemon::start_with_env(
        &config(&redis, chatty_port, &rest),
        &[("RUST_LOG", "debug")],
    );
    for port in [quiet_port, chatty_port] {
        eventually("both daemons ready", WAIT, async || {
            let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }
    let mut con = redis.connection().await;
    let _: () = con
        .publish("chat:room:general", "{oops")
        .await
        .expect("PUBLISH");
    tokio::task::block_in_place(|| {
        chatty.wait_for_log("skipping event", 1, WAIT);
        quiet.wait_for_log("skipping event", 1, WAIT);
    });
    assert!(chatty.log().contains("DEBUG"), "{}", chatty.log());
    let quiet_log = quiet.log();
    assert!(!quiet_log.contains(" INFO "), "{quiet_log}");
    assert!(!quiet_log.contains("subscribed"), "{quiet_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_once_the_http_server_answers_and_a_taken_port_stops_run() {
    let redis = RedisServer::start();
    let port = free_port();
    let toml = config(&redis, port, "[links.console]\nkind = \"console\"\n");
    let mut socket = common::notify::NotifySocket::bind();
    let path = socket.path().to_string_lossy().into_owned();
    let daemon = Daemon::start_with_env(&toml, &[("NOTIFY_SOCKET", path.as_str())]);
    tokio::task::block_in_place(|| {
        socket.wait_for(0, "READY=1", WAIT, |d| d.has("READY=1"));
    });
    // No retry: at READY=1 the server is bound and the daemon is ready.
    let (status, body) = get(port, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    let second = common::daemon::ConfigDir::new(&toml);
    let (code, _, err) = cli_async(second.path(), &["run"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} ([http] listen)"
        )),
        "{err}"
    );
    drop(daemon);
}

/// The secret strings of the redaction test.
const PATH_TOKEN: &str = "T0KEN-in-the-path-3141";
const QUERY_SECRET: &str = "query-s3cret-2718";
const DOWN_TOKEN: &str = "d0wn-T0KEN-1618";
const SIGNING_KEY: &str = "c2lnbmluZy1zZWNyZXQtMjQtYnl0ZXMhIQ==";
const REDIS_PASSWORD: &str = "r3dis-Pa55word-1414";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_nowhere_in_text_logs_metrics_or_the_cli() {
    secrets_appear_nowhere("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_nowhere_in_json_logs_metrics_or_the_cli() {
    secrets_appear_nowhere("json").await;
}

/// Runs a daemon whose links fail (one signed, its receiver echoing the URL's secrets back,
/// one that cannot connect; Redis behind a password), logging in `format`, then searches all
/// it printed, `/metrics`, `/readyz` and the CLI's output for each secret.
async fn secrets_appear_nowhere(format: &str) {
    let redis = RedisServer::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(REDIS_PASSWORD)
        .query_async(&mut redis.connection().await)
        .await
        .expect("set requirepass");
    let redis_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}/", redis.port());
    let receiver = Receiver::start().await;
    // The receiver fails every request and echoes the secrets back in its error body.
    receiver.respond_with(Reply::status(500).body(&format!(
        "bad request to /hook/{PATH_TOKEN}?key={QUERY_SECRET}"
    )));
    let port = free_port();
    let hook = receiver.url(&format!("/hook/{PATH_TOKEN}?key={QUERY_SECRET}"));
    let secret = format!("whsec_{SIGNING_KEY}");
    let rest = format!(
        "[log]\nformat = \"{format}\"\n\n{}{}{}",
        webhook("audit", &hook, &format!("secret = \"{secret}\"")),
        webhook("down", &closed_url(&format!("/{DOWN_TOKEN}")), ""),
        room("general", &["audit", "down"])
    );
    let toml = config_with(&redis, port, "give_up_after_secs = 1", &rest)
        .replace(&redis.url(), &redis_url);
    let mut daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis::Client::open(redis_url.as_str())
        .expect("URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect with the password");
    seed::send_message(&mut con, "general", json!(1), "alice", "hi").await;
    // Failing, retried, then given up and dead-lettered with the receiver's body.
    eventually("the event dead-lettered", WAIT, async || {
        let dead: usize = con.xlen("chatbridge:dlq:audit").await.ok()?;
        (dead == 1).then_some(())
    })
    .await;
    eventually("the down link failing", WAIT, async || {
        let failing: Option<String> = con
            .hget("chatbridge:link:down", "failing_since")
            .await
            .ok()?;
        failing
    })
    .await;
    let metrics = get(port, "/metrics").await.1;
    let scraped = Scrape::parse(metrics.lines().map(|line| Ok(line.to_owned()))).expect("parse");
    assert_eq!(
        value(
            &scraped,
            "chatbridge_dead_lettered_total",
            &[("link", "audit")]
        ),
        Some(1.0),
        "{metrics}"
    );
    let event_failures = value(
        &scraped,
        "chatbridge_delivery_failures_total",
        &[("link", "audit"), ("reason", "event")],
    );
    assert!(event_failures.is_some_and(|n| n >= 1.0), "{metrics}");
    let readyz = get(port, "/readyz").await.1;
    let mut cli = String::new();
    for args in [
        &["status"][..],
        &["outbox"],
        &["dlq", "list", "audit"],
        &["check"],
    ] {
        let (_, out, err) = cli_async(daemon.config_path(), args).await;
        cli.push_str(&out);
        cli.push_str(&err);
    }
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.wait_exit(WAIT);

    let output = format!("{}{}", daemon.log(), daemon.stdout());
    assert!(
        output.contains("send failed"),
        "the failures were logged:\n{output}"
    );
    assert!(cli.contains("FAILING since"), "{cli}");
    for (what, text) in [
        ("daemon output", &output),
        ("/metrics", &metrics),
        ("/readyz", &readyz),
        ("the CLI", &cli),
    ] {
        for secret in [
            PATH_TOKEN,
            QUERY_SECRET,
            DOWN_TOKEN,
            SIGNING_KEY,
            REDIS_PASSWORD,
        ] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
}
