//! The operator CLI through the real `chatbridge` binary: `check` on good and broken configs
//! (exit codes, every problem with its key path, no secret ever printed), the chat commands
//! against a private redis-server (bytes in Redis), `tail`, the outbox and dead-letter commands,
//! and the failure modes (Redis unreachable, bad room names).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemon::{ConfigDir, binary};
use common::redis::RedisServer;
use common::seed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// How long any one-shot command may take before the test gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for `tail` to subscribe or print.
const TAIL_WAIT: Duration = Duration::from_secs(10);

/// Tokens planted in the broken fixture; none may ever appear in the output.
const PLANTED_TOKENS: [&str; 4] = [
    "redispass-TOKEN-R1",
    "URLTOKEN-A1",
    "SECRETTOKEN-S1",
    "URLTOKEN-L1",
];

/// What one run of the binary produced.
#[derive(Debug)]
struct Outcome {
    /// The exit code (-1 when killed by a signal).
    code: i32,
    /// Everything printed on stdout.
    stdout: String,
    /// Everything printed on stderr (log lines at `warn` and the error line).
    stderr: String,
    /// How long the command ran, for "fails fast" assertions.
    elapsed: Duration,
}

impl Outcome {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        self
    }
}

/// Runs `chatbridge --config <config> <args…>` with a clean environment plus `env`; panics if it
/// does not finish within [`COMMAND_TIMEOUT`].
fn run_cli_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let started = Instant::now();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatbridge");
    // Read both pipes while it runs: a command printing more than a pipe holds (64 KiB) would
    // otherwise block on its write until the timeout.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = std::io::Read::read_to_end(&mut pipe, &mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chatbridge") {
            break status;
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chatbridge {args:?} did not finish within {COMMAND_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout.join().expect("stdout reader")).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn run_cli(config: &Path, args: &[&str]) -> Outcome {
    run_cli_env(config, args, &[])
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn fixture(name: &str) -> PathBuf {
    repo_file("tests/cli_configs").join(name)
}

/// A config whose Redis is `redis`, with a console link and a webhook link `audit` (pointing at
/// a loopback port nobody contacts: no daemon runs in these tests).
fn config_for(redis: &RedisServer) -> ConfigDir {
    ConfigDir::new(&format!(
        r#"
[redis]
url = "{}"

[links.console]
kind = "console"

[links.audit]
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[rooms]]
name = "general"
links = ["console", "audit"]

[dms]
links = ["audit"]
"#,
        redis.url()
    ))
}

/// A blocking connection to the test's Redis.
fn redis_con(redis: &RedisServer) -> redis::Connection {
    redis
        .client()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect to the test redis")
}

fn query<T: redis::FromRedisValue>(con: &mut redis::Connection, cmd: &mut redis::Cmd) -> T {
    cmd.query(con)
        .unwrap_or_else(|e| panic!("redis command failed: {e}"))
}

fn lrange(con: &mut redis::Connection, key: &str) -> Vec<String> {
    query(con, redis::cmd("LRANGE").arg(key).arg(0).arg(-1))
}

fn smembers(con: &mut redis::Connection, key: &str) -> Vec<String> {
    let mut members: Vec<String> = query(con, redis::cmd("SMEMBERS").arg(key));
    members.sort();
    members
}

fn xlen(con: &mut redis::Connection, key: &str) -> usize {
    query(con, redis::cmd("XLEN").arg(key))
}

