//! One delivering process per link: two real `chatbridge run` processes on the same config and
//! Redis, one holding each link's lease, the other a hot standby. The holder is killed,
//! stopped (SIGSTOP) or shut down (SIGTERM) mid-stream; the receiver records what arrived when,
//! and the tests check order, duplicates and how fast the standby took over.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, cli};
use common::receiver::{Receiver, Recorded, Reply, content_of};
use common::redis::RedisServer;
use common::seed;
use nix::sys::signal::Signal;
use redis::aio::MultiplexedConnection;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const DELIVERING: &str = "link audit: delivering here";
const STANDBY: &str = "link audit: standby, held by another process";

/// One webhook link `audit` on room `general`, its lease lasting `lease_secs`.
fn config(redis: &RedisServer, receiver: &Receiver, lease_secs: u64, batch_max: usize) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[delivery]\nlease_secs = {lease_secs}\nshutdown_grace_secs = 5\n\n\
         [links.audit]\nkind = \"webhook\"\nurl = \"{}\"\ntimeout_secs = 10\nbatch_max = {batch_max}\n\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"audit\"]\n",
        redis.url(),
        receiver.url("/hook")
    )
}

/// Starts the holder, waits until it delivers, then starts the standby and waits until it
/// says it is one.
fn holder_and_standby(toml: &str) -> (Daemon, Daemon) {
    let holder = Daemon::start(toml);
    holder.wait_for_log(DELIVERING, 1, WAIT);
    let standby = Daemon::start(toml);
    standby.wait_for_log(STANDBY, 1, WAIT);
    standby.wait_ready();
    holder.wait_ready();
    (holder, standby)
}

/// The message contents a request carried (one, or each of a `chat.batch`).
fn contents(request: &Recorded) -> Vec<String> {
    request
        .items()
        .iter()
        .filter(|item| item["type"] == "chat.message")
        .map(content_of)
        .collect()
}

/// Every message content delivered so far, in arrival order, with when its request arrived.
fn arrivals(receiver: &Receiver) -> Vec<(String, Instant)> {
    receiver
        .requests()
        .iter()
        .flat_map(|r| contents(r).into_iter().map(move |c| (c, r.arrived)))
        .collect()
}

/// Waits until every one of `expected` arrived at least once.
async fn wait_all(receiver: &Receiver, expected: &[String]) -> Vec<(String, Instant)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = arrivals(receiver);
        let seen: HashSet<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
        if expected.iter().all(|c| seen.contains(c.as_str())) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} messages arrived",
            seen.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first arrival of each content, in arrival order.
fn first_arrivals(got: &[(String, Instant)]) -> Vec<String> {
    let mut seen = HashSet::new();
    got.iter()
        .filter(|(c, _)| seen.insert(c.clone()))
        .map(|(c, _)| c.clone())
        .collect()
}

