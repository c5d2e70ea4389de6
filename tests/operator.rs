//! Operator safety through the real `chatbridge` binary: signals a service manager or an
//! operator sends (logged, never a silent death), chat data that cannot drive the operator's
//! terminal, secrets in webhook query strings that never reach logs, dead letters or the CLI,
//! and the CLI details (user ids as the seed writes them, DM order, Redis authentication).

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::config::audit_everywhere;
use common::daemon::{ConfigDir, Daemon, clean_command};
use common::receiver::{Receiver, Reply};
use common::redis::RedisServer;
use common::seed;
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use serde_json::json;

/// How long to wait for deliveries and log lines.
const WAIT: Duration = Duration::from_secs(15);

/// A daemon config: one webhook link `audit` at `hook_url` for room `general`.
fn config(redis_url: &str, hook_url: &str) -> String {
    audit_everywhere(redis_url, hook_url, "")
}

/// Runs `chatbridge --config <config> <args…>` with a clean environment and returns its raw
/// output (stdout bytes exactly as printed, so tests can look for raw control bytes).
fn run_cli(config: &Path, args: &[&str]) -> Output {
    clean_command(config, args)
        .output()
        .expect("run chatbridge")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Bytes a terminal acts on: C0 controls but the line feed, DEL, and C1 controls in UTF-8
/// (`0xC2 0x80`–`0xC2 0x9F`), plus the bidi override U+202E.
fn raw_controls(out: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, &b) in out.iter().enumerate() {
        if (b < 0x20 && b != b'\n') || b == 0x7f {
            found.push(format!("byte {b:#04x} at {i}"));
        }
        if b == 0xc2 && out.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)) {
            found.push(format!("C1 control at {i}"));
        }
    }
    if text(out).contains('\u{202e}') {
        found.push("U+202E".to_owned());
    }
    found
}

