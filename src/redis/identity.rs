//! Who this process is to the other processes sharing the Redis: what it stores in the leases
//! it holds, and whether the holder of another lease is a crashed predecessor of this machine.

use std::path::Path;
use std::time::Duration;

use super::lease::{self, LeaseHolder};

/// The place of a process whose machine or pid namespace cannot be read: never taken as ours.
const UNKNOWN: &str = "-";

/// This process, as the leases it holds name it; shared by all its links.
#[derive(Debug, Clone)]
pub struct Identity {
    /// A random id, unique to this process: what renewing and releasing compare.
    pub(crate) token: String,
    /// The machine (boot id) and pid namespace `pid` means something in.
    place: String,
    /// This process's id.
    pid: u32,
    /// The host name, for operators.
    host: String,
    /// How long a lease lasts without renewal.
    pub(crate) ttl: Duration,
}

impl Identity {
    /// This process, holding leases for `ttl`.
    pub fn of_this_process(ttl: Duration) -> Self {
        let host = read_word("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown-host".into());
        Self {
            token: uuid::Uuid::new_v4().simple().to_string(),
            place: this_place(),
            pid: std::process::id(),
            host,
            ttl,
        }
    }

    /// What follows the token and epoch in a lease this process holds.
    pub(crate) fn stored(&self) -> String {
        format!("{} {} {}", self.place, self.pid, self.host)
    }

    /// `host pid N`, as operators see it.
    pub fn holder(&self) -> String {
        format!("{} pid {}", self.host, self.pid)
    }

    /// How long before Redis would expire a lease we stop counting it as ours.
    pub(crate) fn margin(&self) -> Duration {
        lease::margin(self.ttl)
    }

    /// Whether `held` is a lease this very process took (its token).
    pub(crate) fn holds(&self, held: &LeaseHolder) -> bool {
        held.value.split(' ').next() == Some(self.token.as_str())
    }

    /// Whether `held` belongs to a process of this very machine boot and pid namespace that
    /// no longer exists (it crashed and this is its restart): its lease can be taken now
    /// rather than after it expires. Anything uncertain (another machine, a namespace we
    /// cannot read, a pid in use again) counts as alive.
    pub(crate) fn outlived(&self, held: &LeaseHolder) -> bool {
        self.place != UNKNOWN
            && held.place == self.place
            && held.pid != self.pid
            && !Path::new(&format!("/proc/{}", held.pid)).exists()
    }
}

/// This machine's boot and this process's pid namespace, as one word.
fn this_place() -> String {
    let boot = read_word("/proc/sys/kernel/random/boot_id");
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|ns| {
            ns.to_string_lossy()
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|ns| !ns.is_empty());
    match (boot, namespace) {
        (Some(boot), Some(namespace)) => format!("{boot}/{namespace}"),
        _ => UNKNOWN.to_owned(),
    }
}

/// A one-word value from a file, if it holds one.
fn read_word(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let word = text.trim();
    (!word.is_empty() && !word.contains(char::is_whitespace)).then(|| word.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(place: &str, pid: u32) -> LeaseHolder {
        LeaseHolder {
            epoch: 1,
            holder: format!("h pid {pid}"),
            place: place.to_owned(),
            pid,
            expires_in: Duration::from_secs(1),
            value: String::new(),
        }
    }

    #[test]
    fn only_a_vanished_process_of_this_place_is_outlived() {
        let me = Identity::of_this_process(Duration::from_secs(10));
        assert_ne!(
            me.place, UNKNOWN,
            "Linux: boot id and pid namespace are readable"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        assert!(me.outlived(&held(&me.place, gone)));
        assert!(!me.outlived(&held(&me.place, me.pid)), "this process");
        assert!(!me.outlived(&held(&me.place, 1)), "a live process");
        assert!(
            !me.outlived(&held("another-boot/1", gone)),
            "another machine"
        );
        assert!(!me.outlived(&held(UNKNOWN, gone)));
    }

    #[test]
    fn a_lease_is_ours_only_with_our_token() {
        let me = Identity::of_this_process(Duration::from_secs(10));
        let mut lease = held(&me.place, me.pid);
        lease.value = format!("{} 3 {}", me.token, me.stored());
        assert!(me.holds(&lease));
        let other = Identity::of_this_process(Duration::from_secs(10));
        assert!(!other.holds(&lease), "another process on the same machine");
    }
}