fn parse(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// A loopback port with nothing listening on it (it was free a moment ago).
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

// ---------------------------------------------------------------------------------------------
// check and --help

#[test]
fn check_accepts_the_shipped_config_and_prints_the_routing_table() {
    let out = run_cli(&repo_file("config.toml"), &["check"]);
    out.assert_ok();
    assert!(
        out.stdout.contains("redis: redis://127.0.0.1:6379"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("links:\n"), "{out:#?}");
    assert!(out.stdout.contains(", lease 10s\n"), "{out:#?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "console", "console", "events:", "message,", "join,", "leave"
                ]),
        "no console link row:\n{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["general", "→", "console"]),
        "no general room row:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("dms: not mirrored"), "{out:#?}");
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with("config.toml: OK"), "last line: {last:?}");
    assert!(!out.all().contains("warning"), "{out:#?}");
}

#[test]
fn check_resolves_variables_and_never_prints_secrets() {
    let config = ConfigDir::new(
        r#"
[redis]
url = "${CB_REDIS_URL}"

[links.audit]
kind = "webhook"
url = "${CB_HOOK_URL}"
secret = "${CB_HOOK_SECRET}"

[links.spare]
kind = "console"

[[rooms]]
name = "general"
links = ["audit"]
"#,
    );
    let out = run_cli_env(
        &config.path(),
        &["check"],
        &[
            ("CB_REDIS_URL", "redis://:hunter2-PASS@127.0.0.1:1/0"),
            (
                "CB_HOOK_URL",
                "https://hooks.example.com/services/PATHTOKEN-X9?key=QUERYTOKEN-Q9",
            ),
            ("CB_HOOK_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
        ],
    );
    out.assert_ok();
    for secret in [
        "hunter2-PASS",
        "PATHTOKEN-X9",
        "QUERYTOKEN-Q9",
        "C2FVsBQIhrscChlQIMV",
    ] {
        assert!(!out.all().contains(secret), "{secret} printed:\n{out:#?}");
    }
    assert!(out.stdout.contains("hooks.example.com"), "{out:#?}");
    assert!(out.stdout.contains("signed"), "{out:#?}");
    assert!(out.stdout.contains("redacted"), "{out:#?}");
    assert!(
        out.stdout.contains("warning: links.spare"),
        "an unused link should be warned about:\n{out:#?}"
    );
    assert!(out.stdout.trim_end().ends_with(": OK"), "{out:#?}");
}

#[test]
fn help_works_for_every_command() {
    let config = repo_file("config.toml");
    let top = run_cli(&config, &["--help"]);
    top.assert_ok();
    let subcommands = [
        "run", "check", "send", "dm", "join", "leave", "typing", "read", "history", "members",
        "tail", "outbox", "dlq", "enable",
    ];
    for sub in subcommands {
        assert!(
            top.stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "top-level help does not list `{sub}`:\n{}",
            top.stdout
        );
        let out = run_cli(&config, &[sub, "--help"]);
        out.assert_ok();
        assert!(
            out.stdout.contains(&format!("chatbridge {sub}")),
            "`{sub} --help` does not show its usage:\n{}",
            out.stdout
        );
    }
    for action in ["list", "replay", "drop"] {
        let out = run_cli(&config, &["dlq", action, "--help"]);
        out.assert_ok();
        assert!(
            out.stdout.contains(&format!("chatbridge dlq {action}")),
            "`dlq {action} --help`:\n{}",
            out.stdout
        );
    }
    let version = run_cli(&config, &["--version"]);
    version.assert_ok();
    assert!(version.stdout.starts_with("chatbridge "), "{version:#?}");
}

#[test]
fn usage_errors_are_not_config_errors() {
    let out = run_cli(&repo_file("config.toml"), &["send", "general"]);
    assert_eq!(out.code, 2, "clap's usage error code: {out:#?}");
    assert!(out.stderr.contains("Usage"), "{out:#?}");
    let out = run_cli(&repo_file("config.toml"), &["frobnicate"]);
    assert_eq!(out.code, 2, "{out:#?}");
}

/// Every problem planted in `broken.toml`, by key path.
const BROKEN_PATHS: [&str; 11] = [
    "colour",
    "redis.url",
    "links.audit.url",
    "links.audit.secret",
    "links.audit.events[1]",
    "links.legacy.url",
    "links.ops.url",
    "links.ops.retries",
    "rooms[0].links[1]",
    "rooms[1].name",
    "rooms[2].name",
];

fn assert_reports_every_problem(out: &Outcome) {
    assert_eq!(out.code, 78, "EX_CONFIG expected: {out:#?}");
    for path in BROKEN_PATHS {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{path}: "))),
            "no line for `{path}` in:\n{}",
            out.stderr
        );
    }
    for token in PLANTED_TOKENS {
        assert!(
            !out.all().contains(token),
            "`{token}` leaked into the output:\n{out:#?}"
        );
    }
}

#[test]
fn check_reports_every_problem_with_its_key_path() {
    let out = run_cli(&fixture("broken.toml"), &["check"]);
    assert_reports_every_problem(&out);
    assert!(
        out.stdout.is_empty(),
        "no routing table for a broken config: {out:#?}"
    );
    // What each line says, not just where.
    let line = |path: &str| {
        out.stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{path}: ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("rooms[0].links[1]").contains("ghost"),
        "{}",
        out.stderr
    );
    assert!(line("rooms[1].name").contains("rooms[0]"), "{}", out.stderr);
    assert!(line("rooms[2].name").contains(':'), "{}", out.stderr);
    assert!(
        line("links.audit.events[1]").contains("shout"),
        "{}",
        out.stderr
    );
    assert!(
        line("links.ops.url").contains("CB_CLI_TEST_UNSET_VAR"),
        "{}",
        out.stderr
    );
    assert!(
        line("links.ops.retries").contains("unknown"),
        "{}",
        out.stderr
    );
    assert!(line("colour").contains("unknown"), "{}", out.stderr);
}

#[test]
fn run_on_a_broken_config_exits_78_without_starting() {
    let out = run_cli(&fixture("broken.toml"), &["run"]);
    assert_reports_every_problem(&out);
    assert!(out.elapsed < Duration::from_secs(10), "{out:#?}");
}

#[test]
fn chat_commands_on_a_broken_config_exit_78() {
    let out = run_cli(
        &fixture("broken.toml"),
        &["send", "general", "hi", "--user-id", "1", "--username", "a"],
    );
    assert_reports_every_problem(&out);
}

#[test]
fn a_missing_config_file_is_a_clear_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    for command in [&["check"][..], &["run"], &["outbox"]] {
        let out = run_cli(&missing, command);
        assert_eq!(out.code, 78, "{command:?}: {out:#?}");
        assert!(
            out.stderr.contains(&missing.display().to_string()),
            "{out:#?}"
        );
        assert!(
            out.stderr.contains("cannot read the configuration file"),
            "{out:#?}"
        );
        assert!(out.stdout.is_empty(), "{out:#?}");
    }
}

