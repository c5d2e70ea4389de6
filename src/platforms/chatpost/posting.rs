//! What the chat-platform links (Slack, Discord) share around their HTTP calls: making a batch's
//! posts in order without repeating the ones a retry already got through, and the "not before"
//! a 429 sets.
//!
//! A batch may become several posts (a merged backlog, a split long message). When post 3 of 5
//! fails, the worker retries the whole batch; [`Progress`] remembers posts 1 and 2 so the retry
//! starts at 3, and entries delivered whole in an earlier attempt of a batch the worker later
//! retries one event at a time are not posted again. Only one send of a link runs at a time
//! (these links keep order), so a mutex per link is enough. The same record is kept in Redis
//! (`chatbridge:posted:{link}`, by event key), so the process that runs the link next (after a
//! crash or a takeover) does not post again what the platform already shows.
//!
//! [`Receipts`] coalesces read receipts: at most one "seen by …" line per room per interval,
//! posted by a small task of the link's own, so a receipt never holds up messages.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::render::{Post, Style, seen_post};
use crate::bridge::retry::Verdict;
use crate::chat::model::Outbound;
use crate::platforms::SendOutcome;

/// How many entries [`Progress`] remembers at most; beyond, it forgets (a few repeats, never
/// a loss).
const PROGRESS_CAP: usize = 10_000;

/// How long the durable record keeps a post (`chatbridge:posted:{link}`): far longer than a
/// restart, short enough to stay small (one member per post and per message).
const DURABLE_KEEP: Duration = Duration::from_secs(24 * 3600);
/// How long one durable read or write may wait for Redis before the memory alone decides.
const DURABLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The posts and entries that reached the platform in attempts not yet acknowledged.
#[derive(Default)]
pub(crate) struct Progress {
    state: Mutex<ProgressState>,
    /// The same record in Redis, by event key, so a process that restarts mid-batch (or
    /// between a delivery and its acknowledgement) does not post again what the platform
    /// already shows.
    durable: Option<Durable>,
}

/// `chatbridge:posted:{link}`: a ZSET of `k:{event key}` (every post of the message made) and
/// `p:{event keys}#{part}` (one post made), scored by when, the last [`DURABLE_KEEP`].
struct Durable {
    con: redis::aio::ConnectionManager,
    key: String,
}

impl Durable {
    /// Which of `members` are recorded; all `false` when Redis does not answer in time.
    async fn contains(&self, members: &[String]) -> Vec<bool> {
        if members.is_empty() {
            return Vec::new();
        }
        let mut con = self.con.clone();
        let scores = tokio::time::timeout(
            DURABLE_TIMEOUT,
            redis::cmd("ZMSCORE")
                .arg(&self.key)
                .arg(members)
                .query_async::<Vec<Option<f64>>>(&mut con),
        )
        .await;
        match scores {
            Ok(Ok(scores)) if scores.len() == members.len() => {
                scores.iter().map(Option::is_some).collect()
            }
            _ => {
                tracing::debug!(key = %self.key, "cannot read the posted record; memory decides");
                vec![false; members.len()]
            }
        }
    }

