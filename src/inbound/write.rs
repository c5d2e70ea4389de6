//! The inbound write: one Lua script that de-duplicates on the sender's id and writes an event
//! the way the seed's operation would (publish, history push and trim, member set, receipts),
//! recording in the same step that chatbridge wrote it on behalf of its origin link
//! (`chatbridge:bridged:{channel}`), so the intake never sends it back there.

use redis::Script;
use redis::aio::ConnectionManager;

use crate::chat::model::{ChatEvent, Scope, content_id};
use crate::chat::pyjson;
use crate::redis::keys;

/// How many bridged keys one scope remembers (as `store.rs` does): far more than a history holds.
const BRIDGED_CAP: usize = 10_000;

/// De-duplicates and writes one event (contract: the top of the file).
const WRITE: &str = include_str!("../redis/scripts/inbound_write.lua");

/// One event to write on behalf of a link.
#[derive(Debug, Clone)]
pub struct Write {
    /// The room or DM written to.
    pub scope: Scope,
    /// The event, `origin` (and `external_id`) already in its extra fields.
    pub event: ChatEvent,
    /// The sender's id for this event (`webhook-id`, Slack `event_id`): a second write with the
    /// same key within `dedup_secs` writes nothing.
    pub dedup_key: String,
    /// How long the de-dup key is remembered.
    pub dedup_secs: u64,
    /// History kept for messages (`LTRIM 0 limit-1`).
    pub history_limit: usize,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written now; the event's id (a message's `id`, else its payload key).
    New(String),
    /// The de-dup key was seen before: nothing written; the id the first write answered.
    Duplicate(String),
}

/// Runs [`WRITE`] on a shared, reconnecting connection.
#[derive(Clone)]
pub struct Writer {
    /// Shared with the outbox (multiplexed, reconnecting).
    con: ConnectionManager,
    /// [`WRITE`], sent by hash (loaded again after a Redis restart).
    script: std::sync::Arc<Script>,
    /// How many bridged keys one scope keeps.
    bridged_cap: usize,
}

impl Writer {
    pub fn new(con: ConnectionManager) -> Self {
        Self::with_bridged_cap(con, BRIDGED_CAP)
    }

    /// A writer whose scopes remember only the newest `cap` bridged keys (tests use a small one).
    pub fn with_bridged_cap(con: ConnectionManager, cap: usize) -> Self {
        Self {
            con,
            script: std::sync::Arc::new(Script::new(WRITE)),
            bridged_cap: cap.max(1),
        }
    }

    pub async fn write(&self, write: &Write) -> redis::RedisResult<Written> {
        let channel = write.scope.channel();
        let payload = pyjson::to_string(&write.event);
        let key = content_id(&channel, &payload);
        let (op, user, last_read, answer) = match &write.event {
            ChatEvent::Message(m) => ("message", m.user_id.to_string(), "", m.id.clone()),
            ChatEvent::System(line) => {
                let op = match line.presence_kind() {
                    Some(crate::chat::model::Presence::Join) => "join",
                    Some(crate::chat::model::Presence::Leave) => "leave",
                    None => "signal",
                };
                let user = line.user_id.as_ref().map(|u| u.to_string());
                (op, user.unwrap_or_default(), "", key.clone())
            }
            ChatEvent::Typing(t) => ("signal", t.user_id.to_string(), "", key.clone()),
            ChatEvent::ReadReceipt(r) => (
                "read",
                r.user_id.to_string(),
                r.last_read.as_str(),
                key.clone(),
            ),
        };
        let last_index = write.history_limit.saturating_sub(1);
        let (new, id): (i64, String) = self
            .script
            .key(&write.dedup_key)
            .key(write.scope.history_key())
            .key(keys::bridged(&write.scope.channel()))
            .key(keys::members(&channel))
            .key(keys::read_receipts(&channel))
            .arg(&channel)
            .arg(&payload)
            .arg(op)
            .arg(last_index)
            .arg(&key)
            .arg(write.dedup_secs)
            .arg(&answer)
            .arg(user)
            .arg(last_read)
            .arg(self.bridged_cap)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(if new == 1 {
            Written::New(id)
        } else {
            Written::Duplicate(id)
        })
    }
}
