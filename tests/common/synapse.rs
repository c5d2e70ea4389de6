//! A throwaway Synapse per test: a real Matrix homeserver (SQLite, loopback, a free port) in
//! its own temporary directory, loading the application-service registrations the test gives
//! it, killed and reaped on drop.
//!
//! Synapse comes from `pip install matrix-synapse` into a virtualenv that `scripts/test`
//! makes (`target/synapse-venv`; `CHATBRIDGE_SYNAPSE_PYTHON` names another interpreter). When
//! it is not there, [`Synapse::start`] says so and returns `None`, and the test is skipped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long Synapse may take to generate its config and to answer `/versions`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// A running Synapse owned by one test.
pub struct Synapse {
    child: Child,
    port: u16,
    dir: TempDir,
}

/// The Python that has Synapse installed, if any.
fn python() -> Option<PathBuf> {
    let path = std::env::var_os("CHATBRIDGE_SYNAPSE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/synapse-venv/bin/python")
        });
    path.exists().then_some(path)
}

impl Synapse {
    /// Starts Synapse for `server_name`, loading each registration YAML of `registrations`.
    /// `None` (with a line on stderr) when Synapse is not installed.
    pub fn start(server_name: &str, registrations: &[String]) -> Option<Self> {
        let Some(python) = python() else {
            eprintln!(
                "SKIPPED: Synapse is not installed (scripts/test installs it into \
                 target/synapse-venv; or set CHATBRIDGE_SYNAPSE_PYTHON)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("synapse temp dir");
        let config = dir.path().join("homeserver.yaml");
        let generated = Command::new(&python)
            .args([
                "-m",
                "synapse.app.homeserver",
                "--generate-config",
                "--report-stats=no",
            ])
            .arg("--server-name")
            .arg(server_name)
            .arg("--config-path")
            .arg(&config)
            .arg("--data-directory")
            .arg(dir.path().join("data"))
            .current_dir(dir.path())
            .output()
            .expect("run synapse --generate-config");
        assert!(
            generated.status.success(),
            "synapse --generate-config failed: {}",
            String::from_utf8_lossy(&generated.stderr)
        );
        let port = super::redis::free_port();
        let mut files = Vec::new();
        for (i, registration) in registrations.iter().enumerate() {
            let path = dir.path().join(format!("registration-{i}.yaml"));
            std::fs::write(&path, registration).expect("write a registration");
            files.push(path);
        }
        let generated = std::fs::read_to_string(&config).expect("read homeserver.yaml");
        std::fs::write(&config, patched(&generated, port, &files)).expect("write homeserver.yaml");
        let log = File::create(dir.path().join("synapse.out")).expect("synapse log");
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start synapse");
        let synapse = Self { child, port, dir };
        synapse.wait_until_up();
        Some(synapse)
    }

    /// The client-server API base, `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Registers a real (non-bridged) user `name`: its user id and access token.
    pub async fn register_user(&self, name: &str) -> (String, String) {
        let body: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/_matrix/client/v3/register", self.url()))
            .json(&serde_json::json!({
                "username": name,
                "password": "a-long-test-password",
                "auth": {"type": "m.login.dummy"},
            }))
            .send()
            .await
            .expect("register a user")
            .json()
            .await
            .expect("register answer");
        let field = |key: &str| {
            body[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {body}"))
                .to_owned()
        };
        (field("user_id"), field("access_token"))
    }

    /// Calls the client-server API as a real user: the answer's JSON body.
    pub async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .send()
            .await
            .expect("call synapse")
            .json()
            .await
            .expect("synapse answer")
    }

    /// What Synapse printed (its stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("synapse.out")).unwrap_or_default()
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if answers_200(self.port, "/_matrix/client/versions") {
                return;
            }
            sleep(Duration::from_millis(200));
        }
        panic!(
            "synapse did not answer /_matrix/client/versions:\n{}",
            self.output()
        );
    }
}

/// Whether `GET path` on loopback `port` answers 200 (plain HTTP/1.0, no client needed).
fn answers_200(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// The generated config, listening on loopback `port` only (plain HTTP, client API), with
/// `files` as its application services and no rate limits for the bridge's tests.
fn patched(generated: &str, port: u16, files: &[PathBuf]) -> String {
    const OURS: [&str; 8] = [
        "listeners:",
        "trusted_key_servers:",
        "app_service_config_files:",
        "suppress_key_server_warning:",
        "enable_registration:",
        "enable_registration_without_verification:",
        "rc_registration:",
        "rc_message:",
    ];
    let mut out = String::new();
    let mut skipping = false;
    for line in generated.lines() {
        // Drop the generated blocks ours replace.
        if OURS.iter().any(|key| line.starts_with(key)) {
            skipping = true;
            continue;
        }
        if skipping {
            if line.starts_with(' ') || line.starts_with('-') {
                continue;
            }
            skipping = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    x_forwarded: false\n    resources:\n      - names: [client]\n        compress: false\n"
    ));
    out.push_str("app_service_config_files:\n");
    for file in files {
        out.push_str(&format!("  - '{}'\n", file.display()));
    }
    out.push_str("suppress_key_server_warning: true\n");
    // Test users register themselves (no e-mail, no captcha), as fast as tests make them.
    out.push_str("enable_registration: true\n");
    out.push_str("enable_registration_without_verification: true\n");
    out.push_str("rc_registration:\n  per_second: 1000\n  burst_count: 1000\n");
    out.push_str("rc_message:\n  per_second: 1000\n  burst_count: 1000\n");
    out.push_str("trusted_key_servers: []\n");
    out
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
