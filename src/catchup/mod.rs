//! Catch-up: Pub/Sub forgets whatever was published while nobody listened, history does not.
//!
//! A pass reads, for each watched scope, the history entries newer than the scope's checkpoint
//! and hands them to the intake, which enqueues those that were not enqueued live (de-dup on
//! the payload hash) and moves the checkpoint in the same atomic script call
//! ([`Pass::resolve`]). A pass runs after every (re)subscribe, before any live event of that
//! subscription is enqueued, and every `[history] sweep_secs` as a safety net.
//!
//! The checkpoint (`chatbridge:checkpoint:{channel}`) is a fingerprint of the history as the
//! last pass saw it: the SHA-1 of its newest [`FINGERPRINT_LEN`] entries (`v2:<sha1>,…`), or
//! [`EMPTY`]. Only history moves it, so publish-only traffic cannot, and nothing a client
//! chooses (such as a message `id`) identifies it. The walk reads history from the newest
//! entry down to where that sequence of entries is, so everything above it is new to us:
//! - every entry above it is looked at; one that does not decode is counted and skipped (not
//!   JSON) or dead-lettered with its reason (JSON that is not a chat message, or too large),
//!   and never stops the walk;
//! - a room seen for the first time starts from now: its checkpoint is set, nothing replayed;
//! - a room this process watched before whose checkpoint vanished (Redis restarted without
//!   persistence) is not new: everything its history holds was written since, and is enqueued;
//! - a DM conversation without a checkpoint once DM mirroring has begun is new: what it holds
//!   from after the last pass is enqueued (older entries are from before its keys expired);
//! - when the checkpoint is no longer in history and the bridge may have missed what was
//!   trimmed (it was not subscribed the whole time since the last pass, and the oldest entry
//!   left was not enqueued by it), the scope's links get one notice that messages may have
//!   been missed, then everything history holds.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};

use crate::decode::{Decoder, HistoryEntry, MAX_PAYLOAD_BYTES, RawEntry};
use crate::model::{ChatEvent, EventKind, OutboundKind, Scope, SystemLine, Timestamp, content_id};
use crate::outbox::{Commit, Enqueue, Outbox, OutboxError, seen_member};
use crate::redis::keys;
use crate::route::{Routes, origin_among};

/// Checkpoint of a scope whose history was empty when a pass last read it.
pub const EMPTY: &str = "-";
/// The prefix of a fingerprint checkpoint.
const FINGERPRINT: &str = "v2:";
/// How many of the newest entries a fingerprint covers: a client would have to re-post that
/// many entries byte for byte, in order, to make the walk stop early.
pub const FINGERPRINT_LEN: usize = 3;
/// History entries read per round trip.
const PAGE: isize = 100;
/// Scopes checked per round trip for "anything new?".
const CHUNK: usize = 500;
/// De-dup keys of messages enqueued within this long before a pass began are kept after it:
/// a client may publish a message a moment before it stores it in history, so the next pass
/// can still see that it was already enqueued. Older keys are below the new checkpoint.
pub const SEEN_SLACK: Duration = Duration::from_secs(60);
/// A DM without checkpoint holds messages from before the last pass only if its keys expired
/// while it was idle; this much clock skew between clients is tolerated.
const DM_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Reads one history atomically down to a checkpoint (contract: the top of the file).
const HISTORY: &str = include_str!("../redis/scripts/catchup_history.lua");

/// Which scopes of a batch may have something new (contract: the top of the file).
const UNSETTLED: &str = include_str!("../redis/scripts/catchup_unsettled.lua");

/// The scripts, hashed once (EVALSHA, loaded again automatically after a Redis restart).
static HISTORY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HISTORY));
static UNSETTLED_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(UNSETTLED));

/// A scope that may have something new, as [`UNSETTLED`] found it.
struct Unsettled {
    scope: Scope,
    /// The fingerprint of its history now.
    now: String,
    /// Whether it has a checkpoint (new or legacy form).
    known: bool,
}

