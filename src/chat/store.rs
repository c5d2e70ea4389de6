//! The seed's chat operations on Redis, written exactly as the seed writes them (`docs/wire.md`) but
//! each one as a single MULTI/EXEC, so a reader never sees a message published and not stored.

use redis::aio::ConnectionManager;
use serde_json::{Map, Value};

use crate::chat::model::{
    ChatEvent, EventError, Message, Presence, ReadReceipt, Scope, SystemLine, Timestamp, Typing,
    UserId, room_name_problem,
};
use crate::chat::pyjson;
use crate::redis::keys;

/// The message fields the seed defines; an `extra` map may not repeat them.
const MESSAGE_FIELDS: [&str; 7] = [
    "id",
    "user_id",
    "username",
    "content",
    "room",
    "timestamp",
    "type",
];

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused the command or the connection is down (the manager reconnects).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A room name `model::room_name_problem` refuses; nothing was written.
    #[error("refused room name `{room}`: {problem}")]
    BadRoom { room: String, problem: &'static str },
    /// A DM user id that would make the DM key names ambiguous; nothing was written.
    #[error("refused user id `{id}` in a DM channel name: {problem}")]
    BadDmUser { id: String, problem: &'static str },
    /// An `extra` field that would duplicate a seed field in the JSON; nothing was written.
    #[error("extra field `{0}` would repeat a field the seed defines")]
    ReservedField(String),
}

/// How many messages each history list keeps (`LTRIM 0 limit-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Kept per room: the seed trims rooms to 1000.
    pub room: usize,
    /// Kept per DM pair: the seed trims DMs to 500.
    pub dm: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            room: 1000,
            dm: 500,
        }
    }
}

/// One history list entry: the stored bytes and what they decode to. History may hold anything
/// other writers pushed, so a bad entry is reported, not fatal.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The entry as stored (lossily decoded if it is not UTF-8), for showing or relaying.
    pub raw: String,
    /// The decoded event, or why the entry is not one.
    pub event: Result<ChatEvent, EventError>,
}

impl HistoryEntry {
    fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            raw: String::from_utf8_lossy(bytes).into_owned(),
            event: ChatEvent::from_slice(bytes),
        }
    }
}

/// The chat as the seed's clients see it, on one auto-reconnecting Redis connection.
#[derive(Clone)]
pub struct Store {
    /// Shared, clone-able and reconnecting: every operation borrows a clone of it.
    con: ConnectionManager,
    /// History trims; the seed's by default.
    limits: HistoryLimits,
}

impl Store {
    /// Connects to Redis (the connection manager reconnects on its own afterwards).
    pub async fn connect(client: redis::Client, limits: HistoryLimits) -> Result<Self, StoreError> {
        let con = ConnectionManager::new(client).await?;
        Ok(Self::new(con, limits))
    }

    pub fn new(con: ConnectionManager, limits: HistoryLimits) -> Self {
        Self { con, limits }
    }

    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Adds the user to the room's members and announces it with a system line.
    pub async fn join(
        &self,
        room: &str,
        user_id: &UserId,
        username: &str,
    ) -> Result<SystemLine, StoreError> {
        self.presence(room, user_id, username, Presence::Join).await
    }

    /// Removes the user from the room's members and announces it with a system line.
    pub async fn leave(
        &self,
        room: &str,
        user_id: &UserId,
        username: &str,
    ) -> Result<SystemLine, StoreError> {
        self.presence(room, user_id, username, Presence::Leave)
            .await
    }

    async fn presence(
        &self,
        room: &str,
        user_id: &UserId,
        username: &str,
        presence: Presence,
    ) -> Result<SystemLine, StoreError> {
        let scope = room_scope(room)?;
        let line = SystemLine::presence(presence, user_id.clone(), username);
        let event = ChatEvent::System(line.clone());
        let members = keys::members(&scope.channel());
        let command = match presence {
            Presence::Join => "SADD",
            Presence::Leave => "SREM",
        };
        redis::pipe()
            .atomic()
            .cmd(command)
            .arg(&members)
            .arg(user_id.to_string())
            .ignore()
            .cmd("PUBLISH")
            .arg(scope.channel())
            .arg(pyjson::to_string(&event))
            .ignore()
            .query_async::<()>(&mut self.con.clone())
            .await?;
        Ok(line)
    }

