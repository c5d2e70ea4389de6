//! The one lease type every leased thing uses: a link's delivery (one delivering process per
//! link) and an inbound connection (Slack Socket Mode, a Discord Gateway session: one
//! connected process per deployment).
//!
//! A lease is a STRING with a `PX` expiry holding `{token} …`: the token is the holding
//! process's random id (only ever compared, never shown). Every operation is one script, so
//! checking the owner and changing the key cannot be split by another process.
//!
//! A delivery lease is *numbered*: its value is `{token} {epoch} {place} {pid} {host}`, the
//! epoch counting acquisitions (a second key, INCR on each), the place saying which machine
//! boot and pid namespace the pid belongs to (so a restarted process can tell its crashed
//! predecessor is gone), host and pid who an operator should look for. An inbound connection
//! lease is *plain*: `{token} {host} pid {pid}`, no counter (nothing reads who holds it).
//!
//! Fencing is by the holder's own monotonic clock ([`LeaseClock`]): a renewal sent at `t` and
//! answered keeps the lease ours until `t + ttl` in Redis, so the holder counts it valid until
//! `t + ttl − margin` ([`margin`]) and stops acting on it then. How each holder waits, renews
//! and stops is its own (`deliver::lease`, `inbound::lease`); what is stored, and how, is here.

use std::future::Future;
use std::pin::pin;
use std::sync::LazyLock;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::keys;

/// Takes a lease if free, numbering the tenure when the lease is numbered.
static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/lease_acquire.lua")));
/// Extends a lease only while it is still ours.
static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/lease_renew.lua")));
/// Deletes a lease only while it is still ours.
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/lease_release.lua")));

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A numbered lease's value is not one chatbridge wrote.
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

/// One leased thing: its key and, for a numbered lease, its tenure counter.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The lease STRING.
    key: String,
    /// The tenure counter of a numbered lease.
    epoch_key: Option<String>,
}

/// A numbered lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Which tenure this is (1 for the first process ever to take it).
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

/// What trying to take a numbered lease gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours.
    Ours {
        /// What renewing and releasing compare against.
        value: String,
        /// Which tenure this is.
        epoch: u64,
    },
    /// Another process holds it.
    Held(LeaseHolder),
}

impl Lease {
    /// `link`'s delivery lease (numbered): `chatbridge:lease:{link}`.
    pub fn delivery(link: &str) -> Self {
        Self {
            key: keys::delivery_lease(link),
            epoch_key: Some(keys::delivery_lease_epoch(link)),
        }
    }

    /// A plain lease (no tenure counter) under `key`: an inbound connection's.
    pub fn plain(key: String) -> Self {
        Self {
            key,
            epoch_key: None,
        }
    }

    /// The script call that takes the lease as `token` followed by `holder` for `ttl`:
    /// `(taken, value, ttl in ms)`.
    async fn take(
        &self,
        con: &mut ConnectionManager,
        token: &str,
        holder: &str,
        ttl: Duration,
    ) -> redis::RedisResult<(i64, String, i64)> {
        let mut call = ACQUIRE.key(&self.key);
        if let Some(epoch) = &self.epoch_key {
            call.key(epoch);
        }
        call.arg(token)
            .arg(holder)
            .arg(millis(ttl))
            .invoke_async(con)
            .await
    }

