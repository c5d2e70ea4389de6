//! One delivery session of a worker: the fetch task reads the outbox (pending entries first)
//! and the worker hands what it reads to the link, batch after batch in order, or up to
//! `max_in_flight` batches at once; until shutdown, the lease is lost or the link is disabled.

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::fetch::fetch;
use super::{Flow, PREFETCH, Settled, Worker, part_failed};
use crate::chat::model::Outbound;

impl Worker {
    /// One delivery session: from the pending entries on, until shutdown, the lease is lost or
    /// the link is disabled (the next session then starts again from what is pending). Ends at once,
    /// failed, when the fetch task fails.
    pub(super) async fn session(&mut self) -> Flow {
        let Some(reader) = self.reader.take() else {
            tracing::error!(link = self.link, "no outbox reader left for a new session");
            return Flow::Failed;
        };
        let (ready_tx, mut ready) = mpsc::channel(PREFETCH);
        // Dropping the set aborts the fetch task: it cannot outlive the session.
        let mut fetcher = JoinSet::new();
        fetcher.spawn(fetch(
            self.link.clone(),
            reader,
            self.outbox.clone(),
            ready_tx,
            self.stop().clone(),
            self.lease.read_fence(),
            self.reading.clone(),
        ));
        let link = self.link.clone();
        let stop = self.stop().clone();
        let mut fetched = None;
        let flow = {
            let delivery = self.deliver_ready(&mut ready);
            tokio::pin!(delivery);
            tokio::select! {
                flow = &mut delivery => flow,
                ended = fetcher.join_next() => match ended {
                    // On stop the fetch task hands its reader back: finish what is in flight.
                    Some(Ok(reader)) if stop.is_cancelled() => {
                        fetched = Some(reader);
                        delivery.await
                    }
                    other => {
                        let error = other.map(|ended| ended.err());
                        part_failed(&link, "outbox reader", error);
                        return Flow::Failed;
                    }
                },
            }
        };
        drop(ready);
        let reader = match fetched {
            Some(reader) => reader,
            None => match fetcher.join_next().await {
                Some(Ok(reader)) => reader,
                other => {
                    part_failed(&link, "outbox reader", other.map(|ended| ended.err()));
                    return Flow::Failed;
                }
            },
        };
        self.reader = Some(reader);
        if matches!(flow, Flow::Disabled) {
            // Re-reading from the pending entries must not see what was just delivered.
            if let Some(gone) = self.flush_acks().await {
                return gone;
            }
        }
        flow
    }

    /// Delivers what the fetch task reads until it stops, shutdown, or the link is disabled.
    async fn deliver_ready(&mut self, ready: &mut mpsc::Receiver<Vec<Outbound>>) -> Flow {
        let batch_max = self.sender.target.batch_max();
        while let Some(mut entries) = ready.recv().await {
            // Reads already waiting join this one, up to a batch: a backlog that built up
            // while the target was slow (rate limits) goes out in full batches.
            while entries.len() < batch_max {
                match ready.try_recv() {
                    Ok(more) => entries.extend(more),
                    Err(_) => break,
                }
            }
            let flow = self.deliver_all(entries).await;
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
        Flow::Stop
    }

    /// Delivers what one read returned: batch after batch in order, or up to
    /// `max_in_flight` batches at once.
    async fn deliver_all(&mut self, entries: Vec<Outbound>) -> Flow {
        let size = self.sender.target.batch_max().max(1);
        let parallel = self.sender.target.max_in_flight().max(1);
        if parallel == 1 {
            for batch in entries.chunks(size) {
                if self.stop().is_cancelled() {
                    // Not started: stays pending for the next start.
                    return Flow::Stop;
                }
                let settled = self.sender.settle(batch).await;
                let flow = self.settled(batch, settled).await;
                if !matches!(flow, Flow::Continue) {
                    return flow;
                }
            }
            return Flow::Continue;
        }
        let sender = self.sender.clone();
        // Owned batches: the sends run concurrently, detached from `entries`' lifetime.
        let batches: Vec<Vec<Outbound>> = entries.chunks(size).map(<[_]>::to_vec).collect();
        let mut sends = futures_util::stream::iter(batches)
            .map(move |batch| {
                let sender = sender.clone();
                async move {
                    let settled = if sender.stop.is_cancelled() {
                        Settled::Shutdown
                    } else {
                        sender.settle(&batch).await
                    };
                    (batch, settled)
                }
            })
            .buffer_unordered(parallel);
        let mut outcome = Flow::Continue;
        while let Some((batch, settled)) = sends.next().await {
            match self.settled(&batch, settled).await {
                Flow::Continue => {}
                // Let the sends already in flight finish and be recorded.
                other => outcome = other,
            }
        }
        outcome
    }
}
