//! Intake: the one task between the subscription and the outboxes. It decodes each payload,
//! routes it, and enqueues in batches (whatever arrived together, one script call).
//!
//! It also runs the catch-up passes ([`crate::bridge::catchup`]), so live events and catch-up never
//! race: a pass reads history, then publishes a barrier on this process's own channel; every
//! event published before the history read arrives on the subscription before the barrier.
//! - After a (re)subscribe, live events are held back until the pass is resolved: what history
//!   holds that was not received live (it was published while nobody listened) is enqueued
//!   first, then the held events, in their order. The read is retried until it succeeds, so no
//!   live event of a session is enqueued before that session's catch-up.
//! - Every `sweep` (`[history] sweep_secs`) a pass runs without holding anything back: what it finds that
//!   never arrived live (stored but never published) is enqueued when the barrier arrives,
//!   after everything published before it.
//! - On reload the new routes arrive in order with the payloads ([`Feed::Reroute`]): the intake
//!   enqueues what it routed so far, sets the checkpoints of the rooms (and DM conversations)
//!   the new routes add to their histories now, so catch-up starts them from now, then routes
//!   every later event by the new routes and narrows the subscription's filter. A reroute that
//!   arrives while a pass waits for its barrier is applied once the pass is resolved; messages
//!   of added scopes before it are only recorded as seen.
//!
//! Files: this one (the loop, live batches, catch-up passes) and `intake/reroute.rs` (switching
//! to a reload's routes).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bridge::catchup::{CatchUp, Limits, Pass, Watched, enqueue_pass};
use crate::bridge::decode::Decoder;
use crate::bridge::outbox::{Enqueue, Enqueued, Outbox, OutboxError, PassRecord};
use crate::bridge::retry::Backoff;
use crate::bridge::route::{Filter, Reroute, Routes, origin_among};
use crate::bridge::subscription::Feed;
use crate::chat::model::{EventKind, OutboundKind, Scope, content_id};
use crate::ops::notify::Health;

mod reroute;

/// Most events enqueued in one script call.
const BATCH: usize = 1024;
/// How long a pass waits for its barrier while nothing else arrives either before it is
/// resolved anyway (the subscription is then likely dead, and its PING will say so). While
/// the feed still delivers, the barrier is behind what it delivers and is waited for: a busy
/// feed must not let a pass overtake events published before its barrier.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the intake logs, per link, that an outbox over its caps dropped events.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// The intake's state.
pub struct Intake {
    /// For history reads during catch-up, and barrier publishes.
    pub con: ConnectionManager,
    pub outbox: Outbox,
    /// The routes in force here; replaced at one point of the event stream on reload.
    pub routes: std::sync::Arc<Routes>,
    /// The subscription's filter, narrowed to `routes` once a reload switched to them.
    pub filter: Filter,
    pub decoder: Decoder,
    pub limits: Limits,
    /// The scopes this process has caught up before.
    pub watched: Watched,
    /// This process's barrier channel (the subscription listens to it).
    pub barrier: String,
    /// The safety-net catch-up period: finds messages stored but never published.
    pub sweep: Duration,
    /// Where the intake says when it is busy, idle, and caught up (readiness, watchdog).
    pub health: Health,
}

/// A pass that has read history and waits for its barrier.
struct Pending {
    /// The barrier payload that resolves it.
    token: String,
    pass: Pass,
    /// Whether live events are held back until it is resolved (after a subscribe).
    hold: bool,
    /// The live events held back, in arrival order.
    held: Vec<Enqueue>,
    /// When to stop waiting for the barrier.
    deadline: Instant,
    /// The subscription session it belongs to.
    session: u64,
}

/// What the intake loop keeps between items.
#[derive(Default)]
struct State {
    /// Subscription sessions seen (each `Feed::Subscribed` starts one).
    session: u64,
    /// The session in which the last pass was resolved.
    resolved_in: Option<u64>,
    pending: Option<Pending>,
    /// Live events not yet enqueued.
    live: Vec<Enqueue>,
    /// Scopes that had live messages since the last resolved pass (their de-dup sets are
    /// pruned by the next one).
    touched: HashSet<Scope>,
    /// Barrier tokens handed out.
    barriers: u64,
    /// When dropped outbox entries were last logged, per link.
    drop_logged: HashMap<String, Instant>,
    /// New routes waiting for the pending pass to be resolved.
    reroute: Option<Reroute>,
    /// Rooms a switch added, waiting for its barrier to be started from now once more.
    from_now: Option<reroute::FromNow>,
}

