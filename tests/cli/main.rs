//! The operator CLI through the real `chatbridge` binary: `check` on good and broken configs
//! (exit codes, every problem with its key path, no secret ever printed), the chat commands
//! against a private redis-server (bytes in Redis), `tail`, the outbox and dead-letter commands,
//! and the failure modes (Redis unreachable, bad room names). One file per command group; the
//! shared harness (running the binary, configs, Redis helpers) is here.

#[path = "../common/mod.rs"]
mod common;

mod chat;
mod check;
mod outbox;
mod tail;
mod unreachable;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemon::{ConfigDir, binary, clean_command};
use common::redis::RedisServer;
use common::seed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// How long any one-shot command may take before the test gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for `tail` to subscribe or print.
const TAIL_WAIT: Duration = Duration::from_secs(10);

/// `chatbridge send` of `text` to `general` from `user_id` named `username`.
fn send_args<'a>(text: &'a str, user_id: &'a str, username: &'a str) -> [&'a str; 7] {
    [
        "send",
        "general",
        text,
        "--user-id",
        user_id,
        "--username",
        username,
    ]
}

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
    let mut child = clean_command(config, args)
        .envs(env.iter().copied())
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
