//! Discord inbound through the Gateway, end to end: the real binary (twilight-gateway as the
//! client), a real redis-server, a fake Discord Gateway v10 + message-history REST
//! (`common::fake_gateway`) and a fake Discord webhook for the link's outbound side. Outcomes
//! are checked in Redis (what a seed client sees live and in history: in order, once each),
//! in what the other links received, and in the fake's log (IDENTIFY, RESUME, REST calls).

mod common;

use std::time::Duration;

use common::config::general_room;
use common::daemon::{Daemon, wait_ready};
use common::fake_discord::FakeDiscord;
use common::fake_gateway::{
    Author, FakeGateway, INTENT_GUILD_MEMBERS, INTENT_GUILD_MESSAGES, INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
};
use common::receiver::{Receiver, contents_of};
use common::redis::{RedisServer, free_port};
use common::seed;
use common::wait::eventually;
use redis::AsyncCommands;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const BOT_TOKEN: &str = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.sekrit-bot-token";
const GUILD: &str = "800000000000000001";
const CHANNEL: &str = "800000000000000002";
/// The id in `FakeDiscord::webhook_url`: posts with it are our own.
const OUR_WEBHOOK: &str = "1234567890";

/// One Discord link reading `CHANNEL` into `general` (plus `extra` keys on it), and `rest`.
fn config(
    redis: &RedisServer,
    gateway: &FakeGateway,
    discord: &FakeDiscord,
    extra: &str,
    rest: &str,
) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[delivery]\nlease_secs = 2\n\n\
         [links.discord]\nkind = \"discord\"\nwebhook_url = \"{}\"\n{}{extra}\n{rest}",
        redis.url(),
        discord.webhook_url("webhook-token"),
        gateway.link_keys(BOT_TOKEN, CHANNEL),
    )
}

async fn fakes() -> (RedisServer, FakeGateway, FakeDiscord) {
    let redis = RedisServer::start();
    let gateway = FakeGateway::start(BOT_TOKEN, 1000).await;
    gateway.add_channel(GUILD, CHANNEL);
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    (redis, gateway, discord)
}

/// `general` on the Discord link and a webhook link `audit` to `audit`, and `[http]` on
/// `http_port`.
fn audit_room_and_http(audit: &Receiver, http_port: u16) -> String {
    format!(
        "{}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        general_room("discord", Some(&audit.url("/audit")))
    )
}

/// What [`one_room`] starts: the fakes, the daemon, a connection to its Redis.
type OneRoom = (
    RedisServer,
    FakeGateway,
    FakeDiscord,
    Daemon,
    redis::aio::MultiplexedConnection,
);

/// `general` mirrored to the Discord link alone.
const ONE_ROOM: &str = "[[rooms]]\nname = \"general\"\nlinks = [\"discord\"]\n";

/// The fakes and a daemon whose Discord link (with `extra` keys) is the only link of
/// `general`, once its first session is ready; a connection to its Redis.
async fn one_room(extra: &str) -> OneRoom {
    let (redis, gateway, discord) = fakes().await;
    let daemon = Daemon::start(&config(&redis, &gateway, &discord, extra, ONE_ROOM));
    wait_ready(&daemon);
    let con = redis.connection().await;
    gateway.wait_log("ready 1", 1, WAIT).await;
    (redis, gateway, discord, daemon, con)
}

/// [`one_room`] once the message `first`, posted in `CHANNEL`, is in the room's history.
async fn one_room_relaying(extra: &str, first: &str) -> OneRoom {
    let (redis, gateway, discord, daemon, mut con) = one_room(extra).await;
    gateway.post(CHANNEL, &ann(), first);
    wait_history(&mut con, 1).await;
    (redis, gateway, discord, daemon, con)
}

