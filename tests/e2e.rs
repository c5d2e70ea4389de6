//! End to end through the `chatbridge` binary: seed-style traffic on a private redis-server
//! arrives at a real HTTP receiver, signed, in order.

mod common;

use std::time::Duration;

use chatbridge::platforms::webhook::signing;
use chatbridge::secret::WebhookSecret;
use common::config::audit_everywhere;
use common::daemon::Daemon;
use common::outbox::wait_drained;
use common::receiver::Receiver;
use common::redis::RedisServer;
use common::seed;
use serde_json::{Value, json};

pub const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const WAIT: Duration = Duration::from_secs(20);

fn config(redis: &RedisServer, hook_url: &str, extra: &str) -> String {
    let secret = format!("secret = \"{SECRET}\"\n");
    format!(
        "{}{extra}\n",
        audit_everywhere(&redis.url(), hook_url, &secret)
    )
}

fn verify(request: &common::receiver::Recorded) {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let now = chrono::Utc::now().timestamp();
    signing::verify(
        &secret,
        request.header("webhook-id").expect("webhook-id"),
        request
            .header("webhook-timestamp")
            .expect("webhook-timestamp"),
        request
            .header("webhook-signature")
            .expect("webhook-signature"),
        &request.body,
        now,
    )
    .expect("signature verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_event_kind_reaches_the_webhook_signed_and_in_order() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&redis, &receiver.url("/hook/tok3n"), ""));
    daemon.wait_ready();
    let mut con = redis.connection().await;

    let joined = seed::join(&mut con, "general", json!(1001), "alice").await;
    let hello =
        seed::send_message(&mut con, "general", json!(1001), "alice", "hi <!channel>").await;
    let typing = seed::typing(&mut con, "general", json!(1001)).await;
    let read = seed::mark_read(
        &mut con,
        "general",
        json!(1002),
        hello["id"].as_str().unwrap(),
    )
    .await;
    let dm = seed::send_dm(&mut con, json!(1001), json!(999), "alice", "psst").await;
    let left = seed::leave(&mut con, "general", json!(1001), "alice").await;
    // Not routed: an unconfigured room.
    seed::send_message(&mut con, "random", json!(1), "x", "nobody listens").await;

    let got = receiver.wait_for(6, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.requests().len(),
        6,
        "exactly six events, nothing from `random`"
    );
    for request in &got {
        verify(request);
    }
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "chat.join",
            "chat.message",
            "chat.typing",
            "chat.read_receipt",
            "chat.message",
            "chat.leave"
        ]
    );
    assert_eq!(bodies[0]["data"]["room"], "general");
    assert_eq!(bodies[0]["data"]["event"], joined);
    assert_eq!(bodies[1]["data"]["event"], hello);
    assert_eq!(bodies[2]["data"]["event"], typing);
    assert_eq!(bodies[3]["data"]["event"], read);
    assert_eq!(bodies[4]["data"]["dm"], json!(["999", "1001"]));
    assert_eq!(bodies[4]["data"]["event"], dm);
    assert_eq!(bodies[5]["data"]["event"], left);
    assert_eq!(
        got[1].header("webhook-id").unwrap(),
        format!(
            "msg_{}",
            chatbridge::chat::model::content_id(
                "chat:room:general",
                chatbridge::chat::pyjson::to_string(&hello)
            )
        ),
        "the idempotency key comes from the room and the exact payload"
    );
    let log = daemon.log();
    assert!(log.contains("subscribed"), "the log is captured");
    assert!(
        !log.contains("tok3n"),
        "the webhook URL token never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_seen_for_the_first_time_starts_from_now_then_catches_up_after_downtime() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "old", "before chatbridge").await;

    let toml = config(&redis, &receiver.url("/hook"), "");
    let daemon = Daemon::start(&toml);
    daemon.wait_ready();
    let first = seed::send_message(&mut con, "general", json!(1), "a", "first").await;
    receiver.wait_for(1, WAIT).await;
    wait_drained(&mut redis.connection().await, "audit").await;

    let dir = daemon.crash();
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(
            seed::send_message(
                &mut con,
                "general",
                json!(1),
                "a",
                &format!("while down {i}"),
            )
            .await,
        );
    }
    let daemon = Daemon::start_in(dir);
    daemon.wait_ready();
    let got = receiver.wait_for(6, WAIT).await;
    let events: Vec<Value> = got
        .iter()
        .map(|r| r.json()["data"]["event"].clone())
        .collect();
    assert_eq!(events[0], first, "old history was not replayed");
    assert_eq!(
        &events[1..],
        &missed[..],
        "downtime messages arrive in order"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 6, "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_gap_sends_one_notice_then_what_history_holds() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut con = redis.connection().await;
    let toml = config(&redis, &receiver.url("/hook"), "");
    let daemon = Daemon::start(&toml);
    daemon.wait_ready();
    seed::send_message(&mut con, "general", json!(1), "a", "seen").await;
    receiver.wait_for(1, WAIT).await;
    wait_drained(&mut redis.connection().await, "audit").await;
    let dir = daemon.crash();
    // More than the seed keeps (1000): the checkpoint is trimmed out of history.
    for i in 0..1010 {
        seed::send_message(&mut con, "general", json!(1), "a", &format!("m{i}")).await;
    }
    let daemon = Daemon::start_in(dir);
    daemon.wait_ready();
    let got = receiver
        .wait_for(1 + 1 + 1000, Duration::from_secs(60))
        .await;
    assert_eq!(got[1].json()["type"], "chat.notice");
    assert!(
        got[1].json()["data"]["event"]["content"]
            .as_str()
            .unwrap()
            .contains("may have been missed")
    );
    assert_eq!(got[2].json()["data"]["event"]["content"], "m10");
    assert_eq!(got[1001].json()["data"]["event"]["content"], "m1009");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_within_the_grace_period() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(&config(
        &redis,
        &receiver.url("/hook"),
        "[delivery]\nshutdown_grace_secs = 2\n",
    ));
    daemon.wait_ready();
    let started = std::time::Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        daemon.log()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(daemon.log().contains("stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_overlaps_sends_and_still_delivers_each_event_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    // Every answer takes 400 ms: sequential delivery could not overlap two requests.
    receiver.respond_with(common::receiver::Reply::status(200).delay(Duration::from_millis(400)));
    let toml = config(&redis, &receiver.url("/hook"), "")
        .replace("timeout_secs = 5", "timeout_secs = 5\nmax_in_flight = 8");
    let daemon = Daemon::start(&toml);
    daemon.wait_ready();
    let mut con = redis.connection().await;
    let mut sent = Vec::new();
    for i in 0..8 {
        sent.push(seed::send_message(&mut con, "general", json!(1), "a", &format!("p{i}")).await);
    }
    let got = receiver.wait_for(8, WAIT).await;
    let mut contents: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["data"]["event"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    contents.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    assert_eq!(contents, expected, "each event exactly once");
    // The most requests that arrived while one answer was still pending.
    let overlapping = got
        .iter()
        .map(|a| {
            got.iter()
                .filter(|b| b.arrived >= a.arrived)
                .filter(|b| b.arrived.duration_since(a.arrived) < Duration::from_millis(350))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        overlapping >= 2,
        "sends overlapped ({overlapping} within one answer's delay)"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut con = redis.connection().await;
    let depth: usize = redis::AsyncCommands::xlen(&mut con, "chatbridge:outbox:audit")
        .await
        .unwrap();
    assert_eq!(depth, 0, "every event acknowledged");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_stays_up_across_keepalive_pings() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&redis, &receiver.url("/hook"), ""));
    daemon.wait_ready();
    // Two keep-alive PINGs (every 5 s) happen in this time.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "a", "still here").await;
    receiver.wait_for(1, WAIT).await;
    let log = daemon.log();
    assert_eq!(
        log.matches("subscribed").count(),
        1,
        "never resubscribed:\n{log}"
    );
    assert!(!log.contains("subscription ended"), "{log}");
}