/// History sizes, to tell a full (possibly trimmed) history from a short one.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub room: usize,
    pub dm: usize,
}

/// What a catch-up pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Scopes whose history was walked.
    pub scopes: usize,
    /// Events enqueued by the pass (not counting those that had been enqueued live).
    pub enqueued: usize,
    /// Gap notices raised.
    pub gaps: usize,
    /// History entries dead-lettered instead of relayed.
    pub dead: usize,
}

/// What this process has already caught up. When Redis restarts without persistence, its
/// checkpoints vanish; a scope remembered here is then known not to be "seen for the first
/// time", so everything its history holds (written since the restart) is delivered.
#[derive(Debug, Default)]
pub struct Watched {
    scopes: HashSet<Scope>,
    /// Whether a DM pass has run.
    dms: bool,
}

/// A checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Checkpoint {
    /// History was empty.
    Empty,
    /// SHA-1s of the newest entries then, newest first.
    Entries(Vec<String>),
    /// Written by an older chatbridge: the `id` of the last message it enqueued.
    LegacyId(String),
}

impl Checkpoint {
    fn parse(stored: &str) -> Self {
        if stored == EMPTY {
            return Self::Empty;
        }
        match stored.strip_prefix(FINGERPRINT) {
            Some(list) => Self::Entries(list.split(',').map(str::to_owned).collect()),
            None => Self::LegacyId(stored.to_owned()),
        }
    }
}

/// The checkpoint value for a history whose newest entries have these SHA-1s.
fn fingerprint(newest: &[String]) -> String {
    if newest.is_empty() {
        return EMPTY.to_owned();
    }
    let top = &newest[..newest.len().min(FINGERPRINT_LEN)];
    format!("{FINGERPRINT}{}", top.join(","))
}

/// One history entry as read: its SHA-1 (for fingerprints) and content.
struct Read {
    sha1: String,
    entry: RawEntry,
}

/// An entry a pass may enqueue.
#[derive(Debug, Clone)]
struct Found {
    /// The de-dup key (as the live path computes it).
    key: String,
    event_id: String,
    payload: String,
    /// The link it came from, for a message a bridge wrote.
    origin: Option<String>,
    /// Why it is dead-lettered rather than relayed.
    dead: Option<String>,
}

/// One scope's part of a pass.
#[derive(Debug)]
struct Walk {
    scope: Scope,
    /// Entries newer than the checkpoint, oldest first.
    found: Vec<Found>,
    /// Its new checkpoint.
    checkpoint: String,
    /// Whether to raise a gap notice first.
    gap: bool,
}

/// A pass that has read history and waits to be resolved against the live events that
/// arrived meanwhile.
#[derive(Debug)]
pub struct Pass {
    /// Redis time (µs) when the pass began reading.
    started_us: i64,
    walks: Vec<Walk>,
    /// Seed-form time the pass began, recorded as the DM watermark once resolved.
    started_at: String,
    /// Whether DMs were part of it.
    dms: bool,
}

/// Reads history for a pass.
pub struct CatchUp<'a> {
    /// For history reads and scans.
    pub con: &'a mut ConnectionManager,
    pub routes: &'a Routes,
    pub decoder: &'a mut Decoder,
    pub limits: Limits,
    pub watched: &'a mut Watched,
}