    /// Sends a message to a room: publish, store in history, trim history.
    pub async fn send(
        &self,
        room: &str,
        user_id: &UserId,
        username: &str,
        content: &str,
        extra: Map<String, Value>,
    ) -> Result<Message, StoreError> {
        let scope = room_scope(room)?;
        let message = new_message(user_id, username, content, Some(room), extra)?;
        self.store_message(&scope, message, self.limits.room).await
    }

    /// Sends a direct message from one user to another (`room` is `null`, as in the seed).
    pub async fn send_dm(
        &self,
        from: &UserId,
        to: &UserId,
        username: &str,
        content: &str,
        extra: Map<String, Value>,
    ) -> Result<Message, StoreError> {
        let scope = dm_scope(from, to)?;
        let message = new_message(from, username, content, None, extra)?;
        self.store_message(&scope, message, self.limits.dm).await
    }

    async fn store_message(
        &self,
        scope: &Scope,
        message: Message,
        limit: usize,
    ) -> Result<Message, StoreError> {
        let event = ChatEvent::Message(message.clone());
        let json = pyjson::to_string(&event);
        let history = scope.history_key();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if event.origin().is_some() {
            record_bridged(&mut pipe, scope, &json);
        }
        pipe.cmd("PUBLISH")
            .arg(scope.channel())
            .arg(&json)
            .ignore()
            .cmd("LPUSH")
            .arg(&history)
            .arg(&json)
            .ignore()
            .cmd("LTRIM")
            .arg(&history)
            .arg(0)
            .arg(last_index(limit))
            .ignore()
            .query_async::<()>(&mut self.con.clone())
            .await?;
        Ok(message)
    }

    /// Publishes a typing indicator in a room.
    pub async fn typing(&self, room: &str, user_id: &UserId) -> Result<Typing, StoreError> {
        let scope = room_scope(room)?;
        let typing = Typing {
            user_id: user_id.clone(),
            timestamp: Timestamp::now(),
            extra: Map::new(),
        };
        let json = pyjson::to_string(&ChatEvent::Typing(typing.clone()));
        redis::pipe()
            .atomic()
            .cmd("PUBLISH")
            .arg(scope.channel())
            .arg(json)
            .ignore()
            .query_async::<()>(&mut self.con.clone())
            .await?;
        Ok(typing)
    }

    /// Records how far the user has read in a room and publishes the receipt.
    pub async fn mark_read(
        &self,
        room: &str,
        user_id: &UserId,
        last_read: &str,
    ) -> Result<ReadReceipt, StoreError> {
        let scope = room_scope(room)?;
        let receipt = ReadReceipt {
            user_id: user_id.clone(),
            last_read: last_read.to_owned(),
            extra: Map::new(),
        };
        let json = pyjson::to_string(&ChatEvent::ReadReceipt(receipt.clone()));
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(receipts_key(&scope))
            .arg(user_id.to_string())
            .arg(last_read)
            .ignore()
            .cmd("PUBLISH")
            .arg(scope.channel())
            .arg(json)
            .ignore()
            .query_async::<()>(&mut self.con.clone())
            .await?;
        Ok(receipt)
    }

    /// The newest `count` history entries, newest first (the seed's `get_history(count)`).
    pub async fn history(
        &self,
        scope: &Scope,
        count: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        check_scope(scope)?;
        if count == 0 {
            // `LRANGE key 0 -1` would return the whole list, not nothing.
            return Ok(Vec::new());
        }
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(scope.history_key())
            .arg(0)
            .arg(last_index(count))
            .query_async(&mut self.con.clone())
            .await?;
        Ok(raw
            .iter()
            .map(|bytes| HistoryEntry::from_bytes(bytes))
            .collect())
    }

    /// The room's member ids, sorted so output is stable.
    pub async fn members(&self, room: &str) -> Result<Vec<String>, StoreError> {
        let scope = room_scope(room)?;
        let raw: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(keys::members(&scope.channel()))
            .query_async(&mut self.con.clone())
            .await?;
        let mut members: Vec<String> = raw.iter().map(|m| lossy(m)).collect();
        members.sort();
        Ok(members)
    }

    /// The room's read receipts as (user id, last read message id), sorted by user id.
    pub async fn receipts(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        let scope = room_scope(room)?;
        let raw: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(receipts_key(&scope))
            .query_async(&mut self.con.clone())
            .await?;
        let mut receipts: Vec<(String, String)> = raw
            .iter()
            .map(|(user, last)| (lossy(user), lossy(last)))
            .collect();
        receipts.sort();
        Ok(receipts)
    }
}

