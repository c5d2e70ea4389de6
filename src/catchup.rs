//! Catch-up: Pub/Sub forgets whatever was published while nobody listened, history does not.
//! After every (re)subscribe, and periodically as a safety net, each watched scope's history
//! is walked from the newest entry back to the newest one already enqueued (in the de-dup
//! window); everything newer is enqueued, oldest first.
//!
//! Checkpoints (`chatbridge:checkpoints`, channel → last enqueued message id) decide the rest:
//! - a room seen for the first time starts from now: its checkpoint is set to the newest
//!   history entry (or [`EMPTY`] when history is empty) and nothing old is replayed;
//! - a room this process watched before whose checkpoint vanished (Redis restarted without
//!   persistence) is not new: everything its history holds was written since, and is enqueued;
//! - a DM conversation found without a checkpoint after DM mirroring began is new: all of it
//!   is enqueued (it started while nobody listened);
//! - when the checkpoint has been trimmed out of history, history is enqueued and the scope's
//!   links get one notice that messages may have been missed.

use std::collections::HashSet;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::decode::Decoder;
use crate::model::{ChatEvent, EventKind, OutboundKind, Scope, SystemLine, Timestamp, content_id};
use crate::outbox::{Enqueue, Outbox, OutboxError};
use crate::route::Routes;

/// Checkpoint value of a scope whose history was empty when we started watching it.
pub const EMPTY: &str = "-";
/// Checkpoint field that records that DM mirroring has begun (its value: when).
const DMS_SINCE: &str = "chat:dm:*";
/// History entries read per round trip.
const PAGE: isize = 100;
/// Events per enqueue script call.
const CHUNK: usize = 500;

/// History sizes, to tell a full (possibly trimmed) history from a short one.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub room: usize,
    pub dm: usize,
}

/// What a catch-up pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub scopes: usize,
    pub enqueued: usize,
    pub gaps: usize,
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

/// Everything a catch-up pass needs.
pub struct CatchUp<'a> {
    /// For history reads and scans.
    pub con: &'a mut ConnectionManager,
    pub outbox: &'a mut Outbox,
    pub routes: &'a Routes,
    pub decoder: &'a mut Decoder,
    pub limits: Limits,
    /// The de-dup window passed to enqueue.
    pub window: usize,
    pub watched: &'a mut Watched,
}