/// Sends one seed message to `general` and waits until the receiver holds `n` requests.
async fn deliver_one(redis: &RedisServer, receiver: &Receiver, content: &str, n: usize) {
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1001), "alice", content).await;
    let got = receiver.wait_for(n, WAIT).await;
    let last = String::from_utf8_lossy(&got[n - 1].body).into_owned();
    assert!(last.contains(content), "request {n} was {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_an_unchanged_file_without_disturbing_delivery() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&redis.url(), &receiver.url("/hook")));
    daemon.wait_ready();
    deliver_one(&redis, &receiver, "before the hangup", 1).await;
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("SIGHUP received; reloading the configuration", 1, WAIT);
    daemon.wait_for_log("reload: nothing to change", 1, WAIT);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("reload: nothing to change", 2, WAIT);
    deliver_one(&redis, &receiver, "after the hangup", 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_and_sigusr2_are_logged_and_ignored() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&redis.url(), &receiver.url("/hook")));
    daemon.wait_ready();
    daemon.signal(Signal::SIGUSR1);
    daemon.wait_for_log("SIGUSR1 has no meaning here; ignoring it", 1, WAIT);
    daemon.signal(Signal::SIGUSR2);
    daemon.wait_for_log("SIGUSR2 has no meaning here; ignoring it", 1, WAIT);
    deliver_one(&redis, &receiver, "still here", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigquit_drains_and_exits_0_with_a_log_line() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(&config(&redis.url(), &receiver.url("/hook")));
    daemon.wait_ready();
    deliver_one(&redis, &receiver, "before quitting", 1).await;
    daemon.signal(Signal::SIGQUIT);
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("SIGQUIT received; stopping"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

/// Chat data that tries to drive the operator's terminal: erase the screen, write the
/// clipboard (OSC 52), return the carriage, backspace, a C1 CSI, a bidi override.
const EVIL: &str = "x\u{1b}[2J\u{1b}]52;c;cHduZWQ=\u{7}\r\u{8}\u{9b}31m\u{202e}y";

#[tokio::test(flavor = "multi_thread")]
async fn chat_data_cannot_put_raw_control_bytes_on_the_operator_terminal() {
    let redis = RedisServer::start();
    let dir = ConfigDir::new(&config(&redis.url(), "http://127.0.0.1:9/hook"));
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1001), EVIL, EVIL).await;
    let _: () = con.sadd("chat:room:general:members", EVIL).await.unwrap();
    let _: () = con
        .lpush("chat:room:general:history", format!("not json {EVIL}"))
        .await
        .unwrap();
    let _: () = con
        .lpush(
            "chat:room:general:history",
            format!(r#"{{"content": "{EVIL}"}}"#),
        )
        .await
        .unwrap();
    let path = dir.path();
    let commands: [&[&str]; 6] = [
        &["history", "general"],
        &["history", "general", "--json"],
        &["members", "general"],
        &["join", "general", "--user-id", "5", "--username", EVIL],
        &["leave", "general", "--user-id", "5", "--username", EVIL],
        &["send", EVIL, "hi", "--user-id", "5", "--username", "bob"],
    ];
    for args in commands {
        let out = run_cli(&path, args);
        let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            raw_controls(&out.stdout).is_empty(),
            "{args:?}: {:?}",
            raw_controls(&out.stdout)
        );
        assert!(raw_controls(&out.stderr).is_empty(), "{args:?}: {shown:?}");
        assert!(
            shown.contains(r"\u{1b}") || shown.contains(r"\u001b"),
            "{args:?}: {shown:?}"
        );
    }
    let json = run_cli(&path, &["history", "general", "--json"]);
    let newest = text(&json.stdout)
        .lines()
        .next()
        .expect("entries")
        .to_owned();
    let entry: serde_json::Value = serde_json::from_str(&newest).expect("JSON after escaping");
    assert_eq!(
        entry["content"], EVIL,
        "the escapes stand for the same text"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_escapes_live_chat_data() {
    let redis = RedisServer::start();
    let dir = ConfigDir::new(&config(&redis.url(), "http://127.0.0.1:9/hook"));
    let mut child = clean_command(&dir.path(), &["tail", "general"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    let mut con = redis.connection().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let subscribers: Vec<(String, usize)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("chat:room:general")
            .query_async(&mut con)
            .await
            .unwrap();
        if subscribers[0].1 > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "tail never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seed::send_message(&mut con, "general", json!(1001), EVIL, EVIL).await;
    seed::send_message(&mut con, "general", json!(1001), "alice", "the end").await;
    let mut stdout = child.stdout.take().expect("stdout");
    let printed = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut printed = Vec::new();
        let mut chunk = [0u8; 4096];
        while !text(&printed).contains("the end") {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => printed.extend_from_slice(&chunk[..n]),
            }
        }
        printed
    });
    let printed = tokio::time::timeout(WAIT, printed)
        .await
        .expect("tail printed")
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let _ = child.wait();
    assert!(raw_controls(&printed).is_empty(), "{:?}", text(&printed));
    assert!(
        text(&printed).contains(r"\u{1b}]52;c;"),
        "{:?}",
        text(&printed)
    );
}

#[test]
fn tail_with_a_bad_room_name_is_a_room_error_before_any_connection() {
    let dir = ConfigDir::new(&config("redis://127.0.0.1:9", "http://127.0.0.1:9/hook"));
    let sent = run_cli(
        &dir.path(),
        &["send", "a:b", "hi", "--user-id", "1", "--username", "x"],
    );
    let tail = run_cli(&dir.path(), &["tail", "general", "a:b"]);
    assert_eq!(tail.status.code(), Some(1), "{}", text(&tail.stderr));
    let expected = "refused room name `a:b`: room name contains `:`";
    assert!(
        text(&tail.stderr).contains(expected),
        "{}",
        text(&tail.stderr)
    );
    assert!(!text(&tail.stderr).contains("cannot reach redis"));
    assert_eq!(
        sent.status.code(),
        Some(69),
        "send needs redis first: {}",
        text(&sent.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_user_ids_are_written_as_the_seed_writes_them() {
    let redis = RedisServer::start();
    let dir = ConfigDir::new(&config(&redis.url(), "http://127.0.0.1:9/hook"));
    // Python: json.dumps(10**30) == "1000000000000000000000000000000".
    let cases = [
        (
            "1000000000000000000000000000000",
            r#""user_id": 1000000000000000000000000000000,"#,
        ),
        ("-5", r#""user_id": -5,"#),
        ("007", r#""user_id": "007","#),
    ];
    for (id, written) in cases {
        let out = run_cli(
            &dir.path(),
            &["send", "general", "hi", "--user-id", id, "--username", "u"],
        );
        assert!(out.status.success(), "{id}: {}", text(&out.stderr));
        let mut con = redis.connection().await;
        let newest: String = con.lindex("chat:room:general:history", 0).await.unwrap();
        assert!(newest.contains(written), "{id}: {newest}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dm_ids_equal_as_numbers_share_one_channel_whoever_sends() {
    let redis = RedisServer::start();
    let dir = ConfigDir::new(&config(&redis.url(), "http://127.0.0.1:9/hook"));
    for (from, to) in [("7", "007"), ("007", "7")] {
        let out = run_cli(&dir.path(), &["dm", from, to, "hi", "--username", "u"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let mut con = redis.connection().await;
    let one: usize = con.llen("chat:dm:007:7:history").await.unwrap();
    let other: usize = con.llen("chat:dm:7:007:history").await.unwrap();
    assert_eq!((one, other), (2, 0));
    let out = run_cli(&dir.path(), &["dm", "-5", "7", "hi", "--username", "u"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let negative: usize = con.llen("chat:dm:-5:7:history").await.unwrap();
    assert_eq!(negative, 1);
}

/// The query secret planted in the webhook URL; it must appear nowhere an operator looks.
const QUERY_SECRET: &str = "QSECRET-4f9a1c";

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_echoing_the_query_secret_never_gets_it_into_logs_or_the_dlq() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let url = receiver.url(&format!(
        "/x?key={QUERY_SECRET}&sig=c2lnbmF0dXJlLXNlY3JldA%3D%3D"
    ));
    let echo = format!("bad request to {url}; key {QUERY_SECRET} sig c2lnbmF0dXJlLXNlY3JldA== bad");
    receiver.respond_with(Reply::status(400).body(&echo));
    let daemon = Daemon::start(&config(&redis.url(), &url));
    daemon.wait_ready();
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1001), "alice", "poison").await;
    receiver.wait_for(1, WAIT).await;
    let deadline = Instant::now() + WAIT;
    while con.xlen::<_, usize>("chatbridge:dlq:audit").await.unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing dead-lettered:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead: redis::Value = con.xrange_all("chatbridge:dlq:audit").await.unwrap();
    let stored = format!("{dead:?}");
    let listed = run_cli(&daemon.config_path(), &["dlq", "list", "audit"]);
    let status = run_cli(&daemon.config_path(), &["outbox"]);
    let check = run_cli(&daemon.config_path(), &["check"]);
    let seen = [
        ("dlq entry", stored),
        ("log", daemon.log()),
        ("dlq list", text(&listed.stdout) + &text(&listed.stderr)),
        ("outbox", text(&status.stdout) + &text(&status.stderr)),
        ("check", text(&check.stdout) + &text(&check.stderr)),
    ];
    for (place, shown) in seen {
        for secret in [QUERY_SECRET, "c2lnbmF0dXJlLXNlY3JldA"] {
            assert!(!shown.contains(secret), "{secret} in the {place}: {shown}");
        }
    }
    assert!(
        text(&listed.stdout).contains("HTTP 400: bad request to …"),
        "{}",
        text(&listed.stdout)
    );
}

/// A test server that requires the password `s3cret-right` (set after start, since the
/// helper's readiness PING carries no password).
async fn redis_with_password() -> RedisServer {
    let redis = RedisServer::start();
    let mut con = redis.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret-right")
        .query_async(&mut con)
        .await
        .expect("set requirepass");
    redis
}

/// Starts `chatbridge run` on `redis_url` and waits for it to exit; returns code, stderr, time.
fn run_until_exit(redis_url: &str) -> (Option<i32>, String, Duration) {
    let dir = ConfigDir::new(&config(redis_url, "http://127.0.0.1:9/hook"));
    let started = Instant::now();
    let mut child = clean_command(&dir.path(), &["run"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatbridge run");
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap");
            panic!("run kept retrying:\n{}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect run");
    (out.status.code(), text(&out.stderr), started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn run_with_a_wrong_or_missing_redis_password_exits_69_at_start() {
    let redis = redis_with_password().await;
    let port = redis.port();
    for (url, shown) in [
        (
            format!("redis://:wrong-pass-W1@127.0.0.1:{port}"),
            "wrong password",
        ),
        (format!("redis://127.0.0.1:{port}"), "none is set"),
    ] {
        let (code, stderr, took) = run_until_exit(&url);
        assert_eq!(code, Some(69), "{url}: {stderr}");
        assert!(took < Duration::from_secs(5), "{url}: took {took:?}");
        assert!(stderr.contains("authentication failed"), "{stderr}");
        assert!(stderr.contains(shown), "{stderr}");
        assert!(!stderr.contains("wrong-pass-W1"), "{stderr}");
        assert!(!stderr.contains("s3cret-right"), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("chatbridge: redis at redis://"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_with_the_right_redis_password_starts() {
    let redis = redis_with_password().await;
    let url = format!("redis://:s3cret-right@127.0.0.1:{}", redis.port());
    let mut daemon = Daemon::start(&config(&url, "http://127.0.0.1:9/hook"));
    daemon.wait_ready();
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT).code(), Some(0));
    assert!(!daemon.log().contains("s3cret-right"));
}
