//! The wire format against the real seed: what `Store` writes must be what the seed's Python
//! client writes (same keys, same trims, same JSON bytes modulo `id`/`timestamp` values), and
//! what the seed writes must decode and re-serialise to the identical bytes.

mod common;

use std::time::Duration;

use chatbridge::chat::model::{ChatEvent, EventError, Scope, UserId};
use chatbridge::chat::pyjson;
use chatbridge::chat::store::{HistoryLimits, Store, StoreError};
use common::redis::RedisServer;
use common::seed;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

const CONTENT: &str = "héllo 👋 \"quoted\" back\\slash /slash\ttab";

fn num(n: u64) -> UserId {
    UserId::Number(n.into())
}

/// Panics with the fix when redis-py, which the real seed needs, is not installed.
fn require_redis_py() {
    static CHECKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let installed = *CHECKED.get_or_init(|| {
        std::process::Command::new("python3")
            .args(["-c", "import redis"])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    assert!(
        installed,
        "`python3 -c 'import redis'` failed: run `pip install redis` (scripts/test does)"
    );
}

/// Runs the real Python seed (`tests/seed_chat.py`) against the test server.
async fn seed_py(server: &RedisServer, utcnow: Option<&str>, args: &[&str]) {
    require_redis_py();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/seed_chat.py");
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(script)
        .arg(server.port().to_string())
        .args(args);
    if let Some(at) = utcnow {
        command.env("SEED_UTCNOW", at);
    }
    let output = command.output().await.expect("run python3");
    assert!(
        output.status.success(),
        "seed_chat.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Everything published on `chat:*`, in order.
struct Capture(redis::aio::PubSubStream);

impl Capture {
    async fn start(server: &RedisServer) -> Self {
        let mut pubsub = server.client().get_async_pubsub().await.expect("pubsub");
        pubsub.psubscribe("chat:*").await.expect("psubscribe");
        Self(pubsub.into_on_message())
    }

    /// The next (channel, payload), or a panic after 5 s.
    async fn next(&mut self) -> (String, Vec<u8>) {
        let msg = tokio::time::timeout(Duration::from_secs(5), self.0.next())
            .await
            .expect("a publish within 5 s")
            .expect("pubsub stream open");
        (
            msg.get_channel_name().to_owned(),
            msg.get_payload_bytes().to_vec(),
        )
    }
}

async fn store(server: &RedisServer) -> Store {
    Store::connect(server.client(), HistoryLimits::default())
        .await
        .expect("store connects")
}

async fn cmd<T: redis::FromRedisValue>(server: &RedisServer, args: &[&str]) -> T {
    let mut con = server.connection().await;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query_async(&mut con).await.expect("redis command")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("published JSON is UTF-8")
}

/// The payload with the values of `id` and `timestamp` replaced by placeholders, after checking
/// that the timestamp is in the seed's form.
fn normalized(payload: &[u8]) -> String {
    let raw = text(payload);
    let object: Map<String, Value> = serde_json::from_str(&raw).expect("a JSON object");
    let mut out = raw.clone();
    if let Some(Value::String(id)) = object.get("id") {
        out = out.replacen(&format!("\"id\": \"{id}\""), "\"id\": \"ID\"", 1);
    }
    if let Some(Value::String(ts)) = object.get("timestamp") {
        let parsed = chatbridge::chat::model::Timestamp::parse(ts).expect("a timestamp");
        assert_eq!(&parsed.to_string(), ts, "timestamp not in the seed's form");
        out = out.replacen(
            &format!("\"timestamp\": \"{ts}\""),
            "\"timestamp\": \"TS\"",
            1,
        );
    }
    out
}

#[tokio::test]
async fn room_messages_match_the_seed_byte_for_byte() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let mut capture = Capture::start(&server).await;
    for (id_json, id) in [("1001", num(1001)), ("\"abc\"", UserId::Text("abc".into()))] {
        seed_py(
            &server,
            None,
            &["send", "general", id_json, "alice", CONTENT],
        )
        .await;
        let (seed_channel, seed_payload) = capture.next().await;
        let ours = store
            .send("general", &id, "alice", CONTENT, Map::new())
            .await
            .unwrap();
        let (our_channel, our_payload) = capture.next().await;

        assert_eq!(seed_channel, "chat:room:general");
        assert_eq!(our_channel, seed_channel);
        assert_eq!(normalized(&our_payload), normalized(&seed_payload));
        assert_eq!(
            our_payload,
            pyjson::to_string(&ChatEvent::Message(ours)).into_bytes()
        );

        let history: Vec<Vec<u8>> =
            cmd(&server, &["LRANGE", "chat:room:general:history", "0", "1"]).await;
        assert_eq!(history, vec![our_payload, seed_payload]);
    }
    let mut keys: Vec<String> = cmd(&server, &["KEYS", "*"]).await;
    keys.sort();
    assert_eq!(keys, ["chat:room:general:history"]);
}

#[tokio::test]
async fn extra_fields_follow_the_seed_fields() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let mut extra = Map::new();
    extra.insert("origin".into(), json!("slack-general"));
    extra.insert("external_id".into(), json!("Ev01"));
    let sent = store
        .send("general", &num(7), "bot", "hi", extra)
        .await
        .unwrap();
    let stored: Vec<String> =
        cmd(&server, &["LRANGE", "chat:room:general:history", "0", "0"]).await;
    let expected = format!(
        r#"{{"id": "{}", "user_id": 7, "username": "bot", "content": "hi", "room": "general", "timestamp": "{}", "type": "message", "origin": "slack-general", "external_id": "Ev01"}}"#,
        sent.id, sent.timestamp
    );
    assert_eq!(stored, [expected]);
}

#[tokio::test]
async fn dms_match_the_seed_and_sort_ids_numerically() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let mut capture = Capture::start(&server).await;
    seed_py(
        &server,
        None,
        &["dm", "1001", "999", "1001", "alice", CONTENT],
    )
    .await;
    let (seed_channel, seed_payload) = capture.next().await;
    store
        .send_dm(&num(1001), &num(999), "alice", CONTENT, Map::new())
        .await
        .unwrap();
    let (our_channel, our_payload) = capture.next().await;

    assert_eq!(seed_channel, "chat:dm:999:1001");
    assert_eq!(our_channel, seed_channel);
    assert_eq!(normalized(&our_payload), normalized(&seed_payload));
    assert!(text(&our_payload).contains(r#""room": null"#));
    let history: Vec<Vec<u8>> =
        cmd(&server, &["LRANGE", "chat:dm:999:1001:history", "0", "-1"]).await;
    assert_eq!(history, vec![our_payload, seed_payload]);
}

#[tokio::test]
async fn join_and_leave_match_the_seed_plus_our_fields() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let mut capture = Capture::start(&server).await;
    let members = || cmd::<Vec<String>>(&server, &["SMEMBERS", "chat:room:general:members"]);

    for (op, present) in [("join", true), ("leave", false)] {
        seed_py(&server, None, &[op, "general", "1001", "alice"]).await;
        assert_eq!(members().await.contains(&"1001".to_owned()), present);
        let (seed_channel, seed_payload) = capture.next().await;
        cmd::<()>(&server, &["DEL", "chat:room:general:members"]).await;
        if !present {
            cmd::<()>(&server, &["SADD", "chat:room:general:members", "1001"]).await;
        }

        let line = match op {
            "join" => store.join("general", &num(1001), "alice").await,
            _ => store.leave("general", &num(1001), "alice").await,
        }
        .unwrap();
        assert_eq!(members().await.contains(&"1001".to_owned()), present);
        let (our_channel, our_payload) = capture.next().await;

        assert_eq!(our_channel, seed_channel);
        let seed_text = normalized(&seed_payload);
        let expected = format!(
            r#"{}, "event": "{op}", "user_id": 1001, "username": "alice"}}"#,
            seed_text.strip_suffix('}').unwrap()
        );
        assert_eq!(normalized(&our_payload), expected);
        assert_eq!(line.user_id, Some(num(1001)));
        assert_eq!(line.who(), Some("alice"));
    }
    assert_eq!(
        store.members("general").await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn typing_and_read_receipts_match_the_seed() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let mut capture = Capture::start(&server).await;

    seed_py(&server, None, &["typing", "1001", "general"]).await;
    let (seed_channel, seed_payload) = capture.next().await;
    store.typing("general", &num(1001)).await.unwrap();
    let (our_channel, our_payload) = capture.next().await;
    assert_eq!(
        (our_channel, normalized(&our_payload)),
        (seed_channel, normalized(&seed_payload))
    );

    let receipts = "chat:room:general:read_receipts";
    seed_py(&server, None, &["read", "1001", "general", "m-1"]).await;
    let (seed_channel, seed_payload) = capture.next().await;
    let seed_hash: Vec<(String, String)> = cmd(&server, &["HGETALL", receipts]).await;
    cmd::<()>(&server, &["DEL", receipts]).await;
    store.mark_read("general", &num(1001), "m-1").await.unwrap();
    let (our_channel, our_payload) = capture.next().await;
    assert_eq!(seed_hash, [("1001".to_owned(), "m-1".to_owned())]);
    assert_eq!(store.receipts("general").await.unwrap(), seed_hash);
    assert_eq!(
        text(&seed_payload),
        r#"{"type": "read_receipt", "user_id": 1001, "last_read": "m-1"}"#
    );
    assert_eq!((our_channel, our_payload), (seed_channel, seed_payload));
}

#[tokio::test]
async fn histories_are_trimmed_like_the_seed() {
    let server = RedisServer::start();
    let store = store(&server).await;
    for i in 0..1005 {
        store
            .send("general", &num(1), "a", &i.to_string(), Map::new())
            .await
            .unwrap();
    }
    for i in 0..505 {
        store
            .send_dm(&num(2), &num(1), "b", &i.to_string(), Map::new())
            .await
            .unwrap();
    }
    assert_eq!(
        cmd::<usize>(&server, &["LLEN", "chat:room:general:history"]).await,
        1000
    );
    assert_eq!(
        cmd::<usize>(&server, &["LLEN", "chat:dm:1:2:history"]).await,
        500
    );

    let room = store
        .history(&Scope::Room("general".into()), 1000)
        .await
        .unwrap();
    let contents: Vec<String> = room.iter().map(|e| content_of(e.event.clone())).collect();
    assert_eq!(contents.first().map(String::as_str), Some("1004"));
    assert_eq!(contents.last().map(String::as_str), Some("5"));
}

#[tokio::test]
async fn refused_names_write_nothing() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let err = store
        .send("a:b", &num(1), "a", "hi", Map::new())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadRoom { .. }), "{err}");
    assert!(store.join("", &num(1), "a").await.is_err());
    let odd = UserId::Text("x:y".into());
    assert!(
        store
            .send_dm(&odd, &num(1), "a", "hi", Map::new())
            .await
            .is_err()
    );
    assert_eq!(
        cmd::<Vec<String>>(&server, &["KEYS", "*"]).await,
        Vec::<String>::new()
    );
}