impl CatchUp<'_> {
    /// Reads what every watched room, and every DM conversation when DMs are mirrored, holds
    /// beyond its checkpoint. `continuous`: this process stayed subscribed since its last
    /// resolved pass, so whatever history trimmed since was received live (no gap).
    pub async fn read(&mut self, continuous: bool) -> Result<Pass, OutboxError> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(self.con).await?;
        let started_us = secs * 1_000_000 + micros;
        let mut pass = Pass {
            started_us,
            walks: Vec::new(),
            started_at: Timestamp::now().to_string(),
            dms: false,
        };
        let rooms: Vec<Scope> = self
            .routes
            .rooms()
            .map(|r| Scope::Room(r.to_owned()))
            .collect();
        for found in self.unsettled(rooms).await? {
            let walk = self.walk(found, continuous, None).await?;
            pass.walks.push(walk);
        }
        if self.routes.mirrors_dms() {
            pass.dms = true;
            let swept_at: Option<String> = self.con.get(keys::DMS_SWEPT_AT).await?;
            let swept_at = swept_at.and_then(|at| Timestamp::parse(&at).ok());
            // Before DM mirroring ever ran, a conversation without checkpoint is old.
            let dms_since = swept_at.or(self
                .watched
                .dms
                .then(|| Timestamp::from_naive(chrono::NaiveDateTime::MIN)));
            let dms = self.dm_scopes().await?;
            for found in self.unsettled(dms).await? {
                let walk = self.walk(found, continuous, dms_since).await?;
                pass.walks.push(walk);
            }
            self.watched.dms = true;
        }
        Ok(pass)
    }

    /// Starts `rooms`, and every DM conversation when `dms`, from now: their checkpoints are
    /// set to what their histories hold now, so a room a reload adds neither replays its past
    /// nor raises a gap notice. Returns what to commit.
    pub async fn from_now(&mut self, rooms: Vec<Scope>, dms: bool) -> Result<Commit, OutboxError> {
        let mut scopes = rooms;
        if dms {
            scopes.extend(self.dm_scopes().await?);
        }
        let mut commit = Commit::default();
        for unsettled in self.unsettled(scopes.clone()).await? {
            commit.checkpoints.push((unsettled.scope, unsettled.now));
        }
        self.watched.scopes.extend(scopes);
        if dms {
            self.watched.dms = true;
            let now = Timestamp::now().to_string();
            commit.marks.push((keys::DMS_SWEPT_AT.to_owned(), now));
        }
        Ok(commit)
    }

    /// The scopes that may need work: those whose history does not start with their
    /// checkpoint's fingerprint, found in one script call per [`CHUNK`] scopes.
    async fn unsettled(&mut self, scopes: Vec<Scope>) -> Result<Vec<Unsettled>, OutboxError> {
        let mut unsettled = Vec::new();
        for chunk in scopes.chunks(CHUNK) {
            let mut invocation = UNSETTLED_SCRIPT.prepare_invoke();
            invocation
                .key(keys::LEGACY_CHECKPOINTS)
                .arg(FINGERPRINT_LEN);
            for scope in chunk {
                invocation
                    .key(scope.history_key())
                    .key(keys::checkpoint(&scope.channel()))
                    .arg(scope.channel());
            }
            let reply: Vec<(usize, String, u8)> = invocation.invoke_async(self.con).await?;
            unsettled.extend(reply.into_iter().filter_map(|(i, now, known)| {
                chunk.get(i.wrapping_sub(1)).map(|scope| Unsettled {
                    scope: scope.clone(),
                    now,
                    known: known == 1,
                })
            }));
        }
        Ok(unsettled)
    }

    /// Every DM conversation that has a history list.
    async fn dm_scopes(&mut self) -> Result<Vec<Scope>, OutboxError> {
        let mut scopes = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(keys::DM_HISTORY_PATTERN)
                .arg("COUNT")
                .arg(1000)
                .query_async(self.con)
                .await?;
            scopes.extend(
                keys.iter()
                    .filter_map(|key| keys::channel_of_history(key).and_then(Scope::from_channel)),
            );
            if next == 0 {
                scopes.sort();
                scopes.dedup();
                return Ok(scopes);
            }
            cursor = next;
        }
    }

    /// The scope's checkpoint, from its key or (once, after an upgrade) the old hash.
    async fn checkpoint(&mut self, scope: &Scope) -> Result<Option<Checkpoint>, OutboxError> {
        let stored: Option<String> = self.con.get(keys::checkpoint(&scope.channel())).await?;
        let stored = match stored {
            Some(stored) => Some(stored),
            None => {
                self.con
                    .hget(keys::LEGACY_CHECKPOINTS, scope.channel())
                    .await?
            }
        };
        Ok(stored.as_deref().map(Checkpoint::parse))
    }

    /// Reads one scope's history down to its checkpoint. `dms_since`: for a DM, when DM
    /// mirroring is known to have run (a DM without checkpoint is then new since that time).
    async fn walk(
        &mut self,
        unsettled: Unsettled,
        continuous: bool,
        dms_since: Option<Timestamp>,
    ) -> Result<Walk, OutboxError> {
        let scope = &unsettled.scope;
        let first_time = !self.watched.scopes.contains(scope);
        self.watched.scopes.insert(scope.clone());
        let is_dm = matches!(scope, Scope::Dm(..));
        if !unsettled.known && first_time && !(is_dm && dms_since.is_some()) {
            // Seen for the first time: start from now.
            return Ok(Walk {
                scope: unsettled.scope,
                found: Vec::new(),
                checkpoint: unsettled.now,
                gap: false,
            });
        }
        let checkpoint = self.checkpoint(scope).await?;
        let (read, found_at) = self.read_until(scope, checkpoint.as_ref()).await?;
        let limit = match scope {
            Scope::Room(_) => self.limits.room,
            Scope::Dm(..) => self.limits.dm,
        };
        let new = found_at.unwrap_or(read.len());
        let shas: Vec<String> = read.iter().map(|r| r.sha1.clone()).collect();
        // Found empty, or not found at all: history may have been trimmed past the checkpoint.
        let trimmed = match &checkpoint {
            None | Some(Checkpoint::Empty) => read.len() >= limit,
            Some(_) => found_at.is_none(),
        };
        let gap = trimmed && !continuous && !self.oldest_was_enqueued(scope, &read).await?;
        let since = match (&checkpoint, is_dm) {
            (None, true) => dms_since,
            _ => None,
        };
        let mut found = Vec::with_capacity(new);
        for entry in read[..new].iter().rev() {
            if let Some(item) = self.classify(scope, &entry.entry, since) {
                found.push(item);
            }
        }
        Ok(Walk {
            scope: scope.clone(),
            found,
            checkpoint: fingerprint(&shas),
            gap,
        })
    }

    /// Reads history from the newest entry, in one atomic script call, until `checkpoint` is
    /// found (returning its position) or history ends (without a checkpoint: all of it).
    async fn read_until(
        &mut self,
        scope: &Scope,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(Vec<Read>, Option<usize>), OutboxError> {
        let mut invocation = HISTORY_SCRIPT.prepare_invoke();
        invocation
            .key(scope.history_key())
            .arg(MAX_PAYLOAD_BYTES)
            .arg(PAGE);
        if let Some(Checkpoint::Entries(shas)) = checkpoint {
            invocation.arg(shas);
        }
        let reply: Value = invocation.invoke_async(self.con).await?;
        let read = parse_page(reply)?;
        let found_at = match checkpoint {
            Some(checkpoint) => match self.find(scope, &read, checkpoint, true) {
                Search::Found(at) => Some(at),
                Search::NotFound | Search::ReadMore => None,
            },
            None => None,
        };
        Ok((read, found_at))
    }

    /// Where the checkpoint is in what was read so far (newest first).
    fn find(
        &mut self,
        scope: &Scope,
        read: &[Read],
        checkpoint: &Checkpoint,
        ended: bool,
    ) -> Search {
        match checkpoint {
            Checkpoint::Empty if ended => Search::Found(read.len()),
            Checkpoint::Empty => Search::ReadMore,
            Checkpoint::LegacyId(id) => {
                let at = read.iter().position(|r| {
                    matches!(
                        self.decoder.history_entry(scope, &r.entry),
                        HistoryEntry::Message(m)
                            if matches!(&m.event, ChatEvent::Message(msg) if msg.id == *id)
                    )
                });
                match at {
                    Some(at) => Search::Found(at),
                    None if ended => Search::NotFound,
                    None => Search::ReadMore,
                }
            }
            Checkpoint::Entries(shas) => find_sequence(read, shas, ended),
        }
    }

    /// Whether the oldest entry still in history was enqueued by this bridge: then what was
    /// trimmed below it is older than something it enqueued after its last pass, which it
    /// received live (no gap).
    async fn oldest_was_enqueued(
        &mut self,
        scope: &Scope,
        read: &[Read],
    ) -> Result<bool, OutboxError> {
        let Some(oldest) = read.last() else {
            return Ok(false);
        };
        let key = entry_key(scope, oldest);
        // What one of this process's links recorded, or an earlier version for every link.
        let message = OutboundKind::Event(EventKind::Message);
        let mut members = vec![key.clone()];
        members.extend(
            self.routes
                .links_for(scope, message)
                .iter()
                .map(|link| seen_member(link, &key)),
        );
        let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
            .arg(keys::seen(&scope.channel()))
            .arg(&members)
            .query_async(&mut *self.con)
            .await?;
        Ok(scores.iter().any(Option::is_some))
    }

    /// Turns a history entry into something to enqueue, or `None` (counted skip, or a DM
    /// message from before `since`).
    fn classify(
        &mut self,
        scope: &Scope,
        entry: &RawEntry,
        since: Option<Timestamp>,
    ) -> Option<Found> {
        let key = match entry {
            RawEntry::Whole(bytes) => content_id(&scope.channel(), bytes),
            RawEntry::Oversized { sha1, .. } => format!("x-{sha1}"),
        };
        match self.decoder.history_entry(scope, entry) {
            HistoryEntry::Message(received) => {
                let ChatEvent::Message(message) = &received.event else {
                    return None;
                };
                if let Some(since) = since
                    && message.timestamp.naive() < since.naive() - DM_CLOCK_SKEW
                {
                    return None;
                }
                Some(Found {
                    key,
                    event_id: message.id.clone(),
                    origin: received.event.origin().map(str::to_owned),
                    payload: received.raw,
                    dead: None,
                })
            }
            HistoryEntry::Dead { .. } if since.is_some() => None,
            HistoryEntry::Dead { payload, reason } => Some(Found {
                event_id: key.clone(),
                key,
                payload,
                origin: None,
                dead: Some(reason),
            }),
            HistoryEntry::Skipped => None,
        }
    }
}

