//! A stand-in for systemd's notify socket: a Unix datagram socket in a temp dir whose path a
//! test passes to the daemon as `NOTIFY_SOCKET`, and that records every datagram with the
//! time it arrived.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One datagram from the daemon (`READY=1\nSTATUS=…\n`), with its arrival time.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub at: Instant,
    pub text: String,
}

impl Datagram {
    /// Whether one of its lines is exactly `line` (`READY=1`).
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    /// The value of its `STATUS=` line, if it has one.
    pub fn status(&self) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix("STATUS="))
    }
}

/// The socket and everything received on it so far.
pub struct NotifySocket {
    /// Holds the socket file; removed on drop.
    dir: tempfile::TempDir,
    socket: UnixDatagram,
    /// Every datagram received, in order.
    pub received: Vec<Datagram>,
}

impl NotifySocket {
    pub fn bind() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket =
            UnixDatagram::bind(dir.path().join("notify.sock")).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        Self {
            dir,
            socket,
            received: Vec::new(),
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("notify.sock")
    }

    /// Receives for up to `wait`; returns how many datagrams arrived.
    pub fn receive_for(&mut self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let before = self.received.len();
        while Instant::now() < deadline {
            self.receive_one();
        }
        self.received.len() - before
    }

    /// Receives until a datagram matching `want` arrives (one received earlier counts only if
    /// it came at index `from` or later); panics after `timeout`.
    pub fn wait_for(
        &mut self,
        from: usize,
        what: &str,
        timeout: Duration,
        want: impl Fn(&Datagram) -> bool,
    ) -> (usize, Datagram) {
        let deadline = Instant::now() + timeout;
        let mut next = from;
        loop {
            while next < self.received.len() {
                if want(&self.received[next]) {
                    return (next, self.received[next].clone());
                }
                next += 1;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; received: {:?}",
                self.received
            );
            self.receive_one();
        }
    }

    /// Waits one read timeout for a datagram, recording it.
    fn receive_one(&mut self) {
        let mut buf = [0u8; 4096];
        if let Ok(n) = self.socket.recv(&mut buf) {
            self.received.push(Datagram {
                at: Instant::now(),
                text: String::from_utf8_lossy(&buf[..n]).into_owned(),
            });
        }
    }
}
