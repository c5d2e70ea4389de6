//! The open-file limit (`RLIMIT_NOFILE`): every socket is a file descriptor, so the limit
//! decides how many connections the HTTP server may hold before Redis and outbound HTTP can no
//! longer open theirs. systemd's default (1024 soft) is low; like most servers, `run` raises
//! the soft limit to the hard one at start ([`raise`]), and the HTTP server keeps
//! [`RESERVE`] descriptors free for everything else ([`connection_cap`]).

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for everything but inbound HTTP connections: Redis connections (the
/// subscription, the intake, one reader per link, trimming, leases), outbound HTTP (a pool
/// per target), the logs and the runtime's own.
pub const RESERVE: u64 = 128;

/// The fewest connections the HTTP server is given, however low the limit: health checks must
/// still get in.
const MIN_CONNECTIONS: usize = 8;

/// Raises the soft open-file limit to the hard one and returns the soft limit now in force
/// (`None` when it cannot be read). Logged either way.
pub fn raise() -> Option<u64> {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return None;
        }
    };
    if soft >= hard {
        tracing::info!(limit = soft, "open-file limit");
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(
                limit = hard,
                was = soft,
                "open-file limit raised to the hard limit"
            );
            Some(hard)
        }
        Err(e) => {
            tracing::warn!(limit = soft, hard, error = %e, "cannot raise the open-file limit");
            Some(soft)
        }
    }
}

/// The soft open-file limit in force, if it can be read.
pub fn soft_limit() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// How many connections the HTTP server may hold: `wanted` (`[http] max_connections`), or
/// fewer when `wanted` plus [`RESERVE`] does not fit under the soft limit `soft`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCap {
    /// The cap in force.
    pub connections: usize,
    /// Whether it is below `wanted` (the operator is warned).
    pub lowered: bool,
}

/// The connection cap for `wanted` under the soft limit `soft` (`None`: unknown, `wanted`
/// stands).
pub fn connection_cap(wanted: usize, soft: Option<u64>) -> ConnectionCap {
    let room = soft.map(|soft| soft.saturating_sub(RESERVE));
    let room = room.map(|room| usize::try_from(room).unwrap_or(usize::MAX));
    match room {
        Some(room) if room < wanted => ConnectionCap {
            connections: room.max(MIN_CONNECTIONS.min(wanted)),
            lowered: true,
        },
        _ => ConnectionCap {
            connections: wanted,
            lowered: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_free() {
        let fits = connection_cap(512, Some(4096));
        assert_eq!(
            fits,
            ConnectionCap {
                connections: 512,
                lowered: false
            }
        );
        let exactly = connection_cap(512, Some(512 + RESERVE));
        assert_eq!(exactly.connections, 512);
        assert!(!exactly.lowered);
        let systemd_default = connection_cap(2000, Some(1024));
        assert_eq!(systemd_default.connections, 1024 - 128);
        assert!(systemd_default.lowered);
        assert_eq!(connection_cap(512, Some(256)).connections, 128);
    }

    #[test]
    fn a_tiny_limit_still_lets_health_checks_in_and_an_unknown_one_changes_nothing() {
        assert_eq!(connection_cap(512, Some(64)).connections, MIN_CONNECTIONS);
        assert_eq!(connection_cap(4, Some(64)).connections, 4);
        assert_eq!(connection_cap(512, None).connections, 512);
        assert!(!connection_cap(512, None).lowered);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let soft = raise().expect("readable");
        let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("readable");
        assert_eq!((soft, now), (hard, hard));
    }
}
