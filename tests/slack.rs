//! The Slack link through the real `chatbridge run` binary against a fake Slack on loopback
//! that enforces the contract (bearer token, `ok: false` errors, 1 post/s with a small burst
//! and 429 + Retry-After beyond): a 1,000-message burst arrives in order with zero 429s
//! against the strict, jittered window, untrusted text is escaped, names and icons go per message (in the text for incoming
//! webhooks), long messages arrive whole in parts, a forced 429 is waited out, `ok: false`
//! errors pause, disable or dead-letter as classified while other links flow, and every post's
//! `ts` is recorded.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::config::general_room;
use common::daemon::{ConfigDir, Daemon, cli_async, wait_ready};
use common::fake_slack::{FakeReply, FakeSlack, SlackPost};
use common::outbox::wait_drained;
use common::receiver::Receiver;
use common::redis::RedisServer;
use common::seed;
use common::wait::eventually;
use redis::AsyncCommands;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const BOT_TOKEN: &str = "xoxb-1111-sekrit-BOT-token";
const HOOK_SECRET: &str = "sekrit-HOOK-secret";

/// A Web API `slack` link (`extra` appended to its table), plus a webhook link `audit` when
/// given, on room `general`.
fn config(redis: &RedisServer, slack: &FakeSlack, extra: &str, audit: Option<&Receiver>) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[delivery]\nretry_max_backoff_secs = 1\n\n\
         [links.slack]\nkind = \"slack\"\nbot_token = \"{BOT_TOKEN}\"\nchannel = \"C0123\"\n\
         api_url = \"{}\"\n{extra}\n\n{}",
        redis.url(),
        slack.api_url(),
        general_room("slack", audit.map(|a| a.url("/hook")).as_deref()),
    )
}

/// An incoming-webhook `slack` link `hook` (`extra` appended to its table) on room `general`.
fn webhook_config(redis: &RedisServer, slack: &FakeSlack, extra: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[links.hook]\nkind = \"slack\"\nwebhook_url = \"{}\"\n{extra}\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"hook\"]\n",
        redis.url(),
        slack.webhook_url(HOOK_SECRET)
    )
}

