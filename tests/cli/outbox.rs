//! `outbox`, `dlq` and `enable`: the link state the operator reads and changes.

use super::*;

/// The `outbox` row of `link`, split on whitespace: [link, depth, pending, dead, delivered, …].
fn outbox_row(path: &Path, link: &str) -> Vec<String> {
    let out = run_cli(path, &["outbox"]);
    out.assert_ok();
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(link))
        .unwrap_or_else(|| panic!("no row for {link}:\n{}", out.stdout))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn add_dead_letter(con: &mut redis::Connection, link: &str, content: &str) {
    let payload = pyjson_message(content);
    let at = chrono::Utc::now().timestamp_millis().to_string();
    let _: String = query(
        con,
        redis::cmd("XADD")
            .arg(format!("chatbridge:dlq:{link}"))
            .arg("*")
            .arg(&[
                ("id", format!("dead-{content}")),
                ("scope", "chat:room:general".to_owned()),
                ("kind", "message".to_owned()),
                ("at", at),
                ("payload", payload),
                ("status", "400".to_owned()),
                ("detail", "invalid_payload".to_owned()),
                ("failed_at", chrono::Utc::now().to_rfc3339()),
            ]),
    );
}

fn pyjson_message(content: &str) -> String {
    let message = seed::create_message(json!(1001), "alice", content, Some("general"));
    chatbridge::chat::pyjson::to_string(&message)
}

#[test]
fn outbox_shows_a_row_per_link() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let out = run_cli(&config.path(), &["outbox"]);
    out.assert_ok();
    let header = out.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        header.split_whitespace().take(5).collect::<Vec<_>>(),
        ["link", "depth", "pending", "dead", "delivered"],
        "{out:#?}"
    );
    for link in ["audit", "console"] {
        let row = outbox_row(&config.path(), link);
        assert_eq!(row[1..], ["0", "0", "0", "0", "-"], "{link}: {row:?}");
    }
    let frees = out.stdout.matches("  delivery: free").count();
    assert_eq!(frees, 2, "no process delivers either link: {out:#?}");
}

#[test]
fn dlq_list_replay_and_drop() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let path = config.path();
    let mut con = redis_con(&redis);

    let out = run_cli(&path, &["dlq", "list", "audit"]);
    assert_eq!(out.assert_ok().stdout.trim(), "no dead letters for audit");

    add_dead_letter(&mut con, "audit", "first");
    add_dead_letter(&mut con, "audit", "second");
    assert_eq!(outbox_row(&path, "audit")[3], "2", "dead column");

    let out = run_cli(&path, &["dlq", "list", "audit"]);
    out.assert_ok();
    assert!(out.stdout.contains("dead-first"), "{out:#?}");
    assert!(out.stdout.contains("dead-second"), "{out:#?}");
    assert!(
        out.stdout.contains("status=400 invalid_payload"),
        "{out:#?}"
    );
    assert!(
        out.stdout.find("dead-first") < out.stdout.find("dead-second"),
        "oldest first: {out:#?}"
    );
    let out = run_cli(&path, &["dlq", "list", "audit", "-n", "1"]);
    assert!(!out.assert_ok().stdout.contains("dead-second"), "{out:#?}");

    let out = run_cli(&path, &["dlq", "replay", "audit"]);
    assert!(
        out.assert_ok().stdout.contains("replayed 2 dead letter(s)"),
        "{out:#?}"
    );
    assert_eq!(xlen(&mut con, "chatbridge:outbox:audit"), 2);
    assert_eq!(xlen(&mut con, "chatbridge:dlq:audit"), 0);
    let replayed: Vec<HashMap<String, String>> = {
        let reply: redis::streams::StreamRangeReply = query(
            &mut con,
            redis::cmd("XRANGE")
                .arg("chatbridge:outbox:audit")
                .arg("-")
                .arg("+"),
        );
        common::outbox::text_fields(&reply)
    };
    assert_eq!(replayed[0]["id"], "dead-first");
    assert_eq!(replayed[1]["id"], "dead-second");
    assert_eq!(parse(&replayed[0]["payload"])["content"], json!("first"));
    assert_eq!(replayed[0]["scope"], "chat:room:general");
    let row = outbox_row(&path, "audit");
    assert_eq!((row[1].as_str(), row[3].as_str()), ("2", "0"), "{row:?}");

    let out = run_cli(&path, &["dlq", "replay", "audit"]);
    assert!(out.assert_ok().stdout.contains("replayed 0"), "{out:#?}");

    add_dead_letter(&mut con, "console", "third");
    let out = run_cli(&path, &["dlq", "drop", "console"]);
    assert!(
        out.assert_ok()
            .stdout
            .contains("dropped 1 dead letter(s) of console"),
        "{out:#?}"
    );
    assert_eq!(xlen(&mut con, "chatbridge:dlq:console"), 0);
    let out = run_cli(&path, &["dlq", "drop", "console"]);
    assert!(out.assert_ok().stdout.contains("dropped 0"), "{out:#?}");
}

/// `-n 0` must not turn into an "unexpected reply from redis" failure.
#[test]
fn dlq_list_with_count_zero_is_not_a_redis_error() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let path = config.path();
    let mut con = redis_con(&redis);
    add_dead_letter(&mut con, "audit", "first");
    let out = run_cli(&path, &["dlq", "list", "audit", "-n", "0"]);
    assert!(
        !out.stderr.contains("unexpected reply") && (out.code == 0 || out.code == 2),
        "`-n 0` should list nothing or be refused as a usage error: {out:#?}"
    );
}

#[test]
fn an_unknown_link_is_refused_naming_the_known_ones() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    for command in [
        &["dlq", "list", "nosuchlink"][..],
        &["dlq", "replay", "nosuchlink"],
        &["dlq", "drop", "nosuchlink"],
        &["enable", "nosuchlink"],
    ] {
        let out = run_cli(&config.path(), command);
        assert_ne!(out.code, 0, "{command:?}: {out:#?}");
        assert!(out.stdout.is_empty(), "{command:?}: {out:#?}");
        assert!(out.stderr.contains("nosuchlink"), "{command:?}: {out:#?}");
        assert!(
            out.stderr.contains("audit, console"),
            "{command:?}: {out:#?}"
        );
        assert_eq!(out.stderr.lines().count(), 1, "{command:?}: {out:#?}");
    }
}

#[test]
fn enable_clears_a_disabled_link() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let path = config.path();
    let mut con = redis_con(&redis);

    let out = run_cli(&path, &["enable", "audit"]);
    assert!(
        out.assert_ok().stdout.contains("audit was not disabled"),
        "{out:#?}"
    );

    let _: () = query(
        &mut con,
        redis::cmd("HSET")
            .arg("chatbridge:link:audit")
            .arg("disabled")
            .arg("HTTP 410 Gone"),
    );
    let out = run_cli(&path, &["outbox"]);
    assert!(
        out.assert_ok().stdout.contains("DISABLED: HTTP 410 Gone"),
        "{out:#?}"
    );
    let out = run_cli(&path, &["enable", "audit"]);
    assert!(out.assert_ok().stdout.contains("audit enabled"), "{out:#?}");
    let disabled: bool = query(
        &mut con,
        redis::cmd("HEXISTS")
            .arg("chatbridge:link:audit")
            .arg("disabled"),
    );
    assert!(!disabled);
    let out = run_cli(&path, &["outbox"]);
    assert!(!out.assert_ok().stdout.contains("DISABLED"), "{out:#?}");
}
