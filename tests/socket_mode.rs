//! Slack Socket Mode end to end: the real binary, a real redis-server, a fake Slack
//! (`apps.connections.open` + a loopback websocket) that sends hello, `events_api` envelopes,
//! a retried event, our own bot's post and a `disconnect` mid-stream. Outcomes are checked in
//! Redis (history, in order, once each) and in what the fake received (acks, connection order).

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::fake_slack::FakeSlack;
use common::fake_socket_mode::{FakeSocketMode, disconnect, events_api};
use common::redis::{RedisServer, free_port};
use common::wait::eventually;
use redis::AsyncCommands;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const APP_TOKEN: &str = "xapp-1-A_OURS-sekrit-app-token";

/// A config with Socket Mode on, one Slack link on channel C1 mirrored to `general`.
fn config(
    redis: &RedisServer,
    http_port: u16,
    socket: &FakeSocketMode,
    slack: &FakeSlack,
) -> String {
    socket.bridge_config(&redis.url(), http_port, APP_TOKEN, &slack.api_url())
}

/// An Events API `event_callback` for a message in C1.
fn message(event_id: &str, user: &str, text: &str, ts: &str) -> Value {
    json!({"type": "event_callback", "team_id": "T1", "api_app_id": "A_OURS",
           "event_id": event_id, "event_time": 1_700_000_000,
           "event": {"type": "message", "channel": "C1", "user": user, "text": text, "ts": ts}})
}

