//! The real `chatbridge run` as a child process (config in a temp dir, stderr to a log file),
//! and what `/proc` says about it: CPU ticks and resident memory.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the daemon may take to log "subscribed".
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the memory sampler reads `/proc/<pid>/status`.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// The longest [`Daemon::settle`] waits for startup work to finish.
const SETTLE_CAP: Duration = Duration::from_secs(15);

/// A running `chatbridge run`, killed and reaped on drop.
pub struct Daemon {
    /// The process.
    child: Child,
    /// Holds `config.toml` and `daemon.log`; removed on drop.
    dir: TempDir,
}

impl Daemon {
    /// Writes `config` and starts the daemon on it (logging at `info`).
    pub fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir for the daemon");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write the daemon's config");
        let log = File::create(dir.path().join("daemon.log")).expect("create the daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_chatbridge"))
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .env_remove("CHATBRIDGE_CONFIG")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn chatbridge");
        Self { child, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the daemon logged "subscribed"; panics with its log if it exits or hangs.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.log().contains("subscribed") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chatbridge exited ({status}) before subscribing:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chatbridge did not subscribe within {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Waits until startup work (the first catch-up) is over: two quarter-seconds in a row
    /// without a CPU tick, or [`SETTLE_CAP`].
    pub fn settle(&self) {
        let deadline = Instant::now() + SETTLE_CAP;
        let mut calm = 0;
        let mut ticks = cpu_ticks(self.pid());
        while calm < 2 && Instant::now() < deadline {
            sleep(Duration::from_millis(250));
            let now = cpu_ticks(self.pid());
            calm = if now == ticks { calm + 1 } else { 0 };
            ticks = now;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Fails only when it already exited; `wait` reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of `pid` in clock ticks (0 once it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3, `state`.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Clock ticks per second, from `getconf CLK_TCK` (100 when that fails).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`); 0 when unreadable.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Samples the daemon's VmRSS on a thread until finished; stopped and joined on drop.
pub struct RssWatch {
    /// The process watched.
    pid: u32,
    /// Tells the sampler to stop.
    stop: Arc<AtomicBool>,
    /// The sampler; returns the highest VmRSS it saw, in kB.
    sampler: Option<JoinHandle<u64>>,
}

impl RssWatch {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(status_kb(pid, "VmRSS"));
                sleep(RSS_EVERY);
            }
            peak
        });
        Self {
            pid,
            stop,
            sampler: Some(sampler),
        }
    }

    /// The peak resident memory in MB: the highest sample or VmHWM, whichever is higher.
    pub fn peak_mb(mut self) -> f64 {
        let hwm = status_kb(self.pid, "VmHWM");
        let sampled = self.halt();
        sampled.max(hwm) as f64 / 1024.0
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler
            .take()
            .and_then(|sampler| sampler.join().ok())
            .unwrap_or(0)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.halt();
    }
}
