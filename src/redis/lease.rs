//! The per-link delivery lease: which process may deliver a link right now.
//!
//! `chatbridge:lease:{link}` holds `{token} {epoch} {place} {pid} {host}` with a `PX` expiry:
//! the token is the holding process's random id (only ever compared, never shown), the epoch
//! counts acquisitions (`chatbridge:lease:{link}:epoch`, INCR on each), the place says which
//! machine boot and pid namespace the pid belongs to (so a restarted process can tell its
//! crashed predecessor is gone), and host and pid are who an operator should look for. Every
//! operation is one script, so checking the owner and changing the key cannot be split by
//! another process.

use std::time::Duration;

use redis::Script;

use super::keys;
use crate::outbox::{Outbox, OutboxError, Result};

/// Takes the lease if nobody holds it (`SET NX PX`), numbering this tenure; else says who holds
/// it and for how much longer.
const ACQUIRE: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  return {0, current, redis.call('PTTL', KEYS[1])}
end
local epoch = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ' ' .. epoch .. ' ' .. ARGV[2]
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[3])
return {1, value, tonumber(ARGV[3])}
";

/// Extends the lease only while it is still ours (also the Slack Socket Mode lease's).
pub(crate) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the lease only while it is still ours (also the Slack Socket Mode lease's).
pub(crate) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Which tenure of the link this is (1 for the first process ever to deliver it).
    pub epoch: u64,
    /// Who holds it, for an operator: `host pid N`.
    pub holder: String,
    /// The machine boot and pid namespace of `pid` (`-` when unknown).
    pub place: String,
    /// The holding process's id, in `place`.
    pub pid: u32,
    /// How long until it expires unless renewed.
    pub expires_in: Duration,
    /// The stored value, token included: only for taking over from a holder known to be gone.
    pub(crate) value: String,
}

/// What trying to take a lease gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours.
    Ours {
        /// What renewing and releasing compare against.
        value: String,
        /// Which tenure of the link this is.
        epoch: u64,
    },
    /// Another process holds it.
    Held(LeaseHolder),
}

/// Reads a stored lease; `None` when it is not one chatbridge wrote.
fn parse(value: &str, ttl_ms: i64) -> Option<LeaseHolder> {
    let mut parts = value.splitn(5, ' ');
    let (_token, epoch, place, pid, host) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let pid = pid.parse().ok()?;
    Some(LeaseHolder {
        epoch: epoch.parse().ok()?,
        holder: format!("{host} pid {pid}"),
        place: place.to_owned(),
        pid,
        expires_in: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
        value: value.to_owned(),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Outbox {
    /// Takes `link`'s lease for `ttl` as `token` (a random id of this process) and `holder`
    /// (`{place} {pid} {host}`) unless another process holds it.
    pub async fn lease_acquire(
        &mut self,
        link: &str,
        token: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquired> {
        let (taken, value, ttl_ms): (i64, String, i64) = Script::new(ACQUIRE)
            .key(keys::delivery_lease(link))
            .key(keys::delivery_lease_epoch(link))
            .arg(token)
            .arg(holder)
            .arg(millis(ttl))
            .invoke_async(&mut self.con)
            .await?;
        let parsed = parse(&value, ttl_ms)
            .ok_or_else(|| OutboxError::Reply(format!("unreadable lease of link {link}")))?;
        Ok(if taken == 1 {
            Acquired::Ours {
                value,
                epoch: parsed.epoch,
            }
        } else {
            Acquired::Held(parsed)
        })
    }

    /// Extends the lease to `ttl` from now if it is still `value`; false when it is not ours
    /// any more (expired, perhaps taken by another process).
    pub async fn lease_renew(&mut self, link: &str, value: &str, ttl: Duration) -> Result<bool> {
        let renewed: i64 = Script::new(RENEW)
            .key(keys::delivery_lease(link))
            .arg(value)
            .arg(millis(ttl))
            .invoke_async(&mut self.con)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up if it is still `value`, so a standby takes over at once; returns
    /// whether it was still ours.
    pub async fn lease_release(&mut self, link: &str, value: &str) -> Result<bool> {
        let released: i64 = Script::new(RELEASE)
            .key(keys::delivery_lease(link))
            .arg(value)
            .invoke_async(&mut self.con)
            .await?;
        Ok(released == 1)
    }

    /// Who holds `link`'s lease, if anyone.
    pub async fn lease_holder(&mut self, link: &str) -> Result<Option<LeaseHolder>> {
        let (value, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(keys::delivery_lease(link))
            .pttl(keys::delivery_lease(link))
            .query_async(&mut self.con)
            .await?;
        Ok(value.and_then(|v| parse(&v, ttl_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_lease_shows_host_and_pid_not_its_token() {
        let holder = parse("abc123 7 boot:42 4242 box-1", 1500).unwrap();
        assert_eq!(holder.epoch, 7);
        assert_eq!(holder.holder, "box-1 pid 4242");
        assert_eq!((holder.place.as_str(), holder.pid), ("boot:42", 4242));
        assert_eq!(holder.expires_in, Duration::from_millis(1500));
        assert!(!holder.holder.contains("abc123"));
    }

    #[test]
    fn a_foreign_value_is_not_a_lease() {
        assert_eq!(parse("nonsense", 10), None);
        assert_eq!(parse("abc x place 1 host", 10), None);
        assert_eq!(parse("abc 1 place pid host", 10), None);
    }
}
