//! The per-link delivery lease: which process may deliver a link right now.
//!
//! `chatbridge:lease:{link}` holds `{token} {epoch} {holder}` with a `PX` expiry: the token is
//! the holding process's secret-free random id (only ever compared, never shown), the epoch
//! counts acquisitions (`chatbridge:lease:{link}:epoch`, INCR on each), and the holder is who
//! an operator should look for (`host pid N`). Every operation is one script, so checking the
//! owner and changing the key cannot be split by another process.

use std::time::Duration;

use redis::Script;

use super::{Outbox, OutboxError, Result};

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

/// Extends the lease only while it is still ours.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the lease only while it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub fn lease_key(link: &str) -> String {
    format!("chatbridge:lease:{link}")
}

fn epoch_key(link: &str) -> String {
    format!("chatbridge:lease:{link}:epoch")
}

/// A lease as stored, without its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Which tenure of the link this is (1 for the first process ever to deliver it).
    pub epoch: u64,
    /// Who holds it, for an operator: `host pid N`.
    pub holder: String,
    /// How long until it expires unless renewed.
    pub expires_in: Duration,
}

/// What trying to take a lease gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours: `value` is what renewing and releasing compare against.
    Ours { value: String, epoch: u64 },
    /// Another process holds it.
    Held(LeaseHolder),
}

/// Splits a stored lease into its parts; `None` when it is not ours to read.
fn parse(value: &str, ttl_ms: i64) -> Option<(String, LeaseHolder)> {
    let (token, rest) = value.split_once(' ')?;
    let (epoch, holder) = rest.split_once(' ')?;
    Some((
        token.to_owned(),
        LeaseHolder {
            epoch: epoch.parse().ok()?,
            holder: holder.to_owned(),
            expires_in: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
        },
    ))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Outbox {
    /// Takes `link`'s lease for `ttl` as `token` (a random id of this process) and `holder`
    /// (`host pid N`) unless another process holds it.
    pub async fn lease_acquire(
        &mut self,
        link: &str,
        token: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquired> {
        let (taken, value, ttl_ms): (i64, String, i64) = Script::new(ACQUIRE)
            .key(lease_key(link))
            .key(epoch_key(link))
            .arg(token)
            .arg(holder)
            .arg(millis(ttl))
            .invoke_async(&mut self.con)
            .await?;
        let (_, parsed) = parse(&value, ttl_ms)
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
            .key(lease_key(link))
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
            .key(lease_key(link))
            .arg(value)
            .invoke_async(&mut self.con)
            .await?;
        Ok(released == 1)
    }

    /// Who holds `link`'s lease, if anyone.
    pub async fn lease_holder(&mut self, link: &str) -> Result<Option<LeaseHolder>> {
        let (value, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(lease_key(link))
            .pttl(lease_key(link))
            .query_async(&mut self.con)
            .await?;
        Ok(value
            .and_then(|v| parse(&v, ttl_ms))
            .map(|(_, holder)| holder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_lease_reads_without_its_token() {
        let (token, holder) = parse("abc 7 box-1 pid 42", 1500).unwrap();
        assert_eq!(token, "abc");
        assert_eq!(
            holder,
            LeaseHolder {
                epoch: 7,
                holder: "box-1 pid 42".to_owned(),
                expires_in: Duration::from_millis(1500),
            }
        );
    }

    #[test]
    fn a_foreign_value_is_not_a_lease() {
        assert_eq!(parse("nonsense", 10), None);
        assert_eq!(parse("abc x host", 10), None);
    }
}