    /// Takes a numbered lease for `ttl` as `token` (a random id of this process) and `holder`
    /// (`{place} {pid} {host}`) unless another process holds it.
    pub async fn acquire(
        &self,
        con: &mut ConnectionManager,
        token: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquired, LeaseError> {
        let (taken, value, ttl_ms) = self.take(con, token, holder, ttl).await?;
        let parsed = parse(&value, ttl_ms)
            .ok_or_else(|| LeaseError::Reply(format!("unreadable lease {}", self.key)))?;
        Ok(if taken == 1 {
            Acquired::Ours {
                value,
                epoch: parsed.epoch,
            }
        } else {
            Acquired::Held(parsed)
        })
    }

    /// Takes a plain lease for `ttl` as `token` and `holder` (stored `{token} {holder}`) if
    /// nobody holds it: the stored value (what renewing and releasing compare against) when
    /// it is ours now. Who else holds it is not read.
    pub async fn try_acquire(
        &self,
        con: &mut ConnectionManager,
        token: &str,
        holder: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Option<String>> {
        let (taken, value, _) = self.take(con, token, holder, ttl).await?;
        Ok((taken == 1).then_some(value))
    }

    /// Extends the lease to `ttl` from now if it is still `value`; false when it is not ours
    /// any more (expired, perhaps taken by another process).
    pub async fn renew(
        &self,
        con: &mut ConnectionManager,
        value: &str,
        ttl: Duration,
    ) -> redis::RedisResult<bool> {
        let renewed: i64 = RENEW
            .key(&self.key)
            .arg(value)
            .arg(millis(ttl))
            .invoke_async(con)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up if it is still `value`, so a standby takes over at once; returns
    /// whether it was still ours.
    pub async fn release(
        &self,
        con: &mut ConnectionManager,
        value: &str,
    ) -> redis::RedisResult<bool> {
        let released: i64 = RELEASE.key(&self.key).arg(value).invoke_async(con).await?;
        Ok(released == 1)
    }

    /// Who holds a numbered lease, if anyone.
    pub async fn holder(
        &self,
        con: &mut ConnectionManager,
    ) -> redis::RedisResult<Option<LeaseHolder>> {
        let (value, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(&self.key)
            .pttl(&self.key)
            .query_async(con)
            .await?;
        Ok(value.and_then(|v| parse(&v, ttl_ms)))
    }
}

/// Reads a stored numbered lease; `None` when it is not one chatbridge wrote.
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

/// A lease's time in Redis's unit (at least 1 ms: `PX 0` is an error).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// How long before Redis would expire a lease of `ttl` its holder stops counting it as ours.
pub fn margin(ttl: Duration) -> Duration {
    ttl / 5
}

/// Until when a lease is certainly ours, by this process's monotonic clock; shared by the
/// renewal task and everything done under the lease.
#[derive(Debug, Default)]
pub struct LeaseClock {
    /// `None` when not held.
    valid_until: Mutex<Option<Instant>>,
}

impl LeaseClock {
    /// Until when the lease is ours; `None` when not held.
    pub fn until(&self) -> Option<Instant> {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records until when the lease is ours (`None`: no longer held).
    pub fn set(&self, until: Option<Instant>) {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }

    /// Whether the lease is certainly ours now.
    pub fn valid(&self) -> bool {
        self.until().is_some_and(|until| Instant::now() < until)
    }

    /// Runs `work` while the lease is ours: `None`, with `work` dropped, as soon as it may not
    /// be (checked before `work` first runs and again before each time it is polled).
    pub async fn fenced<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        let mut expiry = pin!(tokio::time::sleep_until(Instant::now()));
        std::future::poll_fn(|cx| {
            loop {
                let Some(until) = self.until().filter(|u| Instant::now() < *u) else {
                    return Poll::Ready(None);
                };
                if let Poll::Ready(out) = work.as_mut().poll(cx) {
                    return Poll::Ready(Some(out));
                }
                if expiry.deadline() != until {
                    expiry.as_mut().reset(until);
                }
                if expiry.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    #[tokio::test(start_paused = true)]
    async fn a_fenced_send_is_dropped_when_the_lease_runs_out() {
        let clock = LeaseClock::default();
        clock.set(Some(Instant::now() + Duration::from_secs(1)));
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(clock.fenced(slow).await, None);
        assert!(!clock.valid());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fenced_send_finishes_while_renewals_keep_the_lease() {
        let clock = Arc::new(LeaseClock::default());
        clock.set(Some(Instant::now() + Duration::from_secs(1)));
        let renewer = clock.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                renewer.set(Some(Instant::now() + Duration::from_secs(1)));
            }
        });
        let slow = tokio::time::sleep(Duration::from_secs(3));
        assert_eq!(clock.fenced(slow).await, Some(()));
    }

    #[tokio::test]
    async fn nothing_starts_without_the_lease() {
        let clock = LeaseClock::default();
        let started = std::sync::atomic::AtomicBool::new(false);
        let work = async { started.store(true, std::sync::atomic::Ordering::SeqCst) };
        assert_eq!(clock.fenced(work).await, None);
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
    }
}
