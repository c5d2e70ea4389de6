//! The real `chatbridge` binary as a child process: a config file in a temp dir, stderr
//! captured to a file (so tests can wait for log lines), real signals.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_chatbridge")
}

/// A temp dir holding a config file.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), toml).expect("write config");
        Self { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }
}

/// `chatbridge --config <config> <args…>` with a clean environment (`RUST_LOG=warn` alone) and
/// no stdin, for a test to say what becomes of stdout and stderr, and to run.
pub fn clean_command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// Runs a one-shot CLI command; returns (exit code, stdout, stderr).
pub fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    cli_with_env(config, args, &[])
}

/// [`cli`] with `env` set for the command (e.g. a `${VAR}` the config reads).
pub fn cli_with_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CHATBRIDGE_CONFIG")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run chatbridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`cli`] off the async workers, for tests whose runtime also runs a receiver.
pub async fn cli_async(config: PathBuf, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&config, &args)
    })
    .await
    .expect("cli task")
}

/// A running `chatbridge run`.
pub struct Daemon {
    child: Child,
    config: ConfigDir,
    log: PathBuf,
    stdout: PathBuf,
}

impl Daemon {
    /// Starts `chatbridge run` on this config text.
    pub fn start(toml: &str) -> Self {
        Self::start_in(ConfigDir::new(toml))
    }

    /// Starts it again on the same config dir (after a kill), appending to the same logs.
    pub fn start_in(config: ConfigDir) -> Self {
        Self::start_in_with_env(config, &[])
    }

    /// Starts `chatbridge run` on this config text with extra environment variables for the
    /// child only (`NOTIFY_SOCKET`, `WATCHDOG_USEC`): the test process's environment is not
    /// touched.
    pub fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Self {
        Self::start_in_with_env(ConfigDir::new(toml), env)
    }

    /// [`Daemon::start_in`] with extra environment variables for the child.
    pub fn start_in_with_env(config: ConfigDir, env: &[(&str, &str)]) -> Self {
        Self::spawn(config, env, None)
    }

    /// Starts `chatbridge run` on this config text under an open-file limit of `limit` (soft
    /// and hard, set by `prlimit`, which then becomes the daemon: [`Daemon::pid`] is the
    /// daemon's).
    pub fn start_with_open_file_limit(toml: &str, limit: u64) -> Self {
        Self::spawn(ConfigDir::new(toml), &[], Some(limit))
    }

    fn spawn(config: ConfigDir, env: &[(&str, &str)], open_file_limit: Option<u64>) -> Self {
        let log = config.dir.path().join("daemon.log");
        let stdout = config.dir.path().join("stdout.log");
        let open = |p: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .expect("log file")
        };
        let mut command = match open_file_limit {
            None => Command::new(binary()),
            Some(limit) => {
                let mut prlimit = Command::new("prlimit");
                prlimit
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(binary());
                prlimit
            }
        };
        let child = command
            .arg("--config")
            .arg(config.path())
            .arg("run")
            .env_remove("CHATBRIDGE_CONFIG")
            .env("RUST_LOG", "info,chatbridge=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&log))
            .spawn()
            .expect("spawn chatbridge");
        Self {
            child,
            config,
            log,
            stdout,
        }
    }

    /// The config file it runs on (for CLI commands against the same setup).
    pub fn config_path(&self) -> PathBuf {
        self.config.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything the daemon printed on stdout so far (console links).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `times` times.
    pub fn wait_for_log(&self, needle: &str, times: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {times}× {needle:?} in the daemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the daemon is subscribed (and its first catch-up ran).
    pub fn wait_ready(&self) {
        self.wait_for_log("subscribed", 1, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(200));
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("send signal");
    }

    /// SIGKILLs the daemon and returns its config dir for a restart.
    pub fn crash(mut self) -> ConfigDir {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
        ConfigDir {
            dir: std::mem::replace(&mut self.config.dir, tempfile::tempdir().expect("tmp")),
        }
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`Daemon::wait_ready`] from a multi-thread tokio test, without stalling its runtime.
pub fn wait_ready(daemon: &Daemon) {
    tokio::task::block_in_place(|| daemon.wait_ready());
}
