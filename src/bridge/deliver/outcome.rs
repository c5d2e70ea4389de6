//! What a worker does once a batch has settled: acknowledge it, record a failure, move an
//! event to the dead letters, or disable the link (410): every outcome the retry policy can
//! give, written to Redis before the worker goes on.

use super::*;
use crate::chat::model::Outbound;

impl Worker {
    /// Records how a batch settled; a refused or given-up batch of several events is sent
    /// again one event at a time, so only the events at fault are dead-lettered.
    pub(super) async fn settled(&mut self, batch: &[Outbound], settled: Settled) -> Flow {
        if batch.len() > 1 && matches!(settled, Settled::Refused(_) | Settled::GaveUp(..)) {
            for single in batch.chunks(1) {
                let settled = self.sender.settle(single).await;
                let flow = self.record(single, settled).await;
                if !matches!(flow, Flow::Continue) {
                    return flow;
                }
            }
            return Flow::Continue;
        }
        self.record(batch, settled).await
    }

    /// Hands a delivered batch to the ack task, dead-letters a refused or given-up one, or
    /// disables the link. Only a delivery is recorded once the lease may be lost: the new
    /// holder decides about the rest itself.
    pub(super) async fn record(&mut self, batch: &[Outbound], settled: Settled) -> Flow {
        if !matches!(settled, Settled::Delivered) && !self.sender.clock.valid() {
            return Flow::Stop;
        }
        match settled {
            Settled::Delivered => self.acknowledge(batch).await,
            Settled::Refused(outcome) => {
                tracing::error!(
                    link = self.link,
                    event = batch.first().map(|o| o.event_id.as_str()),
                    detail = outcome.detail,
                    "target refused the event: moved to the dead-letter stream"
                );
                self.dead_letter(batch, outcome.status, &outcome.detail)
                    .await
            }
            Settled::GaveUp(outcome, failing_for) => {
                tracing::error!(
                    link = self.link,
                    event = batch.first().map(|o| o.event_id.as_str()),
                    detail = outcome.detail,
                    ?failing_for,
                    "event kept failing: given up, moved to the dead-letter stream"
                );
                let detail = format!(
                    "gave up after {} s of failures: {}",
                    failing_for.as_secs(),
                    outcome.detail
                );
                self.dead_letter(batch, outcome.status, &detail).await
            }
            Settled::Gone(outcome) => self.disable(&outcome).await,
            Settled::Shutdown | Settled::LeaseLost => Flow::Stop,
        }
    }

    /// Hands a delivered batch to the ack task, waiting while it is [`ACK_BACKLOG`] behind.
    pub(super) async fn acknowledge(&mut self, batch: &[Outbound]) -> Flow {
        match self.acks.send(Ack::Delivered(batch.to_vec())).await {
            Ok(()) => Flow::Continue,
            Err(_) => self.ack_task_gone(),
        }
    }

    /// The ack task is gone: on shutdown (a failing Redis cut short) that is expected; before,
    /// it failed (`run` reports how it ended).
    pub(super) fn ack_task_gone(&self) -> Flow {
        if self.shutdown.is_cancelled() {
            Flow::Stop
        } else {
            Flow::Failed
        }
    }

    /// Moves events to the dead-letter stream with the status and why, retrying Redis errors.
    pub(super) async fn dead_letter(
        &mut self,
        batch: &[Outbound],
        status: Option<u16>,
        detail: &str,
    ) -> Flow {
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        let stop = self.stop().clone();
        loop {
            let done = self
                .redis
                .during(self.outbox.dead_letter(&self.link, batch, status, detail))
                .await;
            match done {
                Ok(()) => {
                    self.sender.health.forget(batch);
                    self.sender.health.metrics.dead_lettered(batch.len());
                    return Flow::Continue;
                }
                Err(e) => {
                    if pause_after_redis_error(
                        &self.link,
                        &mut self.outbox,
                        &e,
                        &mut backoff,
                        &stop,
                    )
                    .await
                    {
                        return Flow::Stop;
                    }
                }
            }
        }
    }

    pub(super) async fn disable(&mut self, outcome: &SendOutcome) -> Flow {
        tracing::error!(
            link = self.link,
            detail = outcome.detail,
            "target is gone: DISABLING the link"
        );
        let mut backoff = Backoff::new(REDIS_BACKOFF_MIN, REDIS_BACKOFF_MAX);
        let stop = self.stop().clone();
        while let Err(e) = self
            .redis
            .during(self.outbox.disable(&self.link, &outcome.detail))
            .await
        {
            if pause_after_redis_error(&self.link, &mut self.outbox, &e, &mut backoff, &stop).await
            {
                return Flow::Stop;
            }
        }
        Flow::Disabled
    }
}
