//! Matrix links, as far as this version goes: the configuration is read and checked, the
//! application-service registration is printed for the homeserver, and `run` (and a reload)
//! refuse a Matrix link rather than queue events nothing delivers. Through the real binary.

mod common;

use std::time::Duration;

use common::daemon::{ConfigDir, Daemon, cli_with_env};
use common::receiver::Receiver;
use common::redis::RedisServer;
use common::seed;
use nix::sys::signal::Signal;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// A Matrix link `m` for room `general`, its `as_token` from the environment.
const MATRIX: &str = r#"
[links.m]
kind = "matrix"
homeserver_url = "http://127.0.0.1:8008"
server_name = "chat.example.org"
as_token = "${TEST_AS_TOKEN}"
hs_token = "hs-token-planted"
ghost_prefix = "_redis_"

[links.m.rooms]
general = "!abcdef:chat.example.org"

[[rooms]]
name = "general"
links = ["m"]
"#;

/// Runs a one-shot command on `toml` with `TEST_AS_TOKEN` set; (exit code, stdout, stderr).
fn run_cli(toml: &str, args: &[&str]) -> (i32, String, String) {
    let dir = ConfigDir::new(toml);
    cli_with_env(&dir.path(), args, &[("TEST_AS_TOKEN", "as-token-from-env")])
}

/// A real Synapse for `chat.example.org` loading the registration `chatbridge matrix
/// registration` prints for [`MATRIX`] (with `as_token = "as-token-inline"`); `None` when
/// Synapse is not installed (the test is then skipped, and says so).
async fn synapse_with_the_registration() -> Option<common::synapse::Synapse> {
    let toml = MATRIX.replace("${TEST_AS_TOKEN}", "as-token-inline");
    let (code, registration, stderr) = run_cli(&toml, &["matrix", "registration"]);
    assert_eq!(code, 0, "{stderr}");
    tokio::task::spawn_blocking(move || {
        common::synapse::Synapse::start("chat.example.org", &[registration])
    })
    .await
    .expect("start synapse")
}

#[test]
fn the_registration_holds_the_tokens_the_url_and_exclusive_namespaces() {
    let toml = format!("[http]\nlisten = \"127.0.0.1:8711\"\n{MATRIX}");
    let (code, stdout, stderr) = run_cli(&toml, &["matrix", "registration"]);
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "id: 'chatbridge-m'",
        "url: 'http://127.0.0.1:8711'",
        "as_token: 'as-token-from-env'",
        "hs_token: 'hs-token-planted'",
        "sender_localpart: 'chatbridge'",
        "rate_limited: false",
        "receive_ephemeral: true",
        "de.sorunome.msc2409.push_ephemeral: true",
        "namespaces:",
        "      regex: '@_redis_.*:chat\\.example\\.org'",
        "      regex: '@chatbridge:chat\\.example\\.org'",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing:\n{stdout}"
        );
    }
    assert_eq!(stdout.matches("exclusive: true").count(), 2, "{stdout}");
    // registration_url wins over the listen address.
    let behind_proxy = MATRIX.replace(
        "ghost_prefix",
        "registration_url = \"https://bridge.internal/cb\"\nghost_prefix",
    );
    let (code, stdout, _) = run_cli(&behind_proxy, &["matrix", "registration", "--link", "m"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("url: 'https://bridge.internal/cb'"),
        "{stdout}"
    );
}