    /// Records `members` now and drops what is older than [`DURABLE_KEEP`].
    async fn add(&self, members: &[String]) {
        let now = chrono::Utc::now().timestamp_millis();
        let keep = i64::try_from(DURABLE_KEEP.as_millis()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for member in members {
            pipe.zadd(&self.key, member, now).ignore();
        }
        pipe.zrembyscore(&self.key, "-inf", now - keep)
            .ignore()
            .pexpire(&self.key, keep)
            .ignore();
        let mut con = self.con.clone();
        let written = tokio::time::timeout(DURABLE_TIMEOUT, pipe.query_async::<()>(&mut con)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::debug!(key = %self.key, "cannot write the posted record");
        }
    }
}

#[derive(Default)]
struct ProgressState {
    /// Entries whose every post was made.
    entries: HashSet<String>,
    /// Posts made: (their entries, part index).
    posts: HashSet<(Vec<String>, usize)>,
}

impl Progress {
    /// Progress recorded in memory and in Redis (`chatbridge:posted:{link}`).
    pub(crate) fn durable(con: redis::aio::ConnectionManager, link: &str) -> Self {
        Self {
            state: Mutex::default(),
            durable: Some(Durable {
                con,
                key: crate::redis::keys::posted(link),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries of `batch` not yet delivered whole by an earlier attempt (of this process,
    /// or, through the durable record, of one that stopped before acknowledging them).
    pub(crate) async fn pending(&self, batch: &[Outbound]) -> Vec<Outbound> {
        let fresh: Vec<&Outbound> = {
            let state = self.state();
            batch
                .iter()
                .filter(|o| !state.entries.contains(&o.entry_id))
                .collect()
        };
        let Some(durable) = &self.durable else {
            return fresh.into_iter().cloned().collect();
        };
        let members: Vec<String> = fresh.iter().map(|o| format!("k:{}", o.key)).collect();
        let done = durable.contains(&members).await;
        fresh
            .into_iter()
            .zip(done)
            .filter(|(_, done)| !done)
            .map(|(o, _)| o.clone())
            .collect()
    }

    /// Whether `post` (carrying the events `keys`) was made by an earlier attempt.
    /// Which of `posts` (each with the keys of the events it carries) an earlier attempt
    /// made: one Redis read for the whole batch.
    async fn made(&self, posts: &[(&Post, Vec<&str>)]) -> Vec<bool> {
        let in_memory: Vec<bool> = {
            let state = self.state();
            posts
                .iter()
                .map(|(post, _)| state.posts.contains(&key(post)))
                .collect()
        };
        let Some(durable) = &self.durable else {
            return in_memory;
        };
        let members: Vec<String> = posts
            .iter()
            .map(|(post, keys)| part_member(post, keys))
            .collect();
        let recorded = durable.contains(&members).await;
        in_memory
            .into_iter()
            .zip(recorded)
            .map(|(memory, redis)| memory || redis)
            .collect()
    }

    async fn record(&self, post: &Post, keys: &[&str]) {
        let last_part = post.part.is_none_or(|(index, count)| index + 1 == count);
        {
            let mut state = self.state();
            if state.entries.len() + state.posts.len() > PROGRESS_CAP {
                *state = ProgressState::default();
            }
            state.posts.insert(key(post));
            if last_part {
                state.entries.extend(post.entries.iter().cloned());
            }
        }
        if let Some(durable) = &self.durable {
            let mut members = vec![part_member(post, keys)];
            if last_part {
                members.extend(keys.iter().map(|k| format!("k:{k}")));
            }
            durable.add(&members).await;
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

/// A post in the durable record: the keys of the events it carries and its part index.
fn part_member(post: &Post, keys: &[&str]) -> String {
    format!(
        "p:{}#{}",
        keys.join(","),
        post.part.map_or(0, |(index, _)| index)
    )
}

fn key(post: &Post) -> (Vec<String>, usize) {
    (
        post.entries.clone(),
        post.part.map_or(0, |(index, _)| index),
    )
}

/// Makes `posts` in order with `make`, skipping those already made; stops at the first that
/// is not delivered and reports it. All made: delivered, and `batch` is forgotten.
pub(crate) async fn post_all<F, Fut>(
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
    let by_entry: std::collections::HashMap<&str, &str> = batch
        .iter()
        .map(|o| (o.entry_id.as_str(), o.key.as_str()))
        .collect();
    // Every event a post carries, messages and lines alike, by its stable key.
    let keyed: Vec<(&Post, Vec<&str>)> = posts
        .iter()
        .map(|post| {
            let keys = post
                .entries
                .iter()
                .map(|e| by_entry.get(e.as_str()).copied().unwrap_or(e.as_str()))
                .collect();
            (post, keys)
        })
        .collect();
    let already = progress.made(&keyed).await;
    for ((post, keys), already) in keyed.iter().zip(already) {
        if already {
            continue;
        }
        let outcome = make((*post).clone()).await;
        if outcome.verdict != Verdict::Delivered {
            return outcome;
        }
        progress.record(post, keys).await;
        // The worker's watchdog: this send made progress (see `notify::progress`).
        crate::ops::notify::progress();
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

/// Makes one post on a platform; what [`Receipts`] posts its lines through.
pub(crate) trait MakesPosts: Send + Sync + 'static {
    fn make(&self, post: &Post) -> impl Future<Output = SendOutcome> + Send;
}

/// Read receipts waiting to become "seen by …" lines, per place.
pub(crate) struct Receipts {
    /// The least time between two lines of one place.
    interval: Duration,
    /// How lines are laid out.
    style: Style,
    state: Mutex<BTreeMap<String, Readers>>,
    /// Wakes the flusher when readers arrive.
    wake: Arc<Notify>,
    /// Whether the flusher task runs (started on the first receipt).
    started: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Readers {
    /// Who read since the last line, each once, in order.
    pending: Vec<String>,
    /// When the last line of this place went out.
    last_line: Option<Instant>,
}

impl Receipts {
    pub(crate) fn new(interval: Duration, style: Style) -> Arc<Self> {
        Arc::new(Self {
            interval,
            style,
            state: Mutex::default(),
            wake: Arc::new(Notify::new()),
            started: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Readers>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes who read where; the flusher (started on first use, posting through `poster`)
    /// posts the lines when they are due. Must be called within the runtime.
    pub(crate) fn add<P: MakesPosts>(
        self: &Arc<Self>,
        readers: Vec<(String, String)>,
        poster: &Arc<P>,
    ) {
        if readers.is_empty() {
            return;
        }
        {
            let mut state = self.state();
            for (place, who) in readers {
                let place = state.entry(place).or_default();
                if !place.pending.contains(&who) {
                    place.pending.push(who);
                }
            }
        }
        if !self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::spawn(flush(Arc::downgrade(self), poster.clone()));
        }
        self.wake.notify_one();
    }

    /// Forgets every pending reader: the link was disabled, and nothing may call it again.
    pub(crate) fn clear(&self) {
        self.state().clear();
    }

    /// The lines due now (their readers taken), and how long until the next one is due.
    fn due(&self) -> (Vec<(String, Vec<String>)>, Option<Duration>) {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Duration> = None;
        for (place, readers) in self.state().iter_mut() {
            if readers.pending.is_empty() {
                continue;
            }
            let ready_at = readers.last_line.map_or(now, |at| at + self.interval);
            if ready_at <= now {
                readers.last_line = Some(now);
                due.push((place.clone(), std::mem::take(&mut readers.pending)));
            } else {
                let wait = ready_at - now;
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        (due, next)
    }

    /// Puts back readers whose line could not go out because of a rate limit.
    fn put_back(&self, place: String, mut readers: Vec<String>) {
        let mut state = self.state();
        let entry = state.entry(place).or_default();
        readers.retain(|r| !entry.pending.contains(r));
        entry.pending.splice(0..0, readers);
    }
}

/// Posts due "seen by" lines until the link is gone. A line refused for any reason but a rate
/// limit is dropped (logged): receipts are signals, and a link that fails or is disabled must
/// not be called again on their account.
async fn flush<P: MakesPosts>(receipts: Weak<Receipts>, poster: Arc<P>) {
    loop {
        let Some(this) = receipts.upgrade() else {
            return;
        };
        let (due, next) = this.due();
        for (place, readers) in due {
            let post = seen_post(&place, &readers, &this.style);
            let outcome = poster.make(&post).await;
            match outcome.verdict {
                Verdict::Delivered => {}
                Verdict::RateLimited { .. } => this.put_back(place, readers),
                _ => tracing::warn!(
                    place,
                    detail = outcome.detail,
                    "a \"seen by\" line could not be posted; dropped"
                ),
            }
        }
        let wait = next.unwrap_or(this.interval);
        let wake = this.wake.clone();
        drop(this);
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The earliest the platform may be called again, set by a 429 (or a pause).
#[derive(Default)]
pub(crate) struct NotBefore(Mutex<Option<Instant>>);

impl NotBefore {
    /// Pushes the earliest next call to `wait` from now (never earlier than already set).
    pub(crate) fn wait(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut at = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if at.is_none_or(|at| at < until) {
            *at = Some(until);
        }
    }

    /// How long until a call is allowed, if it is not yet.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let at = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        at.and_then(|at| at.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

/// The outcome of a call not made because the platform asked us to wait: retried after.
pub(crate) fn waiting(after: Duration, why: &str) -> SendOutcome {
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
pub(crate) fn seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::model::{EventKind, OutboundKind, Scope};

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
            progress.pending(&batch).await.len(),
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
            progress.pending(&batch).await.len(),
            3,
            "forgotten once delivered"
        );
    }

    #[test]
    fn receipts_are_due_once_per_interval_per_place() {
        use crate::platforms::chatpost::split::utf16_units;
        let style = Style {
            limit: 100,
            measure: utf16_units,
            escape: <str as ToOwned>::to_owned,
            bold: "*",
            names_in_text: false,
            name_rules: <str as ToOwned>::to_owned,
        };
        let receipts = Receipts::new(Duration::from_secs(60), style);
        let add = |place: &str, who: &str| {
            let mut state = receipts.state();
            let readers = state.entry(place.into()).or_default();
            if !readers.pending.contains(&who.to_owned()) {
                readers.pending.push(who.into());
            }
        };
        add("general", "1");
        add("general", "2");
        add("general", "1");
        add("random", "3");
        let (due, next) = receipts.due();
        assert_eq!(
            due,
            [
                ("general".into(), vec!["1".into(), "2".into()]),
                ("random".into(), vec!["3".into()])
            ]
        );
        assert_eq!(next, None);
        add("general", "4");
        let (due, next) = receipts.due();
        assert!(due.is_empty(), "not again within the interval");
        assert!(next.unwrap() > Duration::from_secs(59));
        receipts.put_back("general".into(), vec!["5".into(), "4".into()]);
        assert_eq!(receipts.state()["general"].pending, ["5", "4"]);
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
