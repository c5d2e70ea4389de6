//! A throwaway redis-server per test: its own free port on loopback, no persistence unless the
//! test asks for it ([`RedisServer::start_with`], e.g. `--appendonly yes`), its own temporary
//! directory, killed and reaped on drop. Never the shared Redis on 6379.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

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
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with `extra` arguments after the defaults, which they override
    /// (`&["--appendonly", "yes"]` for persistence in the server's own temporary directory).
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        let dir = tempfile::tempdir().expect("create a temporary directory for redis-server");
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn(port, &dir, &extra) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        port,
                        extra,
                        dir,
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> ::redis::Client {
        ::redis::Client::open(self.url()).expect("a valid redis URL")
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
        let child = spawn(self.port, &self.dir, &self.extra)
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
fn spawn(port: u16, dir: &TempDir, extra: &[String]) -> Result<Child, String> {
    let log = log_path(dir, port);
    let log_file = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let stderr = log_file.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("spawn redis-server (is it installed?): {e}"))?;
    match wait_until_serving(&mut child, port) {
        Ok(()) => Ok(child),
        Err(reason) => {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            Err(format!("{reason}; redis-server output:\n{output}"))
        }
    }
}

fn wait_until_serving(child: &mut Child, port: u16) -> Result<(), String> {
    let client =
        ::redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server on port {port} exited early ({status})"
            ));
        }
        if let Some(pid) = server_pid(&client) {
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
