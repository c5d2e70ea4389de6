//! Fault injection through the real `chatbridge run` binary: a SIGKILLed daemon, a restarted
//! Redis, failing and vanishing targets, garbage on the channels. Each test owns its
//! redis-server, receivers and daemon, and asserts on what the receivers got and what Redis
//! holds, waiting on conditions (never on a fixed sleep) before it looks.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatbridge::chat::pyjson;
use common::daemon::{ConfigDir, Daemon, cli_async, wait_ready};
use common::outbox::wait_drained;
use common::receiver::{Receiver, Recorded, Reply};
use common::redis::RedisServer;
use common::seed;
use common::wait::eventually;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

/// How long any single condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);
const OUTBOX: &str = "chatbridge:outbox:audit";
const DLQ: &str = "chatbridge:dlq:audit";

/// A config with one webhook link per `(name, url)`, all on room `general`; `link_extra` goes
/// into every link section, `extra` at the end of the file.
fn config(redis: &RedisServer, links: &[(&str, String)], link_extra: &str, extra: &str) -> String {
    let mut toml = format!("[redis]\nurl = \"{}\"\n", redis.url());
    for (name, url) in links {
        toml.push_str(&format!(
            "\n[links.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout_secs = 5\n{link_extra}\n"
        ));
    }
    let names: Vec<String> = links
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    toml.push_str(&format!(
        "\n[[rooms]]\nname = \"general\"\nlinks = [{}]\n{extra}\n",
        names.join(", ")
    ));
    toml
}

/// The usual setup: one link `audit` on `general` pointing at `receiver`.
fn audit_config(redis: &RedisServer, receiver: &Receiver, extra: &str) -> String {
    config(redis, &[("audit", receiver.url("/hook"))], "", extra)
}

/// The events a request carried: one, or every entry of a `chat.batch`.
fn events(request: &Recorded) -> Vec<Value> {
    request
        .items()
        .iter()
        .map(|item| item["data"]["event"].clone())
        .collect()
}

/// The `content` of every event in every request, in arrival order.
fn contents(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .flat_map(events)
        .map(|event| match &event["content"] {
            Value::String(text) => text.clone(),
            other => panic!("event without text content: {other} in {event}"),
        })
        .collect()
}

async fn xlen(con: &mut MultiplexedConnection, key: &str) -> usize {
    con.xlen(key).await.expect("XLEN")
}

/// Waits for log lines without stalling the runtime (the receiver runs on it).
fn wait_for_log(daemon: &Daemon, needle: &str, times: usize) {
    tokio::task::block_in_place(|| daemon.wait_for_log(needle, times, WAIT));
}

/// Whether a process exists and has not exited (a zombie counts as exited).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.trim().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Publishes `message` with an extra `origin` field the way a seed client stores a message:
/// PUBLISH, then LPUSH to history.
async fn publish_raw_message(con: &mut MultiplexedConnection, message: &Value) {
    let text = pyjson::to_string(message);
    let _: () = con
        .publish("chat:room:general", &text)
        .await
        .expect("PUBLISH");
    let _: () = con
        .lpush("chat:room:general:history", &text)
        .await
        .expect("LPUSH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_nothing_and_keeps_order() {
    const TOTAL: usize = 600;
    /// The request that hangs, so the kill finds a send in flight and entries pending.
    const HANGS: usize = 200;
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.respond_next(HANGS, Reply::status(200));
    receiver.respond_next(1, Reply::status(200).delay(Duration::from_secs(30)));
    let daemon = Daemon::start(&audit_config(&redis, &receiver, ""));
    wait_ready(&daemon);
    let mut con = redis.connection().await;

    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let client = redis.client();
        let published = published.clone();
        tokio::spawn(async move {
            let mut con = client
                .get_multiplexed_async_connection()
                .await
                .expect("publisher connection");
            for i in 0..TOTAL {
                seed::send_message(&mut con, "general", json!(1001), "load", &i.to_string()).await;
                published.store(i + 1, Ordering::SeqCst);
                if i % 10 == 9 {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            }
        })
    };
    let at_least = async |n: usize| {
        eventually(&format!("{n} messages published"), WAIT, async || {
            (published.load(Ordering::SeqCst) >= n).then_some(())
        })
        .await
    };

    // One message per request, in order: request HANGS + 1 carries message HANGS.
    receiver.wait_for(HANGS + 1, WAIT).await;
    assert!(
        published.load(Ordering::SeqCst) < TOTAL,
        "the kill must come while messages are still being published"
    );
    let dir = daemon.crash();
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(OUTBOX)
        .arg("chatbridge")
        .query_async(&mut con)
        .await
        .expect("XPENDING");
    assert!(
        matches!(&pending, redis::Value::Array(summary) if !matches!(summary.first(), Some(redis::Value::Int(0)))),
        "the kill left nothing pending: {pending:?}"
    );
    at_least(400).await;
    // Whatever the receiver has now was sent by the killed process.
    let before_restart: HashSet<String> = contents(&receiver.requests()).into_iter().collect();
    let daemon = Daemon::start_in(dir);
    publisher.await.expect("publisher");

    eventually("every message to arrive", WAIT, async || {
        let distinct: HashSet<String> = contents(&receiver.requests()).into_iter().collect();
        (distinct.len() >= TOTAL).then_some(())
    })
    .await;
    wait_drained(&mut con, "audit").await;

    let got: Vec<usize> = contents(&receiver.requests())
        .iter()
        .map(|c| c.parse().expect("a numbered message"))
        .collect();
    let mut seen = HashSet::new();
    let first: Vec<usize> = got.iter().copied().filter(|n| seen.insert(*n)).collect();
    assert_eq!(
        first,
        (0..TOTAL).collect::<Vec<_>>(),
        "first occurrences in publish order"
    );
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for n in &got {
        *counts.entry(*n).or_default() += 1;
    }
    let duplicated: Vec<usize> = counts
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(n, _)| *n)
        .collect();
    let extra = got.len() - TOTAL;
    assert!(
        extra <= 64,
        "{extra} duplicate deliveries (of {duplicated:?})"
    );
    for n in &duplicated {
        assert!(
            before_restart.contains(&n.to_string()),
            "message {n} was delivered twice but was not in flight at the kill; log:\n{}",
            daemon.log()
        );
    }
}