#[test]
fn the_registration_needs_a_matrix_link_and_says_which_when_there_are_several() {
    let none = "[links.c]\nkind = \"console\"\n[[rooms]]\nname = \"general\"\nlinks = [\"c\"]\n";
    let (code, _, stderr) = run_cli(none, &["matrix", "registration"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no link of kind \"matrix\""), "{stderr}");
    let two = format!(
        "{}{}",
        MATRIX.replace("[[rooms]]\nname = \"general\"\nlinks = [\"m\"]\n", ""),
        MATRIX
            .replace("links.m", "links.n")
            .replace("!abcdef", "!other")
            .replace("links = [\"m\"]", "links = [\"m\", \"n\"]")
    );
    let (code, _, stderr) = run_cli(&two, &["matrix", "registration"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("several Matrix links (m, n): say which with --link"),
        "{stderr}"
    );
    let (code, stdout, _) = run_cli(&two, &["matrix", "registration", "--link", "n"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("id: 'chatbridge-n'"), "{stdout}");
    let (code, _, stderr) = run_cli(&two, &["matrix", "registration", "--link", "x"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("(Matrix links: m, n)"), "{stderr}");
}

#[test]
fn check_reports_missing_and_stray_room_mappings_without_printing_tokens() {
    let bad = MATRIX.replace(
        "general = \"!abcdef:chat.example.org\"",
        "stray = \"!abcdef:chat.example.org\"",
    );
    let (code, stdout, stderr) = run_cli(&bad, &["check"]);
    assert_eq!(code, 78, "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains(
            "links.m.rooms: room \"general\" is mirrored to this link but has no Matrix room"
        ),
        "{all}"
    );
    assert!(
        all.contains("links.m.rooms.stray: room \"stray\" is not mirrored"),
        "{all}"
    );
    assert!(
        !all.contains("as-token-from-env") && !all.contains("hs-token-planted"),
        "{all}"
    );
    let (code, stdout, _) = run_cli(MATRIX, &["check"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("`chatbridge run` refuses this configuration"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("as-token-from-env") && !stdout.contains("hs-token-planted"),
        "{stdout}"
    );
}

#[test]
fn run_refuses_a_matrix_link_at_once_and_says_why() {
    let redis = RedisServer::start();
    let toml = format!("[redis]\nurl = \"{}\"\n{MATRIX}", redis.url());
    let (code, _, stderr) = run_cli(&toml, &["run"]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("cannot run this configuration: links.m: this version reads Matrix links"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_adds_a_matrix_link_is_refused_and_delivery_goes_on() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let webhook = format!(
        "[redis]\nurl = \"{}\"\n[links.audit]\nkind = \"webhook\"\nurl = \"{}\"\n",
        redis.url(),
        receiver.url("/hook")
    );
    let daemon = Daemon::start(&format!(
        "{webhook}[[rooms]]\nname = \"general\"\nlinks = [\"audit\"]\n"
    ));
    daemon.wait_ready();
    let with_matrix = format!(
        "{webhook}{}",
        MATRIX
            .replace("${TEST_AS_TOKEN}", "as-token-inline")
            .replace("links = [\"m\"]", "links = [\"audit\", \"m\"]")
    );
    std::fs::write(daemon.config_path(), with_matrix).expect("rewrite the config");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("reload refused; keeping the running configuration", 1, WAIT);
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(7), "alice", "still delivered").await;
    let got = receiver.wait_for(1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0].body).contains("still delivered"));
    // Nothing was queued for the refused link.
    let queued: i64 = redis::cmd("EXISTS")
        .arg("chatbridge:outbox:m")
        .query_async(&mut con)
        .await
        .expect("EXISTS");
    assert_eq!(queued, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn synapse_loads_the_registration_and_holds_the_bridge_to_its_namespace() {
    let Some(synapse) = synapse_with_the_registration().await else {
        return;
    };
    let http = reqwest::Client::new();
    let register = |username: &str| {
        http.post(format!("{}/_matrix/client/v3/register", synapse.url()))
            .bearer_auth("as-token-inline")
            .json(&json!({
                "type": "m.login.application_service",
                "username": username,
                "inhibit_login": true,
            }))
            .send()
    };
    // The ghost the link names for chat user "Alice 🎉" (uppercase, a space, an emoji).
    let ghost = format!(
        "_redis_{}",
        chatbridge::platforms::matrix::ghost::escape("Alice 🎉")
    );
    assert_eq!(ghost, "_redis__alice=20=f0=9f=8e=89");
    let response = register(&ghost).await.expect("register a ghost");
    assert_eq!(response.status(), 200, "{}", synapse.output());
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body["user_id"],
        "@_redis__alice=20=f0=9f=8e=89:chat.example.org"
    );
    // Outside the namespace the homeserver refuses the bridge.
    let response = register("someone_else").await.expect("register outside");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["errcode"], "M_EXCLUSIVE", "{body}");
    // A wrong as_token is not the bridge.
    let response = http
        .post(format!("{}/_matrix/client/v3/register", synapse.url()))
        .bearer_auth("not-the-token")
        .json(&json!({"type": "m.login.application_service", "username": "_redis_x"}))
        .send()
        .await
        .expect("register with a wrong token");
    assert_eq!(response.status(), 401);
}

/// The homeserver calls a Matrix sink will make, against a real Synapse: a ghost registered
/// (twice: the second is `M_USER_IN_USE`, fine), named, joined to a real user's room, and a
/// message sent twice with one transaction id becomes one event, body exact, pinging nobody.
#[tokio::test(flavor = "multi_thread")]
async fn a_ghost_registers_joins_and_sends_one_event_per_transaction_to_a_real_synapse() {
    use chatbridge::platforms::matrix::client::Client;
    use chatbridge::platforms::matrix::ghost;
    use chatbridge::secret::{BotToken, SecretUrl};
    use reqwest::Method;

    let Some(synapse) = synapse_with_the_registration().await else {
        return;
    };
    let (_, alice) = synapse.register_user("alice").await;
    let created = synapse
        .call(
            &alice,
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(json!({"preset": "public_chat"})),
        )
        .await;
    let room = created["room_id"].as_str().expect("room_id").to_owned();

    let client = Client::new(
        reqwest::Client::new(),
        SecretUrl::parse(&synapse.url()).expect("url"),
        BotToken::parse("as-token-inline").expect("token"),
        Duration::from_secs(10),
    );
    let localpart = format!("_redis_{}", ghost::escape("Bob Ü"));
    let user = format!("@{localpart}:chat.example.org");
    client
        .register(&localpart)
        .await
        .expect("register the ghost");
    client
        .register(&localpart)
        .await
        .expect("registering again is fine");
    client
        .set_display_name(&user, "Bob Ü")
        .await
        .expect("display name");
    assert_eq!(client.join(&user, &room).await.expect("join"), room);
    let text = "hi @room and @alice:chat.example.org <b>not bold</b>";
    let first = client
        .send_text(&user, &room, "txn-1", text, None)
        .await
        .expect("send");
    let again = client
        .send_text(&user, &room, "txn-1", text, None)
        .await
        .expect("send again");
    assert_eq!(first, again, "one transaction id, one event");
    let late = client
        .send_text(
            &user,
            &room,
            "txn-2",
            "from the past",
            Some(1_700_000_000_000),
        )
        .await
        .expect("send with ts");

    let messages = synapse
        .call(
            &alice,
            Method::GET,
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            None,
        )
        .await;
    let ours: Vec<&serde_json::Value> = messages["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == user.as_str())
        .collect();
    assert_eq!(ours.len(), 2, "{messages:#}");
    let sent = ours
        .iter()
        .find(|e| e["event_id"] == first.as_str())
        .expect("the first event");
    assert_eq!(sent["content"]["body"], text);
    assert_eq!(sent["content"]["msgtype"], "m.text");
    assert_eq!(sent["content"]["m.mentions"], json!({}));
    assert!(sent["content"].get("formatted_body").is_none());
    let past = ours
        .iter()
        .find(|e| e["event_id"] == late.as_str())
        .expect("the late event");
    assert_eq!(past["origin_server_ts"], 1_700_000_000_000_i64);
    let profile = synapse
        .call(
            &alice,
            Method::GET,
            &format!("/_matrix/client/v3/profile/{user}/displayname"),
            None,
        )
        .await;
    assert_eq!(profile["displayname"], "Bob Ü");
    // A room the ghost cannot join is an error with the homeserver's errcode, not a panic.
    let refused = client
        .join(&user, "!nowhere:chat.example.org")
        .await
        .expect_err("no such room");
    assert!(
        refused.status.is_some() && refused.errcode.is_some(),
        "{refused:?}"
    );
}
