//! History trimming against a real redis-server: limits, per-room overrides, DMs, `max_age`,
//! the switch for unmirrored rooms, catch-up never outrun, and a large keyspace while the
//! daemon keeps delivering.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ::redis::AsyncCommands;
use ::redis::aio::MultiplexedConnection;
use chatbridge::bridge::route::Routes;
use chatbridge::bridge::trim::{Summary, Trimmer};
use chatbridge::chat::model::Timestamp;
use chatbridge::chat::pyjson;
use chatbridge::config::{self, Config, Env};
use common::daemon::Daemon;
use common::receiver::{Receiver, contents_of};
use common::redis::RedisServer;
use common::seed;
use common::wait::eventually;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn load(redis: &RedisServer, extra: &str, history: &str) -> Config {
    config::load_str(
        &config_text(redis, "http://127.0.0.1:9/", extra, history),
        &Env::new(),
    )
    .expect("valid config")
}

fn config_text(redis: &RedisServer, hook: &str, extra: &str, history: &str) -> String {
    format!(
        r#"
[redis]
url = "{}"

[history]
{history}

[links.audit]
kind = "webhook"
url = "{hook}"
timeout_secs = 5

[[rooms]]
name = "general"
links = ["audit"]
{extra}
"#,
        redis.url()
    )
}

/// One trim round in-process, as the daemon's trimmer runs it.
async fn round(redis: &RedisServer, config: &Config) -> Summary {
    let mut con = chatbridge::redis::connect::manager(&redis.client(), Duration::ZERO)
        .await
        .expect("connect");
    let trimmer = Trimmer {
        history: config.history.clone(),
        routes: Arc::new(arc_swap::ArcSwap::from_pointee(Routes::new(config))),
    };
    trimmer.round(&mut con).await.expect("trim round")
}

fn message(content: &str, timestamp: &str) -> String {
    let mut m = seed::create_message(json!(1001), "alice", content, Some("x"));
    m["timestamp"] = json!(timestamp);
    pyjson::to_string(&m)
}

/// LPUSHes `n` messages `prefix0..` (the last one newest), pipelined, never trimmed.
async fn push(con: &mut MultiplexedConnection, key: &str, prefix: &str, n: usize) {
    let now = Timestamp::now().to_string();
    let mut pipe = ::redis::pipe();
    for i in 0..n {
        pipe.lpush(key, message(&format!("{prefix}{i}"), &now))
            .ignore();
    }
    pipe.query_async::<()>(con).await.expect("push");
}

/// A fresh redis-server whose lists `(key, prefix, n)` are [`push`]ed, and a connection to it.
async fn pushed(lists: &[(&str, &str, usize)]) -> (RedisServer, MultiplexedConnection) {
    let redis = RedisServer::start();
    let mut con = redis.connection().await;
    for (key, prefix, n) in lists {
        push(&mut con, key, prefix, *n).await;
    }
    (redis, con)
}

async fn contents(con: &mut MultiplexedConnection, key: &str) -> Vec<String> {
    let entries: Vec<String> = con.lrange(key, 0, -1).await.expect("lrange");
    entries
        .iter()
        .map(|e| match serde_json::from_str::<serde_json::Value>(e) {
            Ok(v) => v["content"].as_str().unwrap_or("?").to_owned(),
            Err(_) => e.clone(),
        })
        .collect()
}

async fn len(con: &mut MultiplexedConnection, key: &str) -> usize {
    con.llen(key).await.expect("llen")
}

#[tokio::test]
async fn lists_pushed_far_past_their_limit_are_back_at_it_after_one_round() {
    let (redis, mut con) = pushed(&[
        ("chat:room:lobby:history", "m", 5000),
        ("chat:room:big:history", "b", 5000),
        ("chat:room:small:history", "s", 10),
        ("chat:dm:7:1001:history", "d", 700),
        // More than one script call's budget: handled again until done.
        ("chat:room:huge:history", "h", 25_000),
    ])
    .await;
    let config = load(
        &redis,
        "",
        "room_limit = 1000\ndm_limit = 500\n[history.room_limits]\nbig = 3000\nsmall = 4",
    );

    let summary = round(&redis, &config).await;

    assert_eq!(len(&mut con, "chat:room:lobby:history").await, 1000);
    let lobby = contents(&mut con, "chat:room:lobby:history").await;
    assert_eq!(
        (lobby[0].as_str(), lobby[999].as_str()),
        ("m4999", "m4000"),
        "the newest entries stay"
    );
    assert_eq!(len(&mut con, "chat:room:big:history").await, 3000);
    assert_eq!(
        contents(&mut con, "chat:room:small:history").await,
        ["s9", "s8", "s7", "s6"]
    );
    assert_eq!(len(&mut con, "chat:dm:7:1001:history").await, 500);
    assert_eq!(len(&mut con, "chat:room:huge:history").await, 1000);
    assert_eq!(summary.room, 4000 + 2000 + 6 + 24_000);
    assert_eq!(summary.dm, 200);
    assert_eq!((summary.held, summary.unfinished), (0, 0));

    // A second round has nothing left to do.
    assert_eq!(round(&redis, &config).await.room, 0);
}