#[test]
fn the_config_path_can_come_from_the_environment() {
    let shipped = repo_file("config.toml");
    let out = Command::new(binary())
        .arg("check")
        .env_clear()
        .env("CHATBRIDGE_CONFIG", &shipped)
        .output()
        .expect("run chatbridge");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
}

// ---------------------------------------------------------------------------------------------
// Chat commands against a private Redis

#[test]
fn send_stores_a_seed_shaped_message() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);

    let out = run_cli(
        &config.path(),
        &[
            "send",
            "general",
            "hi",
            "--user-id",
            "1001",
            "--username",
            "alice",
        ],
    );
    out.assert_ok();
    let id = out.stdout.trim();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "not an id: {out:#?}");

    let history = lrange(&mut con, "chat:room:general:history");
    assert_eq!(history.len(), 1, "{history:?}");
    let raw = &history[0];
    assert!(
        raw.contains(r#""user_id": 1001"#),
        "user id not a number: {raw}"
    );
    let message = parse(raw);
    let keys: Vec<&str> = message
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "user_id",
            "username",
            "content",
            "room",
            "timestamp",
            "type"
        ],
        "seed field order: {raw}"
    );
    assert_eq!(message["id"], json!(id));
    assert_eq!(message["user_id"], json!(1001));
    assert_eq!(message["username"], json!("alice"));
    assert_eq!(message["content"], json!("hi"));
    assert_eq!(message["room"], json!("general"));
    assert_eq!(message["type"], json!("message"));

    let out = run_cli(
        &config.path(),
        &[
            "send",
            "general",
            "yo",
            "--user-id",
            "abc",
            "--username",
            "bob",
        ],
    );
    out.assert_ok();
    let history = lrange(&mut con, "chat:room:general:history");
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].contains(r#""user_id": "abc""#), "{}", history[0]);
    assert_eq!(parse(&history[0])["id"], json!(out.stdout.trim()));
}

