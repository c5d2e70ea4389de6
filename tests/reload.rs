//! Reload on SIGHUP, end to end: the real `chatbridge run` binary, a real redis-server, webhook
//! receivers on loopback, seed-format traffic published the whole time. Five reloads (an
//! invalid file, a room added, a link removed, a link's URL changed, nothing changed); per
//! link, what should arrive arrives exactly once and in order. And the systemd side: RELOADING=1
//! with MONOTONIC_USEC, then READY=1, on a real notify socket.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::daemon::{ConfigDir, Daemon};
use common::notify::NotifySocket;
use common::receiver::{Receiver, Recorded, Reply};
use common::redis::RedisServer;
use common::seed;
use common::wait::eventually;
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
/// The publisher's pace: one message to each room per tick.
const TICK: Duration = Duration::from_millis(4);
/// Ticks published between two reloads.
const BETWEEN: usize = 25;
/// Messages published this many ticks before a SIGHUP was sent were certainly read by the
/// daemon's subscription before it began to reload (40 ms earlier).
const SETTLED: usize = 10;

/// Which links and rooms a config has; `gamma` is the URL of link `gamma`.
struct Setup<'a> {
    beta: bool,
    extra: bool,
    gamma: &'a str,
}

/// Links `alpha`, `beta` (if set), `gamma` on room `general`; room `extra` on `alpha` (if
/// set). Catch-up sweeps every second, so the passes after a reload run during the test.
fn config(redis: &RedisServer, alpha: &Receiver, beta: &Receiver, setup: &Setup) -> String {
    let hook = |name: &str, url: &str| {
        format!("[links.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout_secs = 5\n\n")
    };
    let mut toml = format!(
        "[redis]\nurl = \"{}\"\n\n[history]\nsweep_secs = 1\n\n[delivery]\nshutdown_grace_secs = 5\n\n",
        redis.url()
    );
    toml += &hook("alpha", &alpha.url("/alpha"));
    if setup.beta {
        toml += &hook("beta", &beta.url("/beta"));
    }
    toml += &hook("gamma", setup.gamma);
    let general = if setup.beta {
        r#"["alpha", "beta", "gamma"]"#
    } else {
        r#"["alpha", "gamma"]"#
    };
    toml += &format!("[[rooms]]\nname = \"general\"\nlinks = {general}\n\n");
    if setup.extra {
        toml += "[[rooms]]\nname = \"extra\"\nlinks = [\"alpha\"]\n";
    }
    toml
}

/// Publishes `g<n>` to `general` and `x<n>` to `extra`, seed style, every [`TICK`] until told
/// to stop; `published` counts the ticks completed.
fn publish(
    redis: &RedisServer,
    published: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let client = redis.client();
    tokio::spawn(async move {
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("publisher connection");
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            for (room, prefix) in [("general", "g"), ("extra", "x")] {
                let content = format!("{prefix}{n:05}");
                seed::send_message(&mut con, room, json!(1001), "alice", &content).await;
            }
            n += 1;
            published.store(n, Ordering::SeqCst);
            tokio::time::sleep(TICK).await;
        }
    })
}