#[tokio::test]
async fn unmirrored_rooms_and_dms_are_left_alone_when_switched_off() {
    let (redis, mut con) = pushed(&[
        ("chat:room:lobby:history", "m", 30),
        ("chat:dm:7:1001:history", "d", 30),
        // A room name the chat allows but chatbridge cannot address is skipped, not an error.
        ("chat:room:a:b:history", "x", 30),
    ])
    .await;
    let config = load(
        &redis,
        "",
        "room_limit = 10\ndm_limit = 10\ntrim_unconfigured = false",
    );

    let summary = round(&redis, &config).await;

    assert_eq!(len(&mut con, "chat:room:lobby:history").await, 30);
    assert_eq!(len(&mut con, "chat:dm:7:1001:history").await, 30);
    assert_eq!(len(&mut con, "chat:room:a:b:history").await, 30);
    assert_eq!(summary.room + summary.dm, 0);

    let on = load(&redis, "", "room_limit = 10\ndm_limit = 10");
    round(&redis, &on).await;
    assert_eq!(len(&mut con, "chat:room:lobby:history").await, 10);
    assert_eq!(len(&mut con, "chat:dm:7:1001:history").await, 10);
    assert_eq!(len(&mut con, "chat:room:a:b:history").await, 30);
}

/// A timestamp `ago` before now, in the seed's form or with an offset.
fn ago(ago: chrono::TimeDelta, offset_hours: Option<i32>) -> String {
    let at = chrono::Utc::now() - ago;
    match offset_hours {
        None => Timestamp::from_naive(at.naive_utc()).to_string(),
        Some(h) => {
            let zone = chrono::FixedOffset::east_opt(h * 3600).expect("offset");
            at.with_timezone(&zone)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }
    }
}

#[tokio::test]
async fn max_age_removes_only_old_entries_from_the_old_end() {
    let redis = RedisServer::start();
    let mut con = redis.connection().await;
    let key = "chat:room:lobby:history";
    let hours = chrono::TimeDelta::hours;
    // Oldest first, as clients push them.
    let entries = [
        "not json at all".to_owned(),
        message("two days", &ago(hours(48), None)),
        r#"{"type": "message", "content": "no timestamp"}"#.to_owned(),
        message(
            "thirty hours Z",
            &ago(hours(30), Some(0)).replace("+00:00", "Z"),
        ),
        // 23 hours old, written at -05:00: read naively it would look 28 hours old.
        message("23 hours at -05:00", &ago(hours(23), Some(-5))),
        // Older by its clock, but pushed after a recent one: the walk stopped below it.
        message("skewed", &ago(hours(50), None)),
        "garbage after".to_owned(),
        message("now", &ago(hours(0), None)),
    ];
    for entry in &entries {
        let _: () = con.lpush(key, entry).await.unwrap();
    }
    // Everything readable is recent here: an unreadable oldest entry stays.
    let _: () = con
        .lpush("chat:room:quiet:history", "garbage")
        .await
        .unwrap();
    let _: () = con
        .lpush(
            "chat:room:quiet:history",
            message("fresh", &ago(hours(1), None)),
        )
        .await
        .unwrap();
    let config = load(&redis, "", "max_age_secs = 86400");

    let summary = round(&redis, &config).await;

    assert_eq!(
        contents(&mut con, key).await,
        ["now", "garbage after", "skewed", "23 hours at -05:00"]
    );
    assert_eq!(len(&mut con, "chat:room:quiet:history").await, 2);
    assert_eq!((summary.room, summary.by_age), (4, 4));

    // Many pages and calls' worth of old entries under a few fresh ones.
    let long = "chat:room:long:history";
    let mut pipe = ::redis::pipe();
    for i in 0..3000 {
        pipe.lpush(long, message(&format!("old{i}"), &ago(hours(30), None)))
            .ignore();
    }
    for i in 0..5 {
        pipe.lpush(long, message(&format!("fresh{i}"), &ago(hours(0), None)))
            .ignore();
    }
    pipe.query_async::<()>(&mut con).await.unwrap();
    round(&redis, &config).await;
    assert_eq!(
        contents(&mut con, long).await,
        ["fresh4", "fresh3", "fresh2", "fresh1", "fresh0"]
    );

    // A list that is entirely too old goes away.
    let _: () = con
        .lpush(
            "chat:dm:7:1001:history",
            message("old", &ago(hours(49), None)),
        )
        .await
        .unwrap();
    round(&redis, &config).await;
    assert_eq!(len(&mut con, "chat:dm:7:1001:history").await, 0);
}

