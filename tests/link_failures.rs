//! Link-level failures through the real `chatbridge run` binary: a receiver that answers 401 or
//! is not listening is retried in place (order kept, nothing dead-lettered) and shown failing
//! by `chatbridge outbox`; a refused event is dead-lettered alone; an event that keeps failing
//! with 500 is given up after `give_up_after_secs`, even across restarts; a reader connection
//! killed mid-read skips nothing; shutdown lets a send in flight finish. Each test owns its
//! redis-server, receivers and daemon and waits on conditions before it looks.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::daemon::{ConfigDir, Daemon, cli_async, wait_ready};
use common::outbox::{text_fields, wait_drained};
use common::receiver::{Receiver, Recorded, Reply};
use common::redis::RedisServer;
use common::seed;
use common::wait::eventually;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

/// How long any single condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);
const LINK_HASH: &str = "chatbridge:link:audit";
const OUTBOX: &str = "chatbridge:outbox:audit";
const DLQ: &str = "chatbridge:dlq:audit";
/// The secret part of the link URL: it must never show in errors, logs or the CLI.
const TOKEN: &str = "sekrit-T0KEN-42";
/// Short waits between retries, so outages end promptly in tests.
const FAST_RETRY: &str = "[delivery]\nretry_max_backoff_secs = 1\n";

/// One webhook link `audit` to `url` on room `general`; `extra` goes at the end of the file.
fn config(redis: &RedisServer, url: &str, extra: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[links.audit]\nkind = \"webhook\"\nurl = \"{url}\"\n\
         timeout_secs = 5\n\n[[rooms]]\nname = \"general\"\nlinks = [\"audit\"]\n\n{extra}",
        redis.url()
    )
}

fn hook_url(receiver: &Receiver) -> String {
    receiver.url(&format!("/hook/{TOKEN}"))
}

/// The `content` of every event in every request, in arrival order.
fn contents(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|request| {
            let event = &request.json()["data"]["event"];
            match &event["content"] {
                Value::String(text) => text.clone(),
                other => panic!("event without text content: {other} in {event}"),
            }
        })
        .collect()
}

/// The `FAILING since …` line `chatbridge outbox` prints under the link, if any.
async fn failing_line(config: &ConfigDir) -> Option<String> {
    let (code, out, err) = cli_async(config.path(), &["outbox"]).await;
    assert_eq!(code, 0, "chatbridge outbox failed: {err}");
    out.lines()
        .map(str::trim)
        .find(|line| line.starts_with("FAILING since"))
        .map(str::to_owned)
}

async fn xlen(con: &mut MultiplexedConnection, key: &str) -> usize {
    con.xlen(key).await.expect("XLEN")
}

/// How many entries the link's consumer group holds read but unacknowledged.
async fn pending(con: &mut MultiplexedConnection) -> i64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(OUTBOX)
        .arg("chatbridge")
        .query_async(con)
        .await
        .expect("XPENDING");
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("XPENDING summary starts with {other:?}"),
        },
        other => panic!("XPENDING replied {other:?}"),
    }
}

async fn link_hash(con: &mut MultiplexedConnection) -> HashMap<String, String> {
    con.hgetall(LINK_HASH).await.expect("HGETALL")
}

/// The dead letters of `audit` as field maps, oldest first.
async fn dead_letters(con: &mut MultiplexedConnection) -> Vec<HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = con.xrange_all(DLQ).await.expect("XRANGE");
    text_fields(&reply)
}

/// Asserts the requests were `first` retried in place some times, then every one of `sent`
/// once, in order: nothing skipped ahead while the first was failing. Returns the retries.
fn assert_retried_in_place(got: &[String], sent: &[String]) -> usize {
    let tries = got.iter().take_while(|c| **c == sent[0]).count();
    assert!(tries >= 1, "the first request was not {}: {got:?}", sent[0]);
    assert_eq!(
        &got[tries - 1..],
        sent,
        "after the retries: each once, in order"
    );
    tries
}

