//! [`Health`] is the shared record the subscription, the intake and the delivery workers update
//! as they work; the notify task and `/readyz` only read it.
//!
//! Delivery workers are watched part by part ([`Part`]: a link's sending, outbox reads,
//! acknowledgement writes, lease calls). A part is *busy* only inside a bounded step (a send
//! attempt, one Redis call) and beats whenever that step makes progress (each post of a
//! chat link); it is stuck when it has been busy without a beat for longer than its bound,
//! which is derived from the timeouts that bound the step. Waiting is never busy: retry
//! backoff (however long, `Retry-After` included), standby for another process's lease,
//! polling a disabled link, waiting for new outbox entries. So a healthy worker never stops
//! the pings; one whose await never completes does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A session that neither forwarded anything nor had a PING answered for this long is wedged:
/// it PINGs every 5 s and gives each PING 5 s, so a live one never stays silent this long.
pub const SUBSCRIPTION_STALE: Duration = Duration::from_secs(11);
/// The intake is stuck when one step (a batch, a catch-up pass) has taken this long: Redis
/// is not answering its writes, or something hangs.
pub const INTAKE_STALE: Duration = Duration::from_secs(60);
/// What the subscription and the intake report about themselves; cheap to clone and update
/// (two atomics and a watch channel behind one `Arc`).
#[derive(Clone)]
pub struct Health {
    /// Shared by every clone: the subscription and the intake write, the notify task reads.
    inner: Arc<Inner>,
}

struct Inner {
    /// The zero point of the millisecond clocks below (tokio's clock, so tests can pause it).
    origin: Instant,
    /// When the subscription last proved alive (subscribed, forwarded an item, had a PING
    /// answered), in ms since `origin` plus one; 0 while no session is subscribed.
    subscription: AtomicU64,
    /// When the intake began its current step, in ms since `origin` plus one; 0 while it
    /// waits for input (idle is healthy).
    intake_busy_since: AtomicU64,
    /// Becomes true once a catch-up pass after a subscribe is resolved: the daemon is ready.
    caught_up: watch::Sender<bool>,
    /// The watched parts of the delivery workers; a part is gone (and no longer checked) once
    /// its worker dropped it.
    parts: Mutex<Vec<Weak<Part>>>,
}

/// One watched part of a link's delivery worker: busy inside bounded steps, stuck when busy
/// without progress for longer than `bound`. Shared by the concurrent sends of a link.
#[derive(Debug)]
pub struct Part {
    link: String,
    /// What the part does, as the reason says it (`sending`, `outbox read`, …).
    what: &'static str,
    /// The longest a healthy step goes without progress.
    bound: Duration,
    /// The zero point of `beat` (the health record's).
    origin: Instant,
    /// Steps in progress (several with `max_in_flight > 1`).
    busy: AtomicU64,
    /// The last start of a step or sign of progress, in ms since `origin` plus one.
    beat: AtomicU64,
}

impl Part {
    /// Starts a bounded step; it ends when the guard drops (also when the step is cancelled).
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.beat();
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// The step in progress made progress (a post went out): its bound starts again.
    pub fn beat(&self) {
        self.beat.store(millis(self.origin), Ordering::Relaxed);
    }

    /// Stuck for how long, if it is (busy without progress beyond its bound).
    fn stuck(&self, now: u64) -> Option<Duration> {
        if self.busy.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let quiet = Duration::from_millis(now.saturating_sub(self.beat.load(Ordering::Relaxed)));
        (quiet > self.bound).then_some(quiet)
    }

    /// Runs `step` as one busy step of this part.
    pub async fn during<F: std::future::Future>(self: &Arc<Self>, step: F) -> F::Output {
        let _busy = self.busy();
        step.await
    }
}

