//! The systemd integration: the unit file passes `systemd-analyze verify`, and the real
//! `chatbridge run` binary speaks the sd_notify protocol to a notify socket the test owns
//! (a Unix datagram socket passed as `NOTIFY_SOCKET`): READY=1 after the subscription and the
//! first catch-up, STATUS= lines, WATCHDOG=1 only while healthy, STOPPING=1 on SIGTERM.
//! The unit's restart policy matches the exit codes the binary really returns: a broken
//! configuration exits 78, which the unit does not restart.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{ConfigDir, Daemon};
use common::notify::NotifySocket;
use common::receiver::{Receiver, Reply};
use common::redis::RedisServer;
use common::seed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redis::AsyncCommands;
use serde_json::json;

/// The unit file shipped in the repository.
const UNIT: &str = include_str!("../systemd/chatbridge.service");
/// The binary path the shipped unit references.
const INSTALLED: &str = "/usr/local/bin/chatbridge";
/// How long any single condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);
const OUTBOX: &str = "chatbridge:outbox:audit";

/// One webhook link `audit` on room `general`.
fn config(redis: &RedisServer, receiver: &Receiver) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[links.audit]\nkind = \"webhook\"\nurl = \"{}\"\ntimeout_secs = 5\n\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"audit\"]\n",
        redis.url(),
        receiver.url("/hook")
    )
}

/// The environment that makes the daemon talk to `socket`, with a watchdog if asked.
fn notify_env(socket: &NotifySocket, watchdog_usec: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![(
        "NOTIFY_SOCKET".to_owned(),
        socket.path().to_string_lossy().into_owned(),
    )];
    if let Some(usec) = watchdog_usec {
        env.push(("WATCHDOG_USEC".to_owned(), usec.to_owned()));
    }
    env
}

fn start(config: ConfigDir, env: &[(String, String)]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Daemon::start_in_with_env(config, &env)
}