#[tokio::test]
async fn mirrored_rooms_are_trimmed_only_below_their_catch_up_checkpoint() {
    let redis = RedisServer::start();
    let mut con = redis.connection().await;
    let key = "chat:room:general:history";
    let old = ago(chrono::TimeDelta::hours(48), None);
    for i in 0..20 {
        let _: () = con
            .lpush(key, message(&format!("read{i}"), &old))
            .await
            .unwrap();
    }
    let config = load(&redis, "", "room_limit = 5\nmax_age_secs = 86400");

    // No checkpoint yet: catch-up has not read it, nothing may go.
    let summary = round(&redis, &config).await;
    assert_eq!((len(&mut con, key).await, summary.held), (20, 1));

    // Catch-up read it down to here: its checkpoint is the newest 3 entries now.
    let top: Vec<String> = con.lrange(key, 0, 2).await.unwrap();
    set_checkpoint(&mut con, "general", &top).await;
    // Then 10 more arrive (old by their clocks, too), unread.
    for i in 0..10 {
        let _: () = con
            .lpush(key, message(&format!("new{i}"), &old))
            .await
            .unwrap();
    }

    round(&redis, &config).await;
    let kept = contents(&mut con, key).await;
    assert_eq!(
        kept.len(),
        13,
        "everything unread and the checkpoint itself stay: {kept:?}"
    );
    assert_eq!(&kept[10..], ["read19", "read18", "read17"]);

    // Once catch-up moves its checkpoint to the top, the rest goes.
    let top: Vec<String> = con.lrange(key, 0, 2).await.unwrap();
    set_checkpoint(&mut con, "general", &top).await;
    round(&redis, &config).await;
    assert_eq!(contents(&mut con, key).await, ["new9", "new8", "new7"]);
}

async fn set_checkpoint(con: &mut MultiplexedConnection, room: &str, newest: &[String]) {
    let mut shas = Vec::new();
    for entry in newest {
        let sha: String = ::redis::Script::new("return redis.sha1hex(ARGV[1])")
            .arg(entry)
            .invoke_async(con)
            .await
            .unwrap();
        shas.push(sha);
    }
    let _: () = con
        .set(
            format!("chatbridge:checkpoint:chat:room:{room}"),
            format!("v2:{}", shas.join(",")),
        )
        .await
        .unwrap();
}

/// A mirrored room far behind: its checkpoint is found deep down, and everything below it
/// goes, over several script calls, with other lists sharing the calls' budget.
#[tokio::test]
async fn a_deep_checkpoint_is_found_and_what_lies_below_it_trimmed() {
    let redis = RedisServer::start();
    let mut con = redis.connection().await;
    let key = "chat:room:general:history";
    push(&mut con, key, "read", 16_000).await;
    let top: Vec<String> = con.lrange(key, 0, 2).await.unwrap();
    set_checkpoint(&mut con, "general", &top).await;
    push(&mut con, key, "unread", 9000).await;
    for room in ["a", "b", "c"] {
        push(&mut con, &format!("chat:room:{room}:history"), "x", 4000).await;
    }
    let config = load(&redis, "", "room_limit = 5");

    let summary = round(&redis, &config).await;

    let kept = contents(&mut con, key).await;
    assert_eq!(kept.len(), 9003);
    assert_eq!(
        (kept[0].as_str(), kept[9002].as_str()),
        ("unread8999", "read15997")
    );
    for room in ["a", "b", "c"] {
        assert_eq!(len(&mut con, &format!("chat:room:{room}:history")).await, 5);
    }
    assert_eq!(summary.room, 15_997 + 3 * 3995);
}

