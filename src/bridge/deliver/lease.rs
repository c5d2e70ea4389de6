//! The worker's side of the link's lease: wait as a standby until it is free, hold it while
//! delivering, and stop sending the moment it may no longer be ours. The lease itself (what is
//! stored, the scripts, the fencing clock) is [`crate::redis::lease`]; this is the policy.
//!
//! Fencing is by this process's own monotonic clock: a renewal sent at `t` and answered keeps
//! the lease ours until `t + lease` in Redis, so we count it valid until `t + lease − margin`.
//! A send starts only while that holds, and a send still waiting for its answer when it
//! stops holding is dropped unanswered (the entry stays pending: the new holder sends it
//! again, at least once). A process paused (SIGSTOP, a stall, a partition) wakes to an expired
//! clock and sends nothing more; it cannot be fenced in the instant between the check and the
//! write, which the margin only narrows. The clock (`CLOCK_MONOTONIC`) keeps counting while
//! the process is stopped, but not while the whole machine is suspended: a suspended VM is
//! fenced only once its first renewal after resuming fails.
//!
//! Reading is fenced too. A blocking outbox read claims entries for the shared consumer as they
//! arrive, even while this process is paused; so a read is issued only while the lease is
//! valid, and blocks for at most half the margin: it has ended in Redis before the lease can
//! expire there, and the next holder's first read (of the pending entries) sees what it
//! claimed.
//!
//! What a process that lost its lease still writes is harmless by construction: it records
//! outcomes (dead letters, failure marks, a disable) only for answers it got while the lease
//! was valid, and it acknowledges only entries the target accepted; acknowledging an entry
//! the new holder also sent only spares a third copy.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BLOCK_MS, REDIS_BACKOFF_MAX, REDIS_BACKOFF_MIN, sleep_or_shutdown};
use crate::bridge::outbox::Outbox;
use crate::bridge::retry::Backoff;
use crate::ops::notify::Part;
use crate::redis::identity::Identity;
pub(super) use crate::redis::lease::LeaseClock;
use crate::redis::lease::{self, Acquired, LeaseHolder};

/// The longest a standby waits between two looks at the lease.
const STANDBY_POLL: Duration = Duration::from_millis(500);
/// How soon a failed renewal is tried again.
const RENEW_RETRY: Duration = Duration::from_millis(250);

/// What the fetch task needs to read only while the lease is ours.
#[derive(Debug, Clone)]
pub(super) struct ReadFence {
    /// Whether the lease is still ours.
    pub(super) clock: Arc<LeaseClock>,
    /// How long one read may block: at most half the margin.
    pub(super) block_ms: u64,
}

/// One link's lease as this process sees it.
pub(super) struct Lease {
    /// The link's name, for logs.
    link: String,
    /// The link's delivery lease in Redis.
    lease: lease::Lease,
    /// This process.
    me: Identity,
    /// A clone of the outbox's connection: it is multiplexed, so a renewal does not wait for
    /// other commands to finish.
    con: ConnectionManager,
    /// Until when it is ours.
    pub(super) clock: Arc<LeaseClock>,
    /// The watchdog's view of its Redis calls (each one a busy step).
    redis: Arc<Part>,
}

/// A lease this process holds, until it is lost or given back.
pub(super) struct Tenure {
    /// The stored value, compared by renew and release.
    value: String,
    /// Which tenure of the link this is, for logs.
    pub(super) epoch: u64,
}

impl Lease {
    pub(super) fn new(link: &str, me: Identity, outbox: Outbox, redis: Arc<Part>) -> Self {
        Self {
            link: link.to_owned(),
            lease: lease::Lease::delivery(link),
            me,
            con: outbox.con,
            clock: Arc::default(),
            redis,
        }
    }

    /// The fence of this link's outbox reads.
    pub(super) fn read_fence(&self) -> ReadFence {
        let half_margin = u64::try_from((self.me.margin() / 2).as_millis()).unwrap_or(BLOCK_MS);
        ReadFence {
            clock: self.clock.clone(),
            block_ms: half_margin.clamp(10, BLOCK_MS),
        }
    }

