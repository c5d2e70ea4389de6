//! Zero loss, tried the way users and hostile chat users meet it: Redis restarted with AOF
//! persistence during traffic, connections killed over and over, odd history entries written
//! while the bridge was down, publish-only bots, a sweep racing a backlog of live events, an
//! outbox over its cap. Each test runs the real binary against its own redis-server and fake
//! receiver, and compares what the receiver got with what Redis history holds.

mod common;

use std::time::{Duration, Instant};

use chatbridge::chat::pyjson;
use common::daemon::{Daemon, cli, wait_ready};
use common::outbox::wait_drained;
use common::receiver::{Receiver, Recorded};
use common::redis::RedisServer;
use common::seed;
use common::wait::eventually;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// One webhook link `audit` on room `general`; `link_extra` goes into the link section.
fn config(redis: &RedisServer, receiver: &Receiver, link_extra: &str, extra: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[links.audit]\nkind = \"webhook\"\nurl = \"{}\"\n\
         timeout_secs = 5\n{link_extra}\n\n[[rooms]]\nname = \"general\"\nlinks = [\"audit\"]\n{extra}\n",
        redis.url(),
        receiver.url("/hook")
    )
}

/// The events a request carried: one, or every entry of a `chat.batch`, with their types.
fn events(request: &Recorded) -> Vec<(String, Value)> {
    // Read like a Python receiver would: lone surrogates are valid there.
    let text = String::from_utf8_lossy(&request.body);
    let text = pyjson::tolerant(&text).unwrap_or_else(|| text.into_owned());
    let body: Value = serde_json::from_str(&text).expect("a JSON body");
    let one = |item: &Value| {
        (
            item["type"].as_str().unwrap_or_default().to_owned(),
            item["data"]["event"].clone(),
        )
    };
    if body["type"] == "chat.batch" {
        body["data"]
            .as_array()
            .expect("a batch")
            .iter()
            .map(one)
            .collect()
    } else {
        vec![one(&body)]
    }
}

/// Every event delivered so far, in arrival order.
fn delivered(receiver: &Receiver) -> Vec<(String, Value)> {
    receiver.requests().iter().flat_map(events).collect()
}