#[test]
fn dm_writes_the_ordered_dm_history() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);

    let out = run_cli(
        &config.path(),
        &["dm", "1001", "999", "psst", "--username", "alice"],
    );
    out.assert_ok();
    let history = lrange(&mut con, "chat:dm:999:1001:history");
    assert_eq!(history.len(), 1, "{history:?}");
    let message = parse(&history[0]);
    assert_eq!(message["id"], json!(out.stdout.trim()));
    assert_eq!(message["user_id"], json!(1001));
    assert_eq!(message["content"], json!("psst"));
    assert_eq!(message["room"], Value::Null);
    assert!(
        lrange(&mut con, "chat:dm:1001:999:history").is_empty(),
        "ids must be ordered numerically"
    );

    let out = run_cli(&config.path(), &["history", "--dm", "999", "1001"]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{out:#?}");
    assert!(lines[0].ends_with("alice: psst"), "{out:#?}");
    // Either order of the two ids names the same conversation.
    let out = run_cli(&config.path(), &["history", "--dm", "1001", "999"]);
    assert_eq!(out.assert_ok().stdout.lines().count(), 1, "{out:#?}");
}

/// Subscribes to a channel before a command runs, to see what it publishes. A thread owns
/// the subscribed connection (dropping redis-rs's `PubSub` unsubscribes); it ends when the
/// test's redis-server is killed.
struct Listener {
    /// Every payload published on the channel, in order.
    payloads: mpsc::Receiver<String>,
}

impl Listener {
    fn new(redis: &RedisServer, channel: &str) -> Self {
        let mut con = redis_con(redis);
        let subscribed = channel.to_owned();
        let (send, payloads) = mpsc::channel();
        std::thread::spawn(move || {
            let mut pubsub = con.as_pubsub();
            pubsub.subscribe(&subscribed).expect("subscribe");
            pubsub
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("read timeout");
            loop {
                match pubsub.get_message() {
                    Ok(message) => {
                        let payload: String = message.get_payload().expect("text payload");
                        if send.send(payload).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(_) => return,
                }
            }
        });
        let mut con = redis_con(redis);
        let deadline = Instant::now() + Duration::from_secs(5);
        while numsub(&mut con, channel) < 1 {
            assert!(Instant::now() < deadline, "listener did not subscribe");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { payloads }
    }

    /// The next published payload, as JSON.
    fn next(&mut self) -> Value {
        let payload = self
            .payloads
            .recv_timeout(Duration::from_secs(5))
            .expect("a published event");
        parse(&payload)
    }
}

#[test]
fn join_leave_typing_and_read_publish_and_store_like_the_seed() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let mut events = Listener::new(&redis, "chat:room:general");
    let path = config.path();
    let alice = ["--user-id", "1001", "--username", "alice"];
    let bob = ["--user-id", "1002", "--username", "bob"];
    let members_key = "chat:room:general:members";

    let out = run_cli(&path, &[&["join", "general"][..], &alice].concat());
    assert!(
        out.assert_ok().stdout.contains("alice joined the room"),
        "{out:#?}"
    );
    run_cli(&path, &[&["join", "general"][..], &bob].concat()).assert_ok();
    assert_eq!(smembers(&mut con, members_key), ["1001", "1002"]);
    let joined = events.next();
    assert_eq!(joined["type"], json!("system"), "{joined}");
    assert_eq!(
        joined["content"],
        json!("alice joined the room"),
        "{joined}"
    );
    events.next();

    let out = run_cli(&path, &["members", "general"]);
    let mut listed: Vec<&str> = out.assert_ok().stdout.lines().collect();
    listed.sort();
    assert_eq!(listed, ["1001", "1002"], "{out:#?}");

    let out = run_cli(&path, &[&["leave", "general"][..], &bob].concat());
    assert!(
        out.assert_ok().stdout.contains("bob left the room"),
        "{out:#?}"
    );
    assert_eq!(smembers(&mut con, members_key), ["1001"]);
    assert_eq!(events.next()["content"], json!("bob left the room"));

    run_cli(&path, &["typing", "general", "--user-id", "1001"]).assert_ok();
    let typing = events.next();
    assert_eq!(typing["type"], json!("typing"), "{typing}");
    assert_eq!(typing["user_id"], json!(1001), "{typing}");

    let sent = run_cli(&path, &[&["send", "general", "hello"][..], &alice].concat());
    let message_id = sent.assert_ok().stdout.trim().to_owned();
    assert_eq!(events.next()["id"], json!(message_id));
    run_cli(
        &path,
        &["read", "general", &message_id, "--user-id", "1001"],
    )
    .assert_ok();
    let receipts: HashMap<String, String> = query(
        &mut con,
        redis::cmd("HGETALL").arg("chat:room:general:read_receipts"),
    );
    assert_eq!(
        receipts,
        HashMap::from([("1001".to_owned(), message_id.clone())])
    );
    let receipt = events.next();
    assert_eq!(receipt["type"], json!("read_receipt"), "{receipt}");
    assert_eq!(receipt["user_id"], json!(1001), "{receipt}");
    assert_eq!(receipt["last_read"], json!(message_id), "{receipt}");

    // Only messages go to history.
    assert_eq!(lrange(&mut con, "chat:room:general:history").len(), 1);
}

#[test]
fn history_shows_the_newest_first() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let path = config.path();
    for text in ["one", "two", "three"] {
        run_cli(
            &path,
            &[
                "send",
                "general",
                text,
                "--user-id",
                "1001",
                "--username",
                "alice",
            ],
        )
        .assert_ok();
    }

    let out = run_cli(&path, &["history", "general", "-n", "2"]);
    let lines: Vec<&str> = out.assert_ok().stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:#?}");
    assert!(lines[0].ends_with("alice: three"), "{out:#?}");
    assert!(lines[1].ends_with("alice: two"), "{out:#?}");

    let out = run_cli(&path, &["history", "general"]);
    assert_eq!(out.assert_ok().stdout.lines().count(), 3, "{out:#?}");

    let out = run_cli(&path, &["history", "general", "--json"]);
    let lines: Vec<&str> = out.assert_ok().stdout.lines().collect();
    assert_eq!(
        lines,
        lrange(&mut con, "chat:room:general:history"),
        "--json prints the stored bytes"
    );
    assert_eq!(parse(lines[0])["content"], json!("three"));

    let out = run_cli(&path, &["history", "empty-room"]);
    assert!(out.assert_ok().stdout.is_empty(), "{out:#?}");
}

#[test]
fn history_prints_foreign_entries_without_failing() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let _: () = query(
        &mut con,
        redis::cmd("LPUSH")
            .arg("chat:room:general:history")
            .arg("not json \u{1b}[31m"),
    );
    let out = run_cli(&config.path(), &["history", "general"]);
    let line = out
        .assert_ok()
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("not json"), "{out:#?}");
    assert!(
        !line.contains('\u{1b}'),
        "control characters must be escaped: {line:?}"
    );
}

