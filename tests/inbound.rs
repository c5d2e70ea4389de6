//! Inbound end to end: the real binary, a real redis-server, real HTTP over loopback. Generic
//! webhooks are signed by the reference `standardwebhooks` library (Python); Slack `v0`
//! signatures are computed here. Every write is checked in Redis and on the relay side: it
//! reaches the other links once and never goes back to the link it came from.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::Daemon;
use common::fake_discord::FakeDiscord;
use common::fake_slack::FakeSlack;
use common::receiver::Receiver;
use common::redis::{RedisServer, free_port};
use common::seed::MESSAGE_FIELDS;
use common::wait::eventually;
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use serde_json::{Value, json};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const OTHER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `webhook-signature` for each request (id, timestamp, body), made by the reference library
/// in one run of it.
fn reference_signatures(secret: &str, requests: &[(String, i64, Vec<u8>)]) -> Vec<String> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sign_standardwebhooks.py"
    );
    let mut child = Command::new("python3")
        .args([script, secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run this test");
    let mut lines = String::new();
    for (id, timestamp, body) in requests {
        let body = String::from_utf8(body.clone()).expect("utf-8 body");
        let line = json!({"id": id, "timestamp": timestamp, "body": body});
        lines.push_str(&format!("{line}\n"));
    }
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("write requests");
    let output = child.wait_with_output().expect("run the signer");
    assert!(
        output.status.success(),
        "signer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let signatures: Vec<String> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(signatures.len(), requests.len());
    signatures
}

/// `webhook-signature` for one request, made by the reference library.
fn reference_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    reference_signatures(secret, &[(id.to_owned(), timestamp, body.to_vec())]).remove(0)
}

/// Slack's `v0` signature, computed as Slack documents it.
fn slack_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The daemon under test and how to talk to it.
struct Bridge {
    daemon: Daemon,
    port: u16,
    http: reqwest::Client,
}

impl Bridge {
    /// Starts the daemon on `rest` (links, rooms, …) with `[redis]` and `[http]` filled in.
    async fn start(redis: &RedisServer, rest: &str) -> Self {
        let port = free_port();
        let toml = config(redis, port, rest);
        let daemon = Daemon::start(&toml);
        tokio::task::block_in_place(|| daemon.wait_ready());
        Self {
            daemon,
            port,
            http: reqwest::Client::new(),
        }
    }

    /// A fresh redis-server, the daemon started on it with `rest` ([`Bridge::start`]), and a
    /// connection to that Redis.
    async fn on_new_redis(rest: &str) -> (RedisServer, Self, redis::aio::MultiplexedConnection) {
        let redis = RedisServer::start();
        let bridge = Self::start(&redis, rest).await;
        let con = redis.connection().await;
        (redis, bridge, con)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// POSTs `body` to `/hooks/{link}` signed by the reference library with `secret`.
    async fn hook(&self, link: &str, secret: &str, id: &str, body: &[u8]) -> (u16, Value) {
        let ts = now();
        let signature = reference_signature(secret, id, ts, body);
        self.hook_with(link, id, ts, &signature, "application/json", body)
            .await
    }

    async fn hook_with(
        &self,
        link: &str,
        id: &str,
        ts: i64,
        signature: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(&format!("/hooks/{link}")))
            .header("content-type", content_type)
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .expect("request");
        answer(response).await
    }

    /// POSTs a Slack Events API body signed with `secret`.
    async fn slack(&self, secret: &str, body: &Value, retry: Option<u32>) -> (u16, Value) {
        let body = body.to_string();
        let ts = now();
        let mut request = self
            .http
            .post(self.url("/slack/events"))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header(
                "x-slack-signature",
                slack_signature(secret, ts, body.as_bytes()),
            );
        if let Some(n) = retry {
            request = request
                .header("x-slack-retry-num", n.to_string())
                .header("x-slack-retry-reason", "http_timeout");
        }
        answer(request.body(body).send().await.expect("request")).await
    }
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn config(redis: &RedisServer, port: u16, rest: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 4096\n\n{rest}",
        redis.url()
    )
}

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!("[links.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\n{extra}\n")
}

fn inbound_hook(name: &str, url: &str, secret: &str) -> String {
    webhook(
        name,
        url,
        &format!("inbound = true\nsecret = \"{secret}\"\nmax_content_chars = 100\n"),
    )
}