/// The numbers of the chat messages of `room` a receiver got (`g00042` → 42), in arrival
/// order; panics on anything else (a gap notice, another room).
fn numbers(requests: &[Recorded], room: &str) -> Vec<usize> {
    requests
        .iter()
        .map(|r| r.json())
        .filter(|body| body["data"]["room"] == room)
        .map(|body| {
            assert_eq!(body["type"], "chat.message", "{body}");
            number(
                body["data"]["event"]["content"]
                    .as_str()
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// `g00042` or `x00042` → 42; panics on anything else (such as the past of room `extra`).
fn number(content: &str) -> usize {
    content
        .strip_prefix(['g', 'x'])
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a message published during the test: {content:?}"))
}

/// `from..to` as a list.
fn run_of(from: usize, to: usize) -> Vec<usize> {
    (from..to).collect()
}

/// Waits until the daemon log holds `needle` `times` times.
async fn logged(daemon: &Daemon, needle: &str, times: usize) {
    eventually(
        &format!("{times}× {needle:?} in the log"),
        WAIT,
        async || (daemon.log().matches(needle).count() >= times).then_some(()),
    )
    .await;
}

/// Writes `toml` as the daemon's config, sends SIGHUP and waits for the reload's `outcome` log
/// line (its `times`-th). Returns how many ticks were certainly published before the signal
/// ([`SETTLED`]) and how many were published by the time the reload was done.
async fn reload(
    daemon: &Daemon,
    toml: &str,
    outcome: &str,
    times: usize,
    published: &AtomicUsize,
) -> (usize, usize) {
    let from = published.load(Ordering::SeqCst);
    eventually("traffic between reloads", WAIT, async || {
        (published.load(Ordering::SeqCst) >= from + BETWEEN).then_some(())
    })
    .await;
    std::fs::write(daemon.config_path(), toml).expect("write the config");
    let before = published.load(Ordering::SeqCst).saturating_sub(SETTLED);
    daemon.signal(Signal::SIGHUP);
    logged(daemon, outcome, times).await;
    let after = published.load(Ordering::SeqCst);
    (before, after)
}

/// The `g<n>` numbers still queued in a link's outbox, oldest first.
async fn queued(redis: &RedisServer, link: &str) -> Vec<usize> {
    let mut con = redis.connection().await;
    let entries: redis::streams::StreamRangeReply = con
        .xrange_all(format!("chatbridge:outbox:{link}"))
        .await
        .expect("XRANGE the outbox");
    entries
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>("payload"))
        .map(|payload| {
            let event: serde_json::Value = serde_json::from_str(&payload).expect("JSON payload");
            number(event["content"].as_str().unwrap_or_default())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_reloads_under_continuous_traffic_deliver_every_message_once_in_order_per_link() {
    let redis = RedisServer::start();
    let (alpha, beta) = (Receiver::start().await, Receiver::start().await);
    let (gamma_old, gamma_new) = (Receiver::start().await, Receiver::start().await);
    // Slow targets fall behind: when their link is removed or changed, sends are in flight
    // and events are queued (read ahead, pending) in the outbox.
    for slow in [&beta, &gamma_old] {
        slow.respond_with(Reply::status(200).delay(TICK * 3));
    }
    // Room `extra` has a past, and a checkpoint left from long ago: adding it must not replay
    // that history (nor raise a gap notice).
    let mut con = redis.connection().await;
    for n in 0..5 {
        let old = format!("o{n:05}");
        seed::send_message(&mut con, "extra", json!(7), "old", &old).await;
    }
    let _: () = con
        .set("chatbridge:checkpoint:chat:room:extra", "-")
        .await
        .expect("SET a stale checkpoint");

    let (old_url, new_url) = (gamma_old.url("/gamma"), gamma_new.url("/gamma"));
    let mut setup = Setup {
        beta: true,
        extra: false,
        gamma: &old_url,
    };
    let daemon = Daemon::start(&config(&redis, &alpha, &beta, &setup));
    logged(&daemon, "ready", 1).await;
    let published = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish(&redis, published.clone(), stop.clone());
    eventually("traffic flowing", WAIT, async || {
        (published.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;

    // 1. An invalid file: refused, everything keeps running.
    let invalid = config(&redis, &alpha, &beta, &setup).replace("\"beta\", \"gamma\"", "\"nope\"");
    reload(&daemon, &invalid, "reload refused", 1, &published).await;
    assert!(
        daemon.log().contains("rooms[0].links[1]: no link named"),
        "every problem is logged with its key:\n{}",
        daemon.log()
    );
    // 2. Room `extra` added, to `alpha`.
    setup.extra = true;
    let toml = config(&redis, &alpha, &beta, &setup);
    let (extra_before, extra_after) =
        reload(&daemon, &toml, "configuration reloaded", 1, &published).await;
    // 3. Link `beta` removed.
    setup.beta = false;
    let toml = config(&redis, &alpha, &beta, &setup);
    let (beta_before, beta_after) =
        reload(&daemon, &toml, "configuration reloaded", 2, &published).await;
    // 4. Link `gamma` sends elsewhere.
    setup.gamma = &new_url;
    let toml = config(&redis, &alpha, &beta, &setup);
    let (_, gamma_after) = reload(&daemon, &toml, "configuration reloaded", 3, &published).await;
    // 5. The same file again.
    reload(&daemon, &toml, "reload: nothing to change", 1, &published).await;

    tokio::time::sleep(TICK * 20).await;
    stop.store(true, Ordering::SeqCst);
    publisher.await.expect("publisher");
    let total = published.load(Ordering::SeqCst);
    let mut con = redis.connection().await;
    common::outbox::wait_drained(&mut con, "alpha").await;
    common::outbox::wait_drained(&mut con, "gamma").await;

    eprintln!(
        "published {total}; extra {extra_before}..{extra_after}; beta {beta_before}..{beta_after}; gamma ..{gamma_after}"
    );
    // Untouched: every message of `general`, once, in order; its worker never restarted.
    let alpha_got = alpha.requests();
    assert_eq!(numbers(&alpha_got, "general"), run_of(0, total));
    let log = daemon.log();
    assert_eq!(
        log.matches("link alpha: delivering here").count(),
        1,
        "{log}"
    );

    // Added: `extra` from the reload on, once, in order, up to the last message; nothing of
    // its past, no gap notice.
    let extra = numbers(&alpha_got, "extra");
    let first = *extra
        .first()
        .expect("room extra delivered after it was added");
    assert_eq!(
        extra,
        run_of(first, total),
        "extra: a contiguous run to the end"
    );
    assert!(
        first > extra_before && first <= extra_after,
        "extra starts at {first}: published before the SIGHUP ({extra_before}) or after the reload ({extra_after})"
    );

    // Removed: a contiguous run from the start, the rest of it still in its outbox; nothing
    // published after the reload.
    let beta_got = numbers(&beta.requests(), "general");
    let beta_left = queued(&redis, "beta").await;
    let beta_all: Vec<usize> = beta_got.iter().chain(&beta_left).copied().collect();
    let end = beta_all.len();
    assert_eq!(beta_all, run_of(0, end), "beta: delivered, then queued");
    assert!(
        end >= beta_before && end <= beta_after,
        "beta ends at {end}: before the SIGHUP ({beta_before}) or after the reload ({beta_after})"
    );

    // Changed: the old URL got a contiguous start, the new one the rest, nothing twice; the
    // worker gave its lease back and took it again.
    let old_got = numbers(&gamma_old.requests(), "general");
    let new_got = numbers(&gamma_new.requests(), "general");
    let split = old_got.len();
    assert_eq!(old_got, run_of(0, split), "gamma before the change");
    assert_eq!(new_got, run_of(split, total), "gamma after the change");
    eprintln!(
        "extra first {first}; beta end {end} ({} delivered); gamma split {split}",
        beta_got.len()
    );
    assert!(
        split <= gamma_after,
        "gamma's old URL got messages published after the reload"
    );
    assert_eq!(
        log.matches("link gamma: delivering here").count(),
        2,
        "{log}"
    );
    assert!(!log.contains("standby"), "{log}");
    assert!(
        !log.contains("may have been missed"),
        "no gap notice: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_tells_systemd_reloading_then_ready_and_a_refused_one_says_so() {
    let redis = RedisServer::start();
    let (alpha, beta) = (Receiver::start().await, Receiver::start().await);
    let url = alpha.url("/gamma");
    let mut setup = Setup {
        beta: true,
        extra: false,
        gamma: &url,
    };
    let mut socket = NotifySocket::bind();
    let path = socket.path().to_string_lossy().into_owned();
    let dir = ConfigDir::new(&config(&redis, &alpha, &beta, &setup));
    let daemon = Daemon::start_in_with_env(dir, &[("NOTIFY_SOCKET", path.as_str())]);
    let (ready, _) = socket.wait_for(0, "READY=1", WAIT, |d| d.has("READY=1"));

    let invalid = config(&redis, &alpha, &beta, &setup).replace("kind = \"webhook\"", "kind = 3");
    std::fs::write(daemon.config_path(), invalid).expect("write the config");
    daemon.signal(Signal::SIGHUP);
    let (refusing, first) =
        socket.wait_for(ready + 1, "RELOADING=1", WAIT, |d| d.has("RELOADING=1"));
    let (_, refused) = socket.wait_for(refusing + 1, "READY=1", WAIT, |d| d.has("READY=1"));
    let status = refused.status().expect("READY=1 comes with a STATUS= line");
    assert!(
        status.contains("reload refused, invalid configuration"),
        "status: {status:?}"
    );

    setup.extra = true;
    std::fs::write(daemon.config_path(), config(&redis, &alpha, &beta, &setup))
        .expect("write the config");
    daemon.signal(Signal::SIGHUP);
    let (reloading, second) = socket.wait_for(refusing + 1, "a second RELOADING=1", WAIT, |d| {
        d.has("RELOADING=1")
    });
    let (_, reloaded) = socket.wait_for(reloading + 1, "READY=1", WAIT, |d| d.has("READY=1"));
    let status = reloaded
        .status()
        .expect("READY=1 comes with a STATUS= line");
    assert!(
        status.starts_with("subscribed; 3 links; ") && !status.contains("refused"),
        "a good reload clears the note: {status:?}"
    );
    let (usec1, usec2) = (monotonic_usec(&first), monotonic_usec(&second));
    let elapsed = second.at.duration_since(first.at).as_micros() as i128;
    assert!(
        (usec2 - usec1 - elapsed).abs() < 1_000_000,
        "MONOTONIC_USEC is CLOCK_MONOTONIC: {usec1} then {usec2}, {elapsed} µs apart"
    );
    daemon.signal(Signal::SIGTERM);
}

/// The `MONOTONIC_USEC=` value of a `RELOADING=1` datagram.
fn monotonic_usec(datagram: &common::notify::Datagram) -> i128 {
    datagram
        .text
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {datagram:?}"))
}

/// One webhook link `alpha` on room `general`, DMs mirrored to it if `dms`; Redis at `url`.
fn small_config(url: &str, alpha: &Receiver, dms: bool) -> String {
    let mut toml = format!(
        "[redis]\nurl = \"{url}\"\n\n[history]\nsweep_secs = 1\n\n\
         [links.alpha]\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"alpha\"]\n",
        alpha.url("/alpha")
    );
    if dms {
        toml += "\n[dms]\nlinks = [\"alpha\"]\n";
    }
    toml
}

/// The contents of the chat messages a receiver got, in arrival order.
fn contents(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.json())
        .filter(|body| body["type"] == "chat.message")
        .map(|body| {
            body["data"]["event"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_start_from_now_when_a_reload_mirrors_them_and_stop_when_it_no_longer_does() {
    let redis = RedisServer::start();
    let alpha = Receiver::start().await;
    let mut con = redis.connection().await;
    // A conversation with a past, and DMs mirrored once long ago: that past is not replayed
    // when DMs are mirrored again.
    seed::send_dm(&mut con, json!(1), json!(2), "ann", "dm before").await;
    let _: () = con
        .set("chatbridge:dms:swept_at", "2020-01-01T00:00:00")
        .await
        .expect("SET an old DM watermark");
    let daemon = Daemon::start(&small_config(&redis.url(), &alpha, false));
    logged(&daemon, "ready", 1).await;
    seed::send_dm(&mut con, json!(1), json!(2), "ann", "dm while not mirrored").await;

    std::fs::write(
        daemon.config_path(),
        small_config(&redis.url(), &alpha, true),
    )
    .expect("write the config");
    daemon.signal(Signal::SIGHUP);
    logged(&daemon, "configuration reloaded", 1).await;
    seed::send_dm(&mut con, json!(1), json!(2), "ann", "dm mirrored").await;
    seed::send_dm(&mut con, json!(3), json!(4), "bob", "a new conversation").await;
    // Two catch-up sweeps run over the DM histories meanwhile.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    seed::send_message(&mut con, "general", json!(1), "ann", "room message").await;
    alpha.wait_for(3, WAIT).await;

    std::fs::write(
        daemon.config_path(),
        small_config(&redis.url(), &alpha, false),
    )
    .expect("write the config");
    daemon.signal(Signal::SIGHUP);
    logged(&daemon, "configuration reloaded", 2).await;
    seed::send_dm(&mut con, json!(1), json!(2), "ann", "dm no longer mirrored").await;
    seed::send_message(&mut con, "general", json!(1), "ann", "last").await;
    alpha.wait_for(4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        contents(&alpha.requests()),
        ["dm mirrored", "a new conversation", "room message", "last"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_that_needs_a_restart_is_kept_with_a_warning() {
    let redis = RedisServer::start();
    let alpha = Receiver::start().await;
    let daemon = Daemon::start(&small_config(&redis.url(), &alpha, false));
    logged(&daemon, "ready", 1).await;
    let elsewhere = small_config("redis://127.0.0.1:9/", &alpha, false);
    std::fs::write(daemon.config_path(), elsewhere).expect("write the config");
    daemon.signal(Signal::SIGHUP);
    logged(&daemon, "reload: nothing to change", 1).await;
    assert!(
        daemon
            .log()
            .contains("reload: changing redis.url needs a restart; keeping the running value"),
        "{}",
        daemon.log()
    );
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "ann", "still here").await;
    alpha.wait_for(1, WAIT).await;
    assert_eq!(contents(&alpha.requests()), ["still here"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_link_whose_send_outlives_the_new_grace_period_is_cut_off_and_its_event_resent() {
    let redis = RedisServer::start();
    let (hanging, fixed) = (Receiver::start().await, Receiver::start().await);
    hanging.respond_with(Reply::status(200).delay(Duration::from_secs(30)));
    let toml = |url: &str, grace: u64| {
        format!(
            "[redis]\nurl = \"{}\"\n\n[delivery]\nshutdown_grace_secs = {grace}\n\n\
             [links.gamma]\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout_secs = 60\n\n\
             [[rooms]]\nname = \"general\"\nlinks = [\"gamma\"]\n",
            redis.url()
        )
    };
    let daemon = Daemon::start(&toml(&hanging.url("/gamma"), 60));
    logged(&daemon, "ready", 1).await;
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "ann", "in flight").await;
    hanging.wait_for(1, WAIT).await;

    // The new grace period applies to this very reload.
    let changed = toml(&fixed.url("/gamma"), 1);
    std::fs::write(daemon.config_path(), changed).expect("write the config");
    daemon.signal(Signal::SIGHUP);
    logged(&daemon, "configuration reloaded", 1).await;
    // The lease of the cut-off worker is taken back at once, not after `lease_secs` (10 s).
    fixed.wait_for(1, Duration::from_secs(3)).await;
    assert_eq!(contents(&fixed.requests()), ["in flight"]);
    let log = daemon.log();
    assert!(log.contains("grace period over: cutting it off"), "{log}");
    assert!(
        log.contains("link gamma: taking back the lease a stopped worker of this process left"),
        "{log}"
    );
}