impl CatchUp<'_> {
    /// Catches up every watched room, and every DM conversation when DMs are mirrored.
    pub async fn all(&mut self) -> Result<Summary, OutboxError> {
        let mut summary = Summary::default();
        let rooms: Vec<Scope> = self
            .routes
            .rooms()
            .map(|r| Scope::Room(r.to_owned()))
            .collect();
        for scope in self.unsettled(rooms).await? {
            self.scope(&scope, false, &mut summary).await?;
        }
        if self.routes.mirrors_dms() {
            let marked: bool = self
                .con
                .hexists(crate::outbox::CHECKPOINTS, DMS_SINCE)
                .await?;
            let dms_known = marked || self.watched.dms;
            let dms = self.dm_scopes().await?;
            for scope in self.unsettled(dms).await? {
                self.scope(&scope, dms_known, &mut summary).await?;
            }
            self.watched.dms = true;
            if !marked {
                let _: () = self
                    .con
                    .hset(
                        crate::outbox::CHECKPOINTS,
                        DMS_SINCE,
                        Timestamp::now().to_string(),
                    )
                    .await?;
            }
        }
        Ok(summary)
    }

    /// The scopes that may need work: all but those whose newest history entry is their
    /// checkpoint or already enqueued (the usual case for a periodic sweep), found with a few
    /// pipelined round trips instead of a history walk per scope.
    async fn unsettled(&mut self, scopes: Vec<Scope>) -> Result<Vec<Scope>, OutboxError> {
        let mut unsettled = Vec::new();
        for chunk in scopes.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for scope in chunk {
                pipe.lindex(scope.history_key(), 0)
                    .hget(crate::outbox::CHECKPOINTS, scope.channel());
            }
            let replies: Vec<Option<Vec<u8>>> = pipe.query_async(self.con).await?;
            let mut newest_ids = Vec::new();
            for (scope, pair) in chunk.iter().zip(replies.chunks(2)) {
                let (newest, checkpoint) = match pair {
                    [newest, checkpoint] => (newest, checkpoint.as_deref()),
                    _ => (&None, None),
                };
                let id = newest.as_deref().and_then(|raw| {
                    match self.decoder.decode_in(scope.clone(), raw).map(|r| r.event) {
                        Some(ChatEvent::Message(m)) => Some(m.id),
                        _ => None,
                    }
                });
                match (checkpoint, id) {
                    (None, _) => unsettled.push(scope.clone()),
                    (Some(_), None) => {}
                    (Some(checkpoint), Some(id)) if checkpoint == id.as_bytes() => {}
                    (Some(_), Some(id)) => newest_ids.push((scope, id)),
                }
            }
            if newest_ids.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for (scope, id) in &newest_ids {
                pipe.zscore(crate::outbox::seen_key(scope), id);
            }
            let scores: Vec<Option<f64>> = pipe.query_async(self.con).await?;
            for ((scope, _), score) in newest_ids.into_iter().zip(scores) {
                if score.is_none() {
                    unsettled.push(scope.clone());
                }
            }
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
                .arg("chat:dm:*:history")
                .arg("COUNT")
                .arg(1000)
                .query_async(self.con)
                .await?;
            scopes.extend(
                keys.iter()
                    .filter_map(|key| key.strip_suffix(":history").and_then(Scope::from_channel)),
            );
            if next == 0 {
                scopes.sort();
                scopes.dedup();
                return Ok(scopes);
            }
            cursor = next;
        }
    }

    /// Catches up one scope. `unknown_is_new`: a scope without checkpoint started while we
    /// were not listening (so all its history is new) rather than before we ever watched.
    async fn scope(
        &mut self,
        scope: &Scope,
        unknown_is_new: bool,
        summary: &mut Summary,
    ) -> Result<(), OutboxError> {
        summary.scopes += 1;
        let checkpoint = self.outbox.checkpoint(scope).await?;
        let first_time = !self.watched.scopes.contains(scope);
        if checkpoint.is_none() && !unknown_is_new && first_time {
            self.start_from_now(scope).await?;
            self.watched.scopes.insert(scope.clone());
            return Ok(());
        }
        let limit = match scope {
            Scope::Room(_) => self.limits.room,
            Scope::Dm(..) => self.limits.dm,
        };
        let (mut unseen, found, length) = self.walk(scope, checkpoint.as_deref()).await?;
        let started_empty = checkpoint.as_deref() == Some(EMPTY) || checkpoint.is_none();
        let gap = !found && (!started_empty || length >= limit);
        let mut batch = Vec::with_capacity(unseen.len() + 1);
        if gap {
            summary.gaps += 1;
            tracing::warn!(scope = %scope, "history was trimmed past the checkpoint: messages may have been missed");
            batch.push(self.gap_notice(scope));
        }
        unseen.reverse();
        batch.extend(unseen);
        summary.enqueued += batch.len();
        for chunk in batch.chunks(CHUNK) {
            self.outbox.enqueue(chunk, self.window).await?;
        }
        self.watched.scopes.insert(scope.clone());
        Ok(())
    }

    /// Records the newest history entry (or [`EMPTY`]) as the checkpoint, replaying nothing.
    /// The entry is not marked as enqueued: if it is also arriving live right now (published
    /// after we subscribed), it is still delivered.
    async fn start_from_now(&mut self, scope: &Scope) -> Result<(), OutboxError> {
        let newest: Option<Vec<u8>> = self.con.lindex(scope.history_key(), 0).await?;
        let newest = newest.and_then(|raw| self.decoder.decode_in(scope.clone(), &raw));
        let checkpoint = match newest.map(|r| r.event) {
            Some(ChatEvent::Message(m)) => m.id,
            _ => EMPTY.to_owned(),
        };
        let _: () = self
            .con
            .hset(crate::outbox::CHECKPOINTS, scope.channel(), checkpoint)
            .await?;
        Ok(())
    }

    /// Walks history newest first until an already-enqueued message or the checkpoint. Returns
    /// the messages newer than that (newest first), whether it was found, and how many
    /// entries were read.
    async fn walk(
        &mut self,
        scope: &Scope,
        checkpoint: Option<&str>,
    ) -> Result<(Vec<Enqueue>, bool, usize), OutboxError> {
        let mut unseen = Vec::new();
        let mut read = 0usize;
        let mut start: isize = 0;
        loop {
            let page: Vec<Vec<u8>> = self
                .con
                .lrange(scope.history_key(), start, start + PAGE - 1)
                .await?;
            read += page.len();
            let messages: Vec<(String, String, Option<String>)> = page
                .iter()
                .filter_map(|raw| self.decoder.decode_in(scope.clone(), raw))
                .filter_map(|received| match &received.event {
                    ChatEvent::Message(m) => {
                        let origin = received.event.origin().map(str::to_owned);
                        Some((m.id.clone(), received.raw, origin))
                    }
                    _ => None,
                })
                .collect();
            let ids: Vec<&str> = messages.iter().map(|(id, ..)| id.as_str()).collect();
            let seen = self.outbox.seen(scope, &ids).await?;
            let kind = OutboundKind::Event(EventKind::Message);
            let mut found = false;
            for ((id, raw, origin), seen) in messages.into_iter().zip(seen) {
                if seen || Some(id.as_str()) == checkpoint {
                    found = true;
                    break;
                }
                unseen.push(Enqueue {
                    links: self.routes.links_for(scope, kind, origin.as_deref()),
                    scope: scope.clone(),
                    event_id: id,
                    kind,
                    payload: raw,
                });
            }
            if found || page.len() < PAGE as usize {
                return Ok((unseen, found, read));
            }
            start += PAGE;
        }
    }

    fn gap_notice(&self, scope: &Scope) -> Enqueue {
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
        Enqueue {
            event_id: content_id(&scope.channel(), &payload),
            links: self.routes.links_for(scope, OutboundKind::Notice, None),
            scope: scope.clone(),
            kind: OutboundKind::Notice,
            payload,
        }
    }
}