async fn send(con: &mut MultiplexedConnection, content: &str) {
    seed::send_message(con, "general", json!(1001), "alice", content).await;
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_taken_over_within_the_lease_and_nothing_is_lost_or_reordered() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.respond_with(Reply::status(200).delay(Duration::from_millis(5)));
    let toml = config(&redis, &receiver, 2, 10);
    let (holder, standby) = holder_and_standby(&toml);
    let mut con = redis.connection().await;

    let expected: Vec<String> = (0..300).map(|i| format!("m{i:03}")).collect();
    let mut killed_at = None;
    for (i, content) in expected.iter().enumerate() {
        send(&mut con, content).await;
        if i == 150 {
            // Not reaped until the test ends: to the standby it looks alive (as a holder on
            // another machine would), so only the lease's expiry lets it take over.
            holder.signal(Signal::SIGKILL);
            killed_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = killed_at.expect("killed mid-stream");

    let got = wait_all(&receiver, &expected).await;
    assert_eq!(first_arrivals(&got), expected, "first arrivals in order");
    let duplicates = got.len() - expected.len();
    assert!(
        duplicates <= 10,
        "{duplicates} duplicates: at most the batch in flight"
    );
    let taken_over = got
        .iter()
        .map(|(_, at)| *at)
        .find(|at| *at > killed_at)
        .expect("arrivals after the kill");
    let takeover = taken_over - killed_at;
    eprintln!("takeover after SIGKILL: {takeover:?}, duplicates: {duplicates}");
    assert!(
        takeover <= Duration::from_secs(3),
        "takeover took {takeover:?}"
    );
    assert_eq!(count(&standby.log(), DELIVERING), 1, "{}", standby.log());
    assert!(!standby.log().contains("is gone"), "{}", standby.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_crash_takes_over_its_own_lease_at_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    // Far longer than the test may wait: only recognising the dead predecessor is fast enough.
    let toml = config(&redis, &receiver, 60, 1);
    let daemon = Daemon::start(&toml);
    daemon.wait_for_log(DELIVERING, 1, WAIT);
    daemon.wait_ready();
    let dead_pid = daemon.pid();
    let restarted_at = Instant::now();
    let daemon = Daemon::start_in(daemon.crash());
    daemon.wait_for_log(DELIVERING, 2, WAIT);
    let resumed = restarted_at.elapsed();
    eprintln!("restart after a crash delivers again after {resumed:?}");
    assert!(resumed < Duration::from_secs(5), "{resumed:?}");
    let gone = format!(" pid {dead_pid}) is gone");
    assert!(daemon.log().contains(&gone), "{}", daemon.log());
    let mut con = redis.connection().await;
    send(&mut con, "after the crash").await;
    wait_all(&receiver, &["after the crash".to_owned()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_says_so_and_a_sigterm_hands_over_at_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    // A lease much longer than the handover may take: only a release explains a fast one.
    let toml = config(&redis, &receiver, 30, 1);
    let (mut holder, standby) = holder_and_standby(&toml);
    let mut con = redis.connection().await;

    let (code, out, _) = cli(&standby.config_path(), &["outbox"]);
    assert_eq!(code, 0, "{out}");
    let pid = format!("pid {} until", holder.pid());
    assert!(
        out.lines()
            .any(|l| l.contains("delivery: held by ") && l.contains(&pid)),
        "the holder's host and pid: {out}"
    );
    send(&mut con, "before").await;
    receiver.wait_for(1, WAIT).await;

    let asked = Instant::now();
    holder.signal(Signal::SIGTERM);
    let status = holder.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    assert!(
        holder.log().contains("released the delivery lease"),
        "{}",
        holder.log()
    );
    standby.wait_for_log(DELIVERING, 1, WAIT);
    let handover = asked.elapsed();
    eprintln!("handover after SIGTERM: {handover:?}");
    assert!(
        handover < Duration::from_secs(3),
        "handover took {handover:?}"
    );

    send(&mut con, "after").await;
    let got = wait_all(&receiver, &["before".to_owned(), "after".to_owned()]).await;
    assert_eq!(first_arrivals(&got), ["before", "after"]);
    assert_eq!(got.len(), 2, "nothing sent twice: {got:?}");
    let (_, out, _) = cli(&standby.config_path(), &["outbox"]);
    let pid = format!("pid {} until", standby.pid());
    assert!(out.contains(&pid), "the new holder: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holder_never_sends_after_the_standby_took_over() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    // Slow: the holder's send is still waiting for its answer when it is stopped.
    receiver.respond_with(Reply::status(200).delay(Duration::from_millis(1500)));
    let toml = config(&redis, &receiver, 2, 1);
    let (mut holder, standby) = holder_and_standby(&toml);
    let mut con = redis.connection().await;

    send(&mut con, "s0").await;
    receiver.wait_for(1, WAIT).await;
    holder.signal(Signal::SIGSTOP);
    let stopped_at = Instant::now();
    let expected: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for content in &expected[1..5] {
        send(&mut con, content).await;
    }
    standby.wait_for_log(DELIVERING, 1, WAIT);
    let takeover = stopped_at.elapsed();
    eprintln!("takeover after SIGSTOP: {takeover:?}");
    assert!(
        takeover <= Duration::from_secs(3),
        "takeover took {takeover:?}"
    );
    receiver.respond_with(Reply::status(200));

    // Let the old holder run again: it must see its lease is gone and go back to standby.
    holder.signal(Signal::SIGCONT);
    holder.wait_for_log("lost the delivery lease", 1, WAIT);
    holder.wait_for_log(STANDBY, 1, WAIT);
    send(&mut con, &expected[5]).await;
    let got = wait_all(&receiver, &expected).await;

    assert_eq!(first_arrivals(&got), expected, "first arrivals in order");
    let after_stop: Vec<&str> = got
        .iter()
        .filter(|(_, at)| *at > stopped_at)
        .map(|(c, _)| c.as_str())
        .collect();
    // Only the standby sent after the stop: what the stopped one had in flight, then the rest,
    // each once.
    assert_eq!(after_stop, ["s0", "s1", "s2", "s3", "s4", "s5"], "{got:?}");
    assert_eq!(count(&holder.log(), DELIVERING), 1, "{}", holder.log());

    // A standby stops as promptly as a holder, and cleanly.
    let asked = Instant::now();
    holder.signal(Signal::SIGTERM);
    assert!(holder.wait_exit(WAIT).success(), "{}", holder.log());
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stopped_between_retries_does_not_retry_after_the_takeover() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let toml = config(&redis, &receiver, 2, 1);
    let (holder, standby) = holder_and_standby(&toml);
    let mut con = redis.connection().await;

    // The first attempt fails: the holder is stopped while it waits to retry.
    receiver.respond_next(1, Reply::status(503));
    send(&mut con, "r0").await;
    receiver.wait_for(1, WAIT).await;
    holder.signal(Signal::SIGSTOP);
    standby.wait_for_log(DELIVERING, 1, WAIT);
    receiver.wait_for(2, WAIT).await;

    holder.signal(Signal::SIGCONT);
    // Whether its renewal or its fenced send notices first, it ends up a standby.
    holder.wait_for_log(STANDBY, 1, WAIT);
    send(&mut con, "r1").await;
    let got = wait_all(&receiver, &["r0".to_owned(), "r1".to_owned()]).await;
    let sent: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    // The failed attempt, the standby's, then the next message: no retry from the old holder.
    assert_eq!(sent, ["r0", "r0", "r1"], "{got:?}");
    assert_eq!(count(&holder.log(), DELIVERING), 1, "{}", holder.log());
}

/// Room `general` bridged to webhook links `links` (each to its own receiver path), leases of 2 s.
fn overlap_config(redis: &RedisServer, links: &[(&str, &Receiver)]) -> String {
    let mut toml = format!(
        "[redis]\nurl = \"{}\"\n\n[delivery]\nlease_secs = 2\n\n",
        redis.url()
    );
    for (name, receiver) in links {
        toml.push_str(&format!(
            "[links.{name}]\nkind = \"webhook\"\nurl = \"{}\"\n\n",
            receiver.url("/hook")
        ));
    }
    let names: Vec<String> = links.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    toml.push_str(&format!(
        "[[rooms]]\nname = \"general\"\nlinks = [{}]\n",
        names.join(", ")
    ));
    toml
}

/// The messages' contents and the typing indicators' user ids one receiver got, in order.
fn messages_and_typing(receiver: &Receiver) -> (Vec<String>, Vec<i64>) {
    let requests = receiver.requests();
    let typing = requests
        .iter()
        .map(Recorded::json)
        .filter(|body| body["type"] == "chat.typing")
        .filter_map(|body| body["data"]["event"]["user_id"].as_i64())
        .collect();
    (requests.iter().flat_map(contents).collect(), typing)
}

/// A deploy that adds link `new`: the old process (links `shared`) and the new one (`shared`
/// and `new`) run side by side on one Redis, started in either order, while messages and
/// typing indicators are published. Whichever process enqueues an event first, the new link
/// gets every one of them, and the shared link each exactly once.
async fn deploy_overlap(old_starts_first: bool) {
    let redis = RedisServer::start();
    let shared = Receiver::start().await;
    let added = Receiver::start().await;
    let old_config = overlap_config(&redis, &[("shared", &shared)]);
    let new_config = overlap_config(&redis, &[("shared", &shared), ("new", &added)]);
    let (first, second) = if old_starts_first {
        (&old_config, &new_config)
    } else {
        (&new_config, &old_config)
    };
    let first = Daemon::start(first);
    first.wait_for_log("link shared: delivering here", 1, WAIT);
    first.wait_ready();
    let second = Daemon::start(second);
    second.wait_ready();

    let mut con = redis.connection().await;
    let expected: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    for (i, content) in expected.iter().enumerate() {
        send(&mut con, content).await;
        seed::typing(&mut con, "general", json!(i)).await;
    }
    let typing: Vec<i64> = (0..40).collect();
    wait_all(&added, &expected).await;
    wait_all(&shared, &expected).await;
    // What else might still arrive (a duplicate) has had time to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (name, receiver) in [("new", &added), ("shared", &shared)] {
        let (messages, typed) = messages_and_typing(receiver);
        assert_eq!(messages, expected, "messages on link {name}");
        assert_eq!(typed, typing, "typing indicators on link {name}");
    }
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_added_while_the_old_process_still_runs_misses_nothing() {
    deploy_overlap(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_process_started_after_the_new_one_hides_nothing_from_the_new_link() {
    deploy_overlap(false).await;
}
