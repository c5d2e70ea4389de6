//! The fake Discord Gateway driven by `twilight-gateway`, the client the daemon uses: so that a
//! daemon test failing against the fake points at the daemon, not at the fake.

mod common;

use std::time::Duration;

use common::fake_gateway::{Author, BOT_USER_ID, FakeGateway};
use futures_util::StreamExt;
use serde_json::Value;
use twilight_gateway::{ConfigBuilder, EventTypeFlags, Intents, Message, Shard, ShardId};

const TOKEN: &str = "bot-token-selftest";
/// twilight's identify queue waits 5 s between IDENTIFYs and backs off on op 9.
const WAIT: Duration = Duration::from_secs(20);

fn shard(fake: &FakeGateway) -> Shard {
    let config = ConfigBuilder::new(
        TOKEN.into(),
        Intents::GUILDS | Intents::GUILD_MESSAGES | Intents::MESSAGE_CONTENT,
    )
    .proxy_url(fake.gateway_url())
    .build();
    Shard::with_config(ShardId::ONE, config)
}

/// Reads the shard until a dispatch of type `event` arrives; returns it and the dispatches seen
/// before it (close frames are skipped: twilight reconnects by itself). Every frame must parse as
/// a typed twilight event, as the daemon will parse it.
async fn until(shard: &mut Shard, event: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    let read = async {
        while let Some(message) = shard.next().await {
            match message.expect("gateway message") {
                Message::Text(text) => {
                    // Every payload must also be a valid typed event for twilight-model.
                    if let Err(error) = twilight_gateway::parse(text.clone(), EventTypeFlags::all())
                    {
                        panic!("twilight cannot parse {text}: {error:?}");
                    }
                    let payload: Value = serde_json::from_str(&text).expect("JSON payload");
                    if payload["op"] != 0 {
                        continue;
                    }
                    if payload["t"] == event {
                        return payload;
                    }
                    before.push(payload);
                }
                Message::Close(_) => {}
            }
        }
        panic!("shard ended before {event}");
    };
    let payload = tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {event}"));
    (payload, before)
}

fn alice() -> Author {
    Author::user("300000000000000001", "alice", Some("Alice"))
}

#[tokio::test]
async fn ready_then_a_posted_message_arrives_in_full() {
    let fake = FakeGateway::start(TOKEN, 1000).await;
    fake.add_channel("100000000000000001", "200000000000000001");
    let mut shard = shard(&fake);

    let (ready, _) = until(&mut shard, "READY").await;
    assert_eq!(ready["s"], 1);
    assert_eq!(ready["d"]["user"]["id"], BOT_USER_ID);
    assert_eq!(ready["d"]["session_id"], "sess-1");
    assert_eq!(ready["d"]["resume_gateway_url"], fake.gateway_url());
    let (guild, _) = until(&mut shard, "GUILD_CREATE").await;
    assert_eq!(guild["d"]["channels"][0]["id"], "200000000000000001");

    let first = fake.post("200000000000000001", &alice(), "hello from Discord");
    let webhook = fake.post_webhook(
        "200000000000000001",
        "400000000000000001",
        "bridged",
        "echo",
    );
    assert!(webhook.parse::<u64>().unwrap() > first.parse::<u64>().unwrap());
    let (message, _) = until(&mut shard, "MESSAGE_CREATE").await;
    let d = &message["d"];
    assert_eq!(d["id"], first.as_str());
    assert_eq!(d["channel_id"], "200000000000000001");
    assert_eq!(d["guild_id"], "100000000000000001");
    assert_eq!(d["content"], "hello from Discord");
    assert_eq!(d["author"]["username"], "alice");
    assert_eq!(d["author"]["global_name"], "Alice");
    assert!(d["author"].get("bot").is_none() && d.get("webhook_id").is_none());
    assert!(d["member"]["roles"].is_array());
    let (echo, _) = until(&mut shard, "MESSAGE_CREATE").await;
    assert_eq!(echo["d"]["webhook_id"], "400000000000000001");
    assert_eq!(echo["d"]["author"]["bot"], true);
    assert_eq!(echo["s"].as_u64(), message["s"].as_u64().map(|s| s + 1));

    // twilight heartbeats on the 1 s interval with the last sequence (while it is polled).
    let heartbeat = format!("heartbeat 1 seq={}", echo["s"]);
    tokio::select! {
        _ = async { while shard.next().await.is_some() {} } => panic!("shard ended"),
        () = fake.wait_log(&heartbeat, 1, WAIT) => {}
    }
    let log = fake.log();
    assert_eq!(
        log[..3],
        [
            "connect 1",
            "identify 1 intents=33281",
            "ready 1 session=sess-1"
        ]
    );
}