/// Asserts the first session IDENTIFYed with exactly `intents`.
fn assert_identified(gateway: &FakeGateway, intents: u64) {
    assert!(
        gateway
            .log()
            .contains(&format!("identify 1 intents={intents}")),
        "{:?}",
        gateway.log()
    );
}

/// The room's history as a seed client's `get_history` reads it, oldest first.
async fn history(con: &mut redis::aio::MultiplexedConnection) -> Vec<Value> {
    common::history::events(con, "general").await
}

fn contents(history: &[Value]) -> Vec<String> {
    common::history::contents_of(history)
}

/// Waits until the history holds `n` events, then returns their contents.
async fn wait_history(con: &mut redis::aio::MultiplexedConnection, n: usize) -> Vec<String> {
    common::history::wait_contents(con, "general", n, WAIT).await
}

/// The Gateway's line of `chatbridge status`, after `inbound discord-gateway:…: `.
async fn status_line(daemon: &Daemon) -> String {
    let (code, out, err) = common::daemon::cli_async(daemon.config_path(), &["status"]).await;
    assert_eq!(code, 0, "{err}");
    out.lines()
        .find_map(|l| l.strip_prefix("inbound discord-gateway:"))
        .and_then(|l| l.split_once(": "))
        .map(|(_, state)| state.to_owned())
        .unwrap_or_else(|| panic!("no Gateway line in the status:\n{out}"))
}

/// A message as the fake Discord's REST API has it.
async fn discord_message(gateway: &FakeGateway, id: &str) -> Value {
    let after: u64 = id.parse::<u64>().expect("snowflake") - 1;
    let url = format!(
        "{}/v10/channels/{CHANNEL}/messages?after={after}&limit=1",
        gateway.api_base()
    );
    let page: Value = reqwest::Client::new()
        .get(url)
        .header("authorization", format!("Bot {BOT_TOKEN}"))
        .header("user-agent", "DiscordBot (test, 1)")
        .send()
        .await
        .expect("REST")
        .json()
        .await
        .expect("JSON");
    page[0].clone()
}