fn content_of(event: Result<ChatEvent, EventError>) -> String {
    match event {
        Ok(ChatEvent::Message(m)) => m.content,
        other => panic!("not a message: {other:?}"),
    }
}

#[tokio::test]
async fn seed_events_decode_and_reserialise_to_identical_bytes() {
    let server = RedisServer::start();
    let mut capture = Capture::start(&server).await;
    let cases: [(Option<&str>, &[&str]); 8] = [
        (
            Some("2026-11-27T20:12:21"),
            &["send", "general", "1001", "alice", CONTENT],
        ),
        (
            Some("2026-11-27T20:12:21.000100"),
            &["send", "general", "\"abc\"", "bob", "é"],
        ),
        (
            None,
            &["dm", "\"bob\"", "\"alice\"", "\"bob\"", "bob", "yo"],
        ),
        (
            Some("2026-11-27T20:12:21"),
            &["join", "general", "1001", "alice"],
        ),
        (None, &["leave", "general", "\"abc\"", "bob"]),
        (Some("2026-11-27T20:12:21"), &["typing", "1001", "general"]),
        (None, &["typing", "\"abc\"", "general"]),
        (None, &["read", "\"abc\"", "general", "m-9"]),
    ];
    for (utcnow, args) in cases {
        seed_py(&server, utcnow, args).await;
        let (_, payload) = capture.next().await;
        let event = ChatEvent::from_slice(&payload)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&payload)));
        assert_eq!(pyjson::to_string(&event), text(&payload), "{args:?}");
        if let Some(at) = utcnow {
            assert!(text(&payload).contains(&format!("\"timestamp\": \"{at}\"")));
        }
        let string_id = args.iter().any(|a| a.starts_with('"'));
        let user_id = match &event {
            ChatEvent::Message(m) => Some(m.user_id.clone()),
            ChatEvent::Typing(t) => Some(t.user_id.clone()),
            ChatEvent::ReadReceipt(r) => Some(r.user_id.clone()),
            ChatEvent::System(_) => None,
        };
        match user_id {
            Some(UserId::Text(_)) => assert!(string_id, "{args:?} became a string id"),
            Some(UserId::Number(_) | UserId::Integer(_)) => {
                assert!(!string_id, "{args:?} became a number id")
            }
            None => {}
        }
    }
    let stored: Vec<Vec<u8>> =
        cmd(&server, &["LRANGE", "chat:room:general:history", "0", "-1"]).await;
    for raw in stored {
        let event = ChatEvent::from_slice(&raw).expect("stored seed message decodes");
        assert_eq!(pyjson::to_string(&event).into_bytes(), raw);
    }
    let dm: Vec<Vec<u8>> = cmd(&server, &["LRANGE", "chat:dm:alice:bob:history", "0", "-1"]).await;
    assert_eq!(dm.len(), 1);
}