#[tokio::test]
async fn a_dropped_connection_resumes_and_replays_what_was_posted_meanwhile() {
    let fake = FakeGateway::start(TOKEN, 1000).await;
    fake.add_channel("100000000000000001", "200000000000000001");
    let mut shard = shard(&fake);
    until(&mut shard, "GUILD_CREATE").await;
    let live = fake.post("200000000000000001", &alice(), "before the drop");
    let (before, _) = until(&mut shard, "MESSAGE_CREATE").await;
    assert_eq!(before["d"]["id"], live.as_str());

    fake.drop_connection();
    let missed = fake.post("200000000000000001", &alice(), "while it was down");
    let (resumed, replayed) = until(&mut shard, "RESUMED").await;
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0]["t"], "MESSAGE_CREATE");
    assert_eq!(replayed[0]["d"]["id"], missed.as_str());
    assert_eq!(replayed[0]["s"], 4);
    assert_eq!(resumed["s"], 5);
    fake.wait_log("resumed 2 replayed=1", 1, WAIT).await;
    assert_eq!(
        fake.count("resume 2 session=sess-1 seq=3"),
        1,
        "{:?}",
        fake.log()
    );
    assert_eq!(fake.count("identify "), 1);

    // And the resumed connection is live again.
    let after = fake.post("200000000000000001", &alice(), "after the resume");
    let (message, _) = until(&mut shard, "MESSAGE_CREATE").await;
    assert_eq!(message["d"]["id"], after.as_str());
}

#[tokio::test]
async fn an_invalidated_session_is_identified_anew_and_misses_what_only_rest_has() {
    let fake = FakeGateway::start(TOKEN, 1000).await;
    fake.add_channel("100000000000000001", "200000000000000001");
    let mut shard = shard(&fake);
    until(&mut shard, "GUILD_CREATE").await;
    let first = fake.post("200000000000000001", &alice(), "seen live");
    until(&mut shard, "MESSAGE_CREATE").await;

    fake.invalidate_session();
    let lost = fake.post("200000000000000001", &alice(), "lost to the gateway");
    let (ready, seen) = until(&mut shard, "READY").await;
    assert!(seen.is_empty(), "nothing dispatched in between: {seen:?}");
    assert_eq!(ready["s"], 1);
    assert_eq!(fake.count("invalid 2"), 1, "{:?}", fake.log());
    assert_eq!(fake.count("identify 3 "), 1, "{:?}", fake.log());
    let after = fake.post("200000000000000001", &alice(), "after re-identify");
    let (message, skipped) = until(&mut shard, "MESSAGE_CREATE").await;
    assert_eq!(message["d"]["id"], after.as_str());
    assert!(skipped.iter().all(|p| p["t"] == "GUILD_CREATE"));

    // REST has all three, newest first, for the requests the bridge makes.
    let rest = reqwest::Client::new();
    let url = format!(
        "{}/v10/channels/200000000000000001/messages",
        fake.api_base()
    );
    let get = |query: String| {
        rest.get(format!("{url}?{query}"))
            .header("Authorization", format!("Bot {TOKEN}"))
            .header("User-Agent", "DiscordBot (https://example.invalid, 0.1)")
            .send()
    };
    let page: Vec<Value> = get(format!("after={first}&limit=100"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [after.as_str(), lost.as_str()]);
    assert_eq!(page[1]["content"], "lost to the gateway");
    let oldest: Vec<Value> = get("after=0&limit=1".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oldest[0]["id"], first.as_str());
    let no_auth = rest.get(&url).send().await.unwrap();
    assert_eq!(no_auth.status(), 401);

    // Three more fit in the 1 s bucket of 5; the sixth is a 429 and a violation.
    for _ in 0..3 {
        let ok = get("limit=5".into()).await.unwrap();
        assert_eq!(ok.status(), 200);
    }
    let limited = get("limit=5".into()).await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert!(body["retry_after"].as_f64().unwrap() > 0.0);
    assert_eq!(fake.rate_limit_violations(), 1);
    assert_eq!(
        fake.rest_requests()[0],
        format!("GET /api/v10/channels/200000000000000001/messages?after={first}&limit=100")
    );
}
