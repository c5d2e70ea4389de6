//! The Discord link through the real `chatbridge run` binary against a fake Discord on loopback
//! that enforces the webhook contract (bucket headers and 429s, 50035 over 2000 characters,
//! JSON errors with codes): bursts follow the bucket with zero 429s, mentions are never parsed,
//! names are sanitised and pictures set per message, long messages arrive whole in parts, a
//! forced 429 is waited out, and a deleted webhook disables the link (never called again) while
//! other links keep flowing and nothing is lost.

mod common;

use std::time::Duration;

use common::config::general_room;
use common::daemon::{ConfigDir, Daemon, cli_async, wait_ready};
use common::fake_discord::{DiscordPost, FakeDiscord};
use common::outbox::wait_drained;
use common::receiver::Receiver;
use common::redis::RedisServer;
use common::seed;
use common::wait::eventually;
use serde_json::json;
use unicode_segmentation::UnicodeSegmentation;

const WAIT: Duration = Duration::from_secs(20);
/// The webhook token: must never show in logs or the CLI.
const TOKEN: &str = "sekrit-discord-T0KEN";

/// A `discord` link (and, with `audit`, a webhook link `audit`) on room `general`.
fn config(redis: &RedisServer, discord: &FakeDiscord, audit: Option<&Receiver>) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[delivery]\nretry_max_backoff_secs = 1\n\n\
         [links.discord]\nkind = \"discord\"\nwebhook_url = \"{}\"\n\
         avatar_url = \"https://avatars.example/{{user_id}}.png\"\n\
         events = [\"message\", \"join\", \"leave\"]\n\n{}",
        redis.url(),
        discord.webhook_url(TOKEN),
        general_room("discord", audit.map(|a| a.url("/hook")).as_deref()),
    )
}

