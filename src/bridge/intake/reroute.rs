//! A reload's new routes, switched to at one point of the event stream (see the intake's
//! module docs): what was routed by the old ones is enqueued first, the rooms (and DMs) the
//! new ones add start from now, then every later event is routed by the new ones.
//!
//! "From now" is taken twice. At the switch, so that no old history (or a stale checkpoint)
//! is replayed; and again when a barrier published right after the switch comes back on the
//! same subscription session. A seed client PUBLISHes before it LPUSHes: a message published
//! just before the switch (filtered out by the old routes) can be stored just after the
//! switch read the history, above that first checkpoint, where a later sweep would find it
//! and deliver it after newer messages. By the barrier every such message is stored, and
//! every message published after the switch arrived live and was enqueued, so the second
//! checkpoint covers exactly the messages from before the switch. (A message stored without
//! being published in that millisecond is taken as before the switch too.) If the session
//! ends first, the second step is dropped: that session's catch-up reads from the first.

use tokio::time::Instant;

use super::{BARRIER_TIMEOUT, Intake, Retry, State};
use crate::bridge::catchup::enqueue_pass;
use crate::bridge::outbox::OutboxError;
use crate::bridge::route::Reroute;
use crate::chat::model::Scope;
use tokio_util::sync::CancellationToken;

/// Added rooms (and DMs) to start from now once more when barrier `token` arrives in
/// subscription session `session`.
pub(super) struct FromNow {
    pub(super) token: String,
    rooms: Vec<Scope>,
    dms: bool,
    session: u64,
    /// After this the barrier is taken as lost (the subscription's PING will say why).
    deadline: Instant,
}

impl FromNow {
    /// Whether the barrier is overdue.
    pub(super) fn overdue(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

impl Intake {
    /// Switches to new routes here, at this point of the event stream: enqueues what was
    /// routed by the old ones, starts the added rooms (and DMs) from now, then routes by the
    /// new ones and narrows the subscription's filter to them. Only shutdown stops it short.
    pub(super) async fn switch(
        &mut self,
        reroute: Reroute,
        state: &mut State,
        shutdown: &CancellationToken,
    ) {
        self.flush(state, shutdown).await;
        let rooms = reroute.routes.rooms_added_since(&self.routes);
        let dms = reroute.routes.mirrors_dms() && !self.routes.mirrors_dms();
        if !rooms.is_empty() || dms {
            if !self.start_from_now_retrying(&rooms, dms, shutdown).await {
                return;
            }
            let (token, published) = self.publish_barrier(state).await;
            match published {
                Ok(()) => {
                    state.from_now = Some(FromNow {
                        token,
                        rooms: rooms.clone(),
                        dms,
                        session: state.session,
                        deadline: Instant::now() + BARRIER_TIMEOUT,
                    });
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "could not publish the barrier after the switch: the added rooms start from the switch's read"
                ),
            }
        }
        let added: Vec<String> = rooms.iter().map(ToString::to_string).collect();
        tracing::info!(
            rooms_from_now = ?added,
            dms_from_now = dms,
            "routes switched: every event from here on is routed by the new configuration"
        );
        self.routes = reroute.routes.clone();
        self.filter.store(reroute.routes);
        let _ = reroute.done.send(());
    }

    /// The switch's barrier came back: enqueues what arrived live since the switch, then
    /// starts the added rooms from now again (see the module docs). Dropped when the
    /// subscription session changed in between.
    pub(super) async fn settle_from_now(
        &mut self,
        state: &mut State,
        shutdown: &CancellationToken,
    ) {
        let Some(from_now) = state.from_now.take() else {
            return;
        };
        if from_now.session != state.session {
            return;
        }
        self.flush(state, shutdown).await;
        self.start_from_now_retrying(&from_now.rooms, from_now.dms, shutdown)
            .await;
    }

    /// [`Self::start_from_now`], retried on Redis errors; false when shutdown cut it short.
    async fn start_from_now_retrying(
        &mut self,
        rooms: &[Scope],
        dms: bool,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut retry = Retry::new("starting the added rooms from now", rooms.len(), shutdown);
        loop {
            match self.start_from_now(rooms, dms).await {
                Ok(()) => return true,
                Err(e) if retry.after(&e).await => {}
                Err(_) => return false,
            }
        }
    }

    /// Sets the checkpoints of `rooms`, and of every DM conversation when `dms`, to their
    /// histories now.
    async fn start_from_now(&mut self, rooms: &[Scope], dms: bool) -> Result<(), OutboxError> {
        let commit = self.catch_up().from_now(rooms.to_vec(), dms).await?;
        enqueue_pass(&mut self.outbox, &[], &commit).await?;
        Ok(())
    }
}