/// Every line the accepted posts carried, in order.
fn lines(posts: &[SlackPost]) -> Vec<String> {
    posts
        .iter()
        .flat_map(|p| p.text().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Sends the messages as seed clients would, in one pipeline ([`seed::send_burst`]): every
/// third is bob's, the others alice's.
pub async fn send_burst(con: &mut redis::aio::MultiplexedConnection, texts: &[String]) {
    let messages: Vec<(serde_json::Value, &str, &str)> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| match i % 3 {
            0 => (json!(1002), "bob", text.as_str()),
            _ => (json!(1001), "alice", text.as_str()),
        })
        .collect();
    seed::send_burst(con, "general", &messages).await;
}

/// The texts of every post Slack accepted, once one of them satisfies `last`.
async fn texts_once(slack: &FakeSlack, what: &str, last: impl Fn(&str) -> bool) -> Vec<String> {
    eventually(what, WAIT, async || {
        slack.posts().iter().any(|p| last(p.text())).then_some(())
    })
    .await;
    slack.posts().iter().map(|p| p.text().to_owned()).collect()
}

async fn outbox_line(config: &ConfigDir, prefix: &str) -> Option<String> {
    let (code, out, err) = cli_async(config.path(), &["outbox"]).await;
    assert_eq!(code, 0, "chatbridge outbox failed: {err}");
    out.lines()
        .map(str::trim)
        .find(|line| line.starts_with(prefix))
        .map(str::to_owned)
}

/// The most the strict fake holds a request: a WAN path's uneven delay.
const JITTER: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_gets_no_429_from_a_strict_window_and_arrives_once_in_order() {
    let redis = RedisServer::start();
    let slack = FakeSlack::strict(BOT_TOKEN, JITTER).await;
    let daemon = Daemon::start(&config(&redis, &slack, "", None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let sent: Vec<String> = (0..1000).map(|i| format!("burst message {i:04}")).collect();
    let started = Instant::now();
    send_burst(&mut con, &sent).await;
    eventually(
        "the whole burst at Slack",
        Duration::from_secs(60),
        async || (lines(&slack.posts()).len() >= sent.len()).then_some(()),
    )
    .await;
    let took = started.elapsed();
    wait_drained(&mut con, "slack").await;
    let posts = slack.posts();
    let shape: Vec<(u128, usize)> = posts
        .iter()
        .map(|p| ((p.arrived - started).as_millis(), p.text().lines().count()))
        .collect();
    eprintln!(
        "1,000 messages: {} posts in {took:?}: (ms, lines) {shape:?}",
        posts.len()
    );
    assert_eq!(slack.rate_limited(), 0, "no 429: {shape:?}");
    assert_eq!(slack.early(), 0, "nothing before a Retry-After passed");
    assert_eq!(slack.requests().len(), posts.len(), "nothing refused");
    let texts: Vec<String> = lines(&posts)
        .iter()
        .map(|line| line.rsplit(": ").next().unwrap_or(line).to_owned())
        .collect();
    assert_eq!(texts, sent, "all of it, once, in order");
    assert!(posts.len() <= 12, "merged into few posts: {}", posts.len());
    let merged = posts
        .iter()
        .find(|p| p.text().lines().count() > 1)
        .expect("a merged post");
    assert!(merged.text().contains("*alice*: ") && merged.text().contains("*bob*: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_text_is_escaped_and_names_and_icons_go_per_message() {
    let redis = RedisServer::start();
    let slack = FakeSlack::start(BOT_TOKEN).await;
    let extra = "icon_url = \"https://avatars.example/{user_id}.png\"\n\
                 name_format = \"{username} ({room})\"";
    let daemon = Daemon::start(&config(&redis, &slack, extra, None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let evil = "<!channel> <!here> <@U123> <https://evil|bank> & more";
    seed::send_message(&mut con, "general", json!(1001), "alice", evil).await;
    eventually("the first post", WAIT, async || {
        (!slack.posts().is_empty()).then_some(())
    })
    .await;
    seed::send_message(&mut con, "general", json!(1002), "<!everyone>", "hi").await;
    eventually("the second post", WAIT, async || {
        (slack.posts().len() >= 2).then_some(())
    })
    .await;
    let posts = slack.posts();
    assert_eq!(
        posts[0].text(),
        "&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt; &lt;https://evil|bank&gt; &amp; more"
    );
    assert_eq!(posts[0].username(), Some("alice (general)"));
    assert_eq!(
        posts[0].body["icon_url"],
        "https://avatars.example/1001.png"
    );
    assert_eq!(posts[0].body["channel"], "C0123");
    // `username` is plain text in Slack (no mrkdwn, no mentions): sent as is.
    assert_eq!(posts[1].username(), Some("<!everyone> (general)"));
    assert_eq!(
        posts[1].body["icon_url"],
        "https://avatars.example/1002.png"
    );
    for post in &posts {
        assert_eq!(post.body["unfurl_links"], false);
        assert_eq!(post.body["unfurl_media"], false);
        assert!(post.body.get("link_names").is_none());
        assert!(post.body.get("parse").is_none());
    }
    // Each post's ts is recorded under the event's key, in a bounded map (written once Slack's
    // answer is back, so a moment after the fake saw the post).
    let answered: Vec<String> = posts.iter().filter_map(|p| p.ts.clone()).collect();
    let recorded: HashMap<String, String> = eventually("every ts recorded", WAIT, async || {
        let recorded: HashMap<String, String> = con
            .hgetall("chatbridge:slack_ts:slack")
            .await
            .expect("HGETALL");
        (recorded.len() >= answered.len()).then_some(recorded)
    })
    .await;
    let mut values: Vec<&String> = recorded.values().collect();
    values.sort();
    assert_eq!(values, answered.iter().collect::<Vec<_>>());
    assert!(recorded.keys().all(|k| k.starts_with("h-")), "{recorded:?}");
    assert!(!daemon.log().contains("sekrit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_webhook_gets_the_name_in_the_text_joins_leaves_and_coalesced_receipts() {
    let redis = RedisServer::start();
    let slack = FakeSlack::start(BOT_TOKEN).await;
    let toml = webhook_config(
        &redis,
        &slack,
        "events = [\"message\", \"join\", \"leave\", \"read_receipt\"]\n\
         receipt_interval_secs = 1\n",
    );
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    seed::join(&mut con, "general", json!(1001), "alice").await;
    eventually("the join", WAIT, async || {
        (!slack.posts().is_empty()).then_some(())
    })
    .await;
    seed::send_message(&mut con, "general", json!(1001), "alice", "a <b>").await;
    eventually("the message", WAIT, async || {
        (slack.posts().len() >= 2).then_some(())
    })
    .await;
    seed::typing(&mut con, "general", json!(1001)).await;
    seed::mark_read(&mut con, "general", json!(1002), "m1").await;
    eventually("the receipt", WAIT, async || {
        (slack.posts().len() >= 3).then_some(())
    })
    .await;
    // Together, so they fall into one interval whatever the pace made the last line wait.
    let readers = [json!(1003), json!(1004), json!(1003)];
    seed::mark_read_burst(&mut con, "general", &readers, "m1").await;
    eventually("the coalesced receipts", WAIT, async || {
        (slack.posts().len() >= 4).then_some(())
    })
    .await;
    seed::leave(&mut con, "general", json!(1001), "alice").await;
    eventually("the leave", WAIT, async || {
        (lines(&slack.posts()).len() >= 5).then_some(())
    })
    .await;
    let posts = slack.posts();
    assert!(
        posts
            .iter()
            .all(|p| p.via == "webhook" && p.username().is_none())
    );
    assert_eq!(
        lines(&posts),
        [
            "_alice joined the room_",
            "*alice*: a &lt;b&gt;",
            "_seen by 1002_",
            "_seen by 1003, 1004_",
            "_alice left the room_"
        ],
        "typing is never sent"
    );
    let gap = posts[3].arrived - posts[2].arrived;
    assert!(
        gap >= Duration::from_secs(1),
        "one line per room per interval: {gap:?}"
    );

    // A removed webhook (404 no_service) disables the link.
    slack.fail_with(Some(FakeReply::status(404, "no_service")));
    seed::send_message(&mut con, "general", json!(1001), "alice", "kept").await;
    let cli_config = ConfigDir::new(&toml);
    let disabled = eventually("the link to show disabled", WAIT, async || {
        outbox_line(&cli_config, "DISABLED").await
    })
    .await;
    assert!(disabled.contains("HTTP 404: no_service"), "{disabled}");
    assert!(!disabled.contains(HOOK_SECRET), "{disabled}");
    assert!(!daemon.log().contains(HOOK_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_9000_character_message_arrives_whole_in_parts_within_4000() {
    let redis = RedisServer::start();
    let slack = FakeSlack::start(BOT_TOKEN).await;
    let daemon = Daemon::start(&config(&redis, &slack, "", None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let piece = "👩‍🚀 🇺🇦 中文字符 <tag> & words in a line\n";
    let mut text = String::new();
    while text.chars().count() < 9000 {
        text.push_str(piece);
    }
    seed::send_message(&mut con, "general", json!(1001), "alice", &text).await;
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    eventually("every part", WAIT, async || {
        (slack.posts().iter().map(|p| p.text().len()).sum::<usize>() >= escaped.len()).then_some(())
    })
    .await;
    let posts = slack.posts();
    assert!(posts.len() >= 3, "{} parts", posts.len());
    assert!(
        posts
            .iter()
            .all(|p| p.text().encode_utf16().count() <= 4000)
    );
    assert!(posts.iter().all(|p| p.username() == Some("alice")));
    assert_eq!(
        posts.iter().map(SlackPost::text).collect::<String>(),
        escaped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_429_retry_after_2_is_honoured() {
    let redis = RedisServer::start();
    let slack = FakeSlack::start(BOT_TOKEN).await;
    let daemon = Daemon::start(&config(&redis, &slack, "", None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    slack.force_429(2);
    seed::send_message(&mut con, "general", json!(1001), "alice", "after the 429").await;
    eventually("the post", WAIT, async || {
        (!slack.posts().is_empty()).then_some(())
    })
    .await;
    let requests = slack.requests();
    assert_eq!(requests.len(), 2, "one 429, then the post");
    let gap = requests[1] - requests[0];
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert_eq!(slack.early(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_false_errors_pause_disable_or_dead_letter_while_other_links_flow() {
    let redis = RedisServer::start();
    let slack = FakeSlack::start(BOT_TOKEN).await;
    let audit = Receiver::start().await;
    let toml = config(&redis, &slack, "", Some(&audit));
    let daemon = Daemon::start(&toml);
    let cli_config = ConfigDir::new(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;

    // Link-level, fixable outside: paused (retried with backoff), shown failing.
    slack.fail_with(Some(FakeReply::api_error("not_in_channel")));
    seed::send_message(&mut con, "general", json!(1001), "alice", "one").await;
    let failing = eventually("the link to show failing", WAIT, async || {
        outbox_line(&cli_config, "FAILING since").await
    })
    .await;
    assert!(failing.contains("not_in_channel"), "{failing}");
    seed::send_message(&mut con, "general", json!(1001), "alice", "two").await;
    audit.wait_for(2, WAIT).await;
    slack.fail_with(None);
    eventually("both after the pause", WAIT, async || {
        (lines(&slack.posts()).len() >= 2).then_some(())
    })
    .await;

    // Event-level: that event alone goes to the dead-letter stream.
    slack.fail_next(FakeReply::api_error("msg_too_long"));
    seed::send_message(&mut con, "general", json!(1001), "alice", "too long").await;
    eventually("the dead letter", WAIT, async || {
        let len: usize = con.xlen("chatbridge:dlq:slack").await.unwrap_or(0);
        (len == 1).then_some(())
    })
    .await;

    // Gone for good: disabled until `chatbridge enable`, messages kept.
    slack.fail_with(Some(FakeReply::api_error("token_revoked")));
    seed::send_message(&mut con, "general", json!(1001), "alice", "three").await;
    let disabled = eventually("the link to show disabled", WAIT, async || {
        outbox_line(&cli_config, "DISABLED").await
    })
    .await;
    assert!(disabled.contains("token_revoked"), "{disabled}");
    let calls = slack.requests().len();
    seed::send_message(&mut con, "general", json!(1001), "alice", "four").await;
    audit.wait_for(5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        slack.requests().len(),
        calls,
        "a disabled link calls nobody"
    );
    slack.fail_with(None);
    let (code, out, _) = cli_async(cli_config.path(), &["enable", "slack"]).await;
    assert_eq!(code, 0, "{out}");
    eventually("the kept messages", WAIT, async || {
        (lines(&slack.posts()).len() >= 4).then_some(())
    })
    .await;
    wait_drained(&mut con, "slack").await;
    let texts: Vec<String> = lines(&slack.posts())
        .iter()
        .map(|line| line.rsplit(": ").next().unwrap_or(line).to_owned())
        .collect();
    assert_eq!(texts, ["one", "two", "three", "four"]);
    let log = daemon.log();
    assert!(!log.contains("sekrit"), "{log}");
}

#[test]
fn slack_and_discord_config_problems_are_all_reported_without_secrets() {
    use chatbridge::config::{self, Env, LinkKind};
    use chatbridge::platforms::slack::config::SlackMode;
    let toml = r#"
        [links.both]
        kind = "slack"
        bot_token = "xoxb-sekrit"
        channel = "C1"
        webhook_url = "https://hooks.slack.com/services/T/B/sekrit"
        [links.half]
        kind = "slack"
        bot_token = "xoxb-sekrit"
        [links.typing]
        kind = "slack"
        webhook_url = "https://hooks.slack.com/services/T/B/sekrit"
        events = ["message", "typing"]
        name_format = "{nick}"
        icon_url = "https://a.example/{user_id}.png"
        [links.hooky]
        kind = "discord"
        webhook_url = "https://example.com/hooks/sekrit"
        max_in_flight = 4
        [[rooms]]
        name = "general"
        links = ["both", "half", "typing", "hooky"]
    "#;
    let errors = config::load_str(toml, &Env::new()).expect_err("invalid");
    let mut paths: Vec<&str> = errors.paths();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "links.both.webhook_url",
            "links.half.bot_token",
            "links.hooky.max_in_flight",
            "links.hooky.webhook_url",
            "links.typing.events[1]",
            "links.typing.icon_url",
            "links.typing.name_format",
        ],
        "{errors}"
    );
    let text = errors.to_string();
    assert!(!text.contains("sekrit"), "{text}");
    assert!(text.contains("never sent to Slack or Discord"), "{text}");
    assert!(text.contains("`{nick}`"), "{text}");

    let good = r#"
        [links.api]
        kind = "slack"
        bot_token = "${TOKEN}"
        channel = "C1"
        [links.old]
        kind = "discord"
        webhook_url = "https://discord.com/api/v9/webhooks/123/tok-en"
        [links.plain]
        kind = "discord"
        webhook_url = "https://discord.com/api/webhooks/123/tok-en?thread_id=9"
        batch_max = 10
        [[rooms]]
        name = "general"
        links = ["api", "old", "plain"]
    "#;
    let env: Env = [("TOKEN".to_owned(), "xoxb-1-2".to_owned())].into();
    let config = config::load_str(good, &env).unwrap_or_else(|e| panic!("{e}"));
    let LinkKind::Slack(api) = &config.links["api"].kind else {
        panic!("api is not slack");
    };
    let SlackMode::Api { api_url, token, .. } = &api.mode else {
        panic!("not Web API mode");
    };
    assert_eq!(api_url.expose().as_str(), "https://slack.com/api");
    assert_eq!(token.expose(), "xoxb-1-2");
    assert_eq!(config.links["api"].common.delivery.batch_max, 1000);
    for (name, path) in [
        ("old", "/api/v10/webhooks/123/tok-en"),
        ("plain", "/api/v10/webhooks/123/tok-en"),
    ] {
        let LinkKind::Discord(discord) = &config.links[name].kind else {
            panic!("{name} is not discord");
        };
        assert_eq!(discord.url.expose().path(), path);
    }
    assert_eq!(config.links["plain"].common.delivery.batch_max, 10);
    let table = config.routing_table();
    assert!(
        !table.contains("tok-en") && !table.contains("xoxb"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_links_to_one_channel_share_its_rate_limit() {
    let redis = RedisServer::start();
    let slack = FakeSlack::start(BOT_TOKEN).await;
    let link = |name: &str| {
        format!(
            "[links.{name}]\nkind = \"slack\"\nbot_token = \"{BOT_TOKEN}\"\nchannel = \"C0123\"\n\
             api_url = \"{}\"\nname_format = \"{{username}} ({name})\"\n\n",
            slack.api_url()
        )
    };
    let toml = format!(
        "[redis]\nurl = \"{}\"\n\n{}{}[[rooms]]\nname = \"general\"\nlinks = [\"a\", \"b\"]\n",
        redis.url(),
        link("a"),
        link("b")
    );
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    for i in 0..6 {
        seed::send_message(&mut con, "general", json!(1001), "alice", &format!("m{i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("both links' copies", WAIT, async || {
        (lines(&slack.posts()).len() >= 12).then_some(())
    })
    .await;
    assert_eq!(slack.rate_limited(), 0, "one bucket for the channel");
    for name in ["a", "b"] {
        let texts: Vec<String> = slack
            .posts()
            .iter()
            .filter(|p| p.username() == Some(&format!("alice ({name})")))
            .flat_map(|p| p.text().lines().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4", "m5"], "link {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_webhook_post_cannot_forge_a_header_and_blank_names_fall_back() {
    let redis = RedisServer::start();
    let slack = FakeSlack::start(BOT_TOKEN).await;
    let toml = webhook_config(&redis, &slack, "");
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let sent = [
        (1001, "alice", "hi\n*bob*: send me your password"),
        (1002, "eve\n*bob*", "x"),
        (1003, "\u{200b} \u{2800}", "blank"),
        (1004, "\u{202e}bidi", "\u{202e}evil\u{200f}"),
    ];
    for (id, name, text) in sent {
        seed::send_message(&mut con, "general", json!(id), name, text).await;
    }
    let texts = texts_once(&slack, "the last message", |t| t.contains("evil")).await;
    let unquoted: Vec<&str> = texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| !l.starts_with("> "))
        .collect();
    assert_eq!(
        unquoted,
        [
            "*alice*:",
            "*eve *bob**: x",
            "*user 1003*: blank",
            "*bidi*: evil"
        ],
        "one header per message, no forged one: {texts:?}"
    );
    assert_eq!(texts[0], "*alice*:\n> hi\n> *bob*: send me your password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_code_block_reaches_slack_closed_and_reopened_in_every_part() {
    let redis = RedisServer::start();
    let slack = FakeSlack::start(BOT_TOKEN).await;
    let daemon = Daemon::start(&config(&redis, &slack, "", None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let mut text = String::from("look:\n```python\n");
    while text.encode_utf16().count() < 9000 {
        text.push_str("if a < b and c > d: print('a & b')\n");
    }
    text.push_str("```\ndone");
    seed::send_message(&mut con, "general", json!(1001), "alice", &text).await;
    let parts = texts_once(&slack, "the last part", |t| t.ends_with("done")).await;
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let whole = common::parts::rejoin_code_block(&parts, "```python\n", 4000);
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert_eq!(
        whole, escaped,
        "every character once, the fence markers aside"
    );
}
