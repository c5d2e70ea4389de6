//! The inbound websocket clients over real TLS (`wss://`), end to end: the real binary, a real
//! redis-server, the fake Discord Gateway and the fake Slack Socket Mode serving their
//! websockets over TLS with a certificate for `localhost` signed by a throwaway CA
//! (`common::tls`). The daemon trusts that CA only when started with `SSL_CERT_FILE` naming it
//! (rustls-native-certs loads its roots from there); without it the certificate is unknown and
//! must be refused. This is what production does with `wss://gateway.discord.gg` and Slack's
//! `wss://wss-primary.slack.com`: crypto provider selection, root loading, certificate
//! verification and SNI all take part.

mod common;

use std::time::Duration;

use common::daemon::{Daemon, wait_ready};
use common::fake_discord::FakeDiscord;
use common::fake_gateway::{Author, FakeGateway};
use common::fake_slack::FakeSlack;
use common::fake_socket_mode::{FakeSocketMode, events_api};
use common::redis::{RedisServer, free_port};
use common::tls::TestTls;
use common::wait::eventually;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const BOT_TOKEN: &str = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.sekrit-bot-token";
const APP_TOKEN: &str = "xapp-1-A_OURS-sekrit-app-token";
const GUILD: &str = "800000000000000001";
const CHANNEL: &str = "800000000000000002";

/// One Discord link reading `CHANNEL` into `general` (as in tests/gateway.rs).
fn discord_config(redis: &RedisServer, gateway: &FakeGateway, discord: &FakeDiscord) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[delivery]\nlease_secs = 2\n\n\
         [links.discord]\nkind = \"discord\"\nwebhook_url = \"{}\"\n{}\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"discord\"]\n",
        redis.url(),
        discord.webhook_url("webhook-token"),
        gateway.link_keys(BOT_TOKEN, CHANNEL),
    )
}

/// Socket Mode on, one Slack link on channel C1 mirrored to `general` (as in
/// tests/socket_mode.rs); the HTTP server on a free loopback port.
fn slack_config(redis: &RedisServer, socket: &FakeSocketMode, slack: &FakeSlack) -> String {
    socket.bridge_config(&redis.url(), free_port(), APP_TOKEN, &slack.api_url())
}

/// Redis, a TLS Gateway (REST plain http) with `CHANNEL`, a fake Discord webhook.
async fn discord_fakes(tls: &TestTls) -> (RedisServer, FakeGateway, FakeDiscord) {
    let redis = RedisServer::start();
    let gateway = FakeGateway::start_tls(BOT_TOKEN, 1000, tls.acceptor.clone()).await;
    gateway.add_channel(GUILD, CHANNEL);
    let discord = FakeDiscord::start(50, Duration::from_secs(1)).await;
    (redis, gateway, discord)
}

/// The contents of the room's history, oldest first.
async fn contents(con: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    common::history::contents(con, "general").await
}

/// Waits until the history holds `n` events, then returns their contents.
async fn wait_history(con: &mut redis::aio::MultiplexedConnection, n: usize) -> Vec<String> {
    common::history::wait_contents(con, "general", n, WAIT).await
}

fn ann() -> Author {
    Author::user("700000000000000011", "ann", Some("Ann A"))
}

/// The fake's `tls-failed …` lines.
fn tls_failures(log: &[String]) -> Vec<&String> {
    log.iter().filter(|l| l.starts_with("tls-failed")).collect()
}

