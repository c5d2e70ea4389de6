//! The fetch task: reads the outbox ahead of the sender.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::lease::ReadFence;
use super::{READ_COUNT, REDIS_BACKOFF_MAX, REDIS_BACKOFF_MIN, pause_after_redis_error};
use crate::bridge::outbox::{Outbox, ReadFrom, Reader};
use crate::bridge::retry::Backoff;
use crate::chat::model::Outbound;
use crate::ops::notify::Part;

/// Reads the outbox ahead of the sender: pending entries first, then new ones. Returns the
/// reader when the sender hangs up, shutdown comes or the lease is no longer certainly ours
/// (no read is issued then: see [`ReadFence`]), so a later session can reuse it.
///
/// After a failed read it reads the pending entries past the last one it handed over before
/// it reads new ones again: a `>` read whose reply was lost (the connection dropped while it
/// blocked) may still have made entries pending for this consumer, and `>` never returns them.
pub(super) async fn fetch(
    link: String,
    mut reader: Reader,
    mut outbox: Outbox,
    ready: mpsc::Sender<Vec<Outbound>>,
    shutdown: CancellationToken,
    fence: ReadFence,
    watched: Arc<Part>,
) -> Reader {
    let mut from = ReadFrom::pending();
    // The last entry id handed to the sender (or dropped as unreadable).
    let mut handed = ReadFrom::pending();
    let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
    loop {
        if !fence.clock.valid() {
            // The renewal task is about to say so: stop then, as on shutdown.
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = ready.closed() => {}
            }
            return reader;
        }
        let read = tokio::select! {
            read = watched.during(reader.read(&from, READ_COUNT, fence.block_ms)) => read,
            () = shutdown.cancelled() => return reader,
            () = ready.closed() => return reader,
        };
        let entries = match read {
            Ok(entries) => entries,
            Err(e) => {
                from = handed.clone();
                if pause_after_redis_error(&link, &mut outbox, &e, &mut backoff, &shutdown).await {
                    return reader;
                }
                continue;
            }
        };
        backoff.reset();
        tracing::debug!(
            link,
            from = ?from,
            entries = entries.len(),
            first = entries.first().and_then(|e| e.as_ref().ok()).map(|o| o.event_id.as_str()),
            last = entries.last().and_then(|e| e.as_ref().ok()).map(|o| o.event_id.as_str()),
            "read the outbox"
        );
        let last = entries.last().map(|entry| match entry {
            Ok(outbound) => outbound.entry_id.clone(),
            Err((id, _)) => id.clone(),
        });
        if let Some(last) = &last {
            handed = ReadFrom::PendingAfter(last.clone());
        }
        from = match (from, last) {
            // Pending entries stay pending until acknowledged: read on past them.
            (ReadFrom::PendingAfter(_), Some(last)) => ReadFrom::PendingAfter(last),
            (_, None) => ReadFrom::New,
            (ReadFrom::New, Some(_)) => ReadFrom::New,
        };
        let entries = drop_unreadable(&link, &mut outbox, entries).await;
        if !entries.is_empty() && ready.send(entries).await.is_err() {
            return reader;
        }
    }
}

/// Entries that cannot be parsed (only chatbridge writes outboxes, so this means damage) are
/// logged and removed, so they do not come back after every restart.
async fn drop_unreadable(
    link: &str,
    outbox: &mut Outbox,
    entries: Vec<Result<Outbound, (String, String)>>,
) -> Vec<Outbound> {
    let mut good = Vec::with_capacity(entries.len());
    let mut bad = Vec::new();
    for entry in entries {
        match entry {
            Ok(outbound) => good.push(outbound),
            Err((id, why)) => {
                tracing::error!(link, entry = id, why, "dropping unreadable outbox entry");
                bad.push(id);
            }
        }
    }
    if !bad.is_empty()
        && let Err(e) = outbox.discard(link, &bad).await
    {
        tracing::warn!(link, error = %e, "could not drop unreadable entries");
    }
    good
}
