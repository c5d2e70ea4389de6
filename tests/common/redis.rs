//! A throwaway redis-server per test: its own free port on loopback, no persistence unless the
//! test asks for it ([`RedisServer::start_with`], e.g. `--appendonly yes`), its own temporary
//! directory, killed and reaped on drop. Never the shared Redis on 6379.
//!
//! [`RedisServer::start_tls`] serves TLS only (`--port 0 --tls-port P`) with the certificates
//! of a [`TestTls`]: its [`RedisServer::url`] is then `rediss://…` and its own clients trust
//! the test CA and present the test client certificate.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::tls::TestTls;

/// How long a fresh server may take to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports to try when another process takes ours between probe and bind.
const PORT_ATTEMPTS: usize = 10;

/// A running redis-server owned by one test.
/// A subscription's messages.
pub type Subscriber = std::pin::Pin<Box<dyn futures_util::Stream<Item = ::redis::Msg> + Send>>;

pub struct RedisServer {
    /// The server process; `None` between `kill` and `restart`.
    child: Option<Child>,
    /// The port it listens on, kept across restarts so clients can reconnect.
    port: u16,
    /// Arguments after the defaults (later ones win in redis-server), kept across restarts.
    extra: Vec<String>,
    /// Working directory and log file; removed when the server is dropped.
    dir: TempDir,
    /// Set when the server speaks TLS only.
    tls: Option<Tls>,
}

/// Whether a TLS server asks its clients for a certificate (`--tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// `yes`: a client without a certificate the CA signed is refused.
    Required,
    /// `no`: clients are not asked for one.
    NotAsked,
}

/// A TLS server's arguments (the certificate files, copied into its directory) and what its
/// own clients present and trust.
struct Tls {
    args: Vec<String>,
    certificates: ::redis::TlsCertificates,
}

impl Tls {
    fn new(tls: &TestTls, client_certs: ClientCerts, dir: &TempDir) -> Self {
        let copy = |from: &std::path::Path, name: &str| {
            let to = dir.path().join(name);
            std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {name}: {e}"));
            to.to_string_lossy().into_owned()
        };
        let auth = match client_certs {
            ClientCerts::Required => "yes",
            ClientCerts::NotAsked => "no",
        };
        let args = vec![
            "--tls-cert-file".to_owned(),
            copy(&tls.server_cert_file, "server.crt"),
            "--tls-key-file".to_owned(),
            copy(&tls.server_key_file, "server.key"),
            "--tls-ca-cert-file".to_owned(),
            copy(&tls.ca_file, "ca.pem"),
            "--tls-auth-clients".to_owned(),
            auth.to_owned(),
        ];
        let read = |path: &std::path::Path| std::fs::read(path).expect("read a test PEM");
        let certificates = ::redis::TlsCertificates {
            client_tls: Some(::redis::ClientTlsConfig {
                client_cert: read(&tls.client_cert_file),
                client_key: read(&tls.client_key_file),
            }),
            root_cert: Some(read(&tls.ca_file)),
        };
        Self { args, certificates }
    }