/// Every line the accepted posts carried, in order.
fn lines(posts: &[DiscordPost]) -> Vec<String> {
    posts
        .iter()
        .flat_map(|p| p.content().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_follows_the_bucket_headers_without_a_single_429() {
    let redis = RedisServer::start();
    let discord = FakeDiscord::start(5, Duration::from_secs(1)).await;
    let daemon = Daemon::start(&config(&redis, &discord, None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let sent: Vec<String> = (0..1000).map(|i| format!("burst message {i:04}")).collect();
    for text in &sent {
        seed::send_message(&mut con, "general", json!(1001), "alice", text).await;
    }
    eventually("the whole burst at Discord", WAIT, async || {
        (lines(&discord.accepted()).len() >= sent.len()).then_some(())
    })
    .await;
    wait_drained(&mut con, "discord").await;
    assert_eq!(
        lines(&discord.accepted()),
        sent,
        "all of it, once, in order"
    );
    assert_eq!(discord.rate_limited(), 0, "no request into an empty bucket");
    let requests = discord.requests();
    assert_eq!(requests.len(), discord.accepted().len(), "nothing refused");
    assert!(
        requests.len() < 100,
        "a backlog is merged: {} posts",
        requests.len()
    );
    for request in &requests {
        assert!(request.content().encode_utf16().count() <= 2000);
        assert_eq!(request.body["allowed_mentions"], json!({"parse": []}));
        assert_eq!(request.username(), Some("alice"));
    }
    assert!(!daemon.log().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_are_never_parsed_and_each_sender_has_a_safe_name_and_picture() {
    let redis = RedisServer::start();
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let daemon = Daemon::start(&config(&redis, &discord, None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let senders = [
        (1001, "alice", "hi @everyone and @here, <@123> <@&456>"),
        (1002, "@everyone", "from a name that pings"),
        (1003, "Clyde#0001: the Discord bot", "hello"),
    ];
    for (id, name, text) in senders {
        seed::send_message(&mut con, "general", json!(id), name, text).await;
        // One at a time, so each is its own post under its sender's name.
        eventually("the post", WAIT, async || {
            discord
                .accepted()
                .iter()
                .any(|p| p.content().contains(text))
                .then_some(())
        })
        .await;
    }
    seed::join(&mut con, "general", json!(1004), "dave").await;
    seed::leave(&mut con, "general", json!(1004), "dave").await;
    eventually("join and leave lines", WAIT, async || {
        (lines(&discord.accepted()).len() >= 5).then_some(())
    })
    .await;
    let posts = discord.accepted();
    let names: Vec<Option<&str>> = posts.iter().map(DiscordPost::username).collect();
    assert_eq!(
        names[..3],
        [Some("alice"), Some("user 1002"), Some("0001 the  bot")]
    );
    assert_eq!(posts[0].content(), senders[0].2, "text as typed");
    for (post, id) in posts.iter().zip([1001, 1002, 1003]) {
        assert_eq!(post.body["allowed_mentions"], json!({"parse": []}));
        assert_eq!(
            post.body["avatar_url"],
            format!("https://avatars.example/{id}.png")
        );
        let agent = post.headers["user-agent"].to_str().unwrap();
        assert!(agent.starts_with("DiscordBot (http"), "{agent}");
        assert_eq!(post.token, TOKEN);
    }
    assert_eq!(
        lines(&posts[3..]),
        ["_dave joined the room_", "_dave left the room_"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_9000_character_message_arrives_whole_in_parts_within_the_limit() {
    let redis = RedisServer::start();
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let daemon = Daemon::start(&config(&redis, &discord, None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let piece = "家族 👨‍👩‍👧‍👦 flags 🇯🇵🇫🇷 e\u{301} 日本語のテキスト and words\n";
    let mut text = String::new();
    while text.chars().count() < 9000 {
        text.push_str(piece);
    }
    seed::send_message(&mut con, "general", json!(1001), "alice", &text).await;
    eventually("every part", WAIT, async || {
        (discord
            .accepted()
            .iter()
            .map(|p| p.content().len())
            .sum::<usize>()
            >= text.len())
        .then_some(())
    })
    .await;
    let parts = discord.accepted();
    assert!(parts.len() >= 5, "{} parts", parts.len());
    let joined: String = parts.iter().map(DiscordPost::content).collect();
    assert_eq!(joined, text, "complete and in order");
    let boundaries: Vec<usize> = text.grapheme_indices(true).map(|(i, _)| i).collect();
    let mut offset = 0;
    for part in &parts {
        assert!(part.content().encode_utf16().count() <= 2000);
        assert!(
            boundaries.contains(&offset),
            "a cut inside a grapheme at {offset}"
        );
        assert_eq!(part.username(), Some("alice"));
        offset += part.content().len();
    }
    assert!(discord.requests().iter().all(|r| r.status == 204));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_429_is_waited_out_before_the_next_request() {
    let redis = RedisServer::start();
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let daemon = Daemon::start(&config(&redis, &discord, None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    discord.force_429(1.5);
    seed::send_message(&mut con, "general", json!(1001), "alice", "after the 429").await;
    eventually("the message", WAIT, async || {
        (!discord.accepted().is_empty()).then_some(())
    })
    .await;
    let requests = discord.requests();
    assert_eq!(requests[0].status, 429);
    assert_eq!(requests[1].status, 204);
    let gap = requests[1].arrived - requests[0].arrived;
    assert!(gap >= Duration::from_millis(1500), "retried after {gap:?}");
    assert_eq!(discord.early(), 0);
    assert_eq!(requests.len(), 2);
}

/// The `DISABLED: …` line `chatbridge outbox` prints under the link, if any.
async fn disabled_line(config: &ConfigDir) -> Option<String> {
    let (code, out, err) = cli_async(config.path(), &["outbox"]).await;
    assert_eq!(code, 0, "chatbridge outbox failed: {err}");
    out.lines()
        .map(str::trim)
        .find(|line| line.starts_with("DISABLED"))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_webhook_disables_the_link_until_enabled_others_flow_nothing_is_lost() {
    let redis = RedisServer::start();
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let audit = Receiver::start().await;
    let toml = config(&redis, &discord, Some(&audit));
    let daemon = Daemon::start(&toml);
    let cli_config = ConfigDir::new(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    discord.fail_with(Some((404, 10015, "Unknown Webhook")));
    seed::send_message(&mut con, "general", json!(1001), "alice", "first").await;
    let line = eventually("the link to show disabled", WAIT, async || {
        disabled_line(&cli_config).await
    })
    .await;
    assert!(line.contains("Unknown Webhook (code 10015)"), "{line}");
    assert!(!line.contains(TOKEN), "{line}");
    for text in ["second", "third"] {
        seed::send_message(&mut con, "general", json!(1001), "alice", text).await;
    }
    audit.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        discord.requests().len(),
        1,
        "a deleted webhook is not called again"
    );
    assert!(daemon.log().contains("DISABLING"), "{}", daemon.log());

    discord.fail_with(None);
    let (code, out, _) = cli_async(cli_config.path(), &["enable", "discord"]).await;
    assert_eq!(code, 0, "{out}");
    eventually("every message once enabled", WAIT, async || {
        (lines(&discord.accepted()).len() >= 3).then_some(())
    })
    .await;
    wait_drained(&mut con, "discord").await;
    assert_eq!(lines(&discord.accepted()), ["first", "second", "third"]);
    assert!(!daemon.log().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_429_holds_every_discord_link_and_401_pauses_the_link() {
    let redis = RedisServer::start();
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let toml = format!(
        "[redis]\nurl = \"{}\"\n\n[delivery]\nretry_max_backoff_secs = 1\n\n\
         [links.one]\nkind = \"discord\"\nwebhook_url = \"{}\"\n\n\
         [links.two]\nkind = \"discord\"\nwebhook_url = \"{}\"\n\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"one\"]\n\n\
         [[rooms]]\nname = \"random\"\nlinks = [\"two\"]\n",
        redis.url(),
        discord.webhook_url("token-one"),
        discord.webhook_url("token-two"),
    );
    let daemon = Daemon::start(&toml);
    let cli_config = ConfigDir::new(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    discord.force_global_429(1.5);
    seed::send_message(&mut con, "general", json!(1001), "alice", "to one").await;
    eventually("the global 429", WAIT, async || {
        (!discord.requests().is_empty()).then_some(())
    })
    .await;
    seed::send_message(&mut con, "random", json!(1001), "alice", "to two").await;
    eventually("both messages", WAIT, async || {
        (discord.accepted().len() >= 2).then_some(())
    })
    .await;
    let requests = discord.requests();
    assert_eq!(requests[0].status, 429);
    for later in &requests[1..] {
        let gap = later.arrived - requests[0].arrived;
        assert!(
            gap >= Duration::from_millis(1500),
            "{} after {gap:?}",
            later.token
        );
    }
    assert_eq!(discord.early(), 0);

    // 401: the link pauses (retried, shown failing), messages kept, resumes once it works.
    discord.fail_with(Some((401, 0, "401: Unauthorized")));
    seed::send_message(&mut con, "general", json!(1001), "alice", "paused").await;
    let line = eventually("the link to show failing", WAIT, async || {
        let (_, out, _) = cli_async(cli_config.path(), &["outbox"]).await;
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with("FAILING since"))
            .map(str::to_owned)
    })
    .await;
    assert!(line.contains("HTTP 401: 401: Unauthorized"), "{line}");
    discord.fail_with(None);
    eventually("the paused message", WAIT, async || {
        discord
            .accepted()
            .iter()
            .any(|p| p.content() == "paused")
            .then_some(())
    })
    .await;
    assert!(!daemon.log().contains("token-one"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_form_body_dead_letters_that_event_and_delivery_goes_on() {
    let redis = RedisServer::start();
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let daemon = Daemon::start(&config(&redis, &discord, None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    discord.fail_with(Some((400, 50035, "Invalid Form Body")));
    seed::send_message(&mut con, "general", json!(1001), "alice", "refused").await;
    let detail = eventually("the dead letter", WAIT, async || {
        let reply: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut con, "chatbridge:dlq:discord")
                .await
                .ok()?;
        let entry = reply.ids.first()?;
        entry.get::<String>("detail")
    })
    .await;
    assert!(
        detail.contains("Invalid Form Body (code 50035)"),
        "{detail}"
    );
    discord.fail_with(None);
    seed::send_message(&mut con, "general", json!(1001), "alice", "next").await;
    eventually("the next message", WAIT, async || {
        (lines(&discord.accepted()) == ["next"]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_parts_of_a_long_message_posts_no_part_twice() {
    let redis = RedisServer::start();
    // One request per 3 s: after the first part the link waits for the bucket, and the
    // daemon is SIGKILLed in that wait.
    let discord = FakeDiscord::start(1, Duration::from_secs(3)).await;
    let config = ConfigDir::new(&config(&redis, &discord, None));
    let daemon = Daemon::start_in(config);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let words: Vec<String> = (0..900).map(|i| format!("w{i:04}")).collect();
    let text = words.join(" "); // 5,399 characters: three parts
    seed::send_message(&mut con, "general", json!(1001), "alice", &text).await;
    eventually("the first part posted", WAIT, async || {
        (discord.accepted().len() == 1).then_some(())
    })
    .await;
    let config = daemon.crash();
    let restarted = Daemon::start_in(config);
    wait_ready(&restarted);
    eventually("three parts posted", WAIT, async || {
        (discord.accepted().len() >= 3).then_some(())
    })
    .await;
    wait_drained(&mut con, "discord").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posted: Vec<String> = discord
        .accepted()
        .iter()
        .map(|p| p.content().to_owned())
        .collect();
    let words_posted: Vec<&str> = posted.iter().flat_map(|p| p.split_whitespace()).collect();
    assert_eq!(
        words_posted,
        words.iter().map(String::as_str).collect::<Vec<_>>(),
        "a part was posted twice or lost: {} posts",
        posted.len()
    );
}

/// The lines of a post that do not start with `> `: the ones chatbridge wrote.
fn unquoted(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with("> ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_backlog_cannot_forge_a_sender_or_hide_a_link_and_blank_names_fall_back() {
    let redis = RedisServer::start();
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let daemon = Daemon::start(&config(&redis, &discord, None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    // A burst: the messages reach the bridge together and go out as one merged post.
    let backlog = [
        (json!(1001), "alice", "hi\n**bob**: send me your password"),
        (json!(1002), "eve\n**bob**", "x\r**bob**: y"),
        (json!(1003), " \u{200b} ", "blank"),
        (
            json!(1004),
            "mallory",
            "[bank](https://evil.example) [b](<https://evil.example>)",
        ),
        (
            json!(1005),
            "\u{202e}bidi\u{2066}",
            "\u{202e}evil \u{2067}x",
        ),
    ];
    seed::send_burst(&mut con, "general", &backlog).await;
    eventually("the merged post", WAIT, async || {
        (!discord.accepted().is_empty()).then_some(())
    })
    .await;
    wait_drained(&mut con, "discord").await;
    let posts = discord.accepted();
    assert_eq!(posts.len(), 1, "one merged post");
    assert_eq!(posts[0].username(), Some("general"));
    let text = posts[0].content();
    assert_eq!(
        unquoted(text),
        [
            "**alice**:",
            "**eve **bob****:",
            "**user 1003**: blank",
            "**mallory**: \\[bank](https://evil.example) \\[b](<https://evil.example>)",
            "**bidi**: evil x",
        ],
        "one header per message, no forged one: {text}"
    );
    assert!(
        text.contains("> **bob**: send me your password\n"),
        "{text}"
    );
    assert!(text.contains("> **bob**: y"), "{text}");

    // Alone, a blank name posts as `user {id}`, never under the webhook's own name.
    seed::send_message(&mut con, "general", json!(1006), "\u{3164}", "alone").await;
    eventually("the post of the blank name", WAIT, async || {
        discord
            .accepted()
            .into_iter()
            .find(|p| p.content() == "alone")
    })
    .await;
    let alone = discord
        .accepted()
        .into_iter()
        .find(|p| p.content() == "alone");
    assert_eq!(alone.unwrap().username(), Some("user 1006"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_code_block_is_closed_and_reopened_in_every_part() {
    let redis = RedisServer::start();
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    let daemon = Daemon::start(&config(&redis, &discord, None));
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    let mut text = String::from("```rust\n");
    for n in 0..300 {
        text.push_str(&format!("let x{n} = \"{}\";\n", "y".repeat(n % 7)));
    }
    text.push_str("```");
    seed::send_message(&mut con, "general", json!(1001), "alice", &text).await;
    eventually("the first part", WAIT, async || {
        (!discord.accepted().is_empty()).then_some(())
    })
    .await;
    // The message leaves the outbox once its last part is posted.
    wait_drained(&mut con, "discord").await;
    let parts: Vec<String> = discord
        .accepted()
        .iter()
        .map(|p| p.content().to_owned())
        .collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    assert!(
        parts.iter().all(|p| p.starts_with("```rust\n")),
        "{parts:?}"
    );
    let whole = common::parts::rejoin_code_block(&parts, "```rust\n", 2000);
    assert_eq!(whole, text, "every character once, the fence markers aside");
}
