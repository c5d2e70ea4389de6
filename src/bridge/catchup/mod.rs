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
//!
//! Files: this one (the pass's types, what a pass reads), [`walk`] (which scopes may hold
//! something new, each history read down to its checkpoint, entries classified), [`resolve`]
//! (a pass merged with the live events held meanwhile, then enqueued).

use std::collections::HashSet;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::bridge::decode::{Decoder, RawEntry};
use crate::bridge::outbox::{Commit, OutboxError};
use crate::bridge::route::Routes;
use crate::chat::model::{Scope, Timestamp};
use crate::redis::keys;

mod resolve;
mod walk;

pub use resolve::enqueue_pass;

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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shas(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
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
