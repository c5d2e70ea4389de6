//! Operator safety through the real `chatbridge` binary: signals a service manager or an
//! operator sends (logged, never a silent death), chat data that cannot drive the operator's
//! terminal, secrets in webhook query strings that never reach logs, dead letters or the CLI,
//! and the CLI details (user ids as the seed writes them, DM order, Redis authentication).

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::receiver::Receiver;
use common::redis::RedisServer;
use common::seed;
use nix::sys::signal::Signal;
use serde_json::json;

/// How long to wait for deliveries and log lines.
const WAIT: Duration = Duration::from_secs(15);

/// A daemon config: one webhook link `audit` at `hook_url` for room `general`.
fn config(redis_url: &str, hook_url: &str) -> String {
    format!(
        r#"
[redis]
url = "{redis_url}"

[links.audit]
kind = "webhook"
url = "{hook_url}"
timeout_secs = 5

[[rooms]]
name = "general"
links = ["audit"]

[dms]
links = ["audit"]
"#
    )
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
async fn sighup_is_logged_and_ignored_and_delivery_goes_on() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&redis.url(), &receiver.url("/hook")));
    daemon.wait_ready();
    deliver_one(&redis, &receiver, "before the hangup", 1).await;
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("reload is not supported yet; ignoring SIGHUP", 1, WAIT);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("reload is not supported yet; ignoring SIGHUP", 2, WAIT);
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