fn new_message(
    user_id: &UserId,
    username: &str,
    content: &str,
    room: Option<&str>,
    extra: Map<String, Value>,
) -> Result<Message, StoreError> {
    if let Some(field) = extra.keys().find(|k| MESSAGE_FIELDS.contains(&k.as_str())) {
        return Err(StoreError::ReservedField(field.clone()));
    }
    Ok(Message {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.clone(),
        username: username.to_owned(),
        content: content.to_owned(),
        room: room.map(str::to_owned),
        timestamp: Timestamp::now(),
        extra,
    })
}

/// Records, in the same transaction as the write, that chatbridge itself wrote this event on
/// behalf of the link its `origin` names: only such events are kept from going back to that
/// link (an `origin` field alone is a claim anyone can make). The most recent 10,000 per room
/// or DM are kept, far more than a history holds.
fn record_bridged(pipe: &mut redis::Pipeline, scope: &Scope, json: &str) {
    let key = keys::bridged(&scope.channel());
    pipe.cmd("ZADD")
        .arg(&key)
        .arg(chrono::Utc::now().timestamp_millis())
        .arg(crate::chat::model::content_id(&scope.channel(), json))
        .ignore()
        .cmd("ZREMRANGEBYRANK")
        .arg(&key)
        .arg(0)
        .arg(-10_001)
        .ignore();
}

/// The room's scope, or the error every command reports for a name that would make key names
/// ambiguous.
pub fn room_scope(room: &str) -> Result<Scope, StoreError> {
    match room_name_problem(room) {
        Some(problem) => Err(StoreError::BadRoom {
            room: room.to_owned(),
            problem,
        }),
        None => Ok(Scope::Room(room.to_owned())),
    }
}

fn dm_scope(a: &UserId, b: &UserId) -> Result<Scope, StoreError> {
    let scope = Scope::dm(a, b);
    check_scope(&scope)?;
    Ok(scope)
}

/// Refuses scopes whose names would make key names ambiguous (`docs/wire.md`).
fn check_scope(scope: &Scope) -> Result<(), StoreError> {
    match scope {
        Scope::Room(room) => room_scope(room).map(drop),
        Scope::Dm(a, b) => [a, b]
            .into_iter()
            .try_for_each(|id| match room_name_problem(id) {
                Some(problem) => Err(StoreError::BadDmUser {
                    id: id.clone(),
                    problem,
                }),
                None => Ok(()),
            }),
    }
}

fn receipts_key(scope: &Scope) -> String {
    keys::read_receipts(&scope.channel())
}

/// The last index `LTRIM`/`LRANGE` keep for `n` entries (`n` ≥ 1).
fn last_index(n: usize) -> isize {
    isize::try_from(n.saturating_sub(1)).unwrap_or(isize::MAX)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_limits_are_the_default() {
        assert_eq!(
            HistoryLimits::default(),
            HistoryLimits {
                room: 1000,
                dm: 500
            }
        );
        assert_eq!(last_index(1000), 999);
        assert_eq!(last_index(500), 499);
    }

    #[test]
    fn ambiguous_names_are_refused() {
        assert!(matches!(room_scope("a:b"), Err(StoreError::BadRoom { .. })));
        assert!(matches!(room_scope(""), Err(StoreError::BadRoom { .. })));
        assert_eq!(
            room_scope("general").unwrap(),
            Scope::Room("general".into())
        );
        let odd = UserId::Text("x:y".into());
        let fine = UserId::Number(5.into());
        assert!(matches!(
            dm_scope(&odd, &fine),
            Err(StoreError::BadDmUser { .. })
        ));
        assert_eq!(
            dm_scope(&fine, &UserId::Number(4.into()))
                .unwrap()
                .channel(),
            "chat:dm:4:5"
        );
    }

    #[test]
    fn extra_fields_cannot_shadow_seed_fields() {
        let id = UserId::Number(1.into());
        let mut extra = Map::new();
        extra.insert("origin".into(), "slack".into());
        let message = new_message(&id, "a", "hi", Some("r"), extra.clone()).unwrap();
        assert_eq!(message.extra, extra);
        extra.insert("type".into(), "system".into());
        assert!(matches!(
            new_message(&id, "a", "hi", Some("r"), extra),
            Err(StoreError::ReservedField(f)) if f == "type"
        ));
    }

    #[test]
    fn undecodable_history_entries_are_kept_with_their_error() {
        let entry = HistoryEntry::from_bytes(b"\xffgarbage");
        assert_eq!(entry.event.unwrap_err(), EventError::NotUtf8);
        assert_eq!(entry.raw, "\u{fffd}garbage");
    }
}