/// The outcome of looking for a checkpoint in what was read so far.
#[derive(Debug, PartialEq, Eq)]
enum Search {
    Found(usize),
    NotFound,
    ReadMore,
}

/// The first position (newest first) where `shas` starts in `read`. At the end of history a
/// partial match counts (the older part of the fingerprint was trimmed away).
fn find_sequence(read: &[Read], shas: &[String], ended: bool) -> Search {
    for at in 0..read.len() {
        let mut matched = 0;
        let mut undecided = false;
        for (offset, sha) in shas.iter().enumerate() {
            match read.get(at + offset) {
                Some(r) if r.sha1 == *sha => matched += 1,
                Some(_) => break,
                None => {
                    undecided = !ended;
                    break;
                }
            }
        }
        if undecided {
            return Search::ReadMore;
        }
        if matched == shas.len() || (matched > 0 && at + matched == read.len()) {
            return Search::Found(at);
        }
    }
    if ended {
        Search::NotFound
    } else {
        Search::ReadMore
    }
}

/// The de-dup key of a history entry.
fn entry_key(scope: &Scope, read: &Read) -> String {
    match &read.entry {
        RawEntry::Whole(bytes) => content_id(&scope.channel(), bytes),
        RawEntry::Oversized { sha1, .. } => format!("x-{sha1}"),
    }
}

