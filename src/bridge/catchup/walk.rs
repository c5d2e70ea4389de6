//! The walk: for each scope, which histories may hold something new (one script call per
//! chunk of scopes), then its history read newest first down to its checkpoint, and each
//! entry found classified (relayed, dead-lettered, or a gap first).

use std::sync::LazyLock;

use redis::{AsyncCommands, Script, Value};

use super::{
    CHUNK, CatchUp, Checkpoint, DM_CLOCK_SKEW, FINGERPRINT_LEN, Found, PAGE, Read, Walk,
    fingerprint,
};
use crate::bridge::decode::{HistoryEntry, MAX_PAYLOAD_BYTES, RawEntry};
use crate::bridge::outbox::{OutboxError, seen_member};
use crate::chat::model::{ChatEvent, EventKind, OutboundKind, Scope, Timestamp, content_id};
use crate::redis::keys;

/// Reads one history atomically down to a checkpoint (contract: the top of the file).
const HISTORY: &str = include_str!("../../redis/scripts/catchup_history.lua");

/// Which scopes of a batch may have something new (contract: the top of the file).
const UNSETTLED: &str = include_str!("../../redis/scripts/catchup_unsettled.lua");

/// The scripts, hashed once (EVALSHA, loaded again automatically after a Redis restart).
static HISTORY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HISTORY));
static UNSETTLED_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(UNSETTLED));

/// A scope that may have something new, as [`UNSETTLED`] found it.
pub(super) struct Unsettled {
    pub(super) scope: Scope,
    /// The fingerprint of its history now.
    pub(super) now: String,
    /// Whether it has a checkpoint (new or legacy form).
    pub(super) known: bool,
}

impl CatchUp<'_> {
    /// The scopes that may need work: those whose history does not start with their
    /// checkpoint's fingerprint, found in one script call per [`CHUNK`] scopes.
    pub(super) async fn unsettled(
        &mut self,
        scopes: Vec<Scope>,
    ) -> Result<Vec<Unsettled>, OutboxError> {
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
    pub(super) async fn dm_scopes(&mut self) -> Result<Vec<Scope>, OutboxError> {
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
    pub(super) async fn walk(
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
}