/// A daemon delivering `general` to `receiver`, once `A` was delivered and Redis was then
/// restarted (the daemon not resubscribed yet).
async fn restarted_after_one_delivery() -> (RedisServer, Receiver, Daemon) {
    let mut redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&audit_config(&redis, &receiver, ""));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "a", "A").await;
    receiver.wait_for(1, WAIT).await;

    tokio::task::block_in_place(|| redis.restart());
    (redis, receiver, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_resubscribes_recreates_the_group_and_delivers() {
    let (redis, receiver, daemon) = restarted_after_one_delivery().await;
    wait_for_log(&daemon, "subscribed", 2);
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "a", "B").await;
    seed::send_message(&mut con, "general", json!(1), "a", "C").await;

    let got = receiver.wait_for(3, WAIT).await;
    assert_eq!(contents(&got), ["A", "B", "C"], "log:\n{}", daemon.log());
    wait_drained(&mut con, "audit").await;
    assert_eq!(receiver.requests().len(), 3, "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_stored_while_the_daemon_resubscribes_after_a_redis_restart_are_delivered() {
    let (redis, receiver, daemon) = restarted_after_one_delivery().await;
    // Published (and stored in history) before the daemon's subscription is back: it waits at
    // least 0.5 s before reconnecting. Catch-up must find it in history.
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "a", "B").await;
    let resubscribed_already = daemon.log().matches("subscribed").count() >= 2;
    wait_for_log(&daemon, "subscribed", 2);
    seed::send_message(&mut con, "general", json!(1), "a", "C").await;

    eventually("C to arrive", WAIT, async || {
        contents(&receiver.requests())
            .contains(&"C".to_owned())
            .then_some(())
    })
    .await;
    assert_eq!(
        contents(&receiver.requests()),
        ["A", "B", "C"],
        "B was stored in history after the Redis restart (resubscribed first: \
         {resubscribed_already}); log:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_outage_is_retried_in_order_without_loss() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.respond_next(5, Reply::status(503).body("down for maintenance"));
    let toml = audit_config(
        &redis,
        &receiver,
        "[delivery]\nretry_max_backoff_secs = 1\n",
    );
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for text in &sent {
        seed::send_message(&mut con, "general", json!(1), "a", text).await;
    }

    let got = receiver.wait_for(25, WAIT).await;
    wait_drained(&mut con, "audit").await;
    let got_all = receiver.requests();
    assert_eq!(
        got_all.len(),
        25,
        "5 refusals + 20 deliveries, nothing more"
    );
    let all = contents(&got);
    assert_eq!(
        &all[..5],
        ["m0"; 5],
        "the first message is retried in place"
    );
    assert_eq!(
        &all[5..],
        &sent[..],
        "the accepted requests: every message once, in order"
    );
    assert!(daemon.log().contains("target recovered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retry_after_is_honoured() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.respond_next(1, Reply::status(429).header("Retry-After", "2"));
    let daemon = Daemon::start(&audit_config(&redis, &receiver, ""));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "a", "slow down").await;

    let got = receiver.wait_for(2, WAIT).await;
    let waited = got[1].arrived.duration_since(got[0].arrived);
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, Retry-After asked for 2 s"
    );
    assert_eq!(contents(&got), ["slow down", "slow down"]);
    wait_drained(&mut con, "audit").await;
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_goes_to_the_dlq_without_blocking_and_replays() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    // Requests arrive one at a time, in order: ok1, poison, ok2. Queued replies (not a body
    // rule) so the poison is accepted when replayed: the receiver cannot drop a body rule.
    receiver.respond_next(1, Reply::status(200));
    receiver.respond_next(1, Reply::status(400).body("invalid_payload"));
    let toml = audit_config(&redis, &receiver, "");
    let daemon = Daemon::start(&toml);
    let cli_config = ConfigDir::new(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    for text in ["ok1", "poison", "ok2"] {
        seed::send_message(&mut con, "general", json!(1), "a", text).await;
    }

    let got = receiver.wait_for(3, WAIT).await;
    assert_eq!(contents(&got), ["ok1", "poison", "ok2"]);
    wait_drained(&mut con, "audit").await;
    assert_eq!(xlen(&mut con, DLQ).await, 1);

    let (code, out, err) = cli_async(cli_config.path(), &["outbox"]).await;
    assert_eq!(code, 0, "{err}");
    let row: Vec<&str> = out
        .lines()
        .find(|line| line.starts_with("audit "))
        .unwrap_or_else(|| panic!("no row for audit in:\n{out}"))
        .split_whitespace()
        .collect();
    // link, depth, pending, dead, delivered
    assert_eq!(&row[..5], ["audit", "0", "0", "1", "2"], "{out}");

    let (code, out, err) = cli_async(cli_config.path(), &["dlq", "list", "audit"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status=400"), "{out}");
    assert!(out.contains("invalid_payload"), "{out}");
    assert!(out.contains("\"content\": \"poison\""), "{out}");

    let (code, out, err) = cli_async(cli_config.path(), &["dlq", "replay", "audit"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1"), "{out}");
    let got = receiver.wait_for(4, WAIT).await;
    assert_eq!(
        contents(&got[3..]),
        ["poison"],
        "the running daemon delivers the replay"
    );
    wait_drained(&mut con, "audit").await;
    assert_eq!(xlen(&mut con, DLQ).await, 0);
    assert_eq!(receiver.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_link_until_enabled_and_keeps_its_events() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.respond_with(Reply::status(410).body("gone"));
    let toml = audit_config(&redis, &receiver, "");
    let daemon = Daemon::start(&toml);
    let cli_config = ConfigDir::new(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "a", "m1").await;

    wait_for_log(&daemon, "DISABLING", 1);
    eventually("the disabled flag", WAIT, async || {
        let reason: Option<String> = con.hget("chatbridge:link:audit", "disabled").await.ok()?;
        reason
    })
    .await;
    let (code, out, err) = cli_async(cli_config.path(), &["outbox"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DISABLED"), "{out}");

    seed::send_message(&mut con, "general", json!(1), "a", "m2").await;
    eventually("m2 to wait in the outbox next to m1", WAIT, async || {
        (xlen(&mut con, OUTBOX).await == 2).then_some(())
    })
    .await;
    assert_eq!(receiver.requests().len(), 1, "nothing sent while disabled");

    receiver.respond_with(Reply::status(200));
    let (code, out, err) = cli_async(cli_config.path(), &["enable", "audit"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("audit enabled"), "{out}");

    let got = receiver.wait_for(3, WAIT).await;
    assert_eq!(contents(&got), ["m1", "m1", "m2"], "log:\n{}", daemon.log());
    wait_drained(&mut con, "audit").await;
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channels_is_skipped_and_the_daemon_keeps_going() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&audit_config(&redis, &receiver, ""));
    wait_ready(&daemon);
    let mut con = redis.connection().await;

    let mut huge = br#"{"type": "message", "content": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 5 * 1024 * 1024));
    huge.extend_from_slice(br#""}"#);
    let garbage: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        b"\xff\x00".to_vec(),
        huge,
        br#"[1, 2, 3]"#.to_vec(),
        br#"{"id": "w1", "user_id": [1], "username": "a", "content": "wrong types", "room": "general", "timestamp": "2026-11-27T20:12:21", "type": "message"}"#.to_vec(),
        br#"{"user_id": 1, "username": "a", "content": "no id", "room": "general", "timestamp": "2026-11-27T20:12:21", "type": "message"}"#.to_vec(),
        b"{\"id\": \"w2\", \"user_id\": 1, \"username\": \"a\", \"content\": \"\xc3\x28\", \"room\": \"general\", \"timestamp\": \"2026-11-27T20:12:21\", \"type\": \"message\"}".to_vec(),
    ];
    for payload in &garbage {
        let _: () = con
            .publish("chat:room:general", payload.as_slice())
            .await
            .expect("PUBLISH");
    }
    let good = seed::send_message(&mut con, "general", json!(1), "a", "good").await;

    // Delivery is in order: anything let through would arrive before the good message.
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "only the good message: {:?}", contents(&got));
    assert_eq!(events(&got[0]), [good]);
    assert!(
        alive(daemon.pid()),
        "the daemon died; log:\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("skipping event"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_chatbridge_wrote_is_kept_from_its_origin_link() {
    let redis = RedisServer::start();
    let audit = Receiver::start().await;
    let slackish = Receiver::start().await;
    let links = [
        ("audit", audit.url("/audit")),
        ("slackish", slackish.url("/slackish")),
    ];
    let daemon = Daemon::start(&config(&redis, &links, "", ""));
    wait_ready(&daemon);
    let mut con = redis.connection().await;

    // What chatbridge writes on behalf of a link (inbound): never sent back to that link.
    let store = chatbridge::chat::store::Store::connect(redis.client(), Default::default())
        .await
        .expect("store");
    let origin: serde_json::Map<String, Value> = [("origin".to_owned(), json!("slackish"))]
        .into_iter()
        .collect();
    let bridged = store
        .send(
            "general",
            &chatbridge::chat::model::UserId::Text("U7".into()),
            "bob",
            "from slack",
            origin,
        )
        .await
        .expect("send");
    // A chat user writing `origin` to hide a message from a link: delivered like any message.
    let mut forged = seed::create_message(json!(7), "mallory", "hidden?", Some("general"));
    forged["origin"] = json!("audit");
    publish_raw_message(&mut con, &forged).await;
    let marker = seed::send_message(&mut con, "general", json!(1), "a", "marker").await;

    let got = audit.wait_for(3, WAIT).await;
    assert_eq!(contents(&got), ["from slack", "hidden?", "marker"]);
    // In-order delivery: had `slackish` been sent its own event, it would precede the others.
    let back = slackish.wait_for(2, WAIT).await;
    assert_eq!(contents(&back), ["hidden?", "marker"]);
    assert_eq!(events(&back[1]), [marker]);
    assert_eq!(bridged.content, "from slack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_delivers_everything_once_in_order_in_fewer_requests() {
    const TOTAL: usize = 200;
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    // A slow first answer lets the rest pile up in the outbox, so batches form for certain.
    receiver.respond_next(1, Reply::status(200).delay(Duration::from_millis(300)));
    let toml = config(
        &redis,
        &[("audit", receiver.url("/hook"))],
        "batch_max = 50",
        "",
    );
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    for i in 0..TOTAL {
        seed::send_message(&mut con, "general", json!(1), "a", &i.to_string()).await;
    }

    eventually("every message to arrive", WAIT, async || {
        (contents(&receiver.requests()).len() >= TOTAL).then_some(())
    })
    .await;
    wait_drained(&mut con, "audit").await;
    let got = receiver.requests();
    let expected: Vec<String> = (0..TOTAL).map(|i| i.to_string()).collect();
    assert_eq!(contents(&got), expected, "all, once each, in order");
    assert!(
        got.len() < TOTAL,
        "{} requests for {TOTAL} messages",
        got.len()
    );
    for request in &got {
        let body = request.json();
        let carried = events(request).len();
        assert!(carried <= 50, "a request carried {carried} events");
        if carried > 1 {
            assert_eq!(body["type"], "chat.batch");
        }
    }
    assert!(
        got.iter().any(|r| r.json()["type"] == "chat.batch"),
        "no batch was sent; log:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_no_part_and_sigterm_still_exits_zero() {
    let mut redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(&audit_config(&redis, &receiver, ""));
    wait_ready(&daemon);

    tokio::task::block_in_place(|| redis.kill());
    // The subscription and the link's worker each meet Redis errors, and retry, twice.
    wait_for_log(&daemon, "redis subscription ended", 2);
    wait_for_log(&daemon, "outbox unavailable", 2);
    assert!(alive(daemon.pid()), "log:\n{}", daemon.log());
    tokio::task::block_in_place(|| redis.start_again());
    wait_for_log(&daemon, "subscribed", 2);
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "a", "after the outage").await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(contents(&got), ["after the outage"]);

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| daemon.wait_exit(WAIT));
    let log = daemon.log();
    assert_eq!(status.code(), Some(0), "{status:?}; log:\n{log}");
    assert!(
        !log.contains("returned while") && !log.contains("panicked"),
        "{log}"
    );
}