/// Parses a [`HISTORY`] reply.
fn parse_page(reply: Value) -> Result<Vec<Read>, OutboxError> {
    let bad = |what: &str| OutboxError::Reply(format!("history page: {what}"));
    let Value::Array(items) = reply else {
        return Err(bad("not an array"));
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(sha1), Some(entry)) = (items.next(), items.next()) {
        let sha1 = match sha1 {
            Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|_| bad("digest"))?,
            _ => return Err(bad("digest")),
        };
        let entry = match entry {
            Value::BulkString(bytes) => RawEntry::Whole(bytes),
            Value::Array(parts) => match <[Value; 2]>::try_from(parts) {
                Ok([Value::Int(len), Value::BulkString(excerpt)]) => RawEntry::Oversized {
                    len: usize::try_from(len).unwrap_or(usize::MAX),
                    sha1: sha1.clone(),
                    excerpt,
                },
                _ => return Err(bad("oversized entry")),
            },
            _ => return Err(bad("entry")),
        };
        out.push(Read { sha1, entry });
    }
    Ok(out)
}

impl Pass {
    /// The events to enqueue for this pass, merged with `held` (live events that arrived
    /// during the pass, in arrival order), and what to commit with them: checkpoints, the DM
    /// watermark, and the de-dup sets of the walked and `touched` scopes pruned to what may
    /// still matter.
    ///
    /// History order is publish order, so the merge keeps it. What history holds below its
    /// first held message was missed before the subscription began: it comes first. A held
    /// message that history also holds comes after every history entry below it (entries
    /// missed while the subscription was down again, even after an earlier held event) and
    /// before those above it; signals and held messages history does not hold yet keep their
    /// place among the held events. What history holds above the last held message comes last.
    pub fn resolve(
        self,
        held: Vec<Enqueue>,
        routes: &Routes,
        touched: impl IntoIterator<Item = Scope>,
    ) -> (Vec<Enqueue>, Commit, Summary) {
        let mut commit = Commit::default();
        let mut summary = Summary::default();
        let below = self.started_us - SEEN_SLACK.as_micros() as i64;
        let mut pruned: HashSet<Scope> = HashSet::new();
        let mut walks: Vec<Vec<Enqueue>> = Vec::with_capacity(self.walks.len());
        let mut notices = Vec::new();
        for walk in self.walks {
            summary.scopes += 1;
            if walk.gap {
                summary.gaps += 1;
                tracing::warn!(scope = %walk.scope, "history was trimmed past the checkpoint: messages may have been missed");
                notices.push(gap_notice(&walk.scope, routes));
            }
            commit
                .checkpoints
                .push((walk.scope.clone(), walk.checkpoint));
            pruned.insert(walk.scope.clone());
            let scope = walk.scope;
            walks.push(
                walk.found
                    .into_iter()
                    .map(|found| found_event(&scope, found, routes))
                    .collect(),
            );
        }
        pruned.extend(touched);
        commit.prune = pruned.into_iter().map(|scope| (scope, below)).collect();
        if self.dms {
            commit
                .marks
                .push((keys::DMS_SWEPT_AT.to_owned(), self.started_at));
        }
        let events = merge(notices, walks, held, &mut summary);
        (events, commit, summary)
    }
}