#[tokio::test]
async fn a_mirrored_room_is_held_back_when_its_checkpoint_is_empty_or_too_deep() {
    let redis = RedisServer::start();
    let mut con = redis.connection().await;
    let config = load(&redis, "", "room_limit = 5");
    let key = "chat:room:general:history";
    // Empty when catch-up last read it: everything in it is unread.
    let _: () = con
        .set("chatbridge:checkpoint:chat:room:general", "-")
        .await
        .unwrap();
    push(&mut con, key, "a", 20).await;
    let summary = round(&redis, &config).await;
    assert_eq!((len(&mut con, key).await, summary.held), (20, 1));

    // The checkpoint lies deeper than the search goes: held back, not guessed.
    let top: Vec<String> = con.lrange(key, 0, 2).await.unwrap();
    set_checkpoint(&mut con, "general", &top).await;
    push(&mut con, key, "b", chatbridge::bridge::trim::SEARCH_CAP).await;
    let summary = round(&redis, &config).await;
    assert_eq!(
        (len(&mut con, key).await, summary.held),
        (20 + chatbridge::bridge::trim::SEARCH_CAP, 1)
    );
}

#[test]
fn trim_settings_are_validated() {
    let text = r#"
[history]
trim_interval_secs = 90000
max_age_secs = 30
trim_unconfigured = "yes"
[history.room_limits]
"a:b" = 5
lobby = 0
[delivery]
dlq_max_len = 10
"#;
    let errors = config::load_str(text, &Env::new()).expect_err("invalid");
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    for path in [
        "history.trim_interval_secs",
        "history.max_age_secs",
        "history.trim_unconfigured",
        "history.room_limits.a:b",
        "history.room_limits.lobby",
        "delivery.dlq_max_len",
    ] {
        assert!(paths.contains(&path), "{path} not reported: {errors:?}");
    }
    let defaults = config::load_str("", &Env::new()).expect("valid");
    assert_eq!(
        defaults.history.trim_interval,
        Some(Duration::from_secs(60))
    );
    assert!(defaults.history.trim_unconfigured);
    assert_eq!(defaults.history.max_age, None);
    assert_eq!(defaults.delivery.dlq_max_len, 100_000);
    let off = config::load_str("[history]\ntrim_interval_secs = 0", &Env::new()).expect("valid");
    assert_eq!(off.history.trim_interval, None);
}

/// The bridge is behind (messages stored but never published, not read by catch-up yet):
/// trimming to a smaller limit must not remove them, so the next catch-up delivers them all
/// without a gap notice; afterwards the room is trimmed to its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_never_outruns_catch_up() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut con = redis.connection().await;
    let key = "chat:room:general:history";
    push(&mut con, key, "before", 3).await;
    let text = config_text(
        &redis,
        &receiver.url("/hook"),
        "",
        "room_limit = 5\nsweep_secs = 3600\ntrim_interval_secs = 1",
    );
    let daemon = Daemon::start(&text);
    daemon.wait_ready();
    let rounds = daemon.log().matches("history trim round done").count();

    // Stored, never published: only catch-up can find these.
    push(&mut con, key, "unread", 20).await;
    daemon.wait_for_log("history trim round done", rounds + 2, WAIT);
    assert_eq!(
        len(&mut con, key).await,
        23,
        "trimming removed unread entries"
    );

    // Restart: catch-up reads down to its checkpoint and delivers all 20.
    let config = daemon.crash();
    let daemon = Daemon::start_in(config);
    let got = receiver.wait_for(20, WAIT).await;
    let delivered = contents_of(&got);
    let expected: Vec<String> = (0..20).map(|i| format!("unread{i}")).collect();
    assert_eq!(delivered, expected);
    assert!(
        got.iter().all(|r| r.json()["type"] == "chat.message"),
        "no gap notice"
    );
    // Once read, the room is trimmed to its limit.
    eventually("general trimmed to 5", WAIT, async || {
        (len(&mut con, key).await == 5).then_some(())
    })
    .await;
    assert_eq!(contents(&mut con, key).await[0], "unread19");
    drop(daemon);
}