#[tokio::test]
async fn history_is_newest_first_and_tolerates_garbage() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let mut con = server.connection().await;
    for i in 0..30 {
        seed::send_message(&mut con, "general", json!(1001), "alice", &i.to_string()).await;
    }
    let key = "chat:room:general:history";
    cmd::<()>(&server, &["LPUSH", key, "not json"]).await;
    let _: () = redis::cmd("LPUSH")
        .arg(key)
        .arg(b"\xff\xfe binary".as_slice())
        .query_async(&mut con)
        .await
        .unwrap();
    for i in 30..60 {
        seed::send_message(&mut con, "general", json!(1001), "alice", &i.to_string()).await;
    }

    let entries = store
        .history(&Scope::Room("general".into()), 50)
        .await
        .unwrap();
    assert_eq!(entries.len(), 50);
    assert_eq!(
        entries[30].event.as_ref().unwrap_err(),
        &EventError::NotUtf8
    );
    assert_eq!(entries[31].raw, "not json");
    assert_eq!(entries[31].event.as_ref().unwrap_err().kind(), "not_json");
    let good: Vec<String> = entries
        .into_iter()
        .filter(|e| e.event.is_ok())
        .map(|e| content_of(e.event))
        .collect();
    let expected: Vec<String> = (12..60).rev().map(|i| i.to_string()).collect();
    assert_eq!(good, expected);

    assert!(
        store
            .history(&Scope::Room("general".into()), 0)
            .await
            .unwrap()
            .is_empty()
    );
    let empty = Scope::dm(&num(1), &num(2));
    assert!(store.history(&empty, 50).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_rust_seed_port_writes_what_the_python_seed_writes() {
    let server = RedisServer::start();
    let mut capture = Capture::start(&server).await;
    let mut con = server.connection().await;
    let steps: [&[&str]; 5] = [
        &["send", "general", "1001", "alice", CONTENT],
        &["dm", "1001", "999", "1001", "alice", CONTENT],
        &["join", "general", "1001", "alice"],
        &["typing", "1001", "general"],
        &["read", "1001", "general", "m-1"],
    ];
    for args in steps {
        seed_py(&server, None, args).await;
        let (seed_channel, seed_payload) = capture.next().await;
        let written = match args[0] {
            "send" => seed::send_message(&mut con, "general", json!(1001), "alice", CONTENT).await,
            "dm" => seed::send_dm(&mut con, json!(1001), json!(999), "alice", CONTENT).await,
            "join" => seed::join(&mut con, "general", json!(1001), "alice").await,
            "typing" => seed::typing(&mut con, "general", json!(1001)).await,
            _ => seed::mark_read(&mut con, "general", json!(1001), "m-1").await,
        };
        let (channel, payload) = capture.next().await;
        assert_eq!(channel, seed_channel);
        assert_eq!(normalized(&payload), normalized(&seed_payload));
        assert_eq!(text(&payload), pyjson::to_string(&written));
    }
    seed::leave(&mut con, "general", json!(1001), "alice").await;
    assert_eq!(
        cmd::<Vec<String>>(&server, &["SMEMBERS", "chat:room:general:members"]).await,
        Vec::<String>::new()
    );
}

#[test]
fn redis_server_restarts_on_the_same_port_and_is_reaped() {
    let mut server = RedisServer::start();
    let port = server.port();
    let mut con = server.client().get_connection().unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    server.restart();
    assert_eq!(server.port(), port);
    let mut con = server.client().get_connection().unwrap();
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(
        value, None,
        "a restarted server starts empty (no persistence)"
    );
    server.kill();
    assert!(server.client().get_connection().is_err());
}