/// A history entry as an event to enqueue.
fn found_event(scope: &Scope, found: Found, routes: &Routes) -> Enqueue {
    let message = OutboundKind::Event(EventKind::Message);
    let links = routes.links_for(scope, message);
    Enqueue {
        origin: origin_among(&links, found.origin.as_deref()),
        links,
        scope: scope.clone(),
        key: found.key,
        event_id: found.event_id,
        kind: message,
        payload: found.payload,
        dead: found.dead,
    }
}

/// The history entries of a pass being merged with held events.
struct History {
    /// Each scope's entries, oldest first, not yet emitted.
    walks: Vec<std::vec::IntoIter<Enqueue>>,
    /// How many entries of each walk have been taken.
    emitted: Vec<usize>,
    /// Positions of entries that also arrived live: emitted as held events, not here.
    held: HashSet<(usize, usize)>,
}

impl History {
    /// Emits walk `w`'s entries before position `end`, skipping those that were held.
    fn take_until(&mut self, out: &mut Vec<Enqueue>, w: usize, end: usize, summary: &mut Summary) {
        while self.emitted[w] < end {
            let Some(event) = self.walks[w].next() else {
                return;
            };
            let p = self.emitted[w];
            self.emitted[w] += 1;
            if !self.held.contains(&(w, p)) {
                summary.enqueued += 1;
                summary.dead += usize::from(event.dead.is_some());
                out.push(event);
            }
        }
    }
}