    fn url(port: u16) -> String {
        format!("rediss://127.0.0.1:{port}/")
    }
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with `extra` arguments after the defaults, which they override
    /// (`&["--appendonly", "yes"]` for persistence in the server's own temporary directory).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory for redis-server");
        Self::start_in(dir, extra, None)
    }

    /// Starts a TLS-only server (no plain port) presenting `tls`'s server certificate, asking
    /// clients for a certificate signed by `tls`'s CA when `client_certs` says so.
    pub fn start_tls(tls: &TestTls, client_certs: ClientCerts) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory for redis-server");
        let tls = Tls::new(tls, client_certs, &dir);
        Self::start_in(dir, &[], Some(tls))
    }

    fn start_in(dir: TempDir, extra: &[&str], tls: Option<Tls>) -> Self {
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn(port, &dir, &extra, tls.as_ref()) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        port,
                        extra,
                        dir,
                        tls,
                    };
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!("could not start redis-server after {PORT_ATTEMPTS} ports: {last_failure}");
    }

    /// The server's process id while it runs (to SIGSTOP it: a Redis that accepts nothing
    /// and answers nothing, the way a wedged host looks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:P/`, or `rediss://…` for a TLS server.
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => Tls::url(self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// A client of this server (over TLS, trusting the test CA and presenting the test client
    /// certificate, for a TLS server).
    pub fn client(&self) -> ::redis::Client {
        client(self.port, self.tls.as_ref())
    }

    /// A subscriber on `channel`, as a seed client listens (call from inside a tokio runtime).
    pub async fn subscribe(&self, channel: &str) -> Subscriber {
        let mut pubsub = self.client().get_async_pubsub().await.expect("pubsub");
        pubsub.subscribe(channel).await.expect("subscribe");
        Box::pin(pubsub.into_on_message())
    }

    /// The next payload `live` (from [`Self::subscribe`]) receives; panics after `timeout`.
    pub async fn next_payload(live: &mut Subscriber, timeout: std::time::Duration) -> String {
        use futures_util::StreamExt;
        tokio::time::timeout(timeout, live.next())
            .await
            .expect("published in time")
            .expect("a message")
            .get_payload()
            .expect("text")
    }

    /// A fresh multiplexed async connection (call from inside a tokio runtime).
    pub async fn connection(&self) -> ::redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to test redis on port {}: {e}", self.port))
    }

    /// Kills the server with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited; either way `wait` reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server the way an operator does (SIGTERM: with persistence on, it writes its
    /// data first) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory, with the same arguments: with
    /// persistence on it loads what it saved; without, it starts empty.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again on a running server");
        let child = spawn(self.port, &self.dir, &self.extra, self.tls.as_ref())
            .unwrap_or_else(|e| panic!("restart redis-server on port {}: {e}", self.port));
        self.child = Some(child);
    }

    /// Kills the server and starts a new one on the same port (empty without persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago (the OS picks it; we release it for
/// redis-server, `[http] listen`, …).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

fn log_path(dir: &TempDir, port: u16) -> PathBuf {
    dir.path().join(format!("redis-{port}.log"))
}

/// Spawns redis-server on `port` and waits until it (and not some other process on that port)
/// answers; on failure the process is reaped and the reason returned.
fn spawn(port: u16, dir: &TempDir, extra: &[String], tls: Option<&Tls>) -> Result<Child, String> {
    let log = log_path(dir, port);
    let log_file = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let stderr = log_file.try_clone().map_err(|e| e.to_string())?;
    let number = port.to_string();
    let ports: Vec<&str> = match tls {
        // TLS only: no plain port, the TLS one where a plain server would listen.
        Some(tls) => ["--port", "0", "--tls-port", &number]
            .into_iter()
            .chain(tls.args.iter().map(String::as_str))
            .collect(),
        None => vec!["--port", &number],
    };
    let mut child = Command::new("redis-server")
        .args(ports)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("spawn redis-server (is it installed?): {e}"))?;
    match wait_until_serving(&mut child, port, &client(port, tls)) {
        Ok(()) => Ok(child),
        Err(reason) => {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            Err(format!("{reason}; redis-server output:\n{output}"))
        }
    }
}

/// A client of the server on `port`, over TLS when `tls` is set.
fn client(port: u16, tls: Option<&Tls>) -> ::redis::Client {
    match tls {
        Some(tls) => ::redis::Client::build_with_tls(Tls::url(port), tls.certificates.clone())
            .expect("a TLS redis client"),
        None => {
            ::redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("a valid redis URL")
        }
    }
}

fn wait_until_serving(
    child: &mut Child,
    port: u16,
    client: &::redis::Client,
) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server on port {port} exited early ({status})"
            ));
        }
        if let Some(pid) = server_pid(client) {
            // Someone else's server may hold the port while ours failed to bind.
            return if pid == child.id() {
                Ok(())
            } else {
                Err(format!(
                    "port {port} is served by another process (pid {pid})"
                ))
            };
        }
        if Instant::now() > deadline {
            return Err(format!(
                "redis-server on port {port} did not answer PING within {STARTUP_TIMEOUT:?}"
            ));
        }
        sleep(Duration::from_millis(20));
    }
}

/// The pid of whatever redis answers PING on this client's port.
fn server_pid(client: &::redis::Client) -> Option<u32> {
    let mut con = client
        .get_connection_with_timeout(Duration::from_millis(200))
        .ok()?;
    let pong: String = ::redis::cmd("PING").query(&mut con).ok()?;
    if pong != "PONG" {
        return None;
    }
    let info: String = ::redis::cmd("INFO").arg("server").query(&mut con).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}
