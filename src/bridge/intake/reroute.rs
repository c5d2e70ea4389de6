//! A reload's new routes, switched to at one point of the event stream (see the intake's
//! module docs): what was routed by the old ones is enqueued first, the rooms (and DMs) the
//! new ones add start from now, then every later event is routed by the new ones.

use super::{Intake, Retry, State};
use crate::bridge::catchup::enqueue_pass;
use crate::bridge::outbox::OutboxError;
use crate::bridge::route::Reroute;
use crate::chat::model::Scope;
use tokio_util::sync::CancellationToken;

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
            let mut retry = Retry::new("starting the added rooms from now", rooms.len(), shutdown);
            loop {
                match self.start_from_now(&rooms, dms).await {
                    Ok(()) => break,
                    Err(e) if retry.after(&e).await => {}
                    Err(_) => return,
                }
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

    /// Sets the checkpoints of `rooms`, and of every DM conversation when `dms`, to their
    /// histories now.
    async fn start_from_now(&mut self, rooms: &[Scope], dms: bool) -> Result<(), OutboxError> {
        let commit = self.catch_up().from_now(rooms.to_vec(), dms).await?;
        enqueue_pass(&mut self.outbox, &[], &commit).await?;
        Ok(())
    }
}