/// Merges each scope's history entries (oldest first) with the held live events, as
/// [`Pass::resolve`] describes; counts the history entries that were not also held.
fn merge(
    notices: Vec<Enqueue>,
    walks: Vec<Vec<Enqueue>>,
    held: Vec<Enqueue>,
    summary: &mut Summary,
) -> Vec<Enqueue> {
    // Where each history entry stands: its walk and position there.
    let mut position: HashMap<(&Scope, &str), (usize, usize)> = HashMap::new();
    for (w, walk) in walks.iter().enumerate() {
        for (p, event) in walk.iter().enumerate() {
            position.insert((&event.scope, event.key.as_str()), (w, p));
        }
    }
    let held_at: Vec<Option<(usize, usize)>> = held
        .iter()
        .map(|event| position.get(&(&event.scope, event.key.as_str())).copied())
        .collect();
    let mut history = History {
        walks: walks.into_iter().map(Vec::into_iter).collect(),
        emitted: Vec::new(),
        held: held_at.iter().flatten().copied().collect(),
    };
    history.emitted = vec![0; history.walks.len()];
    let mut out = notices;
    // What history holds below its first held message was missed before the subscription
    // began: older than anything held.
    for w in 0..history.walks.len() {
        let first_held = held_at
            .iter()
            .flatten()
            .filter(|(held_w, _)| *held_w == w)
            .map(|(_, p)| *p)
            .min()
            .unwrap_or(usize::MAX);
        history.take_until(&mut out, w, first_held, summary);
    }
    for (event, at) in held.into_iter().zip(held_at) {
        if let Some((w, p)) = at {
            history.take_until(&mut out, w, p, summary);
        }
        out.push(event);
    }
    for w in 0..history.walks.len() {
        history.take_until(&mut out, w, usize::MAX, summary);
    }
    out
}

fn gap_notice(scope: &Scope, routes: &Routes) -> Enqueue {
    let line = SystemLine {
        content: format!(
            "chatbridge: messages in {scope} may have been missed while the bridge was away \
             (history was trimmed past its last checkpoint)"
        ),
        timestamp: Timestamp::now(),
        event: None,
        user_id: None,
        username: None,
        extra: [("notice".to_owned(), "gap".into())].into_iter().collect(),
    };
    let payload = crate::pyjson::to_string(&ChatEvent::System(line));
    let key = content_id(&scope.channel(), &payload);
    Enqueue {
        event_id: key.clone(),
        key,
        links: routes.links_for(scope, OutboundKind::Notice),
        scope: scope.clone(),
        kind: OutboundKind::Notice,
        payload,
        dead: None,
        origin: None,
    }
}