impl Intake {
    /// Runs until the subscription closes its side of `feed` (it does on shutdown); whatever
    /// was received by then is still enqueued. `shutdown` only cuts Redis retries short.
    pub async fn run(mut self, mut feed: mpsc::Receiver<Feed>, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(self.sweep);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.reset();
        let mut state = State::default();
        loop {
            self.health.intake_idle();
            let deadline = state.pending.as_ref().map(|p| p.deadline);
            let first = tokio::select! {
                item = feed.recv() => match item {
                    Some(item) => item,
                    None => {
                        self.health.intake_busy();
                        self.flush(&mut state, &shutdown).await;
                        self.resolve(&mut state, &shutdown).await;
                        return;
                    }
                },
                // Not while a switch's barrier is awaited (a pass read before it would still
                // count what the second "from now" covers as missed), unless it is overdue.
                _ = sweep.tick(), if state.pending.is_none() && state.from_now.as_ref().is_none_or(|f| f.overdue()) => {
                    self.health.intake_busy();
                    state.from_now = None;
                    self.start_pass(&mut state, false, &shutdown).await;
                    continue;
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.health.intake_busy();
                    tracing::warn!("catch-up barrier did not arrive: resolving the pass without it");
                    self.resolve(&mut state, &shutdown).await;
                    continue;
                }
            };
            self.health.intake_busy();
            if let Some(pending) = &mut state.pending {
                pending.deadline = pending.deadline.max(Instant::now() + BARRIER_TIMEOUT);
            }
            let mut item = Some(first);
            let mut taken = 0;
            while let Some(current) = item.take() {
                taken += 1;
                self.handle(current, &mut state, &shutdown).await;
                if taken < BATCH {
                    item = feed.try_recv().ok();
                }
            }
            self.flush(&mut state, &shutdown).await;
        }
    }

    async fn handle(&mut self, item: Feed, state: &mut State, shutdown: &CancellationToken) {
        match item {
            Feed::Payload {
                channel, payload, ..
            } => {
                let next = state.reroute.as_ref().map(|r| &*r.routes);
                let Some(enqueue) = self.route(&channel, payload, next) else {
                    return;
                };
                match &mut state.pending {
                    Some(pending) if pending.hold => {
                        pending.held.push(enqueue);
                    }
                    _ => state.live.push(enqueue),
                }
            }
            Feed::Subscribed => {
                self.flush(state, shutdown).await;
                self.resolve(state, shutdown).await;
                state.session += 1;
                tracing::debug!(
                    session = state.session,
                    "new subscription session: catching up"
                );
                self.start_pass(state, true, shutdown).await;
            }
            Feed::Barrier(token) => {
                if state.pending.as_ref().is_some_and(|p| p.token == token) {
                    self.flush(state, shutdown).await;
                    self.resolve(state, shutdown).await;
                }
                if state.from_now.as_ref().is_some_and(|f| f.token == token) {
                    self.settle_from_now(state, shutdown).await;
                }
            }
            Feed::Reroute(reroute) if state.pending.is_some() => {
                state.reroute = Some(reroute);
            }
            Feed::Reroute(reroute) => self.switch(reroute, state, shutdown).await,
        }
    }