async fn metrics(http_port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

fn ann() -> Author {
    Author::user("700000000000000011", "ann", Some("Ann A"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_message_reaches_a_seed_client_and_the_other_links_once_and_our_posts_are_not_echoed()
 {
    let (redis, gateway, discord) = fakes().await;
    let audit = Receiver::start().await;
    let http_port = free_port();
    let rest = audit_room_and_http(&audit, http_port);
    // Sent before the bridge ever ran: a channel read for the first time starts from now.
    gateway.post(CHANNEL, &ann(), "before the bridge existed");
    let daemon = Daemon::start(&config(&redis, &gateway, &discord, "", &rest));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let mut live = redis.subscribe("chat:room:general").await;

    gateway.wait_log("ready 1", 1, WAIT).await;
    let intents = GUILDS_MESSAGES_CONTENT;
    assert_identified(&gateway, intents);
    let id = gateway.post(CHANNEL, &ann(), "hello from <#1> discord");

    // Live, as a seed client's subscriber reads it.
    let published: String = RedisServer::next_payload(&mut live, WAIT).await;
    let event: Value = serde_json::from_str(&published).expect("JSON");
    assert_eq!(event["type"], "message");
    assert_eq!(event["user_id"], "700000000000000011");
    assert_eq!(event["username"], "Ann A");
    assert_eq!(event["content"], "hello from <#1> discord");
    assert_eq!(event["room"], "general");
    assert_eq!(event["origin"], "discord");
    assert_eq!(event["external_id"], id.as_str());
    // The time it was sent on Discord, in the seed's form (naive UTC, microseconds).
    let sent = discord_message(&gateway, &id).await["timestamp"]
        .as_str()
        .expect("timestamp")
        .trim_end_matches("+00:00")
        .to_owned();
    assert_eq!(event["timestamp"], sent.as_str());
    // Its id is remembered against a second write for 24 h.
    let ttl: i64 = con
        .ttl(format!("chatbridge:inbound:discord:{id}"))
        .await
        .unwrap();
    assert!((86_000..=86_400).contains(&ttl), "{ttl}");
    // And in history: the same bytes.
    let stored: Vec<String> = con
        .lrange("chat:room:general:history", 0, -1)
        .await
        .unwrap();
    assert_eq!(stored, vec![published]);
    // The other link gets it once; Discord, where it came from, does not.
    let received = audit.wait_for(1, WAIT).await;
    assert_eq!(
        received[0].json()["data"]["event"]["content"],
        "hello from <#1> discord"
    );

    // A chat user's message goes out through our webhook; Discord sends our post back over the
    // Gateway with our webhook_id: not written again. Foreign bots and webhooks are not mirrored.
    seed::send_message(&mut con, "general", json!(1001), "bob", "from the chat").await;
    eventually("the chat message posted to Discord", WAIT, async || {
        (!discord.accepted().is_empty()).then_some(())
    })
    .await;
    let posted = discord.accepted()[0].clone();
    gateway.post_webhook(
        CHANNEL,
        OUR_WEBHOOK,
        posted.username().unwrap_or("bob"),
        posted.content(),
    );
    gateway.post_webhook(CHANNEL, "555", "other-hook", "a foreign webhook");
    let bot = Author {
        bot: true,
        ..Author::user("700000000000000099", "somebot", None)
    };
    gateway.post(CHANNEL, &bot, "a bot speaks");
    // Discord's own system message (type 7: a member joined) is not a chat message.
    gateway.dispatch(
        "MESSAGE_CREATE",
        json!({"id": "900000000000000777", "channel_id": CHANNEL, "guild_id": GUILD, "type": 7,
               "content": "", "author": {"id": "700000000000000033", "username": "newbie"},
               "timestamp": "2026-11-28T10:00:00.000000+00:00"}),
    );
    gateway.post(CHANNEL, &ann(), "last");
    let all = wait_history(&mut con, 3).await;
    assert_eq!(all, ["hello from <#1> discord", "from the chat", "last"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        history(&mut con).await.len(),
        3,
        "an echo or a bot post was written"
    );
    assert_eq!(
        audit.wait_for(3, WAIT).await.len(),
        3,
        "the audit link got something twice"
    );
    assert_eq!(
        discord.accepted().len(),
        1,
        "a Discord message was sent back to Discord"
    );
    // A state left behind by another bot token (since replaced) is not shown.
    let () = con
        .hset(
            "chatbridge:inbound:state",
            "discord-gateway:0000000000000000",
            "connected since 2020-01-01T00:00:00Z; links old",
        )
        .await
        .unwrap();
    let status = status_line(&daemon).await;
    assert!(
        status.starts_with("connected since ") && status.ends_with("; links discord"),
        "{status}"
    );
    let metrics = metrics(http_port).await;
    for line in [
        "chatbridge_inbound_connected{route=\"discord_gateway\"} 1\n",
        "chatbridge_inbound_requests_total{route=\"discord_gateway\",result=\"accepted\"} 2\n",
        "chatbridge_inbound_requests_total{route=\"discord_gateway\",result=\"echo\"} 1\n",
        "chatbridge_inbound_requests_total{route=\"discord_gateway\",result=\"ignored\"} 3\n",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    // Heartbeats on HELLO's interval (1 s here), and the session never had to be resumed.
    gateway.wait_log("heartbeat 1", 2, WAIT).await;
    assert_eq!(gateway.count("connect"), 1, "{:?}", gateway.log());
    assert!(
        !daemon.log().contains(BOT_TOKEN),
        "the bot token was logged"
    );
}

const GUILDS_MESSAGES_CONTENT: u64 = INTENT_GUILDS | INTENT_GUILD_MESSAGES | INTENT_MESSAGE_CONTENT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_and_loses_nothing_and_members_become_joins_and_leaves() {
    let (redis, gateway, discord) = fakes().await;
    let rest = ONE_ROOM;
    let daemon = Daemon::start(&config(
        &redis,
        &gateway,
        &discord,
        "inbound_joins = true\n",
        rest,
    ));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let mut live = redis.subscribe("chat:room:general").await;
    gateway.wait_log("ready 1", 1, WAIT).await;
    let intents = GUILDS_MESSAGES_CONTENT | INTENT_GUILD_MEMBERS;
    assert_identified(&gateway, intents);
    // A dispatch that cannot be read is counted and skipped; the next one is written.
    gateway.dispatch("MESSAGE_CREATE", json!({"id": 12, "channel_id": CHANNEL}));
    gateway.post(CHANNEL, &ann(), "one");
    wait_history(&mut con, 1).await;
    assert!(
        daemon
            .log()
            .contains("an event that could not be read, skipped"),
        "{}",
        daemon.log()
    );

    // Discord drops the connection; what is sent meanwhile is replayed on RESUME.
    gateway.drop_connection();
    gateway.post(CHANNEL, &ann(), "two");
    gateway.post(CHANNEL, &ann(), "three");
    let bea = json!({"id": "700000000000000022", "username": "bea", "global_name": "Bea",
                     "discriminator": "0", "avatar": null});
    gateway.dispatch(
        "GUILD_MEMBER_ADD",
        json!({"guild_id": GUILD, "user": bea, "roles": [], "joined_at": "2026-11-28T10:00:00+00:00",
               "deaf": false, "mute": false, "flags": 0}),
    );
    gateway.wait_log("resumed", 1, WAIT).await;
    gateway.post(CHANNEL, &ann(), "four");
    eventually("status says resumed", WAIT, async || {
        status_line(&daemon)
            .await
            .starts_with("connected (resumed) since ")
            .then_some(())
    })
    .await;
    let all = wait_history(&mut con, 4).await;
    assert_eq!(all, ["one", "two", "three", "four"]);
    let members: Vec<String> = con.smembers("chat:room:general:members").await.unwrap();
    assert_eq!(members, ["700000000000000022"]);

    gateway.dispatch(
        "GUILD_MEMBER_REMOVE",
        json!({"guild_id": GUILD, "user": bea}),
    );
    // A seed client saw one join and one leave line, from Discord.
    let mut lines = Vec::new();
    while lines.len() < 2 {
        let payload: String = RedisServer::next_payload(&mut live, WAIT).await;
        let event: Value = serde_json::from_str(&payload).expect("JSON");
        if event["type"] == "system" {
            assert_eq!(event["origin"], "discord");
            lines.push(event["content"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(lines, ["Bea joined the room", "Bea left the room"]);
    eventually("Bea left", WAIT, async || {
        let mut con = con.clone();
        let members: Vec<String> = con.smembers("chat:room:general:members").await.unwrap();
        members.is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gateway.count("identify"),
        1,
        "re-identified instead of resuming"
    );
    assert_eq!(gateway.count("resume "), 1, "{:?}", gateway.log());
    assert!(
        gateway.rest_requests().is_empty(),
        "a resumed session needs no backfill: {:?}",
        gateway.rest_requests()
    );
    assert_eq!(contents(&history(&mut con).await).len(), 4, "written twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_invalid_session_what_was_sent_meanwhile_is_fetched_in_order_within_rate_limits() {
    let (_redis, gateway, _discord, _daemon, mut con) =
        one_room_relaying("inbound_bots = true\n", "live 0").await;

    // The session is lost: RESUME is refused, the bridge IDENTIFYs again, and the 150 messages
    // sent meanwhile (two pages) are only in the channel's history. The first fetch is 429'd.
    gateway.invalidate_session();
    let missed: Vec<String> = (1..=150).map(|i| format!("missed {i}")).collect();
    for text in &missed {
        gateway.post(CHANNEL, &ann(), text);
    }
    gateway.force_429(1, 0.5);
    gateway.wait_log("ready", 2, WAIT).await;
    gateway.post(CHANNEL, &ann(), "live 1");
    // With inbound_bots, other bots and webhooks are mirrored; our own webhook's posts never.
    gateway.post_webhook(CHANNEL, OUR_WEBHOOK, "bob", "ours, relayed");
    gateway.post_webhook(CHANNEL, "555", "ci", "build passed");
    let all = wait_history(&mut con, 153).await;
    let mut expected = vec!["live 0".to_owned()];
    expected.extend(missed);
    expected.extend(["live 1".to_owned(), "build passed".to_owned()]);
    assert_eq!(all, expected);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(history(&mut con).await.len(), 153, "written twice");
    assert_eq!(gateway.count("identify"), 2);
    let requests = gateway.rest_requests();
    assert!(requests.len() >= 3, "one 429 and two pages: {requests:?}");
    assert!(
        requests.iter().all(|r| r.contains("limit=100")),
        "{requests:?}"
    );
    assert_eq!(
        gateway.rate_limit_violations(),
        0,
        "a request came too early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_holds_the_gateway_and_the_next_resumes_its_session_after_a_sigkill() {
    let (redis, gateway, discord) = fakes().await;
    let rest = ONE_ROOM;
    let toml = config(&redis, &gateway, &discord, "", rest);
    let first = Daemon::start(&toml);
    wait_ready(&first);
    gateway.wait_log("ready 1", 1, WAIT).await;
    let second = Daemon::start(&toml);
    wait_ready(&second);
    let mut con = redis.connection().await;
    gateway.post(CHANNEL, &ann(), "one");
    wait_history(&mut con, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        gateway.count("connect"),
        1,
        "the second process connected too"
    );

    // The holder dies; the other takes over and RESUMEs the session the holder saved, so
    // Discord replays what was sent in between: no new IDENTIFY, no REST catch-up.
    first.crash();
    gateway.post(CHANNEL, &ann(), "two");
    gateway.post(CHANNEL, &ann(), "three");
    gateway.wait_log("resumed", 1, WAIT).await;
    gateway.post(CHANNEL, &ann(), "four");
    let all = wait_history(&mut con, 4).await;
    assert_eq!(all, ["one", "two", "three", "four"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(history(&mut con).await.len(), 4, "written twice");
    assert_eq!(gateway.count("identify"), 1, "{:?}", gateway.log());
    assert!(
        gateway.rest_requests().is_empty(),
        "{:?}",
        gateway.rest_requests()
    );

    // A session Discord no longer knows: the next holder identifies and catches up over REST.
    second.crash();
    gateway.invalidate_session();
    gateway.post(CHANNEL, &ann(), "five");
    let third = Daemon::start(&toml);
    wait_ready(&third);
    gateway.wait_log("ready", 2, WAIT).await;
    assert_eq!(
        wait_history(&mut con, 5).await,
        ["one", "two", "three", "four", "five"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_bot_token_is_reported_without_the_token_and_the_rest_keeps_running() {
    let (redis, gateway, discord) = fakes().await;
    let audit = Receiver::start().await;
    let http_port = free_port();
    let rest = audit_room_and_http(&audit, http_port);
    let toml = config(&redis, &gateway, &discord, "", &rest).replace(BOT_TOKEN, "Nz.wrong.token");
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    daemon.wait_for_log("check the link's bot_token", 1, WAIT);
    // `chatbridge status` shows it at a glance.
    let status = status_line(&daemon).await;
    assert!(
        status.starts_with(
            "CLOSED: authentication failed: check the link's bot_token (close code 4004) since "
        ),
        "{status}"
    );
    // A new session is tried after 2.5–5 s (the operator may have fixed the token meanwhile).
    gateway.wait_log("refused", 2, WAIT).await;
    let metrics = metrics(http_port).await;
    let line = "chatbridge_inbound_connected{route=\"discord_gateway\"} 0\n";
    assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    assert!(
        gateway.log().iter().any(|l| l.contains("code=4004")),
        "{:?}",
        gateway.log()
    );
    assert!(
        !daemon.log().contains("Nz.wrong.token"),
        "the bot token was logged"
    );
    // Outbound is unaffected.
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "al", "still bridged").await;
    audit.wait_for(1, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_inbound_bots_at_once_on_the_same_connection() {
    let (redis, gateway, discord, daemon, mut con) = one_room("").await;
    let bot = Author {
        bot: true,
        ..Author::user("700000000000000099", "ci", None)
    };
    gateway.post(CHANNEL, &bot, "bot before");
    gateway.post(CHANNEL, &ann(), "human");
    assert_eq!(wait_history(&mut con, 1).await, ["human"]);

    let toml = config(
        &redis,
        &gateway,
        &discord,
        "inbound_bots = true\n",
        ONE_ROOM,
    );
    std::fs::write(daemon.config_path(), toml).expect("write the config");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log("configuration reloaded", 1, WAIT);
    gateway.post(CHANNEL, &bot, "bot after");
    assert_eq!(wait_history(&mut con, 2).await, ["human", "bot after"]);
    assert_eq!(gateway.count("connect"), 1, "the reload reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_history_request_is_retried_and_a_forbidden_one_is_reported_and_skipped() {
    let (_redis, gateway, _discord, daemon, mut con) = one_room_relaying("", "one").await;

    // Discord's REST answers 500 twice: retried until the messages come.
    gateway.invalidate_session();
    gateway.post(CHANNEL, &ann(), "two");
    gateway.fail_next(2, 500, 0, "500: Internal Server Error");
    gateway.wait_log("ready", 2, WAIT).await;
    assert_eq!(wait_history(&mut con, 2).await, ["one", "two"]);
    assert!(
        gateway.rest_requests().len() >= 3,
        "{:?}",
        gateway.rest_requests()
    );

    // The bot lost Read Message History: the gap is reported, live messages still flow.
    gateway.invalidate_session();
    gateway.post(CHANNEL, &ann(), "lost");
    gateway.fail_next(1, 403, 50001, "Missing Access");
    gateway.wait_log("ready", 3, WAIT).await;
    daemon.wait_for_log(
        "cannot fetch the messages sent while no session was open",
        1,
        WAIT,
    );
    assert!(
        daemon.log().contains("HTTP 403: Missing Access"),
        "{}",
        daemon.log()
    );
    gateway.post(CHANNEL, &ann(), "three");
    assert_eq!(wait_history(&mut con, 3).await, ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_messages_is_written_in_order_once_each() {
    let (redis, gateway, discord) = fakes().await;
    let audit = Receiver::start().await;
    let rest = general_room("discord", Some(&audit.url("/audit")));
    let daemon = Daemon::start(&config(&redis, &gateway, &discord, "", &rest));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    gateway.wait_log("ready 1", 1, WAIT).await;
    let sent: Vec<String> = (0..500).map(|i| format!("burst {i}")).collect();
    let started = std::time::Instant::now();
    for text in &sent {
        gateway.post(CHANNEL, &ann(), text);
    }
    let written = wait_history(&mut con, 500).await;
    let elapsed = started.elapsed();
    assert_eq!(written, sent);
    let relayed = contents_of(&audit.wait_for(500, WAIT).await);
    assert_eq!(
        relayed, sent,
        "the other link got them out of order or twice"
    );
    eprintln!(
        "500 Discord messages written in {:.0} ms",
        elapsed.as_secs_f64() * 1000.0
    );
}

/// Redis is killed while Discord messages arrive and started again (with AOF: it keeps its
/// data; without: it comes back empty). Whether the bridge rode out the outage on its
/// connection (writes retried) or lost its lease and had to start a new session (catch-up over
/// REST, from the last id seen: in Redis, or in memory when Redis lost it), every message
/// arrives once, in order.
async fn a_redis_restart_loses_no_discord_message(persistent: bool) {
    let mut redis = if persistent {
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    } else {
        RedisServer::start()
    };
    let gateway = FakeGateway::start(BOT_TOKEN, 1000).await;
    gateway.add_channel(GUILD, CHANNEL);
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let rest = ONE_ROOM;
    let daemon = Daemon::start(&config(&redis, &gateway, &discord, "", rest));
    wait_ready(&daemon);
    gateway.wait_log("ready 1", 1, WAIT).await;
    gateway.post(CHANNEL, &ann(), "one");
    {
        let mut con = redis.connection().await;
        wait_history(&mut con, 1).await;
    }

    redis.kill();
    gateway.post(CHANNEL, &ann(), "two");
    tokio::time::sleep(Duration::from_secs(3)).await; // longer than the 2 s lease
    gateway.post(CHANNEL, &ann(), "three");
    redis.start_again();
    let mut con = redis.connection().await;
    let expected: &[&str] = if persistent {
        &["one", "two", "three"]
    } else {
        &["two", "three"]
    };
    assert_eq!(wait_history(&mut con, expected.len()).await, expected);
    gateway.post(CHANNEL, &ann(), "four");
    let mut all: Vec<&str> = expected.to_vec();
    all.push("four");
    assert_eq!(wait_history(&mut con, all.len()).await, all);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(contents(&history(&mut con).await), all, "written twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_aof_loses_no_discord_message() {
    a_redis_restart_loses_no_discord_message(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_loses_no_discord_message_sent_meanwhile() {
    a_redis_restart_loses_no_discord_message(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_bridge_releases_the_gateway_and_the_next_start_resumes_its_session() {
    let (redis, gateway, discord) = fakes().await;
    let rest = ONE_ROOM;
    let toml = config(&redis, &gateway, &discord, "", rest);
    let mut first = Daemon::start(&toml);
    wait_ready(&first);
    let mut con = redis.connection().await;
    gateway.wait_log("ready 1", 1, WAIT).await;
    gateway.post(CHANNEL, &ann(), "one");
    wait_history(&mut con, 1).await;

    first.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(first.wait_exit(WAIT).success());
    let leases: Vec<String> = con
        .keys("chatbridge:lease:discord-gateway:*")
        .await
        .unwrap();
    assert!(
        leases.is_empty(),
        "the lease outlived a clean stop: {leases:?}"
    );
    assert!(
        status_line(&first).await.starts_with("stopped since "),
        "{}",
        status_line(&first).await
    );
    gateway.post(CHANNEL, &ann(), "two");
    let second = Daemon::start(&toml);
    wait_ready(&second);
    gateway.wait_log("resumed", 1, WAIT).await;
    gateway.post(CHANNEL, &ann(), "three");
    assert_eq!(wait_history(&mut con, 3).await, ["one", "two", "three"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(history(&mut con).await.len(), 3, "written twice");
    assert_eq!(gateway.count("identify"), 1, "the restart identified again");

    // Restarted with inbound_joins: the saved session lacks GUILD_MEMBERS, so a new one is
    // identified with it instead of resuming without it.
    let mut second = second;
    second.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(second.wait_exit(WAIT).success());
    let joins = config(&redis, &gateway, &discord, "inbound_joins = true\n", rest);
    let third = Daemon::start(&joins);
    wait_ready(&third);
    gateway.wait_log("ready", 2, WAIT).await;
    let intents = GUILDS_MESSAGES_CONTENT | INTENT_GUILD_MEMBERS;
    assert!(
        gateway
            .log()
            .iter()
            .any(|l| l.starts_with("identify ") && l.ends_with(&format!("intents={intents}"))),
        "{:?}",
        gateway.log()
    );
}