/// Enqueues a resolved pass in script calls of bounded size, then commits its checkpoints and
/// prunes in calls of bounded size too (a scope's checkpoint only ever moves after its events
/// are enqueued; a crash in between means a scope is read again, and its entries de-duplicated).
pub async fn enqueue_pass(
    outbox: &mut Outbox,
    events: &[Enqueue],
    commit: &Commit,
) -> Result<usize, OutboxError> {
    const EVENTS_PER_CALL: usize = 500;
    const SCOPES_PER_CALL: usize = 500;
    let mut added = 0;
    for chunk in events.chunks(EVENTS_PER_CALL) {
        added += outbox
            .enqueue_and_commit(chunk, &Commit::default())
            .await?
            .added;
    }
    let checkpoints = commit.checkpoints.chunks(SCOPES_PER_CALL);
    let prunes = commit.prune.chunks(SCOPES_PER_CALL);
    let calls = checkpoints.len().max(prunes.len()).max(1);
    let (mut checkpoints, mut prunes) = (checkpoints, prunes);
    for call in 0..calls {
        let part = Commit {
            checkpoints: checkpoints.next().map(<[_]>::to_vec).unwrap_or_default(),
            prune: prunes.next().map(<[_]>::to_vec).unwrap_or_default(),
            // The DM watermark moves once every scope of the pass is committed.
            marks: if call + 1 == calls {
                commit.marks.clone()
            } else {
                Vec::new()
            },
        };
        outbox.enqueue_and_commit(&[], &part).await?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(shas: &[&str]) -> Vec<Read> {
        shas.iter()
            .map(|s| Read {
                sha1: (*s).to_owned(),
                entry: RawEntry::Whole(Vec::new()),
            })
            .collect()
    }

    fn shas(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_checkpoint_is_found_as_a_sequence_not_a_single_entry() {
        let fp = shas(&["c", "b", "a"]);
        // A re-posted copy of the newest checkpoint entry above it does not fool the search.
        assert_eq!(
            find_sequence(&read(&["c", "y", "x", "c", "b", "a"]), &fp, true),
            Search::Found(3)
        );
        assert_eq!(
            find_sequence(&read(&["x", "c", "b"]), &fp, false),
            Search::ReadMore
        );
        // At the very end of history, the older part of the fingerprint may be trimmed.
        assert_eq!(
            find_sequence(&read(&["x", "c", "b"]), &fp, true),
            Search::Found(1)
        );
        assert_eq!(
            find_sequence(&read(&["x", "y"]), &fp, true),
            Search::NotFound
        );
        assert_eq!(
            find_sequence(&read(&["x", "y"]), &fp, false),
            Search::ReadMore
        );
    }

    fn event(scope: &str, key: &str) -> Enqueue {
        Enqueue {
            scope: Scope::Room(scope.into()),
            key: key.into(),
            event_id: key.into(),
            kind: OutboundKind::Event(EventKind::Message),
            payload: String::new(),
            links: Vec::new(),
            dead: None,
            origin: None,
        }
    }

    fn keys(events: &[Enqueue]) -> Vec<&str> {
        events.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn history_and_held_events_merge_in_publish_order() {
        // History: a b missed before the subscription; c held; d e missed while it was down
        // again; f held; g after. Held: signal x, c, signal y, f, z not in history yet.
        let walk: Vec<Enqueue> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|k| event("general", k))
            .collect();
        let other = vec![event("random", "r1")];
        let held: Vec<Enqueue> = ["x", "c", "y", "f", "z"]
            .iter()
            .map(|k| event("general", k))
            .collect();
        let mut summary = Summary::default();
        let merged = merge(
            vec![event("general", "notice")],
            vec![walk, other],
            held,
            &mut summary,
        );
        assert_eq!(
            keys(&merged),
            [
                "notice", "a", "b", "r1", "x", "c", "y", "d", "e", "f", "z", "g"
            ]
        );
        assert_eq!(summary.enqueued, 6, "history entries not also held");
    }

    #[test]
    fn checkpoints_parse_in_every_stored_form() {
        assert_eq!(Checkpoint::parse("-"), Checkpoint::Empty);
        assert_eq!(
            Checkpoint::parse("v2:aa,bb"),
            Checkpoint::Entries(shas(&["aa", "bb"]))
        );
        assert_eq!(
            Checkpoint::parse("3f1c-uuid"),
            Checkpoint::LegacyId("3f1c-uuid".into())
        );
        assert_eq!(fingerprint(&shas(&["a", "b", "c", "d"])), "v2:a,b,c");
        assert_eq!(fingerprint(&[]), EMPTY);
    }
}
