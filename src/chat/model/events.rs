//! The events themselves: kinds, messages, system lines, typing, receipts, and how they serialise.

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::*;

/// What an event is, for routing: the `events` list of a link names these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Message,
    Join,
    Leave,
    Typing,
    ReadReceipt,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        Self::Message,
        Self::Join,
        Self::Leave,
        Self::Typing,
        Self::ReadReceipt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Typing => "typing",
            Self::ReadReceipt => "read_receipt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chat message (`"type": "message"`), in a room or a DM (`room` is `None` in a DM).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub user_id: UserId,
    pub username: String,
    pub content: String,
    pub room: Option<String>,
    pub timestamp: Timestamp,
    /// Fields the seed does not define (ours: `origin`, `external_id`; anyone else's too).
    pub extra: Map<String, Value>,
}

/// Join or leave, from a system line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Join,
    Leave,
}

impl Presence {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }

    pub(super) fn verb(self) -> &'static str {
        match self {
            Self::Join => "joined",
            Self::Leave => "left",
        }
    }
}

/// A system line (`"type": "system"`): the seed publishes one on join and on leave.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemLine {
    pub content: String,
    pub timestamp: Timestamp,
    /// Ours: `"join"`/`"leave"`, so bridges need not parse English. Seed lines lack it.
    pub event: Option<Presence>,
    /// Ours: who joined or left.
    pub user_id: Option<UserId>,
    /// Ours: the name of who joined or left.
    pub username: Option<String>,
    pub extra: Map<String, Value>,
}

impl SystemLine {
    /// A join or leave line the way the seed writes it, plus our `event`/`user_id`/`username`.
    pub fn presence(presence: Presence, user_id: UserId, username: &str) -> Self {
        Self {
            content: format!("{username} {} the room", presence.verb()),
            timestamp: Timestamp::now(),
            event: Some(presence),
            user_id: Some(user_id),
            username: Some(username.to_owned()),
            extra: Map::new(),
        }
    }

    /// Join or leave: our `event` field when present, else the seed's English.
    pub fn presence_kind(&self) -> Option<Presence> {
        self.event.or_else(|| {
            if self.content.ends_with(" joined the room") {
                Some(Presence::Join)
            } else if self.content.ends_with(" left the room") {
                Some(Presence::Leave)
            } else {
                None
            }
        })
    }

    /// Who joined or left: our `username` field, else the seed's English.
    pub fn who(&self) -> Option<&str> {
        if let Some(name) = &self.username {
            return Some(name);
        }
        self.content
            .strip_suffix(" joined the room")
            .or_else(|| self.content.strip_suffix(" left the room"))
    }
}

/// A typing indicator (`"type": "typing"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Typing {
    pub user_id: UserId,
    pub timestamp: Timestamp,
    pub extra: Map<String, Value>,
}

/// A read receipt (`"type": "read_receipt"`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadReceipt {
    pub user_id: UserId,
    pub last_read: String,
    pub extra: Map<String, Value>,
}

/// Every event `docs/wire.md` defines.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    Message(Message),
    System(SystemLine),
    Typing(Typing),
    ReadReceipt(ReadReceipt),
}