/// The outbox entries' payloads (the chat events as the seed wrote them).
async fn outbox_payloads(redis: &RedisServer) -> Vec<String> {
    let mut con = redis.connection().await;
    let entries: redis::streams::StreamRangeReply =
        con.xrange_all(OUTBOX).await.expect("XRANGE the outbox");
    entries
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>("payload"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_after_the_subscription_and_the_first_catch_up_with_a_status_line() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    // Nothing is delivered, so what was enqueued stays in the outbox for the test to see.
    receiver.respond_with(Reply::status(503));
    let first = Daemon::start(&config(&redis, &receiver));
    first.wait_for_log("ready", 1, WAIT);
    let dir = first.crash();
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(7), "ann", "sent while down").await;

    let mut socket = NotifySocket::bind();
    let daemon = start(dir, &notify_env(&socket, None));
    let (_, ready) = socket.wait_for(0, "READY=1", WAIT, |d| d.has("READY=1"));
    let log = daemon.log();
    assert_eq!(
        log.matches("subscribed").count(),
        2,
        "READY=1 before the second run subscribed; log:\n{log}"
    );
    assert!(
        log.contains("caught up from history"),
        "READY=1 before the catch-up pass was resolved; log:\n{log}"
    );
    let outbox = outbox_payloads(&redis).await;
    assert!(
        outbox.iter().any(|p| p.contains("sent while down")),
        "READY=1 before catch-up enqueued the message sent while down: {outbox:?}"
    );
    let status = ready.status().expect("READY=1 comes with a STATUS= line");
    assert!(
        status.starts_with("subscribed; 1 link; ") && status.ends_with(" queued"),
        "status line: {status:?}"
    );
    assert!(
        socket.received.iter().all(|d| !d.has("WATCHDOG=1")),
        "no watchdog was asked for"
    );
    let from = socket.received.len();
    let (_, refreshed) =
        socket.wait_for(from, "a refreshed STATUS=", WAIT, |d| d.status().is_some());
    assert!(
        refreshed
            .status()
            .is_some_and(|s| s.starts_with("subscribed; 1 link; ")),
        "{refreshed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_while_redis_is_wedged_and_resume_after() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut socket = NotifySocket::bind();
    let daemon = start(
        ConfigDir::new(&config(&redis, &receiver)),
        &notify_env(&socket, Some("2000000")),
    );
    let (ready_at, _) = socket.wait_for(0, "READY=1", WAIT, |d| d.has("READY=1"));
    // Healthy: fed every second (half of WATCHDOG_USEC).
    socket.receive_for(Duration::from_millis(2500));
    let healthy = watchdog_pings(&socket, ready_at);
    assert!(
        healthy >= 2,
        "watchdog fed {healthy}× in 2.5 s: {:?}",
        socket.received
    );

    let redis_pid = Pid::from_raw(redis.pid().expect("redis runs") as i32);
    kill(redis_pid, Signal::SIGSTOP).expect("SIGSTOP redis-server");
    let wedged_at = Instant::now();
    // The session's PING goes unanswered for 5 s: the pings stop and stay stopped.
    let last = wait_for_silence(&mut socket, Duration::from_secs(3), Duration::from_secs(14));
    let stopped_after = last.saturating_duration_since(wedged_at);
    eprintln!("watchdog pings stopped {stopped_after:?} after redis-server was stopped");
    daemon.wait_for_log("not feeding the systemd watchdog", 1, WAIT);

    kill(redis_pid, Signal::SIGCONT).expect("SIGCONT redis-server");
    let resumed_from = socket.received.len();
    let continued = Instant::now();
    socket.wait_for(resumed_from, "WATCHDOG=1 again", WAIT, |d| {
        d.has("WATCHDOG=1")
    });
    eprintln!(
        "watchdog pings resumed {:?} after SIGCONT",
        continued.elapsed()
    );
}

/// The delivery workers are watched too, but only inside bounded steps: a link that keeps
/// failing while its worker waits between retries (here a 429 whose `Retry-After` of 25 s is
/// longer than the 17 s a send attempt may go without progress: `timeout_secs` 2 + 15 s) must
/// not stop the pings, or systemd would restart a healthy daemon in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_keeps_being_fed_while_a_link_waits_out_a_long_retry_after() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.respond_with(Reply::status(429).header("Retry-After", "25"));
    let toml = config(&redis, &receiver).replace("timeout_secs = 5", "timeout_secs = 2");
    let mut socket = NotifySocket::bind();
    let daemon = start(ConfigDir::new(&toml), &notify_env(&socket, Some("2000000")));
    let (ready_at, _) = socket.wait_for(0, "READY=1", WAIT, |d| d.has("READY=1"));
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(7), "ann", "rate limited").await;
    receiver.wait_for(1, WAIT).await;
    let first_refused = socket.received.len();

    // Past the 17 s bound and a ping interval, well inside the 25 s wait.
    socket.receive_for(Duration::from_secs(19));
    let pings: Vec<Instant> = socket.received[ready_at..]
        .iter()
        .filter(|d| d.has("WATCHDOG=1"))
        .map(|d| d.at)
        .collect();
    let longest_gap = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        watchdog_pings(&socket, first_refused) >= 15 && longest_gap < Duration::from_millis(2500),
        "the watchdog stopped being fed while the link only waited out a Retry-After \
         (longest gap {longest_gap:?}): {:?}\nlog:\n{}",
        socket.received,
        daemon.log()
    );
    assert_eq!(
        receiver.requests().len(),
        1,
        "the worker did not wait out the Retry-After"
    );
    assert!(
        outbox_payloads(&redis)
            .await
            .iter()
            .any(|p| p.contains("rate limited")),
        "the event was not kept for the retry"
    );
    let status = socket.received[first_refused..]
        .iter()
        .filter_map(|d| d.status())
        .next_back()
        .expect("STATUS= refreshed meanwhile");
    assert!(
        status.starts_with("subscribed; "),
        "status line: {status:?}"
    );
    assert!(
        !daemon.log().contains("not feeding the systemd watchdog"),
        "log:\n{}",
        daemon.log()
    );
}