    /// Waits as a standby until the lease is ours; `None` when shutdown came first.
    pub(super) async fn acquire(&mut self, shutdown: &CancellationToken) -> Option<Tenure> {
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        let mut seen: Option<String> = None;
        loop {
            let asked = Instant::now();
            let tried = self
                .redis
                .during(self.lease.acquire(
                    &mut self.con,
                    &self.me.token,
                    &self.me.stored(),
                    self.me.ttl,
                ))
                .await;
            let wait = match tried {
                Ok(Acquired::Ours { value, epoch }) => {
                    self.clock.set(Some(asked + self.me.ttl - self.me.margin()));
                    tracing::info!(
                        link = self.link,
                        epoch,
                        holder = self.me.holder(),
                        "link {}: delivering here",
                        self.link
                    );
                    return Some(Tenure { value, epoch });
                }
                Ok(Acquired::Held(held)) if self.me.outlived(&held) => {
                    self.take_from_the_dead(&held).await;
                    continue;
                }
                Ok(Acquired::Held(held)) if self.me.holds(&held) => {
                    // A worker of this process that was cut off (a reload stopped it and it
                    // outlived the grace period): it runs no more, and this process runs one
                    // worker per link at a time.
                    tracing::info!(
                        link = self.link,
                        "link {}: taking back the lease a stopped worker of this process left",
                        self.link
                    );
                    if let Err(e) = self
                        .redis
                        .during(self.lease.release(&mut self.con, &held.value))
                        .await
                    {
                        tracing::warn!(link = self.link, error = %e, "cannot take back the delivery lease yet");
                    }
                    continue;
                }
                Ok(Acquired::Held(held)) => {
                    backoff.reset();
                    self.announce_standby(&held, &mut seen);
                    held.expires_in
                        .clamp(Duration::from_millis(20), STANDBY_POLL)
                }
                Err(e) => {
                    let wait = backoff.next(None);
                    tracing::warn!(link = self.link, error = %e, retry_in = ?wait, "cannot read the delivery lease");
                    wait
                }
            };
            if sleep_or_shutdown(wait, shutdown).await {
                return None;
            }
        }
    }

    /// Deletes the lease of a predecessor that is gone (if it is still that one's), so the
    /// next try takes it.
    async fn take_from_the_dead(&mut self, held: &LeaseHolder) {
        tracing::info!(
            link = self.link,
            holder = held.holder,
            "link {}: the previous holder ({}) is gone: taking over without waiting for its lease to expire",
            self.link,
            held.holder
        );
        if let Err(e) = self
            .redis
            .during(self.lease.release(&mut self.con, &held.value))
            .await
        {
            tracing::warn!(link = self.link, error = %e, "cannot take over the delivery lease yet");
        }
    }

    /// Logs that this process waits, once per holder.
    fn announce_standby(&self, held: &LeaseHolder, seen: &mut Option<String>) {
        let who = format!("{} (epoch {})", held.holder, held.epoch);
        if seen.as_deref() != Some(who.as_str()) {
            tracing::info!(
                link = self.link,
                holder = held.holder,
                epoch = held.epoch,
                "link {}: standby, held by another process ({}); taking over when it lets go or its lease expires",
                self.link,
                held.holder
            );
            *seen = Some(who);
        }
    }

    /// Renews the lease every third of its time until `done` is cancelled or the lease is
    /// lost; on loss it cancels `lost` (the tenure's stop signal) at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn keep(
        lease: lease::Lease,
        mut con: ConnectionManager,
        link: String,
        tenure_value: String,
        me: Identity,
        clock: Arc<LeaseClock>,
        lost: CancellationToken,
        done: CancellationToken,
        redis: Arc<Part>,
    ) {
        let mut next = Instant::now() + me.ttl / 3;
        loop {
            let Some(until) = clock.until() else { return };
            tokio::select! {
                () = tokio::time::sleep_until(next.min(until)) => {}
                () = done.cancelled() => return,
            }
            if Instant::now() >= until {
                return give_up(
                    &link,
                    &clock,
                    &lost,
                    "it expired before a renewal got through",
                );
            }
            let sent = Instant::now();
            match redis
                .during(lease.renew(&mut con, &tenure_value, me.ttl))
                .await
            {
                Ok(true) => {
                    clock.set(Some(sent + me.ttl - me.margin()));
                    next = sent + me.ttl / 3;
                }
                Ok(false) => {
                    return give_up(&link, &clock, &lost, "another process holds it now");
                }
                Err(e) => {
                    tracing::warn!(link, error = %e, "cannot renew the delivery lease");
                    next = Instant::now() + RENEW_RETRY;
                }
            }
        }
    }

    /// The renewal task's arguments for `tenure`.
    pub(super) fn keeper(
        &self,
        tenure: &Tenure,
        lost: CancellationToken,
        done: CancellationToken,
    ) -> impl Future<Output = ()> + use<> {
        Self::keep(
            self.lease.clone(),
            self.con.clone(),
            self.link.clone(),
            tenure.value.clone(),
            self.me.clone(),
            self.clock.clone(),
            lost,
            done,
            self.redis.clone(),
        )
    }

    /// Gives the lease back (if still ours) so a standby takes over at once.
    pub(super) async fn release(&mut self, tenure: Tenure) {
        self.clock.set(None);
        match self
            .redis
            .during(self.lease.release(&mut self.con, &tenure.value))
            .await
        {
            Ok(true) => tracing::info!(
                link = self.link,
                epoch = tenure.epoch,
                "released the delivery lease"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(link = self.link, error = %e, "could not release the delivery lease; it expires on its own")
            }
        }
    }
}

/// The lease is no longer certainly ours: stop sending now.
fn give_up(link: &str, clock: &LeaseClock, lost: &CancellationToken, why: &str) {
    clock.set(None);
    lost.cancel();
    tracing::warn!(
        link,
        why,
        "link {link}: lost the delivery lease: stopped sending, back to standby"
    );
}