#[test]
fn an_invalid_room_name_is_refused_and_nothing_is_written() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let path = config.path();
    let user = ["--user-id", "1001", "--username", "alice"];
    for command in [
        [&["send", "a:b", "hi"][..], &user].concat(),
        [&["send", "has space", "hi"][..], &user].concat(),
        [&["send", "", "hi"][..], &user].concat(),
        [&["join", "a:b"][..], &user].concat(),
        vec!["typing", "a:b", "--user-id", "1001"],
        vec!["tail", "a:b"],
    ] {
        let out = run_cli(&path, &command);
        assert_ne!(out.code, 0, "{command:?}: {out:#?}");
        assert_ne!(out.code, 78, "not a config problem: {command:?}: {out:#?}");
        assert!(out.stdout.is_empty(), "{command:?}: {out:#?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one clear line: {command:?}: {out:#?}");
        assert!(lines[0].contains("room"), "{command:?}: {out:#?}");
    }
    let out = run_cli(&path, &[&["send", "a:b", "hi"][..], &user].concat());
    assert!(out.stderr.contains("`:`"), "{out:#?}");
    let keys: Vec<String> = query(&mut con, redis::cmd("KEYS").arg("*"));
    assert!(keys.is_empty(), "nothing may be written: {keys:?}");
}

// ---------------------------------------------------------------------------------------------
// tail

/// A `chatbridge tail` child whose stdout lines arrive on a channel; killed on drop.
struct Tail {
    /// The `chatbridge tail` process.
    child: Child,
    /// Its stdout, line by line, as printed.
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(config: &Path, rooms: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(config)
            .arg("tail")
            .args(rooms)
            .env_clear()
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chatbridge tail");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits until Redis reports the subscriptions `ready` asks about.
    fn wait_subscribed(
        &mut self,
        con: &mut redis::Connection,
        ready: impl Fn(&mut redis::Connection) -> bool,
    ) {
        let deadline = Instant::now() + TAIL_WAIT;
        while !ready(con) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tail exited before subscribing: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "tail did not subscribe in {TAIL_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(TAIL_WAIT)
            .expect("tail printed a line")
    }

    /// SIGINT, as Ctrl-C: tail must exit 0 promptly.
    fn interrupt(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("send SIGINT");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for tail") {
                assert_eq!(status.code(), Some(0), "tail after SIGINT: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "tail ignored SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn numsub(con: &mut redis::Connection, channel: &str) -> usize {
    let reply: Vec<redis::Value> = query(con, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel));
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n as usize,
        _ => 0,
    }
}

fn numpat(con: &mut redis::Connection) -> usize {
    query(con, redis::cmd("PUBSUB").arg("NUMPAT"))
}

#[test]
fn tail_prints_the_rooms_it_was_given() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let mut tail = Tail::start(&config.path(), &["general"]);
    tail.wait_subscribed(&mut con, |c| numsub(c, "chat:room:general") >= 1);

    block_on(async {
        let mut seed_con = redis.connection().await;
        // Another room first: if tail printed it, it would be the first line.
        seed::send_message(&mut seed_con, "random", json!(1002), "bob", "elsewhere").await;
        seed::send_message(&mut seed_con, "general", json!(1001), "alice", "hi").await;
        seed::join(&mut seed_con, "general", json!(1002), "bob").await;
        seed::typing(&mut seed_con, "general", json!(1001)).await;
    });
    assert_eq!(tail.next_line(), "[general] alice: hi");
    assert_eq!(tail.next_line(), "[general] * bob joined the room");
    assert_eq!(tail.next_line(), "[general] 1001 is typing");
    tail.interrupt();
}

#[test]
fn tail_without_rooms_prints_every_room_and_dm() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let mut tail = Tail::start(&config.path(), &[]);
    tail.wait_subscribed(&mut con, |c| numpat(c) >= 2);