/// The server names (SNI) of the handshakes the fake completed, in order.
fn sni(log: &[String]) -> Vec<&str> {
    log.iter()
        .filter_map(|l| l.strip_prefix("tls-accepted sni="))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discord_gateway_over_wss_delivers_and_resumes_over_wss() {
    let tls = TestTls::new();
    let (redis, gateway, discord) = discord_fakes(&tls).await;
    assert!(gateway.gateway_url().starts_with("wss://localhost:"));
    let daemon = Daemon::start_with_env(
        &discord_config(&redis, &gateway, &discord),
        &[("SSL_CERT_FILE", tls.ca_path())],
    );
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    gateway.wait_log("ready 1", 1, WAIT).await;
    gateway.post(CHANNEL, &ann(), "over tls");
    assert_eq!(wait_history(&mut con, 1).await, ["over tls"]);

    // Discord drops the connection: the client RESUMEs, again over wss (READY's
    // resume_gateway_url is wss:// too), and what was sent meanwhile arrives once.
    gateway.drop_connection();
    gateway.post(CHANNEL, &ann(), "while away");
    gateway.wait_log("resumed", 1, WAIT).await;
    gateway.post(CHANNEL, &ann(), "after the resume");
    assert_eq!(
        wait_history(&mut con, 3).await,
        ["over tls", "while away", "after the resume"]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(contents(&mut con).await.len(), 3, "written twice");
    let log = gateway.log();
    assert_eq!(gateway.count("identify"), 1, "{log:?}");
    assert_eq!(gateway.count("resume "), 1, "{log:?}");
    assert_eq!(gateway.count("connect "), 2, "{log:?}");
    assert!(tls_failures(&log).is_empty(), "{log:?}");
    // Both connections (the first and the RESUME) completed a handshake that named the host.
    assert_eq!(sni(&log), ["localhost", "localhost"], "{log:?}");
    assert!(
        !daemon.log().contains(BOT_TOKEN),
        "the bot token was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_socket_mode_over_wss_writes_and_acknowledges_an_envelope() {
    let tls = TestTls::new();
    let redis = RedisServer::start();
    let socket = FakeSocketMode::start_tls(APP_TOKEN, tls.acceptor.clone()).await;
    let slack = FakeSlack::start("xoxb-test").await;
    slack.set_user("U42", "Zed");
    let daemon = Daemon::start_with_env(
        &slack_config(&redis, &socket, &slack),
        &[("SSL_CERT_FILE", tls.ca_path())],
    );
    let mut con = redis.connection().await;

    let first = socket.next_connection(WAIT).await;
    let payload = json!({"type": "event_callback", "team_id": "T1", "api_app_id": "A_OURS",
        "event_id": "Ev1", "event_time": 1_700_000_000,
        "event": {"type": "message", "channel": "C1", "user": "U42", "text": "over tls",
                  "ts": "1700000001.000100"}});
    first.send(events_api("env-1", 0, payload));
    socket.wait_acked(&["env-1"], WAIT).await;
    assert_eq!(contents(&mut con).await, ["over tls"]);
    assert_eq!(socket.acked(), ["env-1"]);
    assert_eq!(socket.opens(), (1, 0));
    let log = socket.log();
    assert!(tls_failures(&log).is_empty(), "{log:?}");
    assert_eq!(sni(&log), ["localhost"], "{log:?}");
    assert!(!daemon.log().contains("sekrit"), "the app token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused_and_the_bot_never_identifies() {
    let tls = TestTls::new();
    let (redis, gateway, discord) = discord_fakes(&tls).await;
    // No SSL_CERT_FILE from the test: the daemon inherits the environment's roots (the system's;
    // where SSL_CERT_FILE/SSL_CERT_DIR are already set, as on the CI machine, the system bundle),
    // none of which is the test CA.
    let daemon = Daemon::start_with_env(&discord_config(&redis, &gateway, &discord), &[]);
    wait_ready(&daemon);
    tokio::task::block_in_place(|| {
        daemon.wait_for_log("Discord Gateway: cannot connect; retrying", 1, WAIT)
    });
    // The client got as far as the TLS handshake and refused the certificate there.
    gateway.wait_log("tls-failed", 1, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = gateway.log();
    assert_eq!(gateway.count("identify"), 0, "identified: {log:?}");
    assert_eq!(
        gateway.count("connect "),
        0,
        "a websocket was opened: {log:?}"
    );
    assert!(sni(&log).is_empty(), "a TLS handshake completed: {log:?}");
    let daemon_log = daemon.log();
    let cannot = daemon_log
        .lines()
        .find(|l| l.contains("Discord Gateway: cannot connect"))
        .expect("the cannot-connect line");
    eprintln!("daemon: {cannot}");
    eprintln!("fake: {:?}", tls_failures(&log));
    assert!(cannot.contains("certificate"), "{cannot}");
    assert!(!daemon_log.contains(BOT_TOKEN), "the bot token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_socket_mode_refuses_a_certificate_from_an_untrusted_ca() {
    let tls = TestTls::new();
    let redis = RedisServer::start();
    let socket = FakeSocketMode::start_tls(APP_TOKEN, tls.acceptor.clone()).await;
    let slack = FakeSlack::start("xoxb-test").await;
    // No SSL_CERT_FILE from the test: the environment's (system) roots, without the test CA.
    let daemon = Daemon::start_with_env(&slack_config(&redis, &socket, &slack), &[]);
    tokio::task::block_in_place(|| {
        daemon.wait_for_log("Slack Socket Mode: cannot connect", 1, WAIT)
    });
    eventually("a failed TLS handshake at the fake", WAIT, async || {
        (!tls_failures(&socket.log()).is_empty()).then_some(())
    })
    .await;
    let log = socket.log();
    assert_eq!(
        socket.connections_opened(),
        0,
        "a websocket was opened: {log:?}"
    );
    assert!(sni(&log).is_empty(), "a TLS handshake completed: {log:?}");
    // The Web API (plain http here) answered; the wss:// URL it gave was what failed.
    assert!(socket.opens().0 >= 1, "{:?}", socket.opens());
    let daemon_log = daemon.log();
    let cannot = daemon_log
        .lines()
        .find(|l| l.contains("Slack Socket Mode: cannot connect"))
        .expect("the cannot-connect line");
    eprintln!("daemon: {cannot}");
    eprintln!("fake: {:?}", tls_failures(&log));
    assert!(cannot.contains("certificate"), "{cannot}");
    assert!(!daemon_log.contains("sekrit"), "the app token in the log");
}
