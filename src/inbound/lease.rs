//! How an inbound connection (Slack Socket Mode, a Discord Gateway session) holds its lease, to
//! keep it to one process per deployment: a plain [`Lease`] taken only when free, renewed every
//! third of its life, released on stop. The others stay passive and take over once it
//! expires. The lease is fenced by this process's monotonic clock: when a renewal has not been
//! answered by `lease − margin`, the connection is dropped.

use std::future::Future;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::redis::lease::{Lease, margin};

/// One inbound connection's lease: which, who takes it, and for how long.
pub struct Leased {
    /// `chatbridge:lease:{what}:{id}` ([`crate::redis::keys::inbound_lease`]).
    lease: Lease,
    /// A random token of this process.
    token: String,
    /// `host pid N`.
    holder: String,
    /// `{token} {holder}`: what the lease holds while ours (set when taken).
    value: String,
    /// How long the lease lasts unrenewed (`[delivery] lease_secs`).
    ttl: Duration,
    con: ConnectionManager,
    /// Names the connection in logs ("Slack Socket Mode").
    what: &'static str,
}

impl Leased {
    pub fn new(key: String, ttl: Duration, con: ConnectionManager, what: &'static str) -> Self {
        let me = crate::redis::identity::Identity::of_this_process(ttl);
        Self {
            lease: Lease::plain(key),
            token: uuid::Uuid::new_v4().simple().to_string(),
            holder: me.holder(),
            value: String::new(),
            ttl,
            con,
            what,
        }
    }

    /// Waits for the lease and runs `connected` while it is ours: the future is dropped (its
    /// connection closed) when the lease may be lost or on `stop`, and its token cancelled.
    /// Releases the lease on `stop`; returns whether it was ours then.
    pub async fn run<F, Fut>(mut self, stop: CancellationToken, mut connected: F) -> bool
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        let what = self.what;
        let poll = (self.ttl / 4).clamp(Duration::from_millis(100), Duration::from_millis(500));
        let mut waiting_logged = false;
        while !stop.is_cancelled() {
            match self.acquire().await {
                Ok(true) => {
                    tracing::info!("{what}: lease taken, connecting");
                    waiting_logged = false;
                    let lost = CancellationToken::new();
                    let renew = Renewal {
                        lease: self.lease.clone(),
                        value: self.value.clone(),
                        ttl: self.ttl,
                        con: self.con.clone(),
                        what,
                    };
                    // The connection is dropped (closed) as soon as the lease may be lost.
                    tokio::select! {
                        () = renew.hold(lost.clone()) => {}
                        () = connected(lost.clone()) => {}
                        () = stop.cancelled() => {}
                    }
                    lost.cancel();
                    if stop.is_cancelled() {
                        self.release().await;
                        return true;
                    }
                    tracing::warn!("{what}: lease lost; connection closed, standing by");
                }
                Ok(false) => {
                    if !waiting_logged {
                        tracing::info!("{what}: another process holds the connection; standing by");
                        waiting_logged = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "{what}: cannot read the lease"),
            }
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = stop.cancelled() => {}
            }
        }
        false
    }

    async fn acquire(&mut self) -> redis::RedisResult<bool> {
        let taken = self
            .lease
            .try_acquire(&mut self.con, &self.token, &self.holder, self.ttl)
            .await?;
        if let Some(value) = &taken {
            value.clone_into(&mut self.value);
        }
        Ok(taken.is_some())
    }

    async fn release(&mut self) {
        let released = self.lease.release(&mut self.con, &self.value).await;
        if let Err(e) = released {
            let what = self.what;
            tracing::warn!(error = %e, "{what}: could not release the lease; it expires");
        }
    }
}

/// The renewal side of a held lease.
struct Renewal {
    lease: Lease,
    value: String,
    ttl: Duration,
    con: ConnectionManager,
    what: &'static str,
}

impl Renewal {
    /// Renews the lease every third of its life; returns once it may no longer be ours
    /// (refused, or unanswered until `ttl − margin` after the last confirmed renewal).
    async fn hold(mut self, lost: CancellationToken) {
        let margin = margin(self.ttl);
        let mut valid_until = Instant::now() + self.ttl - margin;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.ttl / 3) => {}
                () = lost.cancelled() => return,
            }
            loop {
                let sent = Instant::now();
                if sent >= valid_until {
                    return;
                }
                let renewed = tokio::time::timeout(
                    valid_until - sent,
                    self.lease.renew(&mut self.con, &self.value, self.ttl),
                )
                .await;
                match renewed {
                    Ok(Ok(true)) => {
                        valid_until = sent + self.ttl - margin;
                        break;
                    }
                    Ok(Ok(false)) => return,
                    Ok(Err(e)) => {
                        let what = self.what;
                        tracing::warn!(error = %e, "{what}: lease renewal failed; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(_) => return,
                }
            }
        }
    }
}
