//! The eviction check through the real `chatbridge run`: a Redis that may evict keys is
//! refused (exit 78, one clear line) unless `allow_eviction = true`; a Redis whose CONFIG
//! command is renamed or denied runs with a warning.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::receiver::Receiver;
use common::redis::RedisServer;
use common::seed;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "sekrit-pw-9f2";

/// One webhook link `audit` on room `general`, Redis at `url`; `redis_extra` goes into
/// `[redis]`.
fn config(url: &str, receiver: &Receiver, redis_extra: &str) -> String {
    format!(
        "[redis]\nurl = \"{url}\"\n{redis_extra}\n\n\
         [links.audit]\nkind = \"webhook\"\nurl = \"{}\"\ntimeout_secs = 5\n\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"audit\"]\n",
        receiver.url("/hook")
    )
}

/// Sends one message as a seed client does and waits for the receiver to get it.
async fn delivers(redis: &RedisServer, receiver: &Receiver, daemon: &Daemon) {
    tokio::task::block_in_place(|| daemon.wait_ready());
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "a", "kept").await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["data"]["event"]["content"], "kept");
}

fn policy_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("maxmemory-policy"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_refused_with_exit_78_and_one_clear_line() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let mut con = redis.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query_async(&mut con)
        .await
        .expect("CONFIG SET requirepass");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", redis.port());
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(&config(&url, &receiver, ""));

    let status = tokio::task::block_in_place(|| daemon.wait_exit(WAIT));
    let log = daemon.log();
    assert_eq!(status.code(), Some(78), "{status:?}; log:\n{log}");
    let lines = policy_lines(&log);
    assert_eq!(lines.len(), 1, "one line about the policy:\n{log}");
    for needed in [
        "allkeys-lru",
        "silent message loss",
        "CONFIG SET maxmemory-policy noeviction",
        "allow_eviction = true",
    ] {
        assert!(lines[0].contains(needed), "{needed:?} missing:\n{log}");
    }
    assert!(!log.contains(PASSWORD), "the password leaked:\n{log}");
    assert!(
        !log.contains("panicked") && !log.contains("backtrace"),
        "{log}"
    );
    assert!(!log.contains("chatbridge running"), "{log}");

    let client = redis::Client::open(url.as_str()).expect("URL");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("auth");
    let ours: Vec<String> = redis::cmd("KEYS")
        .arg("chatbridge:*")
        .query_async(&mut con)
        .await
        .expect("KEYS");
    assert!(ours.is_empty(), "it started anyway: {ours:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allow_eviction_an_evicting_redis_runs_with_a_warning_and_delivers() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let receiver = Receiver::start().await;
    let toml = config(&redis.url(), &receiver, "allow_eviction = true");
    let daemon = Daemon::start(&toml);

    delivers(&redis, &receiver, &daemon).await;
    let log = daemon.log();
    let lines = policy_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("allkeys-lru"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_noeviction_runs_without_a_word_about_it() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&redis.url(), &receiver, ""));

    delivers(&redis, &receiver, &daemon).await;
    let log = daemon.log();
    assert!(policy_lines(&log).is_empty(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_config_command_runs_with_a_warning() {
    let redis = RedisServer::start_with(&[
        "--maxmemory-policy",
        "allkeys-lru",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&redis.url(), &receiver, ""));

    delivers(&redis, &receiver, &daemon).await;
    let log = daemon.log();
    let lines = policy_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("cannot check"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_denied_config_runs_with_a_warning_and_no_password_in_it() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let mut con = redis.connection().await;
    let password = format!(">{PASSWORD}");
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "bridge", "on", &password, "~*", "&*", "+@all", "-config",
            ][..],
        )
        .query_async(&mut con)
        .await
        .expect("ACL SETUSER");
    let url = format!("redis://bridge:{PASSWORD}@127.0.0.1:{}/", redis.port());
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&url, &receiver, ""));

    delivers(&redis, &receiver, &daemon).await;
    let log = daemon.log();
    let lines = policy_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("no permissions"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "the password leaked:\n{log}");
}