/// How many WATCHDOG=1 arrived from index `from` on.
fn watchdog_pings(socket: &NotifySocket, from: usize) -> usize {
    socket.received[from..]
        .iter()
        .filter(|d| d.has("WATCHDOG=1"))
        .count()
}

/// Receives until no WATCHDOG=1 came for `quiet` (panics if that takes over `timeout`);
/// returns when the last one came.
fn wait_for_silence(socket: &mut NotifySocket, quiet: Duration, timeout: Duration) -> Instant {
    let start = Instant::now();
    loop {
        socket.receive_for(Duration::from_millis(100));
        let last = socket
            .received
            .iter()
            .rev()
            .find(|d| d.has("WATCHDOG=1"))
            .map_or(start, |d| d.at);
        if last.elapsed() >= quiet {
            return last;
        }
        assert!(
            start.elapsed() < timeout,
            "watchdog still fed {timeout:?} after redis was wedged: {:?}",
            socket.received
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_is_announced_on_sigterm_before_the_exit() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut socket = NotifySocket::bind();
    let mut daemon = start(
        ConfigDir::new(&config(&redis, &receiver)),
        &notify_env(&socket, None),
    );
    let (ready_at, _) = socket.wait_for(0, "READY=1", WAIT, |d| d.has("READY=1"));
    assert!(
        socket.received[..ready_at]
            .iter()
            .all(|d| !d.has("STOPPING=1")),
        "no STOPPING=1 before shutdown"
    );
    daemon.signal(Signal::SIGTERM);
    let (_, stopping) = socket.wait_for(ready_at, "STOPPING=1", WAIT, |d| d.has("STOPPING=1"));
    assert!(stopping.status().is_some_and(|s| s.starts_with("stopping")));
    let status = daemon.wait_exit(WAIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.log());
    assert!(
        socket
            .received
            .iter()
            .all(|d| !d.has("READY=1") || d.at <= stopping.at),
        "READY=1 only once, before stopping"
    );
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed; the unit file was not verified");
        return;
    }
    assert!(UNIT.contains(INSTALLED), "the unit should run {INSTALLED}");
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("chatbridge.service");
    // verify checks that the binaries exist: point it at the one under test.
    std::fs::write(&unit, UNIT.replace(INSTALLED, common::daemon::binary())).expect("write unit");
    let (ok, output) = verify(&unit);
    assert!(ok, "systemd-analyze verify failed:\n{output}");
    assert!(
        output.trim().is_empty(),
        "systemd-analyze verify warned:\n{output}"
    );
}

#[test]
fn unit_file_verify_catches_a_broken_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("chatbridge.service");
    // A missing binary and a misspelt service type: the check above must be able to fail.
    let broken = UNIT
        .replace(INSTALLED, "/nonexistent/chatbridge")
        .replace("Type=notify", "Type=notfy");
    std::fs::write(&unit, broken).expect("write unit");
    let (ok, output) = verify(&unit);
    assert!(
        !ok || !output.trim().is_empty(),
        "verify should complain about a broken unit"
    );
}

/// The values of `key=` in the unit's `[Service]` section, in order.
fn service_values(key: &str) -> Vec<&'static str> {
    let mut in_service = false;
    let mut values = Vec::new();
    for line in UNIT.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && let Some(value) = line
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
        {
            values.push(value);
        }
    }
    values
}

/// The exit codes after which the unit is not restarted (`RestartPreventExitStatus=`).
fn restart_prevented() -> Vec<i32> {
    service_values("RestartPreventExitStatus")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|code| code.parse().expect("numeric exit codes"))
        .collect()
}

