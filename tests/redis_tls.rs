//! `rediss://`: chatbridge talks to a real redis-server that serves TLS only (`--port 0
//! --tls-port P`), with a certificate for `127.0.0.1` signed by a throwaway CA the test made
//! (`common::tls`). The daemon and the CLI commands trust that CA through `[redis] ca_file`;
//! a CA file from another CA is refused with a clear error instead of a hang; with
//! `--tls-auth-clients yes` only a client presenting `client_cert_file`/`client_key_file` gets
//! in. `chatbridge check` reports files it cannot use.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{ConfigDir, Daemon, binary, cli_async, wait_ready};
use common::receiver::Receiver;
use common::redis::{ClientCerts, RedisServer};
use common::tls::TestTls;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// The `[redis]` section for `redis` with these TLS files (`None`: key left out).
fn redis_section(redis: &RedisServer, ca: Option<&Path>, client: Option<(&Path, &Path)>) -> String {
    let mut section = format!("[redis]\nurl = \"{}\"\n", redis.url());
    if let Some(ca) = ca {
        section.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
    }
    if let Some((cert, key)) = client {
        section.push_str(&format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    section
}

/// One webhook link `audit` on room `general`, after `redis_section`.
fn bridge_config(redis_section: &str, receiver: &Receiver) -> String {
    format!(
        "{redis_section}\n[links.audit]\nkind = \"webhook\"\nurl = \"{}\"\ntimeout_secs = 5\n\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"audit\"]\n",
        receiver.url("/hook")
    )
}

/// The client identity of `tls` as `[redis]` paths.
fn identity(tls: &TestTls) -> (&Path, &Path) {
    (&tls.client_cert_file, &tls.client_key_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_bridged_over_rediss_end_to_end() {
    let tls = TestTls::new();
    let redis = RedisServer::start_tls(&tls, ClientCerts::NotAsked);
    assert!(redis.url().starts_with("rediss://"));
    let receiver = Receiver::start().await;
    let toml = bridge_config(&redis_section(&redis, Some(&tls.ca_file), None), &receiver);
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);

    // Published by a seed client on the same TLS server, and by the CLI (its own client).
    let mut con = redis.connection().await;
    common::seed::send_message(&mut con, "general", json!(7), "ann", "over tls").await;
    let (code, _, stderr) = cli_async(
        daemon.config_path(),
        &[
            "send",
            "general",
            "from the cli",
            "--user-id",
            "8",
            "--username",
            "bo",
        ],
    )
    .await;
    assert_eq!(code, 0, "send over rediss://: {stderr}");
    receiver.wait_for(2, WAIT).await;
    assert_eq!(receiver.contents(), ["over tls", "from the cli"]);

    let (code, stdout, stderr) = cli_async(daemon.config_path(), &["history", "general"]).await;
    assert_eq!(code, 0, "history over rediss://: {stderr}");
    assert!(
        stdout.contains("from the cli") && stdout.contains("over tls"),
        "{stdout}"
    );
    let (code, stdout, stderr) = cli_async(daemon.config_path(), &["status"]).await;
    assert_eq!(code, 0, "status over rediss://: {stderr}");
    assert!(stdout.contains("audit"), "{stdout}");
}

/// A CA file that did not sign the server's certificate: the CLI says so and exits 69 at
/// once; `run` stops at start with the reason instead of retrying in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_a_clear_error_not_a_hang() {
    let tls = TestTls::new();
    let other = TestTls::new();
    let redis = RedisServer::start_tls(&tls, ClientCerts::NotAsked);
    let receiver = Receiver::start().await;
    let toml = bridge_config(
        &redis_section(&redis, Some(&other.ca_file), None),
        &receiver,
    );
    let config = ConfigDir::new(&toml);

    let started = Instant::now();
    let (code, _, stderr) = cli_async(config.path(), &["history", "general"]).await;
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains("TLS certificate is not signed by a CA chatbridge trusts")
            && stderr.contains("[redis] ca_file")
            && stderr.contains(&redis.url()),
        "the reason, what to fix and the server: {stderr}"
    );
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());

    let mut daemon = Daemon::start_in(config);
    let status = daemon.wait_exit(WAIT);
    let log = daemon.log();
    assert_eq!(status.code(), Some(69), "{status:?}; log:\n{log}");
    assert!(
        log.contains("TLS certificate is not signed by a CA chatbridge trusts")
            && log.contains("[redis] ca_file"),
        "a line that says what to fix; log:\n{log}"
    );
    assert!(receiver.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_works_with_the_client_certificate_and_fails_without_it() {
    let tls = TestTls::new();
    let redis = RedisServer::start_tls(&tls, ClientCerts::Required);
    let receiver = Receiver::start().await;

    let without = ConfigDir::new(&bridge_config(
        &redis_section(&redis, Some(&tls.ca_file), None),
        &receiver,
    ));
    let started = Instant::now();
    let (code, _, stderr) = cli_async(
        without.path(),
        &[
            "send",
            "general",
            "no cert",
            "--user-id",
            "8",
            "--username",
            "bo",
        ],
    )
    .await;
    assert_eq!(code, 69, "refused without a client certificate: {stderr}");
    assert!(
        stderr.contains("requires a TLS client certificate")
            && stderr.contains("[redis] client_cert_file"),
        "{stderr}"
    );
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());

    let with = bridge_config(
        &redis_section(&redis, Some(&tls.ca_file), Some(identity(&tls))),
        &receiver,
    );
    let daemon = Daemon::start(&with);
    wait_ready(&daemon);
    let (code, _, stderr) = cli_async(
        daemon.config_path(),
        &[
            "send",
            "general",
            "with cert",
            "--user-id",
            "8",
            "--username",
            "bo",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    receiver.wait_for(1, WAIT).await;
    assert_eq!(receiver.contents(), ["with cert"]);
    let mut con = redis.connection().await;
    let history = common::history::contents(&mut con, "general").await;
    assert_eq!(
        history,
        ["with cert"],
        "the message without a certificate never got in"
    );
}

/// `chatbridge check` with the environment given (and nothing else of the test's).
fn check(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(binary())
        .arg("--config")
        .arg(config)
        .arg("check")
        .env_remove("CHATBRIDGE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run chatbridge check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_tls_files_it_cannot_use() {
    let tls = TestTls::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-ca.pem");
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "just words\n").expect("write");
    let url = "url = \"rediss://127.0.0.1:6380/\"\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("ca_file = \"{}\"\n", missing.display()),
            "redis.ca_file: cannot read",
            "an unreadable ca_file",
        ),
        (
            format!("ca_file = \"{}\"\n", not_pem.display()),
            "redis.ca_file: holds no PEM certificate",
            "a ca_file without certificates",
        ),
        (
            format!(
                "client_cert_file = \"{}\"\n",
                tls.client_cert_file.display()
            ),
            "redis.client_cert_file: client_cert_file and client_key_file go together",
            "a certificate without its key",
        ),
        (
            format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                tls.client_cert_file.display(),
                tls.server_key_file.display()
            ),
            "redis.client_key_file: is not the key of client_cert_file's certificate",
            "a key that belongs to another certificate",
        ),
        (
            format!(
                "client_cert_file = \"{0}\"\nclient_key_file = \"{0}\"\n",
                tls.client_cert_file.display()
            ),
            "redis.client_key_file: holds no usable PEM private key",
            "a key file that holds a certificate",
        ),
    ];
    for (keys, expected, what) in cases {
        let config = ConfigDir::new(&format!("[redis]\n{url}{keys}"));
        let (code, stderr) = check(&config.path(), &[]);
        assert_eq!(code, 78, "{what}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{what}: expected {expected:?} in:\n{stderr}"
        );
    }

    // Certificate verification cannot be turned off.
    let insecure = ConfigDir::new("[redis]\nurl = \"rediss://127.0.0.1:6380/#insecure\"\n");
    let (code, stderr) = check(&insecure.path(), &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("redis.url: `#insecure`"), "{stderr}");

    // Without rediss:// the files would be ignored: that is a mistake too.
    let plain = ConfigDir::new(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:6380/\"\nca_file = \"{}\"\n",
        tls.ca_file.display()
    ));
    let (code, stderr) = check(&plain.path(), &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("redis.ca_file: only used with a `rediss://` url"),
        "{stderr}"
    );

    // The environment override, like every other key; and a usable setup passes.
    let good = ConfigDir::new(&format!("[redis]\n{url}"));
    let missing_path = missing.to_string_lossy().into_owned();
    let (code, stderr) = check(
        &good.path(),
        &[("CHATBRIDGE__REDIS__CA_FILE", &missing_path)],
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("redis.ca_file: cannot read"), "{stderr}");
    let ca = tls.ca_file.to_string_lossy().into_owned();
    let cert = tls.client_cert_file.to_string_lossy().into_owned();
    let key = tls.client_key_file.to_string_lossy().into_owned();
    let env = [
        ("CHATBRIDGE__REDIS__CA_FILE", ca.as_str()),
        ("CHATBRIDGE__REDIS__CLIENT_CERT_FILE", cert.as_str()),
        ("CHATBRIDGE__REDIS__CLIENT_KEY_FILE", key.as_str()),
    ];
    let (code, stderr) = check(&good.path(), &env);
    assert_eq!(code, 0, "{stderr}");
    // The key file's contents never appear, whatever is printed.
    let key_pem = std::fs::read_to_string(&tls.client_key_file).expect("read key");
    let body = key_pem.lines().nth(1).expect("a base64 line");
    let bad = ConfigDir::new(&format!(
        "[redis]\n{url}client_cert_file = \"{0}\"\nclient_key_file = \"{0}\"\n",
        tls.client_key_file.display()
    ));
    let (_, stderr) = check(&bad.path(), &[]);
    assert!(!stderr.contains(body), "{stderr}");
}