impl ChatEvent {
    /// Decodes one published payload.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EventError> {
        Self::from_text(std::str::from_utf8(bytes).map_err(|_| EventError::NotUtf8)?)
    }

    /// Decodes one published payload already known to be text.
    pub fn from_text(text: &str) -> Result<Self, EventError> {
        let fields: Fields = match serde_json::from_str(text) {
            Ok(fields) => fields,
            // What a Python client can write (lone surrogates, NaN) is still a chat event.
            Err(e) => crate::chat::pyjson::tolerant(text)
                .and_then(|fixed| serde_json::from_str(&fixed).ok())
                .ok_or_else(|| EventError::NotJson(e.to_string()))?,
        };
        Self::from_fields(fields)
    }

    pub(super) fn from_fields(mut map: Fields) -> Result<Self, EventError> {
        let kind = take_string(&mut map, "type")?;
        let event = match kind.as_str() {
            "message" => Self::Message(Message {
                id: take_string(&mut map, "id")?,
                user_id: take_user_id(&mut map, "user_id")?,
                username: take_string(&mut map, "username")?,
                content: take_string(&mut map, "content")?,
                room: take_optional_string(&mut map, "room")?,
                timestamp: take_timestamp(&mut map)?,
                extra: map.into_extra(),
            }),
            "system" => Self::System(SystemLine {
                content: take_string(&mut map, "content")?,
                timestamp: take_timestamp(&mut map)?,
                event: take_presence(&mut map)?,
                user_id: match map.remove("user_id") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(UserId::from_value(v, "user_id")?),
                },
                username: take_optional_string(&mut map, "username")?,
                extra: map.into_extra(),
            }),
            "typing" => Self::Typing(Typing {
                user_id: take_user_id(&mut map, "user_id")?,
                timestamp: take_timestamp(&mut map)?,
                extra: map.into_extra(),
            }),
            "read_receipt" => Self::ReadReceipt(ReadReceipt {
                user_id: take_user_id(&mut map, "user_id")?,
                last_read: take_string(&mut map, "last_read")?,
                extra: map.into_extra(),
            }),
            _ => return Err(EventError::UnknownType(kind.chars().take(32).collect())),
        };
        Ok(event)
    }

    /// The routing kind, or `None` for a system line that is neither join nor leave.
    pub fn kind(&self) -> Option<EventKind> {
        match self {
            Self::Message(_) => Some(EventKind::Message),
            Self::System(line) => line.presence_kind().map(|p| match p {
                Presence::Join => EventKind::Join,
                Presence::Leave => EventKind::Leave,
            }),
            Self::Typing(_) => Some(EventKind::Typing),
            Self::ReadReceipt(_) => Some(EventKind::ReadReceipt),
        }
    }

    pub fn extra(&self) -> &Map<String, Value> {
        match self {
            Self::Message(m) => &m.extra,
            Self::System(s) => &s.extra,
            Self::Typing(t) => &t.extra,
            Self::ReadReceipt(r) => &r.extra,
        }
    }

    pub fn extra_mut(&mut self) -> &mut Map<String, Value> {
        match self {
            Self::Message(m) => &mut m.extra,
            Self::System(s) => &mut s.extra,
            Self::Typing(t) => &mut t.extra,
            Self::ReadReceipt(r) => &mut r.extra,
        }
    }

    /// The configured link this event came from (`docs/wire.md`: ours), if a bridge wrote it.
    pub fn origin(&self) -> Option<&str> {
        self.extra().get("origin").and_then(Value::as_str)
    }
}

impl Serialize for ChatEvent {
    /// Fields in the seed's order, then ours, then everything else preserved.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let extra = match self {
            Self::Message(m) => {
                map.serialize_entry("id", &m.id)?;
                map.serialize_entry("user_id", &m.user_id)?;
                map.serialize_entry("username", &m.username)?;
                map.serialize_entry("content", &m.content)?;
                map.serialize_entry("room", &m.room)?;
                map.serialize_entry("timestamp", &m.timestamp)?;
                map.serialize_entry("type", "message")?;
                &m.extra
            }
            Self::System(line) => {
                map.serialize_entry("type", "system")?;
                map.serialize_entry("content", &line.content)?;
                map.serialize_entry("timestamp", &line.timestamp)?;
                if let Some(event) = line.event {
                    map.serialize_entry("event", event.as_str())?;
                }
                if let Some(user_id) = &line.user_id {
                    map.serialize_entry("user_id", user_id)?;
                }
                if let Some(username) = &line.username {
                    map.serialize_entry("username", username)?;
                }
                &line.extra
            }
            Self::Typing(t) => {
                map.serialize_entry("type", "typing")?;
                map.serialize_entry("user_id", &t.user_id)?;
                map.serialize_entry("timestamp", &t.timestamp)?;
                &t.extra
            }
            Self::ReadReceipt(r) => {
                map.serialize_entry("type", "read_receipt")?;
                map.serialize_entry("user_id", &r.user_id)?;
                map.serialize_entry("last_read", &r.last_read)?;
                &r.extra
            }
        };
        for (key, value) in extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}