async fn send_all(con: &mut MultiplexedConnection, texts: &[String]) {
    for text in texts {
        seed::send_message(con, "general", json!(1001), "alice", text).await;
    }
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_outage_is_retried_in_order_shown_failing_and_never_dead_lettered() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let echo = format!("bad credentials for /hook/{TOKEN}");
    receiver.respond_with(Reply::status(401).body(&echo));
    let toml = config(&redis, &hook_url(&receiver), FAST_RETRY);
    let daemon = Daemon::start(&toml);
    let cli_config = ConfigDir::new(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let sent = numbered("m", 10);
    send_all(&mut con, &sent).await;

    let first = receiver.wait_for(1, WAIT).await[0].arrived;
    let line = eventually("outbox to show the link failing", WAIT, async || {
        failing_line(&cli_config).await
    })
    .await;
    assert!(line.contains("HTTP 401: bad credentials for …"), "{line}");
    assert!(!line.contains(TOKEN), "{line}");
    let stored = link_hash(&mut con).await;
    assert!(stored.contains_key("failing_since"), "{stored:?}");
    assert!(!stored["last_error"].contains(TOKEN), "{stored:?}");
    // Keep the credentials "rotated" for about three seconds in all.
    tokio::time::sleep_until((first + Duration::from_secs(3)).into()).await;
    assert_eq!(
        contents(&receiver.requests())
            .iter()
            .filter(|c| **c != "m0")
            .count(),
        0,
        "nothing may skip ahead of the failing m0"
    );
    receiver.respond_with(Reply::status(200));

    eventually("every message to be accepted", WAIT, async || {
        (contents(&receiver.requests()).last() == sent.last()).then_some(())
    })
    .await;
    wait_drained(&mut con, "audit").await;
    let tries = assert_retried_in_place(&contents(&receiver.requests()), &sent);
    assert!(tries >= 3, "m0 was tried {tries} times in 3 s");
    assert_eq!(xlen(&mut con, DLQ).await, 0, "a 401 dead-letters nothing");
    eventually("the failing mark to be cleared", WAIT, async || {
        failing_line(&cli_config).await.is_none().then_some(())
    })
    .await;
    let stored = link_hash(&mut con).await;
    assert!(!stored.contains_key("failing_since"), "{stored:?}");
    assert!(!stored.contains_key("last_error"), "{stored:?}");
    let log = daemon.log();
    assert_eq!(
        log.matches("send failed, will retry").count(),
        1,
        "{tries} failures in 3 s log once:\n{log}"
    );
    assert_eq!(log.matches("target recovered").count(), 1, "{log}");
    assert!(!log.contains(TOKEN), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retried_in_order_until_a_receiver_listens() {
    let redis = RedisServer::start();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let url = format!("http://127.0.0.1:{port}/hook/{TOKEN}");
    let toml = config(&redis, &url, FAST_RETRY);
    let daemon = Daemon::start(&toml);
    let cli_config = ConfigDir::new(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let sent = numbered("c", 5);
    send_all(&mut con, &sent).await;

    let line = eventually("outbox to show the link failing", WAIT, async || {
        failing_line(&cli_config).await
    })
    .await;
    assert!(line.contains("connect error"), "{line}");
    assert!(!line.contains(TOKEN), "{line}");
    eventually("the refused attempts to be logged", WAIT, async || {
        let log = daemon.log();
        log.contains("send failed, will retry").then_some(())
    })
    .await;
    assert_eq!(
        xlen(&mut con, OUTBOX).await,
        5,
        "all five wait in the outbox"
    );
    // Let the outage last a few more attempts before anything listens.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let receiver = Receiver::start_on(port).await;
    let got = receiver.wait_for(5, WAIT).await;
    wait_drained(&mut con, "audit").await;
    assert_eq!(contents(&receiver.requests()), sent, "each once, in order");
    assert_eq!(got[0].path, format!("/hook/{TOKEN}"));
    assert_eq!(xlen(&mut con, DLQ).await, 0);
    eventually("the failing mark to be cleared", WAIT, async || {
        failing_line(&cli_config).await.is_none().then_some(())
    })
    .await;
    assert!(
        daemon.log().contains("target recovered"),
        "{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_for_one_event_dead_letters_only_that_event() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.respond_when_body_contains(
        r#""content": "poison""#,
        Reply::status(400).body("invalid_payload"),
    );
    let toml = config(&redis, &hook_url(&receiver), "");
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let sent: Vec<String> = ["ok0", "poison", "ok1", "ok2"].map(str::to_owned).into();
    send_all(&mut con, &sent).await;

    receiver.wait_for(4, WAIT).await;
    wait_drained(&mut con, "audit").await;
    assert_eq!(contents(&receiver.requests()), sent, "each once, in order");
    let dead = dead_letters(&mut con).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["status"], "400");
    assert_eq!(dead[0]["detail"], "HTTP 400: invalid_payload");
    assert!(dead[0]["payload"].contains(r#""content": "poison""#));
    let stored = link_hash(&mut con).await;
    assert!(!stored.contains_key("failing_since"), "{stored:?}");
    assert_eq!(stored.get("delivered").map(String::as_str), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_failing_with_500_is_given_up_after_give_up_after_and_delivery_goes_on() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver
        .respond_when_body_contains(r#""content": "poison""#, Reply::status(500).body("kaboom"));
    let extra = format!("{FAST_RETRY}give_up_after_secs = 2\n");
    let toml = config(&redis, &hook_url(&receiver), &extra);
    let daemon = Daemon::start(&toml);
    let cli_config = ConfigDir::new(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let sent: Vec<String> = ["a", "poison", "b", "c"].map(str::to_owned).into();
    send_all(&mut con, &sent).await;

    eventually("c to be delivered after the poison", WAIT, async || {
        (contents(&receiver.requests()).last().map(String::as_str) == Some("c")).then_some(())
    })
    .await;
    wait_drained(&mut con, "audit").await;
    let got = receiver.requests();
    let texts = contents(&got);
    let tries = texts.iter().filter(|c| *c == "poison").count();
    assert!(tries >= 2, "{texts:?}");
    let mut expected = vec!["a".to_owned()];
    expected.extend(std::iter::repeat_n("poison".to_owned(), tries));
    expected.extend(["b".to_owned(), "c".to_owned()]);
    assert_eq!(texts, expected, "retried in place, then the rest in order");
    let poison: Vec<&Recorded> = got.iter().skip(1).take(tries).collect();
    let failing_for = poison[tries - 1].arrived - poison[0].arrived;
    assert!(
        failing_for >= Duration::from_millis(1900),
        "given up after {failing_for:?}, give_up_after_secs is 2"
    );

    let dead = dead_letters(&mut con).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["status"], "500");
    assert!(dead[0]["detail"].starts_with("gave up after "), "{dead:?}");
    assert!(dead[0]["detail"].ends_with("HTTP 500: kaboom"), "{dead:?}");
    assert!(dead[0]["payload"].contains(r#""content": "poison""#));
    let stored = link_hash(&mut con).await;
    assert!(
        stored
            .keys()
            .all(|field| !field.starts_with("event_failing_since")),
        "the poison's clock is gone with it: {stored:?}"
    );
    assert!(
        !stored.contains_key("failing_since"),
        "a 500 is not a link failure"
    );
    let (code, out, err) = cli_async(cli_config.path(), &["dlq", "list", "audit"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status=500 gave up after"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_do_not_reset_the_give_up_clock() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.respond_with(Reply::status(503).body("poisoned"));
    let extra = format!("{FAST_RETRY}give_up_after_secs = 3\n");
    let mut daemon = Daemon::start(&config(&redis, &hook_url(&receiver), &extra));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    send_all(&mut con, &["stuck".to_owned()]).await;
    let first = receiver.wait_for(1, WAIT).await[0].arrived;

    // Crash every 1.5 s: a clock that restarted with each process would never reach 3 s.
    let mut restarts = 0;
    while xlen(&mut con, DLQ).await == 0 {
        assert!(
            restarts < 5,
            "not given up after {restarts} restarts ({:?} since the first failure); log:\n{}",
            first.elapsed(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let seen = receiver.requests().len();
        if xlen(&mut con, DLQ).await > 0 {
            break;
        }
        daemon = Daemon::start_in(daemon.crash());
        restarts += 1;
        receiver.wait_for(seen + 1, WAIT).await;
    }
    assert!(restarts >= 1, "the give-up came before any restart");
    let dead = dead_letters(&mut con).await;
    assert_eq!(dead[0]["status"], "503", "{dead:?}");
    assert!(
        first.elapsed() < Duration::from_secs(6),
        "{:?}",
        first.elapsed()
    );
}

/// The outbox entry the enqueue script would write for message `content`.
fn outbox_entry(content: &str) -> Vec<(&'static str, String)> {
    let message = seed::create_message(json!(1001), "alice", content, Some("general"));
    vec![
        ("id", format!("kill-{content}")),
        ("scope", "chat:room:general".to_owned()),
        ("kind", "message".to_owned()),
        ("at", chrono::Utc::now().timestamp_millis().to_string()),
        ("payload", chatbridge::chat::pyjson::to_string(&message)),
    ]
}

/// The id of the worker's reader connection once it is blocked in `XREADGROUP`.
async fn blocked_reader(con: &mut MultiplexedConnection) -> String {
    eventually("the reader to block in XREADGROUP", WAIT, async || {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(con)
            .await
            .ok()?;
        clients.lines().find_map(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            let blocked = field("flags")?.contains('b') && field("cmd")? == "xreadgroup";
            blocked.then(|| field("id").map(str::to_owned))?
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_reader_connection_mid_read_skips_nothing() {
    const TOTAL: usize = 300;
    const KILL_EVERY: usize = 50;
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&redis, &hook_url(&receiver), ""));
    wait_ready(&daemon);
    let mut con = redis.connection().await;

    // The test writes the outbox itself, as the enqueue script does, so that it can add an
    // entry and kill the blocked reader in one pipeline: Redis serves the blocked read (the
    // entry becomes pending for the consumer) and then kills the connection before the reply
    // is written. Only a re-read of the pending entries finds that entry again.
    let mut kills = 0;
    for i in 0..TOTAL {
        let entry = outbox_entry(&i.to_string());
        if i % KILL_EVERY == KILL_EVERY - 1 {
            let reader = blocked_reader(&mut con).await;
            let (_, killed): (String, i64) = redis::pipe()
                .cmd("XADD")
                .arg(OUTBOX)
                .arg("*")
                .arg(&entry)
                .cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(&reader)
                .query_async(&mut con)
                .await
                .expect("XADD + CLIENT KILL");
            kills += killed;
        } else {
            let _: String = con.xadd(OUTBOX, "*", &entry).await.expect("XADD");
        }
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(
        kills,
        (TOTAL / KILL_EVERY) as i64,
        "every kill hit the reader"
    );

    eventually("every message to arrive", WAIT, async || {
        (receiver.requests().len() >= TOTAL).then_some(())
    })
    .await;
    wait_drained(&mut con, "audit").await;
    let expected: Vec<String> = (0..TOTAL).map(|i| i.to_string()).collect();
    assert_eq!(
        contents(&receiver.requests()),
        expected,
        "each once, in order; log:\n{}",
        daemon.log()
    );
    assert_eq!(pending(&mut con).await, 0, "nothing stuck in pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_send_finish_and_acknowledges_it() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let reply_delay = Duration::from_millis(1500);
    receiver.respond_next(1, Reply::status(200).delay(reply_delay));
    let toml = config(&redis, &hook_url(&receiver), "");
    let mut daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    send_all(&mut con, &["in flight".to_owned()]).await;

    let arrived = receiver.wait_for(1, WAIT).await[0].arrived;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| daemon.wait_exit(WAIT));
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    assert!(
        arrived.elapsed() >= reply_delay,
        "exited {:?} after the request arrived, before the reply",
        arrived.elapsed()
    );
    assert_eq!(xlen(&mut con, OUTBOX).await, 0, "acknowledged before exit");
    assert_eq!(pending(&mut con).await, 0);

    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    // Order is kept: had the first been left pending, it would be sent before this one.
    send_all(&mut con, &["after restart".to_owned()]).await;
    receiver.wait_for(2, WAIT).await;
    wait_drained(&mut con, "audit").await;
    assert_eq!(
        contents(&receiver.requests()),
        ["in flight", "after restart"],
        "log:\n{}",
        daemon.log()
    );
}