    /// Decodes and routes one payload; `None` when nothing wants it. `next`: routes waiting to
    /// be switched to; a message of a scope only they watch is recorded as seen, sent nowhere.
    fn route(&mut self, channel: &str, payload: Vec<u8>, next: Option<&Routes>) -> Option<Enqueue> {
        let received = self.decoder.decode(channel, payload)?;
        let starting = !self.routes.watches(&received.scope);
        if starting
            && !(next.is_some_and(|next| next.watches(&received.scope))
                && received.event.kind() == Some(EventKind::Message))
        {
            return None;
        }
        let Some(kind) = received.event.kind() else {
            self.decoder.skip(
                "unrouted_system_line",
                channel,
                "system line that is neither join nor leave",
            );
            return None;
        };
        let kind = OutboundKind::Event(kind);
        let links = if starting {
            Vec::new()
        } else {
            self.routes.links_for(&received.scope, kind)
        };
        let origin = origin_among(&links, received.event.origin());
        // A message nothing wants is still recorded as seen, so catch-up does not re-read it
        // as missed; a signal nothing wants is simply dropped.
        if links.is_empty() && kind != OutboundKind::Event(EventKind::Message) {
            return None;
        }
        Some(Enqueue {
            key: content_id(channel, &received.raw),
            event_id: received.event_id(),
            scope: received.scope,
            kind,
            payload: received.raw,
            links,
            dead: None,
            origin,
        })
    }

    /// Enqueues the live events, retrying Redis errors until it works or shutdown comes
    /// (messages then still sit in history, and the next start's catch-up finds them).
    async fn flush(&mut self, state: &mut State, shutdown: &CancellationToken) {
        if state.live.is_empty() {
            return;
        }
        let live = std::mem::take(&mut state.live);
        note_touched(&mut state.touched, &live);
        tracing::debug!(
            events = live.len(),
            first = live.first().map(|e| e.event_id.as_str()),
            last = live.last().map(|e| e.event_id.as_str()),
            "enqueueing live events"
        );
        let mut retry = Retry::new("enqueue", live.len(), shutdown);
        loop {
            match self.outbox.enqueue(&live).await {
                Ok(done) => return log_drops(state, &done),
                Err(e) if retry.after(&e).await => {}
                Err(_) => return,
            }
        }
    }

    /// Publishes a new barrier token on this process's channel: the token, and whether Redis
    /// took it (the subscription then delivers it after everything published before).
    async fn publish_barrier(&mut self, state: &mut State) -> (String, redis::RedisResult<()>) {
        state.barriers += 1;
        let token = state.barriers.to_string();
        let published = redis::cmd("PUBLISH")
            .arg(&self.barrier)
            .arg(&token)
            .query_async(&mut self.con)
            .await;
        (token, published)
    }

    /// Starts a catch-up pass: reads history and publishes the barrier. After a subscribe the
    /// read is retried until it works (or shutdown); a sweep that fails is left to the next.
    async fn start_pass(&mut self, state: &mut State, hold: bool, shutdown: &CancellationToken) {
        let continuous = state.resolved_in == Some(state.session);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let pass = loop {
            match self.read_pass(continuous).await {
                Ok(pass) => break pass,
                Err(e) if hold => {
                    let wait = backoff.next(None);
                    tracing::warn!(error = %e, retry_in = ?wait, "catch-up failed; live events wait for it");
                    if sleep_or_shutdown(wait, shutdown).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up sweep failed; the next one will retry");
                    return;
                }
            }
        };
        let (token, published) = self.publish_barrier(state).await;
        let deadline = match published {
            Ok(()) => Instant::now() + BARRIER_TIMEOUT,
            Err(e) => {
                // Resolved without it at once; nothing is lost, order around it is only best
                // effort.
                tracing::warn!(error = %e, "could not publish the catch-up barrier");
                Instant::now()
            }
        };
        state.pending = Some(Pending {
            token,
            pass,
            hold,
            held: Vec::new(),
            deadline,
            session: state.session,
        });
    }

    async fn read_pass(&mut self, continuous: bool) -> Result<Pass, OutboxError> {
        self.catch_up().read(continuous).await
    }