    block_on(async {
        let mut seed_con = redis.connection().await;
        seed::send_message(&mut seed_con, "random", json!(1002), "bob", "anyone?").await;
        seed::send_dm(&mut seed_con, json!(1001), json!(999), "alice", "psst").await;
    });
    assert_eq!(tail.next_line(), "[random] bob: anyone?");
    assert_eq!(tail.next_line(), "[dm 999:1001] alice: psst");
    tail.interrupt();
}

#[test]
fn tail_fails_when_redis_goes_away() {
    let mut redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let mut tail = Tail::start(&config.path(), &["general"]);
    tail.wait_subscribed(&mut con, |c| numsub(c, "chat:room:general") >= 1);
    redis.kill();
    let deadline = Instant::now() + TAIL_WAIT;
    let status = loop {
        if let Some(status) = tail.child.try_wait().expect("wait for tail") {
            break status;
        }
        assert!(Instant::now() < deadline, "tail kept running without redis");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !status.success(),
        "tail must fail when redis is gone: {status}"
    );
}

// ---------------------------------------------------------------------------------------------
// outbox, dlq, enable

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
    chatbridge::pyjson::to_string(&message)
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
        reply
            .ids
            .iter()
            .map(|entry| {
                entry
                    .map
                    .iter()
                    .map(|(k, v)| {
                        let v: String = redis::from_redis_value(v.clone()).expect("text field");
                        (k.clone(), v)
                    })
                    .collect()
            })
            .collect()
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

// ---------------------------------------------------------------------------------------------
// Redis unreachable

#[test]
fn an_unreachable_redis_exits_69_with_one_redacted_line() {
    let port = dead_port();
    let config = ConfigDir::new(&format!(
        "[redis]\nurl = \"redis://:pw-TOKEN-U1@127.0.0.1:{port}/\"\n"
    ));
    let path = config.path();
    let commands: [&[&str]; 4] = [
        &[
            "send",
            "general",
            "hi",
            "--user-id",
            "1001",
            "--username",
            "alice",
        ],
        &["history", "general"],
        &["outbox"],
        &["tail"],
    ];
    for command in commands {
        let out = run_cli(&path, command);
        assert_eq!(out.code, 69, "EX_UNAVAILABLE: {command:?}: {out:#?}");
        assert!(
            out.elapsed < Duration::from_secs(10),
            "{command:?}: {out:#?}"
        );
        assert!(out.stdout.is_empty(), "{command:?}: {out:#?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one clear line: {command:?}: {out:#?}");
        assert!(
            lines[0].contains(&format!("redis://:redacted@127.0.0.1:{port}")),
            "{command:?}: {out:#?}"
        );
        assert!(!out.all().contains("pw-TOKEN-U1"), "{command:?}: {out:#?}");
    }
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    // `chatbridge check | head -1`: far more output than a pipe holds, read one line, close.
    let mut toml = String::from(
        "[redis]\nurl = \"redis://127.0.0.1:9\"\n[links.console]\nkind = \"console\"\n",
    );
    for i in 0..3000 {
        toml += &format!("[[rooms]]\nname = \"room{i}\"\nlinks = [\"console\"]\n");
    }
    let dir = ConfigDir::new(&toml);
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(dir.path())
        .arg("check")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatbridge");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read the first line");
    let out = child.wait_with_output().expect("wait for chatbridge");
    assert!(!first.trim().is_empty(), "a first line was printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