/// The contents of the room's history, oldest first.
async fn contents(con: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    common::history::contents(con, "general").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_written_once_in_order_acked_and_a_refresh_opens_the_new_connection_first() {
    let redis = RedisServer::start();
    let socket = FakeSocketMode::start(APP_TOKEN).await;
    let slack = FakeSlack::start("xoxb-test").await;
    slack.set_user("U42", "Zed");
    let http_port = free_port();
    let daemon = Daemon::start(&config(&redis, http_port, &socket, &slack));
    let mut con = redis.connection().await;

    let first = socket.next_connection(WAIT).await;
    assert_eq!(first.number, 1);
    first.send(events_api(
        "env-1",
        0,
        message("Ev1", "U42", "one", "1700000001.000100"),
    ));
    first.send(events_api(
        "env-2",
        0,
        message("Ev2", "U42", "two &amp; more", "1700000002.000100"),
    ));
    // Slack retries Ev1 (same event_id, new envelope): acknowledged, not written again.
    first.send(events_api(
        "env-1-retry",
        1,
        message("Ev1", "U42", "one", "1700000001.000100"),
    ));
    // Our own bot's post coming back: acknowledged, dropped.
    let mut echo = message("Ev_echo", "U42", "relayed by us", "1700000003.000100");
    echo["event"]["bot_id"] = json!("B_OURS");
    first.send(events_api("env-echo", 0, echo));
    socket
        .wait_acked(&["env-1", "env-2", "env-1-retry", "env-echo"], WAIT)
        .await;
    assert_eq!(contents(&mut con).await, ["one", "two & more"]);

    // A refresh mid-stream: the new connection opens before the old one closes.
    first.send(disconnect());
    let second = socket.next_connection(WAIT).await;
    assert_eq!(second.number, 2);
    second.send(events_api(
        "env-3",
        0,
        message("Ev3", "U42", "three", "1700000004.000100"),
    ));
    socket.wait_acked(&["env-3"], WAIT).await;
    eventually("the old connection closed", WAIT, async || {
        socket.log().contains(&"closed 1".to_owned()).then_some(())
    })
    .await;
    let log = socket.log();
    let at = |line: &str| log.iter().position(|l| l == line).expect(line);
    assert!(
        at("connected 2") < at("closed 1"),
        "the old connection closed before the new one opened: {log:?}"
    );
    assert_eq!(contents(&mut con).await, ["one", "two & more", "three"]);

    // Each envelope acknowledged exactly once, after (never before) its write; one write each.
    let mut acked = socket.acked();
    acked.sort();
    assert_eq!(
        acked,
        ["env-1", "env-1-retry", "env-2", "env-3", "env-echo"]
    );
    let stored: Vec<String> = con
        .lrange("chat:room:general:history", 0, -1)
        .await
        .unwrap();
    let first_stored: Value = serde_json::from_str(stored.last().unwrap()).unwrap();
    assert_eq!(first_stored["user_id"], "U42");
    assert_eq!(first_stored["username"], "Zed");
    assert_eq!(first_stored["origin"], "slack");
    assert_eq!(first_stored["external_id"], "1700000001.000100");

    // Slack closes the connection itself: the bridge reconnects and nothing is lost.
    second.close();
    let third = socket.next_connection(WAIT).await;
    third.send(events_api(
        "env-4",
        0,
        message("Ev4", "U42", "four", "1700000005.000100"),
    ));
    socket.wait_acked(&["env-4"], WAIT).await;
    assert_eq!(
        contents(&mut con).await,
        ["one", "two & more", "three", "four"]
    );
    assert_eq!(
        socket.opens(),
        (3, 0),
        "one apps.connections.open per connection"
    );

    // With Socket Mode on, the HTTP Events API route is off.
    let status = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http_port}/slack/events"))
        .body("{}")
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 404);
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for (route, result, count) in [
        ("slack_socket", "accepted", 4),
        ("slack_socket", "duplicate", 1),
        ("slack_socket", "echo", 1),
        ("slack", "not_found", 1),
    ] {
        let line = format!(
            "chatbridge_inbound_requests_total{{route=\"{route}\",result=\"{result}\"}} {count}\n"
        );
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    let line = "chatbridge_inbound_connected{route=\"slack_socket\"} 1\n";
    assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    assert!(!daemon.log().contains("sekrit"), "the app token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_stays_passive_and_takes_over_when_the_first_is_killed() {
    let redis = RedisServer::start();
    let socket = FakeSocketMode::start(APP_TOKEN).await;
    let slack = FakeSlack::start("xoxb-test").await;
    let a = Daemon::start(&config(&redis, free_port(), &socket, &slack));
    let b = Daemon::start(&config(&redis, free_port(), &socket, &slack));
    let mut con = redis.connection().await;

    let first = socket.next_connection(WAIT).await;
    first.send(events_api(
        "env-a",
        0,
        message("EvA", "U1", "before", "1700000001.000100"),
    ));
    socket.wait_acked(&["env-a"], WAIT).await;
    let standby = "another process holds the connection";
    let (holder, passive) = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match (a.log().contains(standby), b.log().contains(standby)) {
                (false, true) => return (a, b),
                (true, false) => return (b, a),
                _ => {}
            }
            assert!(std::time::Instant::now() < deadline, "no daemon stood by");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // Longer than the lease (2 s): the holder renewed it, the standby never connected.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(socket.connections_opened(), 1, "two connections on one app");
    assert_eq!(socket.opens(), (1, 0));

    holder.crash();
    let second = socket.next_connection(WAIT).await;
    assert_eq!(second.number, 2);
    second.send(events_api(
        "env-b",
        0,
        message("EvB", "U1", "after", "1700000002.000100"),
    ));
    socket.wait_acked(&["env-b"], WAIT).await;
    assert_eq!(contents(&mut con).await, ["before", "after"]);
    assert!(passive.log().contains("lease taken"));

    // A holder that stops gives the lease up at once (a standby need not wait for it).
    let held: Vec<String> = con.keys("chatbridge:lease:slack-socket:*").await.unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    let mut passive = passive;
    passive.signal(nix::sys::signal::Signal::SIGTERM);
    tokio::task::block_in_place(|| passive.wait_exit(WAIT));
    let leases: Vec<String> = con.keys("chatbridge:lease:slack-socket:*").await.unwrap();
    assert!(
        leases.is_empty(),
        "the lease outlived a clean stop: {leases:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_whose_write_fails_is_not_acknowledged_and_slack_s_retry_is_written() {
    let redis = RedisServer::start();
    let socket = FakeSocketMode::start(APP_TOKEN).await;
    let slack = FakeSlack::start("xoxb-test").await;
    let http_port = free_port();
    let _daemon = Daemon::start(&config(&redis, http_port, &socket, &slack));
    let mut con = redis.connection().await;
    let first = socket.next_connection(WAIT).await;

    // The history key holds a string: the write fails (WRONGTYPE) and nothing is acknowledged.
    let _: () = con
        .set("chat:room:general:history", "not a list")
        .await
        .unwrap();
    first.send(events_api(
        "env-x",
        0,
        message("EvX", "U1", "kept", "1700000001.000100"),
    ));
    let unavailable =
        "chatbridge_inbound_requests_total{route=\"slack_socket\",result=\"unavailable\"} 1\n";
    eventually("the failed write counted", WAIT, async || {
        let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics.contains(unavailable).then_some(())
    })
    .await;
    assert!(socket.acked().is_empty(), "acknowledged without a write");

    // Slack sends it again (same event_id, new envelope): written once, acknowledged.
    let _: () = con.del("chat:room:general:history").await.unwrap();
    first.send(events_api(
        "env-x-retry",
        1,
        message("EvX", "U1", "kept", "1700000001.000100"),
    ));
    socket.wait_acked(&["env-x-retry"], WAIT).await;
    assert_eq!(contents(&mut con).await, ["kept"]);
    assert_eq!(socket.acked(), ["env-x-retry"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_envelopes_is_written_in_order_and_each_acknowledged_within_3_s() {
    let redis = RedisServer::start();
    let socket = FakeSocketMode::start(APP_TOKEN).await;
    let slack = FakeSlack::start("xoxb-test").await;
    slack.set_user("U7", "Sam");
    let _daemon = Daemon::start(&config(&redis, free_port(), &socket, &slack));
    let mut con = redis.connection().await;
    let first = socket.next_connection(WAIT).await;
    const N: usize = 200;
    let ids: Vec<String> = (0..N).map(|i| format!("env-{i:03}")).collect();
    let started = std::time::Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let ts = format!("1700000000.{i:06}");
        first.send(events_api(
            id,
            0,
            message(&format!("Ev{i}"), "U7", &format!("m{i}"), &ts),
        ));
    }
    let ids_ref: Vec<&str> = ids.iter().map(String::as_str).collect();
    socket.wait_acked(&ids_ref, WAIT).await;
    let elapsed = started.elapsed();
    eprintln!("{N} envelopes written and acknowledged in {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "the last of {N} envelopes took {elapsed:?}: beyond Slack's 3 s"
    );
    assert_eq!(socket.acked(), ids, "acknowledged once each, in order");
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(contents(&mut con).await, expected);
}