/// The `content` of every delivered message, in arrival order.
fn message_contents(receiver: &Receiver) -> Vec<String> {
    delivered(receiver)
        .into_iter()
        .filter(|(kind, _)| kind == "chat.message")
        .map(|(_, event)| event["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn notices(receiver: &Receiver) -> usize {
    delivered(receiver)
        .iter()
        .filter(|(kind, _)| kind == "chat.notice")
        .count()
}

/// The contents history holds, oldest first.
async fn history_contents(redis: &RedisServer) -> Vec<String> {
    let mut con = redis.connection().await;
    let raw: Vec<String> = con
        .lrange("chat:room:general:history", 0, -1)
        .await
        .expect("LRANGE");
    raw.iter()
        .rev()
        .filter_map(|entry| serde_json::from_str::<Value>(entry).ok())
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until the receiver has every one of `expected` (message contents).
async fn wait_for_contents(receiver: &Receiver, expected: &[String], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got: std::collections::HashSet<String> =
            message_contents(receiver).into_iter().collect();
        let missing: Vec<String> = expected
            .iter()
            .filter(|c| !got.contains(*c))
            .map(|c| c.chars().take(40).collect())
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} messages never arrived, first missing: {:?}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first arrival of each of `expected`, in arrival order, and how many arrivals were
/// duplicates.
fn first_arrivals(receiver: &Receiver, expected: &[String]) -> (Vec<String>, usize) {
    let wanted: std::collections::HashSet<&String> = expected.iter().collect();
    let mut seen = std::collections::HashSet::new();
    let mut firsts = Vec::new();
    let mut duplicates = 0;
    for content in message_contents(receiver) {
        if !wanted.contains(&content) {
            continue;
        }
        if seen.insert(content.clone()) {
            firsts.push(content);
        } else {
            duplicates += 1;
        }
    }
    (firsts, duplicates)
}

/// Asserts that the first arrival of each of `expected` is in `expected`'s order; returns
/// how many arrivals were duplicates.
fn assert_in_order(receiver: &Receiver, expected: &[String]) -> usize {
    let (firsts, duplicates) = first_arrivals(receiver, expected);
    assert_eq!(firsts, expected, "messages arrived out of order");
    duplicates
}

/// The seed's `send_message`, failing instead of panicking (the server may be down).
async fn try_send(con: &mut MultiplexedConnection, content: &str) -> redis::RedisResult<()> {
    let message = seed::create_message(json!(1001), "alice", content, Some("general"));
    let text = pyjson::to_string(&message);
    con.publish::<_, _, ()>("chat:room:general", &text).await?;
    con.lpush::<_, _, ()>("chat:room:general:history", &text)
        .await?;
    con.ltrim::<_, ()>("chat:room:general:history", 0, 999)
        .await
}

/// A seed client sending `count` messages, one every `every`, reconnecting whenever the
/// server is away; messages whose writes fail are simply not in history.
fn steady_sender(
    redis: &RedisServer,
    count: usize,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let client = redis.client();
    tokio::spawn(async move {
        let mut con: Option<MultiplexedConnection> = None;
        for i in 0..count {
            if con.is_none() {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_millis(300)))
                    .set_response_timeout(Some(Duration::from_millis(500)));
                con = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .ok();
            }
            if let Some(c) = con.as_mut()
                && try_send(c, &format!("m{i}")).await.is_err()
            {
                con = None;
            }
            tokio::time::sleep(every).await;
        }
    })
}

fn stop_redis(redis: &mut RedisServer) {
    tokio::task::block_in_place(|| redis.stop());
}

fn start_redis(redis: &mut RedisServer) {
    tokio::task::block_in_place(|| redis.start_again());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_aof_during_traffic_loses_nothing() {
    for round in 0..3 {
        let mut redis = RedisServer::start_with(&["--appendonly", "yes"]);
        let receiver = Receiver::start().await;
        let daemon = Daemon::start(&config(&redis, &receiver, "", ""));
        wait_ready(&daemon);
        let sender = steady_sender(&redis, 290, Duration::from_millis(16));
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stop_redis(&mut redis);
            tokio::time::sleep(Duration::from_millis(700)).await;
            start_redis(&mut redis);
        }
        sender.await.expect("sender");
        let expected = history_contents(&redis).await;
        assert!(
            expected.len() > 150,
            "round {round}: only {} stored",
            expected.len()
        );
        wait_for_contents(&receiver, &expected, WAIT).await;
        let duplicates = assert_in_order(&receiver, &expected);
        assert_eq!(notices(&receiver), 0, "round {round}: no gap notice");
        assert_eq!(duplicates, 0, "round {round}: duplicates");
        eprintln!(
            "round {round}: {} stored, all delivered in order, {duplicates} duplicates",
            expected.len()
        );
        drop(daemon);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_over_and_over_lose_nothing() {
    for round in 0..2 {
        let redis = RedisServer::start();
        let receiver = Receiver::start().await;
        let daemon = Daemon::start(&config(&redis, &receiver, "", ""));
        wait_ready(&daemon);
        let sender = steady_sender(&redis, 600, Duration::from_millis(8));
        let mut killer = redis.connection().await;
        while !sender.is_finished() {
            tokio::time::sleep(Duration::from_millis(700)).await;
            for kind in ["normal", "pubsub"] {
                let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg(kind)
                    .arg("SKIPME")
                    .arg("yes")
                    .query_async(&mut killer)
                    .await;
            }
        }
        let expected = history_contents(&redis).await;
        assert!(
            expected.len() > 300,
            "round {round}: only {} stored",
            expected.len()
        );
        wait_for_contents(&receiver, &expected, WAIT).await;
        if first_arrivals(&receiver, &expected).0 != expected {
            let mut con = redis.connection().await;
            let raw: Vec<String> = con
                .lrange("chat:room:general:history", 0, -1)
                .await
                .unwrap();
            for entry in raw.iter().rev() {
                let m: Value = serde_json::from_str(entry).unwrap_or_default();
                eprintln!("history {} {}", m["id"], m["content"]);
            }
            eprintln!("daemon log:\n{}", daemon.log());
        }
        let duplicates = assert_in_order(&receiver, &expected);
        assert_eq!(notices(&receiver), 0);
        assert_eq!(duplicates, 0, "round {round}: duplicates");
        eprintln!(
            "round {round}: {} stored, all delivered in order, {duplicates} duplicates",
            expected.len()
        );
        drop(daemon);
    }
}

/// What a chat client (or anyone) does to history while the bridge is down, after M1 and M2.
enum Odd {
    /// A seed message of 300 KB.
    Large,
    /// `LPUSH chat:room:general:history "not json"`.
    NotJson,
    /// A message Python writes with a lone surrogate (`"\ud83d"`).
    LoneSurrogate,
    /// A message re-posted with the `id` of one already delivered.
    ReusedId,
    /// JSON that a client stored as a message but is not one (fields missing).
    NotAMessage,
    /// An entry larger than the bridge reads (1 MiB).
    Huge,
}

/// Runs the bridge, delivers "first", crashes it, writes M1, M2 and then `odd`, restarts it;
/// returns the receiver, the redis and the daemon after M1 and M2 (and anything relayable)
/// arrived.
async fn downtime_case(odd: Odd, also_expected: &[&str]) -> (Receiver, RedisServer, Daemon) {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut con = redis.connection().await;
    let daemon = Daemon::start(&config(&redis, &receiver, "", ""));
    wait_ready(&daemon);
    let first = seed::send_message(&mut con, "general", json!(1), "a", "first").await;
    receiver.wait_for(1, WAIT).await;
    wait_drained(&mut con, "audit").await;
    let dir = daemon.crash();
    seed::send_message(&mut con, "general", json!(1), "a", "M1").await;
    seed::send_message(&mut con, "general", json!(1), "a", "M2").await;
    let history = "chat:room:general:history";
    let raw = |text: String| {
        let mut con = con.clone();
        async move {
            let _: () = con.publish("chat:room:general", &text).await.unwrap();
            let _: () = con.lpush(history, &text).await.unwrap();
        }
    };
    match odd {
        Odd::Large => {
            let big = "x".repeat(300 * 1024);
            seed::send_message(&mut con, "general", json!(1), "a", &big).await;
        }
        Odd::NotJson => {
            let _: () = con.lpush(history, "not json").await.unwrap();
        }
        Odd::LoneSurrogate => {
            let mut message = seed::create_message(json!(1), "a", "PLACEHOLDER", Some("general"));
            message["content"] = json!("PLACEHOLDER");
            let text = pyjson::to_string(&message).replace("PLACEHOLDER", "broken \\ud83d");
            raw(text).await;
        }
        Odd::ReusedId => {
            let mut message = seed::create_message(json!(1), "a", "repost", Some("general"));
            message["id"] = first["id"].clone();
            raw(pyjson::to_string(&message)).await;
        }
        Odd::NotAMessage => {
            raw(r#"{"type": "message", "content": "no id, no user"}"#.to_owned()).await;
        }
        Odd::Huge => {
            let mut message = seed::create_message(json!(1), "a", "", Some("general"));
            message["content"] = json!("y".repeat(1024 * 1024 + 1));
            raw(pyjson::to_string(&message)).await;
        }
    }
    let daemon = Daemon::start_in(dir);
    wait_ready(&daemon);
    let mut expected: Vec<String> = ["first", "M1", "M2"].map(str::to_owned).to_vec();
    expected.extend(also_expected.iter().map(|s| (*s).to_owned()));
    wait_for_contents(&receiver, &expected, WAIT).await;
    wait_drained(&mut con, "audit").await;
    (receiver, redis, daemon)
}

async fn dead_letters(redis: &RedisServer) -> Vec<String> {
    let mut con = redis.connection().await;
    let entries: redis::streams::StreamRangeReply = con
        .xrange_all("chatbridge:dlq:audit")
        .await
        .expect("XRANGE");
    entries
        .ids
        .iter()
        .map(|e| e.get::<String>("detail").unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_after_the_gap_does_not_hide_it() {
    let big = "x".repeat(300 * 1024);
    let (receiver, _redis, _daemon) = downtime_case(Odd::Large, &[big.as_str()]).await;
    assert_eq!(message_contents(&receiver)[..3], ["first", "M1", "M2"]);
    assert_eq!(notices(&receiver), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_history_is_skipped_not_a_wall() {
    let (receiver, _redis, daemon) = downtime_case(Odd::NotJson, &[]).await;
    assert_eq!(message_contents(&receiver), ["first", "M1", "M2"]);
    assert_eq!(notices(&receiver), 0);
    assert!(daemon.log().contains("not_json"), "the skip is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_surrogate_is_relayed_verbatim() {
    let (receiver, _redis, _daemon) = downtime_case(Odd::LoneSurrogate, &[]).await;
    eventually("the lone-surrogate message", WAIT, async || {
        (message_contents(&receiver).len() >= 4).then_some(())
    })
    .await;
    let last = receiver.requests().last().cloned().expect("a request");
    let body = String::from_utf8_lossy(&last.body).into_owned();
    assert!(body.contains(r#""content": "broken \ud83d""#), "{body}");
    assert_eq!(message_contents(&receiver)[..3], ["first", "M1", "M2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_is_delivered_and_hides_nothing() {
    let (receiver, _redis, _daemon) = downtime_case(Odd::ReusedId, &["repost"]).await;
    assert_eq!(message_contents(&receiver), ["first", "M1", "M2", "repost"]);
    assert_eq!(notices(&receiver), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_is_not_a_message_is_dead_lettered_with_its_reason() {
    let (receiver, redis, _daemon) = downtime_case(Odd::NotAMessage, &[]).await;
    assert_eq!(message_contents(&receiver), ["first", "M1", "M2"]);
    let dead = dead_letters(&redis).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("missing field"), "{dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_too_large_to_read_is_dead_lettered_with_its_size() {
    let (receiver, redis, _daemon) = downtime_case(Odd::Huge, &[]).await;
    assert_eq!(message_contents(&receiver), ["first", "M1", "M2"]);
    let dead = dead_letters(&redis).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("over the"), "{dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lone_surrogate_is_delivered_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(
        &redis,
        &receiver,
        "",
        "[history]\nsweep_secs = 1\n",
    ));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let message = seed::create_message(json!(1), "a", "PLACEHOLDER", Some("general"));
    let text = pyjson::to_string(&message).replace("PLACEHOLDER", "\\udc00 live");
    let _: () = con.publish("chat:room:general", &text).await.unwrap();
    let _: () = con.lpush("chat:room:general:history", &text).await.unwrap();
    receiver.wait_for(1, WAIT).await;
    // Two sweeps later it has still arrived once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.requests().len(), 1);
    assert!(String::from_utf8_lossy(&receiver.requests()[0].body).contains("\\udc00 live"));
}

/// A Redis, a receiver, and a ready daemon bridging room `general` to it, 100 per batch.
async fn batched_bridge() -> (RedisServer, Receiver, Daemon) {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&redis, &receiver, "batch_max = 100", ""));
    wait_ready(&daemon);
    (redis, receiver, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_only_bot_causes_no_replay_and_no_notice() {
    let (redis, receiver, daemon) = batched_bridge().await;
    let mut con = redis.connection().await;
    for i in 0..40 {
        seed::send_message(&mut con, "general", json!(1), "a", &format!("real {i}")).await;
    }
    let mut pipe = redis::pipe();
    for i in 0..2500 {
        let bot = seed::create_message(json!(7), "bot", &format!("bot {i}"), Some("general"));
        pipe.publish("chat:room:general", pyjson::to_string(&bot))
            .ignore();
        let typing = json!({"type": "typing", "user_id": 7, "timestamp": format!("2026-11-28T00:00:{:02}.{i:06}", i % 60)});
        pipe.publish("chat:room:general", pyjson::to_string(&typing))
            .ignore();
    }
    let _: () = pipe.query_async(&mut con).await.unwrap();
    let total = 40 + 2 * 2500;
    eventually("every event", WAIT, async || {
        (delivered(&receiver).len() >= total).then_some(())
    })
    .await;
    wait_drained(&mut con, "audit").await;
    let dir = daemon.crash();
    let daemon = Daemon::start_in(dir);
    wait_ready(&daemon);
    seed::send_message(&mut con, "general", json!(1), "a", "after restart").await;
    eventually("the message after the restart", WAIT, async || {
        message_contents(&receiver)
            .contains(&"after restart".to_owned())
            .then_some(())
    })
    .await;
    assert_eq!(delivered(&receiver).len(), total + 1, "nothing replayed");
    assert_eq!(notices(&receiver), 0, "no false gap notice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_never_puts_a_stored_message_before_events_published_earlier() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let toml = config(
        &redis,
        &receiver,
        "batch_max = 500",
        "[history]\nsweep_secs = 1\n",
    );
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    // Bursts of typing signals (publish only) with, after each, a message that is stored but
    // never published: only a sweep finds it, while the burst may still be in the feed.
    let (bursts, per_burst) = (12, 3000);
    let mut seq = 0u64;
    for burst in 0..bursts {
        let mut pipe = redis::pipe();
        for _ in 0..per_burst {
            let typing =
                json!({"type": "typing", "user_id": seq, "timestamp": "2026-11-28T00:00:00"});
            pipe.publish("chat:room:general", pyjson::to_string(&typing))
                .ignore();
            seq += 1;
        }
        let stored = seed::create_message(
            json!(1),
            "a",
            &format!("after {}", seq - 1),
            Some("general"),
        );
        pipe.lpush("chat:room:general:history", pyjson::to_string(&stored))
            .ignore();
        let _: () = pipe.query_async(&mut con).await.unwrap();
        if burst % 3 == 2 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    let total = bursts * per_burst + bursts;
    eventually("every event", WAIT, async || {
        (delivered(&receiver).len() >= total).then_some(())
    })
    .await;
    let mut last_typing: Option<u64> = None;
    for (kind, event) in delivered(&receiver) {
        match kind.as_str() {
            "chat.typing" => last_typing = event["user_id"].as_u64(),
            "chat.message" => {
                let after: u64 = event["content"]
                    .as_str()
                    .and_then(|c| c.strip_prefix("after "))
                    .and_then(|n| n.parse().ok())
                    .expect("a stored message");
                assert!(
                    last_typing.is_some_and(|t| t >= after),
                    "stored message `after {after}` overtook signals published before it (last typing before it: {last_typing:?})"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_over_its_cap_drops_the_oldest_and_says_so() {
    let redis = RedisServer::start();
    // Nothing listens there: every send fails and the outbox fills up.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let toml = format!(
        "[redis]\nurl = \"{}\"\n[delivery]\noutbox_max_len = 1000\n\n[links.audit]\nkind = \"webhook\"\n\
         url = \"http://127.0.0.1:{port}/hook\"\ntimeout_secs = 1\n\n[[rooms]]\nname = \"general\"\nlinks = [\"audit\"]\n",
        redis.url()
    );
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let mut pipe = redis::pipe();
    for i in 0..1100 {
        let m = seed::create_message(json!(1), "a", &format!("m{i}"), Some("general"));
        pipe.publish("chat:room:general", pyjson::to_string(&m))
            .ignore();
    }
    let _: () = pipe.query_async(&mut con).await.unwrap();
    tokio::task::block_in_place(|| daemon.wait_for_log("oldest events dropped", 1, WAIT));
    let depth: usize = con.xlen("chatbridge:outbox:audit").await.unwrap();
    assert!(depth <= 1000, "depth {depth}");
    let path = daemon.config_path();
    let (code, out, _) = tokio::task::block_in_place(|| cli(&path, &["outbox"]));
    assert_eq!(code, 0);
    assert!(out.contains("DROPPED: 100 events"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_payload_over_the_limit_is_skipped_unread_then_dead_lettered_from_history() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(
        &redis,
        &receiver,
        "",
        "[history]\nsweep_secs = 1\n",
    ));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let mut huge = seed::create_message(json!(1), "a", "", Some("general"));
    huge["content"] = json!("z".repeat(1024 * 1024 + 10));
    let text = pyjson::to_string(&huge);
    let _: () = con.publish("chat:room:general", &text).await.unwrap();
    let _: () = con.lpush("chat:room:general:history", &text).await.unwrap();
    seed::send_message(&mut con, "general", json!(1), "a", "after").await;
    receiver.wait_for(1, WAIT).await;
    tokio::task::block_in_place(|| daemon.wait_for_log("oversized", 1, WAIT));
    eventually(
        "the oversized entry to be dead-lettered",
        WAIT,
        async || (!dead_letters(&redis).await.is_empty()).then_some(()),
    )
    .await;
    let dead = dead_letters(&redis).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains("over the"), "{dead:?}");
    assert_eq!(message_contents(&receiver), ["after"]);
}

/// A DM message written the way the seed's `DirectMessage.send` does, `age` in the past.
async fn send_dm_aged(
    con: &mut MultiplexedConnection,
    from: u64,
    to: u64,
    content: &str,
    age: chrono::TimeDelta,
) {
    let mut message = seed::create_message(json!(from), "u", content, None);
    let at = chatbridge::chat::model::Timestamp::from_naive(chrono::Utc::now().naive_utc() - age);
    message["timestamp"] = json!(at.to_string());
    let channel = format!("chat:dm:{}:{}", from.min(to), from.max(to));
    let text = pyjson::to_string(&message);
    let _: () = con.publish(&channel, &text).await.unwrap();
    let _: () = con
        .lpush(format!("{channel}:history"), &text)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_begun_while_down_arrive_and_expired_dm_state_replays_nothing() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut con = redis.connection().await;
    let hour = chrono::TimeDelta::hours(1);
    // Before DM mirroring ever ran: not replayed.
    send_dm_aged(&mut con, 1, 2, "before mirroring", hour).await;
    let toml = config(
        &redis,
        &receiver,
        "",
        "[dms]\nlinks = [\"audit\"]\n[history]\nsweep_secs = 1\n",
    );
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    send_dm_aged(&mut con, 1, 2, "live", hour).await;
    receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ttl: i64 = con.ttl("chatbridge:checkpoint:chat:dm:1:2").await.unwrap();
    assert!(
        (89 * 86_400..=90 * 86_400).contains(&ttl),
        "DM catch-up state expires after 90 idle days (ttl {ttl})"
    );
    let dir = daemon.crash();
    send_dm_aged(
        &mut con,
        3,
        4,
        "begun while down",
        chrono::TimeDelta::zero(),
    )
    .await;
    // As if the 1:2 conversation had been idle long enough for its state to expire.
    let _: () = con
        .del(&[
            "chatbridge:checkpoint:chat:dm:1:2",
            "chatbridge:seen:chat:dm:1:2",
        ])
        .await
        .unwrap();
    let daemon = Daemon::start_in(dir);
    wait_ready(&daemon);
    send_dm_aged(&mut con, 1, 2, "woke up", chrono::TimeDelta::zero()).await;
    let expected: Vec<String> = ["live", "begun while down", "woke up"]
        .map(str::to_owned)
        .to_vec();
    wait_for_contents(&receiver, &expected, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut got = message_contents(&receiver);
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "nothing replayed, nothing missing");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_channels_are_subscribed_only_when_dms_are_mirrored() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut con = redis.connection().await;
    let numpat = async |con: &mut MultiplexedConnection| -> i64 {
        redis::cmd("PUBSUB")
            .arg("NUMPAT")
            .query_async(con)
            .await
            .unwrap()
    };
    let daemon = Daemon::start(&config(&redis, &receiver, "", ""));
    wait_ready(&daemon);
    assert_eq!(numpat(&mut con).await, 1, "rooms only");
    drop(daemon);
    let toml = config(&redis, &receiver, "", "[dms]\nlinks = [\"audit\"]\n");
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    eventually("rooms and DMs both subscribed", WAIT, async || {
        (numpat(&mut con).await == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_written_by_an_older_chatbridge_is_honoured_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut con = redis.connection().await;
    // What the previous version left: the id of the last message it enqueued, in one hash.
    let old = seed::send_message(&mut con, "general", json!(1), "a", "delivered before").await;
    let _: () = con
        .hset(
            "chatbridge:checkpoints",
            "chat:room:general",
            old["id"].as_str().unwrap(),
        )
        .await
        .unwrap();
    seed::send_message(&mut con, "general", json!(1), "a", "new 1").await;
    seed::send_message(&mut con, "general", json!(1), "a", "new 2").await;
    let daemon = Daemon::start(&config(&redis, &receiver, "", ""));
    wait_ready(&daemon);
    let expected: Vec<String> = ["new 1", "new 2"].map(str::to_owned).to_vec();
    wait_for_contents(&receiver, &expected, WAIT).await;
    wait_drained(&mut con, "audit").await;
    assert_eq!(message_contents(&receiver), expected);
    let checkpoint: String = con
        .get("chatbridge:checkpoint:chat:room:general")
        .await
        .unwrap();
    assert!(checkpoint.starts_with("v2:"), "{checkpoint}");
    assert_eq!(notices(&receiver), 0);
}

/// Busy loops beside the daemon, stopped when dropped.
struct CpuHog(Vec<std::process::Child>);

impl CpuHog {
    fn start(processes: usize) -> Self {
        Self(
            (0..processes)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("start a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_only_flood_beside_a_cpu_hog_arrives_whole_and_once() {
    let (redis, receiver, daemon) = batched_bridge().await;
    let mut con = redis.connection().await;
    let hog = CpuHog::start(3);
    let started = Instant::now();
    for round in 0..5 {
        let mut pipe = redis::pipe();
        for i in round * 500..(round + 1) * 500 {
            let bot = seed::create_message(json!(7), "bot", &format!("bot {i}"), Some("general"));
            pipe.publish("chat:room:general", pyjson::to_string(&bot))
                .ignore();
            let typing =
                json!({"type": "typing", "user_id": i, "timestamp": "2026-12-04T00:00:00"});
            pipe.publish("chat:room:general", pyjson::to_string(&typing))
                .ignore();
        }
        let _: () = pipe.query_async(&mut con).await.unwrap();
    }
    let total = 2 * 2500;
    let long = Duration::from_secs(120);
    let arrived = eventually(
        "every event or the end of the wait",
        long + WAIT,
        async || {
            let got = delivered(&receiver);
            (got.len() >= total || started.elapsed() > long).then_some(got)
        },
    )
    .await;
    drop(hog);
    eprintln!(
        "{} of {total} arrived in {:?}",
        arrived.len(),
        started.elapsed()
    );
    let mut bots: Vec<u64> = Vec::new();
    let mut typing: Vec<u64> = Vec::new();
    for (kind, event) in &arrived {
        match kind.as_str() {
            "chat.message" => bots.push(
                event["content"]
                    .as_str()
                    .and_then(|c| c.strip_prefix("bot "))
                    .and_then(|n| n.parse().ok())
                    .expect("a bot message"),
            ),
            "chat.typing" => typing.push(event["user_id"].as_u64().expect("a user id")),
            other => panic!("unexpected {other}"),
        }
    }
    let all: Vec<u64> = (0..2500).collect();
    let missing = |got: &[u64]| all.iter().filter(|i| !got.contains(i)).count();
    let log = daemon.log();
    let ended = log.matches("redis subscription ended").count();
    assert_eq!(
        (missing(&bots), missing(&typing), ended),
        (0, 0, 0),
        "(publish-only messages missing, typing missing, subscription ends); log:\n{log}"
    );
    assert_eq!(bots, all, "publish-only messages in order, once each");
    assert_eq!(typing, all, "typing in order, once each");
}