fn room(name: &str, links: &[&str]) -> String {
    let links: Vec<String> = links.iter().map(|l| format!("\"{l}\"")).collect();
    format!(
        "[[rooms]]\nname = \"{name}\"\nlinks = [{}]\n\n",
        links.join(", ")
    )
}

fn message(room: &str, user_id: Value, username: &str, content: &str) -> Vec<u8> {
    json!({"type": "message", "room": room, "user_id": user_id, "username": username,
           "content": content})
    .to_string()
    .into_bytes()
}

async fn history(con: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<String> {
    con.lrange(key, 0, -1).await.expect("LRANGE")
}

/// Every key with its DUMP, so two snapshots compare byte for byte.
async fn dump_all(con: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, Vec<u8>> {
    let keys: Vec<String> = con.keys("*").await.expect("KEYS");
    let mut dump = BTreeMap::new();
    for key in keys {
        let bytes: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(con)
            .await
            .expect("DUMP");
        dump.insert(key, bytes);
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_hook_writes_the_seed_events_and_reaches_only_the_other_links() {
    let tool = Receiver::start().await;
    let audit = Receiver::start().await;
    let rest = format!(
        "{}{}{}[dms]\nlinks = [\"tool\", \"audit\"]\n",
        inbound_hook("tool", &tool.url("/tool"), SECRET),
        webhook("audit", &audit.url("/audit"), ""),
        room("general", &["tool", "audit"]),
    );
    let (redis, bridge, mut con) = Bridge::on_new_redis(&rest).await;
    let mut live = redis.subscribe("chat:room:general").await;

    let body = message("general", json!(1001), "alice", "hello from a tool");
    let (status, reply) = bridge.hook("tool", SECRET, "msg_one", &body).await;
    assert_eq!(status, 202, "{reply}");
    let id = reply["id"]
        .as_str()
        .expect("the written event's id")
        .to_owned();

    // A seed client sees it live and in history: the same bytes, the seed's field order.
    let published: String = RedisServer::next_payload(&mut live, WAIT).await;
    let stored = history(&mut con, "chat:room:general:history").await;
    assert_eq!(stored, vec![published.clone()]);
    let event: Value = serde_json::from_str(&published).unwrap();
    let fields: Vec<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [&MESSAGE_FIELDS[..], &["origin", "external_id"]].concat()
    );
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["user_id"], 1001, "an integer id stays an integer");
    assert_eq!(event["origin"], "tool");
    assert_eq!(event["external_id"], "msg_one");
    assert!(
        published.contains("\"content\": \"hello from a tool\""),
        "Python's separators"
    );
    let bridged: Vec<String> = con
        .zrange("chatbridge:bridged:chat:room:general", 0, -1)
        .await
        .unwrap();
    assert_eq!(
        bridged,
        [chatbridge::chat::model::content_id(
            "chat:room:general",
            &published
        )]
    );

    // The sender retries (a new timestamp and signature, the same webhook-id): written once.
    let (status, again) = bridge.hook("tool", SECRET, "msg_one", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["duplicate"], true);

    // Joins, typing, receipts and DMs, each as the seed writes it.
    let ops = [
        json!({"type": "join", "room": "general", "user_id": "u-7", "username": "bob"}),
        json!({"type": "typing", "room": "general", "user_id": "u-7"}),
        json!({"type": "read_receipt", "room": "general", "user_id": "u-7", "last_read": id}),
        json!({"type": "leave", "room": "general", "user_id": 1001, "username": "alice"}),
        json!({"type": "message", "dm": [1001, 999], "user_id": 1001, "username": "alice",
               "content": "psst"}),
    ];
    for (n, op) in ops.iter().enumerate() {
        let (status, reply) = bridge
            .hook(
                "tool",
                SECRET,
                &format!("msg_op_{n}"),
                op.to_string().as_bytes(),
            )
            .await;
        assert_eq!(status, 202, "{op}: {reply}");
    }
    let members: Vec<String> = con.smembers("chat:room:general:members").await.unwrap();
    assert_eq!(members, ["u-7"]);
    let receipts: BTreeMap<String, String> = con
        .hgetall("chat:room:general:read_receipts")
        .await
        .unwrap();
    assert_eq!(receipts, BTreeMap::from([("u-7".to_owned(), id.clone())]));
    let dm = history(&mut con, "chat:dm:999:1001:history").await;
    assert_eq!(dm.len(), 1);
    let dm: Value = serde_json::from_str(&dm[0]).unwrap();
    assert_eq!(
        (dm["room"].clone(), dm["content"].clone()),
        (Value::Null, json!("psst"))
    );
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let payload: String = RedisServer::next_payload(&mut live, WAIT).await;
        let event: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(event["origin"], "tool");
        kinds.push(event["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["system", "typing", "read_receipt", "system"]);
    assert_eq!(
        history(&mut con, "chat:room:general:history").await.len(),
        1,
        "only messages go to history"
    );

    // Relayed to the other link, each once; never back to the tool.
    let got = audit.wait_for(6, WAIT).await;
    let types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "chat.message",
            "chat.join",
            "chat.typing",
            "chat.read_receipt",
            "chat.leave",
            "chat.message"
        ]
    );
    common::outbox::wait_drained(&mut con, "audit").await;
    common::outbox::wait_drained(&mut con, "tool").await;
    assert!(tool.requests().is_empty(), "echoed back to its origin");
    assert_eq!(
        audit.requests().len(),
        6,
        "a duplicate reached the other link"
    );
    drop(bridge);
}

/// One refused request: what it tests, link, `webhook-id`, `webhook-timestamp`,
/// `webhook-signature`, content type, body, the status expected and the field named.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    i64,
    &'a str,
    &'a str,
    Vec<u8>,
    u16,
    Option<&'a str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_get_their_status_and_leave_redis_byte_for_byte_unchanged() {
    let tool = Receiver::start().await;
    let rest = format!(
        "{}{}[slack]\nsigning_secret = \"{SLACK_SECRET}\"\n\n{}{}",
        inbound_hook("tool", &tool.url("/tool"), SECRET),
        webhook("plain", &tool.url("/plain"), ""),
        room("general", &["tool"]),
        room("random", &["plain"]),
    );
    let (redis, bridge, mut con) = Bridge::on_new_redis(&rest).await;
    let good = message("general", json!(1), "a", "first");
    let (status, _) = bridge.hook("tool", SECRET, "msg_replayed", &good).await;
    assert_eq!(status, 202);
    // The intake has taken the write in (it sends it to no link, the room's only link being
    // its origin, but records it as seen) before the snapshot is taken.
    eventually("the intake saw the first write", WAIT, async || {
        let mut con = con.clone();
        let seen: bool = con
            .exists("chatbridge:seen:chat:room:general")
            .await
            .unwrap();
        seen.then_some(())
    })
    .await;
    common::outbox::wait_drained(&mut con, "tool").await;
    let mut live = redis.client().get_async_pubsub().await.expect("pubsub");
    live.psubscribe("chat:*").await.expect("psubscribe");
    let before = dump_all(&mut con).await;

    let ts = now();
    let sign = |id: &str, ts: i64, body: &[u8]| reference_signature(SECRET, id, ts, body);
    let msg = |content: &str| message("general", json!(1), "a", content);
    let forged = reference_signature(OTHER_SECRET, "msg_forged", ts, &msg("forged"));
    let stale = sign("msg_stale", ts - 330, &msg("stale"));
    let future = sign("msg_future", ts + 330, &msg("future"));
    let big = vec![b' '; 5000];
    let big_sig = sign("msg_big", ts, &big);
    let bad_json = b"{\"type\": \"message\",".to_vec();
    let bad_json_sig = sign("msg_bad_json", ts, &bad_json);
    let plain_text_sig = sign("msg_text", ts, &msg("text"));
    let unknown_room = message("random", json!(1), "a", "elsewhere");
    let unknown_room_sig = sign("msg_room", ts, &unknown_room);
    let with_origin = json!({"type": "message", "room": "general", "user_id": 1,
        "username": "a", "content": "hidden", "origin": "plain"})
    .to_string()
    .into_bytes();
    let with_origin_sig = sign("msg_origin", ts, &with_origin);
    let long = msg(&"x".repeat(101));
    let long_sig = sign("msg_long", ts, &long);
    let missing = json!({"type": "message", "room": "general", "user_id": 1, "content": "x"})
        .to_string()
        .into_bytes();
    let missing_sig = sign("msg_missing", ts, &missing);
    let replay_sig = sign("msg_replayed", ts, &good);
    let json_type = "application/json";
    let cases: Vec<Case> = vec![
        (
            "forged signature",
            "tool",
            "msg_forged",
            ts,
            &forged,
            json_type,
            msg("forged"),
            401,
            None,
        ),
        (
            "stale timestamp",
            "tool",
            "msg_stale",
            ts - 330,
            &stale,
            json_type,
            msg("stale"),
            401,
            None,
        ),
        (
            "future timestamp",
            "tool",
            "msg_future",
            ts + 330,
            &future,
            json_type,
            msg("future"),
            401,
            None,
        ),
        (
            "body over the cap",
            "tool",
            "msg_big",
            ts,
            &big_sig,
            json_type,
            big.clone(),
            413,
            None,
        ),
        (
            "malformed JSON",
            "tool",
            "msg_bad_json",
            ts,
            &bad_json_sig,
            json_type,
            bad_json.clone(),
            400,
            None,
        ),
        (
            "wrong content type",
            "tool",
            "msg_text",
            ts,
            &plain_text_sig,
            "text/plain",
            msg("text"),
            415,
            None,
        ),
        (
            "unknown link",
            "nobody",
            "msg_x",
            ts,
            &plain_text_sig,
            json_type,
            msg("text"),
            404,
            None,
        ),
        (
            "outbound-only link",
            "plain",
            "msg_x",
            ts,
            &plain_text_sig,
            json_type,
            msg("text"),
            404,
            None,
        ),
        (
            "unknown room",
            "tool",
            "msg_room",
            ts,
            &unknown_room_sig,
            json_type,
            unknown_room.clone(),
            404,
            None,
        ),
        (
            "forged origin",
            "tool",
            "msg_origin",
            ts,
            &with_origin_sig,
            json_type,
            with_origin.clone(),
            400,
            Some("origin"),
        ),
        (
            "content too long",
            "tool",
            "msg_long",
            ts,
            &long_sig,
            json_type,
            long.clone(),
            413,
            Some("content"),
        ),
        (
            "missing field",
            "tool",
            "msg_missing",
            ts,
            &missing_sig,
            json_type,
            missing.clone(),
            400,
            Some("username"),
        ),
    ];
    for (what, link, id, ts, signature, content_type, body, want, field) in cases {
        let (status, reply) = bridge
            .hook_with(link, id, ts, signature, content_type, &body)
            .await;
        assert_eq!(status, want, "{what}: {reply}");
        if let Some(field) = field {
            assert_eq!(reply["field"], field, "{what}: {reply}");
        }
    }
    let (status, reply) = bridge
        .hook_with("tool", "msg_replayed", ts, &replay_sig, json_type, &good)
        .await;
    assert_eq!(
        (status, reply["duplicate"].clone()),
        (200, json!(true)),
        "replayed webhook-id"
    );
    let slack_event = json!({"type": "event_callback", "event_id": "Ev1", "api_app_id": "A1",
        "event": {"type": "message", "channel": "C1", "user": "U1", "text": "x", "ts": "1.2"}});
    let (status, _) = bridge.slack("not-the-secret", &slack_event, None).await;
    assert_eq!(status, 401, "a forged Slack signature");

    assert_eq!(dump_all(&mut con).await, before, "Redis changed");
    let published =
        tokio::time::timeout(Duration::from_millis(300), live.on_message().next()).await;
    assert!(published.is_err(), "something was published: {published:?}");
    let metrics = bridge
        .http
        .get(bridge.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (route, result, count) in [
        ("hooks", "accepted", 1),
        ("hooks", "duplicate", 1),
        ("hooks", "unauthorized", 3),
        ("hooks", "too_large", 1),
        ("hooks", "bad_request", 3),
        ("hooks", "not_found", 3),
        ("hooks", "unsupported_type", 1),
        ("slack", "unauthorized", 1),
    ] {
        let line = format!(
            "chatbridge_inbound_requests_total{{route=\"{route}\",result=\"{result}\"}} {count}\n"
        );
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    let log = bridge.daemon.log();
    assert!(
        log.contains("inbound request refused"),
        "refusals are logged"
    );
    for secret in [SECRET, &SECRET[6..], SLACK_SECRET] {
        assert!(!log.contains(secret), "a secret in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_events_are_verified_written_once_and_relayed_to_discord_and_webhooks_not_back() {
    let slack = FakeSlack::start("xoxb-test").await;
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let audit = Receiver::start().await;
    let tool = Receiver::start().await;
    let rest = format!(
        "[slack]\nsigning_secret = \"{SLACK_SECRET}\"\napp_id = \"A_OURS\"\nbot_id = \"B_OURS\"\n\n\
         [links.slack]\nkind = \"slack\"\nbot_token = \"xoxb-test\"\nchannel = \"C1\"\napi_url = \"{}\"\n\n\
         [links.discord]\nkind = \"discord\"\nwebhook_url = \"{}\"\n\n{}{}{}",
        slack.api_url(),
        discord.webhook_url("tok"),
        webhook("audit", &audit.url("/audit"), ""),
        inbound_hook("tool", &tool.url("/tool"), SECRET),
        room("general", &["slack", "discord", "audit", "tool"]),
    );
    slack.set_user("U42", "Zed");
    let (_redis, bridge, mut con) = Bridge::on_new_redis(&rest).await;

    let (status, reply) = bridge
        .slack(
            SLACK_SECRET,
            &json!({"type": "url_verification", "challenge": "ch-42"}),
            None,
        )
        .await;
    assert_eq!((status, reply), (200, json!({"challenge": "ch-42"})));

    let envelope = |id: &str, event: Value| {
        json!({"type": "event_callback", "team_id": "T1", "api_app_id": "A_OURS",
               "event_id": id, "event_time": now(), "event": event})
    };
    let hello = envelope(
        "Ev_hello",
        json!({"type": "message", "channel": "C1", "user": "U42", "text": "hi &lt;all&gt;",
               "ts": "1700000001.000100"}),
    );
    let (status, _) = bridge.slack(SLACK_SECRET, &hello, None).await;
    assert_eq!(status, 200);
    let (status, _) = bridge.slack(SLACK_SECRET, &hello, Some(1)).await;
    assert_eq!(status, 200, "a retry is acknowledged");
    let ignored = [
        envelope(
            "Ev_echo",
            json!({"type": "message", "subtype": "bot_message", "channel": "C1",
                   "bot_id": "B_OURS", "text": "from us", "ts": "1700000002.0001"}),
        ),
        envelope(
            "Ev_echo_app",
            json!({"type": "message", "channel": "C1", "user": "U42", "app_id": "A_OURS",
                   "text": "from us too", "ts": "1700000002.0002"}),
        ),
        envelope(
            "Ev_edit",
            json!({"type": "message", "subtype": "message_changed", "channel": "C1",
                   "message": {"text": "edited"}, "ts": "1700000002.0003"}),
        ),
        envelope(
            "Ev_other_channel",
            json!({"type": "message", "channel": "C999", "user": "U42", "text": "elsewhere",
                   "ts": "1700000002.0004"}),
        ),
    ];
    for event in &ignored {
        let (status, _) = bridge.slack(SLACK_SECRET, event, None).await;
        assert_eq!(status, 200, "acknowledged: {event}");
    }
    let joined = envelope(
        "Ev_join",
        json!({"type": "member_joined_channel", "channel": "C1", "user": "U42"}),
    );
    assert_eq!(bridge.slack(SLACK_SECRET, &joined, None).await.0, 200);

    let stored = history(&mut con, "chat:room:general:history").await;
    assert_eq!(
        stored.len(),
        1,
        "written once, echoes and edits not at all: {stored:?}"
    );
    let event: Value = serde_json::from_str(&stored[0]).unwrap();
    assert_eq!(event["user_id"], "U42");
    assert_eq!(event["username"], "Zed", "the display name from users.info");
    assert_eq!(slack.user_lookups(), 1, "names are cached");
    assert_eq!(event["content"], "hi <all>");
    assert_eq!(event["origin"], "slack");
    assert_eq!(event["external_id"], "1700000001.000100");
    let members: Vec<String> = con.smembers("chat:room:general:members").await.unwrap();
    assert_eq!(members, ["U42"]);

    // A generic hook's message goes to Slack too.
    let from_tool = message("general", json!(7), "tooly", "from the tool");
    assert_eq!(
        bridge.hook("tool", SECRET, "msg_t1", &from_tool).await.0,
        202
    );

    eventually("the relays", WAIT, async || {
        let discord = discord.accepted();
        (discord.len() >= 3).then_some(())
    })
    .await;
    let seen: Vec<String> = discord
        .accepted()
        .iter()
        .map(|p| p.content().to_owned())
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].contains("hi <all>"), "{seen:?}");
    assert!(seen[1].contains("joined"), "{seen:?}");
    assert!(seen[2].contains("from the tool"), "{seen:?}");
    let audit_got = audit.wait_for(3, WAIT).await;
    assert_eq!(audit_got.len(), 3);
    eventually("the tool's message on Slack", WAIT, async || {
        let posts = slack.posts();
        (!posts.is_empty()).then_some(posts)
    })
    .await;
    for link in ["slack", "discord", "audit", "tool"] {
        common::outbox::wait_drained(&mut con, link).await;
    }
    let posts: Vec<String> = slack.posts().iter().map(|p| p.text().to_owned()).collect();
    assert_eq!(posts.len(), 1, "Slack got its own events back: {posts:?}");
    assert!(posts[0].contains("from the tool"));
    let tool_got = tool.contents();
    assert_eq!(
        tool_got,
        ["hi <all>", "Zed joined the room"],
        "the tool gets Slack's message and join only"
    );
    let left = envelope(
        "Ev_leave",
        json!({"type": "member_left_channel", "channel": "C1", "user": "U42"}),
    );
    assert_eq!(bridge.slack(SLACK_SECRET, &left, None).await.0, 200);
    let members: Vec<String> = con.smembers("chat:room:general:members").await.unwrap();
    assert!(members.is_empty(), "{members:?}");
    let got = tool.wait_for(3, WAIT).await;
    assert_eq!(
        got[2].json()["data"]["event"]["content"],
        "Zed left the room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_links_both_ways_exchange_100_messages_without_echo_or_duplicates() {
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    let rest = format!(
        "{}{}{}",
        inbound_hook("a", &a.url("/a"), SECRET),
        inbound_hook("b", &b.url("/b"), OTHER_SECRET),
        room("general", &["a", "b"]),
    );
    let (_redis, bridge, mut con) = Bridge::on_new_redis(&rest).await;
    let mut requests: [Vec<(String, i64, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
    for n in 0..100 {
        let link = ["a", "b"][n % 2];
        let body = message("general", json!(n), link, &format!("{link}-{n}"));
        requests[n % 2].push((format!("msg_{link}_{n}"), now(), body));
    }
    let signatures = [
        reference_signatures(SECRET, &requests[0]),
        reference_signatures(OTHER_SECRET, &requests[1]),
    ];
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for n in 0..100 {
        let (side, link) = (n % 2, ["a", "b"][n % 2]);
        let (id, ts, body) = &requests[side][n / 2];
        let signature = &signatures[side][n / 2];
        let post = || bridge.hook_with(link, id, *ts, signature, "application/json", body);
        assert_eq!(post().await.0, 202);
        if n % 10 == 0 {
            // A sender's retry now and then: never written twice.
            assert_eq!(post().await.0, 200);
        }
        sent[side].push(format!("{link}-{n}"));
    }
    let [from_a, from_b] = sent;
    b.wait_for(50, WAIT).await;
    a.wait_for(50, WAIT).await;
    common::outbox::wait_drained(&mut con, "a").await;
    common::outbox::wait_drained(&mut con, "b").await;
    assert_eq!(a.contents(), from_b, "a gets b's messages, once, in order");
    assert_eq!(b.contents(), from_a, "b gets a's messages, once, in order");
    assert_eq!(
        history(&mut con, "chat:room:general:history").await.len(),
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_what_the_inbound_routes_accept() {
    let redis = RedisServer::start();
    let tool = Receiver::start().await;
    let links = inbound_hook("tool", &tool.url("/tool"), SECRET);
    let bridge = Bridge::start(&redis, &format!("{links}{}", room("general", &["tool"]))).await;
    let body = message("random", json!(1), "a", "hello random");
    assert_eq!(bridge.hook("tool", SECRET, "msg_r1", &body).await.0, 404);

    // The link now also mirrors `random`, under a new secret.
    let reloaded = format!(
        "{}{}{}",
        inbound_hook("tool", &tool.url("/tool"), OTHER_SECRET),
        room("general", &["tool"]),
        room("random", &["tool"]),
    );
    std::fs::write(
        bridge.daemon.config_path(),
        config(&redis, bridge.port, &reloaded),
    )
    .unwrap();
    bridge.daemon.signal(Signal::SIGHUP);
    tokio::task::block_in_place(|| {
        bridge
            .daemon
            .wait_for_log("configuration reloaded", 1, WAIT)
    });
    assert_eq!(
        bridge.hook("tool", SECRET, "msg_r2", &body).await.0,
        401,
        "old secret"
    );
    assert_eq!(
        bridge.hook("tool", OTHER_SECRET, "msg_r3", &body).await.0,
        202
    );
    let mut con = redis.connection().await;
    assert_eq!(history(&mut con, "chat:room:random:history").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_routes_answer_503_and_the_sender_s_retry_is_written_later() {
    let mut redis = RedisServer::start();
    redis.stop();
    let tool = Receiver::start().await;
    let port = free_port();
    let rest = format!(
        "{}{}",
        inbound_hook("tool", &tool.url("/tool"), SECRET),
        room("general", &["tool"])
    );
    // The server's port through the environment (`CHATBRIDGE__HTTP__LISTEN`), a free one.
    let toml = format!("[redis]\nurl = \"{}\"\n\n{rest}", redis.url());
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_with_env(&toml, &[("CHATBRIDGE__HTTP__LISTEN", &listen)]);
    tokio::task::block_in_place(|| daemon.wait_for_log("http server listening", 1, WAIT));
    let bridge = Bridge {
        daemon,
        port,
        http: reqwest::Client::new(),
    };
    let body = message("general", json!(1), "a", "while redis was down");
    let (status, reply) = bridge.hook("tool", SECRET, "msg_down", &body).await;
    assert_eq!(status, 503, "{reply}");
    redis.start_again();
    eventually("the retry accepted", WAIT, async || {
        let (status, _) = bridge.hook("tool", SECRET, "msg_down", &body).await;
        (status == 202).then_some(())
    })
    .await;
    let mut con = redis.connection().await;
    assert_eq!(
        history(&mut con, "chat:room:general:history").await.len(),
        1
    );
}

#[tokio::test]
async fn the_write_keeps_the_bridged_set_bounded_and_remembers_ids_for_a_while() {
    use chatbridge::chat::model::{ChatEvent, Message, Scope, Timestamp, UserId};
    use chatbridge::inbound::{Write, Writer, Written};
    let redis = RedisServer::start();
    let manager = redis::aio::ConnectionManager::new(redis.client())
        .await
        .unwrap();
    let writer = Writer::with_bridged_cap(manager, 3);
    let mut payloads = Vec::new();
    for n in 0..5 {
        let mut extra = serde_json::Map::new();
        extra.insert("origin".into(), json!("tool"));
        let message = Message {
            id: format!("m{n}"),
            user_id: UserId::Number(1.into()),
            username: "a".into(),
            content: format!("n{n}"),
            room: Some("general".into()),
            timestamp: Timestamp::now(),
            extra,
        };
        let event = ChatEvent::Message(message);
        payloads.push(chatbridge::chat::pyjson::to_string(&event));
        let write = Write {
            scope: Scope::Room("general".into()),
            event,
            dedup_key: format!("chatbridge:inbound:hook:tool:msg_{n}"),
            dedup_secs: 60,
            history_limit: 2,
        };
        assert_eq!(
            writer.write(&write).await.unwrap(),
            Written::New(format!("m{n}"))
        );
        assert_eq!(
            writer.write(&write).await.unwrap(),
            Written::Duplicate(format!("m{n}"))
        );
    }
    let mut con = redis.connection().await;
    let bridged: Vec<String> = con
        .zrange("chatbridge:bridged:chat:room:general", 0, -1)
        .await
        .unwrap();
    let newest: Vec<String> = payloads[2..]
        .iter()
        .map(|p| chatbridge::chat::model::content_id("chat:room:general", p))
        .collect();
    assert_eq!(bridged, newest, "the newest 3, by time");
    let kept = history(&mut con, "chat:room:general:history").await;
    assert_eq!(
        kept,
        [payloads[4].clone(), payloads[3].clone()],
        "LTRIM 0 1"
    );
    let ttl: i64 = con.ttl("chatbridge:inbound:hook:tool:msg_0").await.unwrap();
    assert!((1..=60).contains(&ttl), "de-dup marks expire: {ttl}");
}