    /// A catch-up reader over this intake's connection, routes and watched scopes.
    fn catch_up(&mut self) -> CatchUp<'_> {
        CatchUp {
            con: &mut self.con,
            routes: &self.routes,
            decoder: &mut self.decoder,
            limits: self.limits,
            watched: &mut self.watched,
        }
    }

    /// Resolves the pending pass, if any: enqueues what it found that did not arrive live and
    /// the held events, and commits its checkpoints.
    async fn resolve(&mut self, state: &mut State, shutdown: &CancellationToken) {
        let Some(pending) = state.pending.take() else {
            return;
        };
        let touched = std::mem::take(&mut state.touched);
        note_touched(&mut state.touched, &pending.held);
        let held_count = pending.held.len();
        let (events, commit, summary) = pending.pass.resolve(pending.held, &self.routes, touched);
        tracing::debug!(
            session = pending.session,
            hold = pending.hold,
            from_history = summary.enqueued,
            held = held_count,
            first = events.first().map(|e| e.event_id.as_str()),
            last = events.last().map(|e| e.event_id.as_str()),
            "resolving a catch-up pass"
        );
        let mut retry = Retry::new("catch-up enqueue", events.len(), shutdown);
        let added = loop {
            match enqueue_pass(&mut self.outbox, &events, &commit).await {
                Ok(added) => break added,
                Err(e) if retry.after(&e).await => {}
                Err(_) => return,
            }
        };
        state.resolved_in = Some(pending.session);
        if pending.hold {
            self.health.caught_up();
        }
        if let Some(reroute) = state.reroute.take() {
            self.switch(reroute, state, shutdown).await;
        }
        // Held events are new (they were never enqueued); the rest came from history and had
        // not been enqueued live.
        let from_history = added.saturating_sub(held_count);
        let record = PassRecord {
            subscribe: pending.hold,
            scopes: summary.scopes,
            recovered: from_history,
            gaps: summary.gaps,
        };
        self.record(record).await;
        if from_history > 0 || summary.gaps > 0 {
            tracing::info!(
                scopes = summary.scopes,
                from_history,
                gaps = summary.gaps,
                dead_lettered = summary.dead,
                "caught up from history"
            );
        }
    }
}

impl Intake {
    /// Counts a resolved pass in the metrics and records it, with the skips since the last
    /// record, in Redis for `chatbridge status` (once per pass; a failure only loses a count).
    async fn record(&mut self, pass: PassRecord) {
        crate::ops::metrics::catchup_resolved(pass.subscribe, pass.recovered, pass.gaps);
        let malformed = self.decoder.take_unsaved();
        if let Err(e) = self.outbox.record_pass(pass, &malformed).await {
            tracing::debug!(error = %e, "could not record the catch-up pass in redis");
        }
    }
}

/// Waits between failed attempts of one Redis write, with backoff, until shutdown.
struct Retry<'a> {
    what: &'static str,
    events: usize,
    backoff: Backoff,
    shutdown: &'a CancellationToken,
}

impl<'a> Retry<'a> {
    fn new(what: &'static str, events: usize, shutdown: &'a CancellationToken) -> Self {
        Self {
            what,
            events,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            shutdown,
        }
    }

    /// Logs the failure and waits; false when shutdown came first (give up).
    async fn after(&mut self, e: &OutboxError) -> bool {
        let (what, events) = (self.what, self.events);
        let wait = self.backoff.next(None);
        tracing::warn!(error = %e, events, retry_in = ?wait, "{what} failed");
        if sleep_or_shutdown(wait, self.shutdown).await {
            tracing::warn!(
                events,
                "shutdown before {what}: messages are left to the next start's catch-up"
            );
            return false;
        }
        true
    }
}

/// Records the scopes that got live messages (cloning a scope only the first time).
fn note_touched(touched: &mut HashSet<Scope>, events: &[Enqueue]) {
    let mut last: Option<&Scope> = None;
    for event in events {
        if event.kind != OutboundKind::Event(EventKind::Message) || last == Some(&event.scope) {
            continue;
        }
        if !touched.contains(&event.scope) {
            touched.insert(event.scope.clone());
        }
        last = Some(&event.scope);
    }
}

/// Sleeps unless shutdown comes first; true when it did.
async fn sleep_or_shutdown(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = shutdown.cancelled() => true,
    }
}

/// Logs outbox overflow, at most once a minute per link (the count is in the link's stats).
fn log_drops(state: &mut State, done: &Enqueued) {
    for (link, dropped) in &done.dropped {
        let due = state
            .drop_logged
            .get(link)
            .is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY);
        if due {
            tracing::error!(
                link,
                dropped,
                "outbox over its cap (outbox_max_len / outbox_max_age_secs): oldest events dropped"
            );
            state.drop_logged.insert(link.clone(), Instant::now());
        }
    }
}
