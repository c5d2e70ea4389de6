//! Which delivery workers run, for `/readyz`: the daemon names every configured link before
//! connecting to Redis, and each worker is marked running while its future runs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// A link's worker, as readiness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Configured, not started yet (Redis not connected yet).
    Starting,
    /// Its future runs (delivering, standby or waiting while the link is disabled).
    Running,
    /// It ended while it was not told to stop: it failed (and the daemon is stopping).
    Ended,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Ended => "ended",
        }
    }
}

/// The workers by link name; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Workers {
    /// Link name → state. Never held across an await.
    states: Arc<Mutex<BTreeMap<String, WorkerState>>>,
}

impl Workers {
    fn states(&self) -> MutexGuard<'_, BTreeMap<String, WorkerState>> {
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// These links are configured: not ready until each one's worker runs.
    pub fn expect<'a>(&self, links: impl IntoIterator<Item = &'a String>) {
        let mut states = self.states();
        for link in links {
            states.entry(link.clone()).or_insert(WorkerState::Starting);
        }
    }

    /// Runs `worker` for `link`, marked running meanwhile. When it ends after `stop` was
    /// cancelled the link is forgotten (stopped on purpose: shutdown, or a reload removed
    /// it); when it ends before, or panics, it is marked ended.
    pub fn track<F>(
        &self,
        link: &str,
        stop: CancellationToken,
        worker: F,
    ) -> impl Future<Output = ()> + Send + 'static + use<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let guard = Running {
            workers: self.clone(),
            link: link.to_owned(),
            stop,
        };
        async move {
            guard
                .workers
                .states()
                .insert(guard.link.clone(), WorkerState::Running);
            worker.await;
            drop(guard);
        }
    }

    /// Every known link's state, by name.
    pub fn snapshot(&self) -> BTreeMap<String, WorkerState> {
        self.states().clone()
    }
}

/// Marks the end of a tracked worker, however it ends (returns, panics, is aborted).
struct Running {
    workers: Workers,
    link: String,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut states = self.workers.states();
        if self.stop.is_cancelled() {
            states.remove(&self.link);
        } else {
            states.insert(self.link.clone(), WorkerState::Ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_is_starting_then_running_then_forgotten_when_stopped() {
        let workers = Workers::default();
        let link = "audit".to_owned();
        workers.expect([&link]);
        assert_eq!(workers.snapshot()["audit"], WorkerState::Starting);
        let stop = CancellationToken::new();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(workers.track("audit", stop.clone(), async {
            let _ = released.await;
        }));
        tokio::task::yield_now().await;
        assert_eq!(workers.snapshot()["audit"], WorkerState::Running);
        stop.cancel();
        let _ = release.send(());
        task.await.expect("worker");
        assert!(workers.snapshot().is_empty());
    }

    #[tokio::test]
    async fn a_worker_that_ends_on_its_own_or_panics_is_ended() {
        let workers = Workers::default();
        let stop = CancellationToken::new();
        workers.track("a", stop.clone(), async {}).await;
        let panicked = tokio::spawn(workers.track("b", stop, async { panic!("boom") }));
        assert!(panicked.await.is_err());
        let states = workers.snapshot();
        assert_eq!(states["a"], WorkerState::Ended);
        assert_eq!(states["b"], WorkerState::Ended);
    }
}