/// 20,000 rooms nobody mirrors, each over its limit: one round trims them all while the
/// daemon keeps delivering the mirrored room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_keyspace_is_trimmed_while_delivery_goes_on() {
    const ROOMS: usize = 20_000;
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut con = redis.connection().await;
    let entry = message("x", &Timestamp::now().to_string());
    for chunk in (0..ROOMS).collect::<Vec<_>>().chunks(2000) {
        let mut pipe = ::redis::pipe();
        for i in chunk {
            pipe.lpush(format!("chat:room:r{i}:history"), vec![&entry; 3])
                .ignore();
        }
        pipe.query_async::<()>(&mut con).await.expect("fill");
    }
    let text = config_text(
        &redis,
        &receiver.url("/hook"),
        "",
        "room_limit = 2\ntrim_interval_secs = 1",
    );
    let daemon = Daemon::start(&text);
    daemon.wait_ready();

    // Publish and store while the round runs, until the daemon says it trimmed them all.
    let mut sent = Vec::new();
    eventually("a round that trimmed every room", WAIT, async || {
        let content = format!("m{}", sent.len());
        seed::send_message(&mut con, "general", json!(1001), "alice", &content).await;
        sent.push(content);
        daemon
            .log()
            .contains("history trim round done: trimmed 20000 entries")
            .then_some(())
    })
    .await;
    let over: usize = ::redis::Script::new(
        "local n = 0 for _, k in ipairs(redis.call('KEYS', 'chat:room:r*:history')) do \
         if redis.call('LLEN', k) ~= 2 then n = n + 1 end end return n",
    )
    .invoke_async(&mut con)
    .await
    .expect("count");
    assert_eq!(over, 0, "rooms not at their limit");
    let got = receiver.wait_for(sent.len(), WAIT).await;
    let delivered = contents_of(&got);
    assert_eq!(delivered, sent, "every message delivered, in order");
}

/// chatbridge's own dead-letter streams are bounded too (`[delivery] dlq_max_len`), whether a
/// link refused the events or catch-up dead-lettered history entries.
#[tokio::test]
async fn dead_letter_streams_keep_at_most_dlq_max_len() {
    use chatbridge::bridge::outbox::{Caps, Enqueue, Outbox, ReadFrom, Reader};
    use chatbridge::chat::model::{EventKind, OutboundKind, Scope};
    let redis = RedisServer::start();
    let client = redis.client();
    let con = chatbridge::redis::connect::manager(&client, Duration::ZERO)
        .await
        .unwrap();
    let caps = Caps {
        dlq_max_len: 3,
        ..Caps::default()
    };
    let mut outbox = Outbox::with_caps(con, caps);
    outbox.ensure_group("a").await.unwrap();
    let event = |id: &str, dead: Option<&str>| Enqueue {
        scope: Scope::Room("general".into()),
        key: id.into(),
        event_id: id.into(),
        kind: OutboundKind::Event(EventKind::Message),
        payload: format!(r#"{{"id": "{id}"}}"#),
        links: vec!["a".into()],
        dead: dead.map(str::to_owned),
        origin: None,
    };
    let mut reader = Reader::new(
        chatbridge::redis::connect::manager(&client, Duration::from_secs(2))
            .await
            .unwrap(),
        "a",
    );
    for i in 0..5 {
        outbox
            .enqueue(&[event(&format!("r{i}"), None)])
            .await
            .unwrap();
        let read: Vec<_> = reader
            .read(&ReadFrom::New, 10, 10)
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        outbox
            .dead_letter("a", &read, Some(400), "refused")
            .await
            .unwrap();
    }
    let ids = |letters: Vec<Result<chatbridge::bridge::outbox::DeadLetter, _>>| -> Vec<String> {
        letters
            .into_iter()
            .map(|l| l.unwrap().entry.event_id)
            .collect()
    };
    assert_eq!(
        ids(outbox.dlq_list("a", 10).await.unwrap()),
        ["r2", "r3", "r4"]
    );
    let mut con = redis.connection().await;
    let dropped: u64 = con.hget("chatbridge:link:a", "dlq_dropped").await.unwrap();
    assert_eq!(dropped, 2);

    let dead: Vec<Enqueue> = (0..4)
        .map(|i| event(&format!("h{i}"), Some("not a chat message")))
        .collect();
    outbox.enqueue(&dead).await.unwrap();
    assert_eq!(
        ids(outbox.dlq_list("a", 10).await.unwrap()),
        ["h1", "h2", "h3"]
    );
}
