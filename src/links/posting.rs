//! What the chat-platform links (Slack, Discord) share around their HTTP calls: making a batch's
//! posts in order without repeating the ones a retry already got through, and the "not before"
//! a 429 sets.
//!
//! A batch may become several posts (a merged backlog, a split long message). When post 3 of 5
//! fails, the worker retries the whole batch; [`Progress`] remembers posts 1 and 2 so the retry
//! starts at 3, and entries delivered whole in an earlier attempt of a batch the worker later
//! retries one event at a time are not posted again. Only one send of a link runs at a time
//! (these links keep order), so a mutex per link is enough.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::SendOutcome;
use super::render::Post;
use crate::model::Outbound;
use crate::retry::Verdict;

/// How many entries [`Progress`] remembers at most; beyond, it forgets (a few repeats, never
/// a loss).
const PROGRESS_CAP: usize = 10_000;

/// The posts and entries that reached the platform in attempts not yet acknowledged.
#[derive(Default)]
pub(super) struct Progress {
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    /// Entries whose every post was made.
    entries: HashSet<String>,
    /// Posts made: (their entries, part index).
    posts: HashSet<(Vec<String>, usize)>,
}

impl Progress {
    fn state(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries of `batch` not yet delivered whole by an earlier attempt.
    pub(super) fn pending(&self, batch: &[Outbound]) -> Vec<Outbound> {
        let state = self.state();
        batch
            .iter()
            .filter(|o| !state.entries.contains(&o.entry_id))
            .cloned()
            .collect::<Vec<_>>()
    }

    fn made(&self, post: &Post) -> bool {
        self.state().posts.contains(&key(post))
    }

    fn record(&self, post: &Post) {
        let mut state = self.state();
        if state.entries.len() + state.posts.len() > PROGRESS_CAP {
            *state = ProgressState::default();
        }
        state.posts.insert(key(post));
        let last_part = post.part.is_none_or(|(index, count)| index + 1 == count);
        if last_part {
            state.entries.extend(post.entries.iter().cloned());
        }
    }

    /// The batch was delivered: its entries will be acknowledged, forget them.
    fn settled(&self, batch: &[Outbound]) {
        let ids: HashSet<&str> = batch.iter().map(|o| o.entry_id.as_str()).collect();
        let mut state = self.state();
        state.entries.retain(|e| !ids.contains(e.as_str()));
        state
            .posts
            .retain(|(entries, _)| !entries.iter().any(|e| ids.contains(e.as_str())));
    }
}

fn key(post: &Post) -> (Vec<String>, usize) {
    (
        post.entries.clone(),
        post.part.map_or(0, |(index, _)| index),
    )
}

/// Makes `posts` in order with `make`, skipping those already made; stops at the first that
/// is not delivered and reports it. All made: delivered, and `batch` is forgotten.
pub(super) async fn post_all<F, Fut>(
    batch: &[Outbound],
    posts: &[Post],
    progress: &Progress,
    mut make: F,
) -> SendOutcome
where
    F: FnMut(Post) -> Fut,
    Fut: Future<Output = SendOutcome>,
{
    let mut made = 0;
    let mut last = None;
    for post in posts {
        if progress.made(post) {
            continue;
        }
        let outcome = make(post.clone()).await;
        if outcome.verdict != Verdict::Delivered {
            return outcome;
        }
        progress.record(post);
        made += 1;
        last = outcome.status;
    }
    progress.settled(batch);
    SendOutcome {
        verdict: Verdict::Delivered,
        status: last,
        detail: format!("{made} post(s) for {} event(s)", batch.len()),
    }
}

/// The earliest the platform may be called again, set by a 429 (or a pause).
#[derive(Default)]
pub(super) struct NotBefore(Mutex<Option<Instant>>);

impl NotBefore {
    /// Pushes the earliest next call to `wait` from now (never earlier than already set).
    pub(super) fn wait(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut at = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if at.is_none_or(|at| at < until) {
            *at = Some(until);
        }
    }

    /// How long until a call is allowed, if it is not yet.
    pub(super) fn remaining(&self) -> Option<Duration> {
        let at = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        at.and_then(|at| at.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

/// The outcome of a call not made because the platform asked us to wait: retried after.
pub(super) fn waiting(after: Duration, why: &str) -> SendOutcome {
    SendOutcome {
        verdict: Verdict::RateLimited { after: Some(after) },
        status: None,
        detail: format!(
            "{why}: waiting {:.1} s before the next request",
            after.as_secs_f64()
        ),
    }
}

/// Reads a float seconds value (`1.5`, `0.347`), capped at an hour; garbage gives `None`.
pub(super) fn seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, OutboundKind, Scope};

    fn entry(n: usize) -> Outbound {
        Outbound {
            entry_id: format!("{n}-0"),
            event_id: format!("e{n}"),
            key: format!("k{n}"),
            scope: Scope::Room("general".into()),
            kind: OutboundKind::Event(EventKind::Message),
            payload: "{}".into(),
            enqueued_at: chrono::Utc::now(),
        }
    }

    fn post(entries: &[usize], part: Option<(usize, usize)>) -> Post {
        Post {
            username: None,
            picture: None,
            text: "x".into(),
            entries: entries.iter().map(|n| format!("{n}-0")).collect(),
            keys: Vec::new(),
            part,
        }
    }

    fn outcome(verdict: Verdict) -> SendOutcome {
        SendOutcome {
            verdict,
            status: None,
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn a_retry_resumes_after_the_posts_already_made() {
        let batch = [entry(1), entry(2), entry(3)];
        let posts = [
            post(&[1, 2], None),
            post(&[3], Some((0, 2))),
            post(&[3], Some((1, 2))),
        ];
        let progress = Progress::default();
        let made = Mutex::new(Vec::new());
        let fail_second = |p: Post| {
            let first = p.entries == ["1-0", "2-0"];
            made.lock().unwrap().push(p.clone());
            async move {
                if first {
                    outcome(Verdict::Delivered)
                } else {
                    outcome(Verdict::RateLimited { after: None })
                }
            }
        };
        let result = post_all(&batch, &posts, &progress, fail_second).await;
        assert_eq!(result.verdict, Verdict::RateLimited { after: None });
        assert_eq!(
            progress.pending(&batch).len(),
            1,
            "entries 1 and 2 are done"
        );

        made.lock().unwrap().clear();
        let ok = |p: Post| {
            made.lock().unwrap().push(p);
            async { outcome(Verdict::Delivered) }
        };
        let result = post_all(&batch, &posts, &progress, ok).await;
        assert_eq!(result.verdict, Verdict::Delivered);
        assert_eq!(*made.lock().unwrap(), posts[1..].to_vec());
        assert_eq!(
            progress.pending(&batch).len(),
            3,
            "forgotten once delivered"
        );
    }

    #[test]
    fn not_before_only_moves_later() {
        let nb = NotBefore::default();
        assert_eq!(nb.remaining(), None);
        nb.wait(Duration::from_secs(2));
        nb.wait(Duration::from_millis(10));
        assert!(nb.remaining().unwrap() > Duration::from_secs(1));
        assert_eq!(seconds("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(seconds("-1"), None);
    }
}
