//! The ack task: writes acknowledgements behind the sender.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{REDIS_BACKOFF_MAX, REDIS_BACKOFF_MIN, pause_after_redis_error};
use crate::bridge::outbox::Outbox;
use crate::bridge::retry::Backoff;
use crate::chat::model::Outbound;
use crate::ops::notify::Part;

/// What the ack task is told.
pub(super) enum Ack {
    /// These entries were delivered.
    Delivered(Vec<Outbound>),
    /// Answer once everything sent before is written.
    Flush(oneshot::Sender<()>),
}

/// Writes acknowledgements behind the sender, coalescing whatever has queued up into one
/// write. Runs until the sender hangs up, then writes what is left (unless shutdown cuts a
/// failing Redis short: those events are delivered again after a restart).
pub(super) async fn acknowledge(
    link: String,
    mut outbox: Outbox,
    mut acks: mpsc::Receiver<Ack>,
    shutdown: CancellationToken,
    watched: Arc<Part>,
) {
    let mut delivered = Vec::new();
    let mut flushed = Vec::new();
    while let Some(first) = acks.recv().await {
        let mut next = Some(first);
        while let Some(ack) = next.take() {
            match ack {
                Ack::Delivered(batch) => delivered.extend(batch),
                Ack::Flush(done) => flushed.push(done),
            }
            next = acks.try_recv().ok();
        }
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        while !delivered.is_empty() {
            match watched.during(outbox.ack(&link, &delivered)).await {
                Ok(()) => delivered.clear(),
                Err(e) => {
                    if pause_after_redis_error(&link, &mut outbox, &e, &mut backoff, &shutdown)
                        .await
                    {
                        return;
                    }
                }
            }
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}