/// `command` (an `Exec…=` line of the unit) run on the binary under test with `config` for
/// the unit's config path: its exit code.
fn run_unit_command(command: &str, config: &Path) -> i32 {
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some(INSTALLED), "{command}");
    let args: Vec<String> = words
        .map(|w| w.replace("/etc/chatbridge/config.toml", &config.to_string_lossy()))
        .collect();
    let mut child = Command::new(common::daemon::binary())
        .args(&args)
        .env_remove("CHATBRIDGE_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run chatbridge");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for chatbridge") {
            return status.code().expect("an exit code, not a signal");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command}` did not exit within {WAIT:?} on a broken config");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A configuration error is not something a restart fixes: without
/// `RestartPreventExitStatus=78`, `Restart=on-failure` restarts the unit every `RestartSec`
/// forever. systemd looks only at the main process's exit status there, so the start path
/// must not run `check` in `ExecStartPre=` (a failing pre-command is restarted too).
#[test]
fn the_unit_is_not_restarted_on_a_configuration_error() {
    assert_eq!(service_values("Restart"), ["on-failure"]);
    let prevented = restart_prevented();
    let ex_config = i32::from(chatbridge::cli::EX_CONFIG);
    assert!(
        prevented.contains(&ex_config) && prevented.contains(&2),
        "RestartPreventExitStatus= should hold 78 (EX_CONFIG) and 2 (usage): {prevented:?}"
    );
    for restartable in [
        chatbridge::cli::EX_SOFTWARE,
        chatbridge::cli::EX_UNAVAILABLE,
    ] {
        assert!(
            !prevented.contains(&i32::from(restartable)),
            "exit {restartable} must stay restartable: {prevented:?}"
        );
    }
    assert_eq!(
        service_values("ExecStartPre"),
        Vec::<&str>::new(),
        "a failing ExecStartPre= is restarted whatever RestartPreventExitStatus= says"
    );

    // What the unit starts really exits with a prevented code on a broken file, and what
    // its reload runs first really fails.
    let config =
        ConfigDir::new("[redis]\nurl = \"ftp://nowhere\"\n\n[links.audit]\nkind = \"webhook\"\n");
    let start = service_values("ExecStart");
    assert_eq!(start.len(), 1, "{start:?}");
    let code = run_unit_command(start[0], &config.path());
    assert_eq!(code, ex_config, "ExecStart= on a broken config");
    let reload = service_values("ExecReload");
    assert!(
        reload[0].ends_with(" check"),
        "the reload checks the file first: {reload:?}"
    );
    assert_eq!(run_unit_command(reload[0], &config.path()), ex_config);
    let usage = format!("{} --no-such-flag", start[0]);
    assert_eq!(
        run_unit_command(&usage, &config.path()),
        2,
        "a wrong command line"
    );
}

/// Runs `systemd-analyze verify` on `unit`: (success, everything it printed).
fn verify(unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// With `DynamicUser=yes` the service runs as a user that owns nothing in /etc: systemd
/// creates `ConfigurationDirectory=` owned by root, so only its "other" bits let the service
/// reach config.toml (0750 would lock it out, and every start would fail reading the file).
#[test]
fn the_dynamic_user_can_reach_the_configuration_directory() {
    assert_eq!(service_values("DynamicUser"), ["yes"]);
    assert_eq!(service_values("ConfigurationDirectory"), ["chatbridge"]);
    let mode = service_values("ConfigurationDirectoryMode")
        .first()
        .map(|m| u32::from_str_radix(m, 8).expect("an octal mode"))
        .unwrap_or(0o755);
    assert_eq!(mode & 0o005, 0o005, "others need r-x, the mode is {mode:o}");
    assert!(
        UNIT.contains(
            "ExecStart=/usr/local/bin/chatbridge --config /etc/chatbridge/config.toml run"
        ),
        "the config the unit reads lives in that directory"
    );
}