/// A busy step of a [`Part`]; dropping it ends the step.
#[must_use = "the step ends when this guard drops"]
pub struct Busy(Arc<Part>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

tokio::task_local! {
    /// The part whose step the current future runs (a send attempt), so the links can say
    /// when a post went out without knowing about health.
    static STEP: Arc<Part>;
}

/// Runs `step` with `part` as the part [`progress`] beats.
pub async fn with_part<F: std::future::Future>(part: Arc<Part>, step: F) -> F::Output {
    STEP.scope(part, step).await
}

/// The step in progress made progress (a post of a batch went out); nothing outside a step.
pub fn progress() {
    let _ = STEP.try_with(|part| part.beat());
}

/// Milliseconds since `origin`, plus one (0 means "never").
fn millis(origin: Instant) -> u64 {
    let ms = origin.elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

/// Why the watchdog is not fed (also shown in `STATUS=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// No subscription session is subscribed (Redis down, or reconnecting).
    NotSubscribed,
    /// The session has shown no sign of life for this long.
    SubscriptionSilent(Duration),
    /// The intake has been in one step for this long.
    IntakeStuck(Duration),
    /// A part of a link's delivery worker has been busy without progress for this long.
    WorkerStuck {
        link: String,
        what: &'static str,
        for_: Duration,
    },
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSubscribed => write!(f, "redis subscription down, reconnecting"),
            Self::SubscriptionSilent(for_) => {
                write!(f, "redis subscription silent for {}s", for_.as_secs())
            }
            Self::IntakeStuck(for_) => write!(f, "intake stuck for {}s", for_.as_secs()),
            Self::WorkerStuck { link, what, for_ } => write!(
                f,
                "link {link}: delivery worker stuck ({what}) for {}s",
                for_.as_secs()
            ),
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Nothing subscribed, intake idle, not caught up.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                subscription: AtomicU64::new(0),
                intake_busy_since: AtomicU64::new(0),
                caught_up: watch::Sender::new(false),
                parts: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The subscription is subscribed and just proved alive.
    pub fn subscription_alive(&self) {
        self.inner.subscription.store(self.now(), Ordering::Relaxed);
    }

    /// The subscription session ended; until the next subscribe, nothing is mirrored live.
    pub fn subscription_ended(&self) {
        self.inner.subscription.store(0, Ordering::Relaxed);
    }

    /// The intake starts a step (handles what arrived, runs a pass).
    pub fn intake_busy(&self) {
        self.inner
            .intake_busy_since
            .store(self.now(), Ordering::Relaxed);
    }

    /// The intake waits for input.
    pub fn intake_idle(&self) {
        self.inner.intake_busy_since.store(0, Ordering::Relaxed);
    }

    /// A catch-up pass after a subscribe was resolved.
    pub fn caught_up(&self) {
        self.inner
            .caught_up
            .send_if_modified(|done| !std::mem::replace(done, true));
    }

    /// Whether [`Health::caught_up`] was called.
    pub fn is_caught_up(&self) -> bool {
        *self.inner.caught_up.borrow()
    }

    /// Completes once [`Health::caught_up`] was called (never if the intake is gone first).
    pub async fn wait_caught_up(&self) {
        let mut rx = self.inner.caught_up.subscribe();
        if rx.wait_for(|done| *done).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Watches a part of link `link`'s delivery worker (`what` names it in the reason) that
    /// is stuck when busy without progress for longer than `bound`. It is watched as long as
    /// the worker holds it: a stopped or reloaded worker drops it and is forgotten.
    pub fn watch_part(&self, link: &str, what: &'static str, bound: Duration) -> Arc<Part> {
        let part = Arc::new(Part {
            link: link.to_owned(),
            what,
            bound,
            origin: self.inner.origin,
            busy: AtomicU64::new(0),
            beat: AtomicU64::new(0),
        });
        let mut parts = self.parts();
        parts.retain(|part| part.strong_count() > 0);
        parts.push(Arc::downgrade(&part));
        part
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Part>>> {
        self.inner
            .parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The delivery worker parts that are stuck now (empty when all are healthy).
    pub fn stuck_workers(&self) -> Vec<Unhealthy> {
        let now = self.now();
        self.parts()
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|part| {
                part.stuck(now).map(|for_| Unhealthy::WorkerStuck {
                    link: part.link.clone(),
                    what: part.what,
                    for_,
                })
            })
            .collect()
    }

    /// Whether the watchdog may be fed now, and if not, why (the first reason found).
    pub fn check(&self) -> Result<(), Unhealthy> {
        self.check_data_path()?;
        match self.stuck_workers().into_iter().next() {
            Some(stuck) => Err(stuck),
            None => Ok(()),
        }
    }

    /// The subscription's and the intake's part of [`Health::check`].
    pub fn check_data_path(&self) -> Result<(), Unhealthy> {
        let now = self.now();
        let since = |stamp: u64| Duration::from_millis(now.saturating_sub(stamp));
        match self.inner.subscription.load(Ordering::Relaxed) {
            0 => return Err(Unhealthy::NotSubscribed),
            beat if since(beat) > SUBSCRIPTION_STALE => {
                return Err(Unhealthy::SubscriptionSilent(since(beat)));
            }
            _ => {}
        }
        match self.inner.intake_busy_since.load(Ordering::Relaxed) {
            0 => Ok(()),
            busy if since(busy) > INTAKE_STALE => Err(Unhealthy::IntakeStuck(since(busy))),
            _ => Ok(()),
        }
    }

    /// Milliseconds since `origin`, plus one (0 means "never").
    fn now(&self) -> u64 {
        millis(self.inner.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unhealthy_until_subscribed() {
        let health = Health::new();
        assert_eq!(health.check(), Err(Unhealthy::NotSubscribed));
        health.subscription_alive();
        assert_eq!(health.check(), Ok(()));
        health.subscription_ended();
        assert_eq!(health.check(), Err(Unhealthy::NotSubscribed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_subscription_is_unhealthy() {
        let health = Health::new();
        health.subscription_alive();
        tokio::time::advance(SUBSCRIPTION_STALE).await;
        assert_eq!(health.check(), Ok(()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            health.check(),
            Err(Unhealthy::SubscriptionSilent(_))
        ));
        health.subscription_alive();
        assert_eq!(health.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_intake_is_healthy_a_stuck_one_is_not() {
        let health = Health::new();
        health.intake_busy();
        tokio::time::advance(INTAKE_STALE + Duration::from_secs(1)).await;
        health.subscription_alive();
        assert!(matches!(health.check(), Err(Unhealthy::IntakeStuck(_))));
        health.intake_idle();
        assert_eq!(health.check(), Ok(()));
        tokio::time::advance(INTAKE_STALE * 2).await;
        health.subscription_alive();
        assert_eq!(health.check(), Ok(()), "waiting for input is not stuck");
    }

    /// A subscribed health record with one watched part bounded at 10 s.
    fn subscribed_with_part() -> (Health, Arc<Part>) {
        let health = Health::new();
        health.subscription_alive();
        let part = health.watch_part("audit", "sending", Duration::from_secs(10));
        (health, part)
    }

    /// Advances the paused clock, keeping the subscription alive (its own rule is tested above).
    async fn advance(health: &Health, by: Duration) {
        let step = Duration::from_secs(5);
        let mut left = by;
        while !left.is_zero() {
            let now = left.min(step);
            tokio::time::advance(now).await;
            left -= now;
            health.subscription_alive();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_part_busy_past_its_bound_is_stuck() {
        let (health, part) = subscribed_with_part();
        let busy = part.busy();
        advance(&health, Duration::from_secs(10)).await;
        assert_eq!(health.check(), Ok(()), "within its bound");
        advance(&health, Duration::from_secs(1)).await;
        let stuck = health.check().expect_err("busy for 11 s without progress");
        assert_eq!(
            stuck.to_string(),
            "link audit: delivery worker stuck (sending) for 11s"
        );
        assert_eq!(health.stuck_workers(), vec![stuck]);
        assert_eq!(
            health.check_data_path(),
            Ok(()),
            "not the data path's fault"
        );
        drop(busy);
        assert_eq!(health.check(), Ok(()), "the step ended");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_between_steps_is_never_stuck_however_long() {
        let (health, part) = subscribed_with_part();
        part.during(async { advance(&health, Duration::from_secs(3)).await })
            .await;
        // A retry backoff (or a Retry-After, a standby, an idle outbox) of an hour.
        advance(&health, Duration::from_secs(3600)).await;
        assert_eq!(health.check(), Ok(()));
        // The next attempt starts its bound afresh.
        let _busy = part.busy();
        advance(&health, Duration::from_secs(10)).await;
        assert_eq!(health.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_inside_a_step_restarts_its_bound() {
        let (health, part) = subscribed_with_part();
        let step = with_part(part.clone(), {
            let health = health.clone();
            async move {
                for _ in 0..5 {
                    advance(&health, Duration::from_secs(8)).await;
                    progress();
                    assert_eq!(health.check(), Ok(()), "a post went out every 8 s");
                }
                advance(&health, Duration::from_secs(11)).await;
                assert!(matches!(health.check(), Err(Unhealthy::WorkerStuck { .. })));
            }
        });
        part.during(step).await;
        // Outside any step, progress() touches nothing (and does not panic).
        progress();
        assert_eq!(health.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_steps_keep_the_part_busy_until_the_last_ends() {
        let (health, part) = subscribed_with_part();
        let first = part.busy();
        let second = part.busy();
        drop(first);
        advance(&health, Duration::from_secs(11)).await;
        assert!(health.check().is_err(), "one send is still in flight");
        drop(second);
        assert_eq!(health.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_part_is_forgotten() {
        let (health, part) = subscribed_with_part();
        let busy = part.busy();
        advance(&health, Duration::from_secs(30)).await;
        assert!(health.check().is_err());
        // The worker stops (a reload removed or restarted its link) in the middle of a step:
        // its parts go with it.
        drop(busy);
        drop(part);
        let _replacement = health.watch_part("audit", "sending", Duration::from_secs(10));
        advance(&health, Duration::from_secs(30)).await;
        assert_eq!(health.check(), Ok(()));
        assert_eq!(
            health.parts().len(),
            1,
            "registering pruned the dropped part"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn caught_up_wakes_the_waiter_once_set() {
        let health = Health::new();
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.wait_caught_up().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        health.caught_up();
        health.caught_up();
        waiter.await.expect("waiter");
        health.wait_caught_up().await;
    }

    #[test]
    fn reasons_read_as_a_status_line() {
        assert_eq!(
            Unhealthy::IntakeStuck(Duration::from_millis(61_500)).to_string(),
            "intake stuck for 61s"
        );
        assert_eq!(
            Unhealthy::NotSubscribed.to_string(),
            "redis subscription down, reconnecting"
        );
    }
}
