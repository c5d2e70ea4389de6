//! The chat events of `docs/wire.md` as types, parsed once at the edge.
//!
//! Every event keeps the fields it did not declare in `extra`, so a relay preserves them, and
//! every user id keeps its JSON type (number or string).

use std::cmp::Ordering;
use std::fmt;

use crate::redis::keys;
use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Why a payload is not a chat event. Each variant is one "kind" of bad input, so the decoder
/// can log once per kind rather than once per event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("payload is not a JSON object: {0}")]
    NotJson(String),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{0}` has the wrong type")]
    WrongType(&'static str),
    #[error("bad timestamp `{0}`")]
    BadTimestamp(String),
    #[error("unknown event type `{0}`")]
    UnknownType(String),
}

impl EventError {
    /// A short stable label for counting skips by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotUtf8 => "not_utf8",
            Self::NotJson(_) => "not_json",
            Self::Missing(_) => "missing_field",
            Self::WrongType(_) => "wrong_type",
            Self::BadTimestamp(_) => "bad_timestamp",
            Self::UnknownType(_) => "unknown_type",
        }
    }
}

/// A user id exactly as its writer typed it: a JSON number stays a number, a string a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserId {
    Number(serde_json::Number),
    Text(String),
    /// An integer beyond 64 bits typed on a command line, as its exact canonical decimal (with
    /// `-` when negative). Written as a bare JSON number, as Python writes its unbounded ints
    /// (`json.dumps(10**30)`), which `serde_json::Number` cannot hold without losing digits.
    #[serde(skip_deserializing, serialize_with = "raw_integer")]
    Integer(String),
}

impl UserId {
    /// Reads a user id typed on a command line: a canonical decimal integer (`0`, `1001`, `-5`,
    /// digits of any length, no leading zero) becomes a number, as the seed's integer ids;
    /// anything else (`007`, `-0`, `abc`) stays a string.
    pub fn from_cli(s: &str) -> Self {
        if !is_canonical_integer(s) {
            return Self::Text(s.to_owned());
        }
        if let Ok(n) = s.parse::<u64>() {
            return Self::Number(n.into());
        }
        match s.parse::<i64>() {
            Ok(n) => Self::Number(n.into()),
            Err(_) => Self::Integer(s.to_owned()),
        }
    }

    fn from_value(value: Value, field: &'static str) -> Result<Self, EventError> {
        match value {
            Value::Number(n) => Ok(Self::Number(n)),
            Value::String(s) => Ok(Self::Text(s)),
            _ => Err(EventError::WrongType(field)),
        }
    }

    /// The integer this id denotes, when it is one (a JSON integer or a string of ASCII digits),
    /// as (sign, digits without leading zeros) so arbitrarily long ids compare correctly.
    fn integer(&self) -> Option<(bool, String)> {
        let text = match self {
            Self::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            Self::Text(s) if is_ascii_digits(s) => s.clone(),
            Self::Integer(digits) => digits.clone(),
            _ => return None,
        };
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let trimmed = digits.trim_start_matches('0');
        let digits = if trimmed.is_empty() { "0" } else { trimmed };
        Some((negative && digits != "0", digits.to_owned()))
    }
}

impl fmt::Display for UserId {
    /// The form the id takes inside key and channel names (Python's `str()` of the id).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) | Self::Integer(s) => f.write_str(s),
        }
    }
}

/// `digits` (a canonical integer, see [`is_canonical_integer`]) as a bare JSON number.
fn raw_integer<S: Serializer>(digits: &str, s: S) -> Result<S::Ok, S::Error> {
    let raw = serde_json::value::RawValue::from_string(digits.to_owned())
        .map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

/// An integer written the one way Python's `str(int)` writes it: optional `-`, then digits
/// without a leading zero (`0` alone; never `-0`).
fn is_canonical_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    is_ascii_digits(digits) && (s == "0" || !digits.starts_with('0'))
}

fn is_ascii_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn compare_integers(a: &(bool, String), b: &(bool, String)) -> Ordering {
    let magnitude = a.1.len().cmp(&b.1.len()).then_with(|| a.1.cmp(&b.1));
    match (a.0, b.0) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// Orders two user ids as `docs/wire.md` says for DM channel names: numerically when both are
/// integers, otherwise bytewise as strings. Ids that are numerically equal but spelled
/// differently (`7` and `007`) are ordered bytewise, so their DM has one channel whichever of
/// them sends.
pub fn dm_order(a: &UserId, b: &UserId) -> Ordering {
    let bytewise = || a.to_string().as_bytes().cmp(b.to_string().as_bytes());
    match (a.integer(), b.integer()) {
        (Some(x), Some(y)) => compare_integers(&x, &y).then_with(bytewise),
        _ => bytewise(),
    }
}

/// A chat timestamp: naive UTC with microsecond precision, written the way Python's
/// `datetime.utcnow().isoformat()` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(NaiveDateTime);

impl Timestamp {
    /// Now, truncated to microseconds like Python's clock.
    pub fn now() -> Self {
        Self::from_naive(Utc::now().naive_utc())
    }

    pub fn from_naive(t: NaiveDateTime) -> Self {
        let micros = t.nanosecond() / 1_000 * 1_000;
        Self(t.with_nanosecond(micros).unwrap_or(t))
    }

    /// Reads the seed's form with or without a fraction, and RFC 3339 forms with an offset
    /// (`Z`, `+00:00`, or any other offset, converted to UTC).
    pub fn parse(s: &str) -> Result<Self, EventError> {
        let bad = || EventError::BadTimestamp(s.chars().take(64).collect());
        // `FromStr` reads the seed's form without interpreting a format string each time
        // (this runs for every event); the explicit format is the fallback.
        if let Ok(t) = s.parse::<NaiveDateTime>() {
            return Ok(Self::from_naive(t));
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
            return Ok(Self::from_naive(t));
        }
        let with_offset = DateTime::parse_from_rfc3339(s).map_err(|_| bad())?;
        Ok(Self::from_naive(with_offset.naive_utc()))
    }

    pub fn naive(&self) -> NaiveDateTime {
        self.0
    }
}

impl fmt::Display for Timestamp {
    /// `2026-11-27T20:12:21.123456`, or `2026-11-27T20:12:21` when the microsecond is zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S"))?;
        match self.0.nanosecond() / 1_000 {
            0 => Ok(()),
            micros => write!(f, ".{micros:06}"),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

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
    fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }

    fn verb(self) -> &'static str {
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

    fn from_fields(mut map: Fields) -> Result<Self, EventError> {
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

/// The fields `docs/wire.md` names, in the order of [`Fields::known`].
const KNOWN: [&str; 9] = [
    "type",
    "user_id",
    "username",
    "content",
    "timestamp",
    "id",
    "room",
    "event",
    "last_read",
];

/// A chat event's JSON object as the decoder meets it, in one pass and without building a
/// map of every field: the fields `docs/wire.md` names go to fixed slots, every other one to
/// `extra` in order. The event's type decides which slots it uses; the rest join `extra`.
/// A repeated key keeps its last value, as `serde_json`'s own maps do.
#[derive(Default)]
struct Fields {
    known: [Option<Value>; KNOWN.len()],
    extra: Map<String, Value>,
}

impl Fields {
    fn slot(name: &str) -> Option<usize> {
        KNOWN.iter().position(|known| *known == name)
    }

    /// Takes a field the event's type declares.
    fn remove(&mut self, name: &'static str) -> Option<Value> {
        Self::slot(name).and_then(|i| self.known[i].take())
    }

    /// Puts back a declared field the event does not interpret after all.
    fn put_back(&mut self, name: &'static str, value: Value) {
        self.extra.insert(name.to_owned(), value);
    }

    /// The fields the event's type did not take, in `extra`.
    fn into_extra(self) -> Map<String, Value> {
        let mut extra = self.extra;
        for (name, value) in KNOWN.iter().zip(self.known) {
            if let Some(value) = value {
                extra.insert((*name).to_owned(), value);
            }
        }
        extra
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = access.next_key::<FieldName>()? {
            let value: Value = access.next_value()?;
            match key {
                FieldName::Known(i) => fields.known[i] = Some(value),
                FieldName::Other(name) => {
                    fields.extra.insert(name, value);
                }
            }
        }
        Ok(fields)
    }
}

/// An object key: one of [`KNOWN`] (read without allocating), or any other.
enum FieldName {
    Known(usize),
    Other(String),
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FieldNameVisitor)
    }
}

struct FieldNameVisitor;

impl serde::de::Visitor<'_> for FieldNameVisitor {
    type Value = FieldName;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<FieldName, E> {
        Ok(match Fields::slot(name) {
            Some(i) => FieldName::Known(i),
            None => FieldName::Other(name.to_owned()),
        })
    }

    fn visit_string<E: serde::de::Error>(self, name: String) -> Result<FieldName, E> {
        Ok(match Fields::slot(&name) {
            Some(i) => FieldName::Known(i),
            None => FieldName::Other(name),
        })
    }
}

fn take_string(map: &mut Fields, field: &'static str) -> Result<String, EventError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(EventError::WrongType(field)),
        None => Err(EventError::Missing(field)),
    }
}

fn take_optional_string(
    map: &mut Fields,
    field: &'static str,
) -> Result<Option<String>, EventError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(EventError::WrongType(field)),
    }
}

fn take_user_id(map: &mut Fields, field: &'static str) -> Result<UserId, EventError> {
    let value = map.remove(field).ok_or(EventError::Missing(field))?;
    UserId::from_value(value, field)
}

fn take_timestamp(map: &mut Fields) -> Result<Timestamp, EventError> {
    Timestamp::parse(&take_string(map, "timestamp")?)
}

fn take_presence(map: &mut Fields) -> Result<Option<Presence>, EventError> {
    match map.remove("event") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "join" => Ok(Some(Presence::Join)),
        Some(Value::String(s)) if s == "leave" => Ok(Some(Presence::Leave)),
        Some(other) => {
            // Someone else's `event` field: keep it, it is not ours to interpret.
            map.put_back("event", other);
            Ok(None)
        }
    }
}

/// Where an event lives: a room or the DM between two users.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Room(String),
    /// The two user ids as they appear in the channel name, already in `docs/wire.md` order.
    Dm(String, String),
}

impl Scope {
    /// The DM scope between two users, ids ordered as `docs/wire.md` requires.
    pub fn dm(a: &UserId, b: &UserId) -> Self {
        let (first, second) = match dm_order(a, b) {
            Ordering::Greater => (b, a),
            _ => (a, b),
        };
        Self::Dm(first.to_string(), second.to_string())
    }

    /// Parses `chat:room:{room}` or `chat:dm:{a}:{b}`; `None` for anything else (including
    /// room names with `:` and the seed's `…:history`-style key names).
    pub fn from_channel(channel: &str) -> Option<Self> {
        if let Some(room) = channel.strip_prefix(keys::ROOM_CHANNEL_PREFIX) {
            return valid_name(room).then(|| Self::Room(room.to_owned()));
        }
        let pair = channel.strip_prefix(keys::DM_CHANNEL_PREFIX)?;
        let (a, b) = pair.split_once(':')?;
        (valid_name(a) && valid_name(b)).then(|| Self::Dm(a.to_owned(), b.to_owned()))
    }

    /// The Pub/Sub channel.
    pub fn channel(&self) -> String {
        match self {
            Self::Room(room) => keys::room_channel(room),
            Self::Dm(a, b) => keys::dm_channel(a, b),
        }
    }

    /// The history list (newest first).
    pub fn history_key(&self) -> String {
        keys::history(&self.channel())
    }

    pub fn room(&self) -> Option<&str> {
        match self {
            Self::Room(room) => Some(room),
            Self::Dm(..) => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Room(room) => write!(f, "{room}"),
            Self::Dm(a, b) => write!(f, "dm:{a}:{b}"),
        }
    }
}

/// Why a room name is refused (`docs/wire.md`: `:` makes key names ambiguous), or `None` if fine.
pub fn room_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("room name is empty")
    } else if name.contains(':') {
        Some("room name contains `:`, which makes Redis key names ambiguous")
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("room name contains whitespace or control characters")
    } else if name.len() > 200 {
        Some("room name is longer than 200 bytes")
    } else {
        None
    }
}

fn valid_name(name: &str) -> bool {
    room_name_problem(name).is_none()
}

/// One event as it arrived on a channel: where, what, and the exact bytes (relayed verbatim).
#[derive(Debug, Clone)]
pub struct Received {
    pub scope: Scope,
    pub event: ChatEvent,
    /// The payload as published, so relays preserve every byte and unknown field.
    pub raw: String,
}

impl Received {
    /// The id operators see: a message's own `id`, else the event's key (a hash of the
    /// channel and the exact payload, [`content_id`]).
    pub fn event_id(&self) -> String {
        match &self.event {
            ChatEvent::Message(m) => m.id.clone(),
            _ => content_id(&self.scope.channel(), &self.raw),
        }
    }
}

/// What an outbox entry carries: a chat event, or a notice chatbridge itself raises (such as
/// "messages may have been missed" after a history gap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboundKind {
    Event(EventKind),
    Notice,
}

impl OutboundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event(kind) => kind.as_str(),
            Self::Notice => "notice",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "notice" => Some(Self::Notice),
            other => EventKind::parse(other).map(Self::Event),
        }
    }
}

/// One event as queued in a link's outbox and handed to the link to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The Redis Stream entry id in the link's outbox: what gets acknowledged.
    pub entry_id: String,
    /// The event's id as shown to operators (message `id`, or `key`).
    pub event_id: String,
    /// The event's key: a hash of its room or DM and its exact payload, computed once when
    /// the intake enqueued it and stored with it. Stable across retries, restarts and
    /// dead-letter replays, distinct for the same message `id` in two rooms: receivers
    /// de-duplicate on it ([`Outbound::key_of`] for entries stored without one).
    pub key: String,
    pub scope: Scope,
    pub kind: OutboundKind,
    /// The event's JSON exactly as published (or the notice's JSON), relayed verbatim.
    pub payload: String,
    /// When chatbridge enqueued it: the payload timestamp of webhook bodies, stable on retry.
    pub enqueued_at: chrono::DateTime<Utc>,
}

impl Outbound {
    /// The key of an event in `scope` with this payload (what the intake computes).
    pub fn key_of(scope: &Scope, payload: &str) -> String {
        content_id(&scope.channel(), payload)
    }
}

/// A content-derived id: what de-duplicates events, and identifies history entries.
pub fn content_id(channel: &str, raw: impl AsRef<[u8]>) -> String {
    let mut hash = Sha256::new();
    hash.update(channel.as_bytes());
    hash.update(b"\n");
    hash.update(raw.as_ref());
    let digest = hash.finalize();
    let mut hex = [0u8; 32];
    // 16 bytes always fit 32 hex digits, which are ASCII.
    let _ = hex::encode_to_slice(&digest[..16], &mut hex);
    let mut id = String::with_capacity(2 + 32);
    id.push_str("h-");
    id.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_in_the_seed_form() {
        for s in ["2026-11-27T20:12:21.123456", "2026-11-27T20:12:21"] {
            assert_eq!(Timestamp::parse(s).unwrap().to_string(), s);
        }
        let z = Timestamp::parse("2026-11-27T20:12:21.5Z").unwrap();
        assert_eq!(z.to_string(), "2026-11-27T20:12:21.500000");
        let off = Timestamp::parse("2026-11-27T20:12:21+00:00").unwrap();
        assert_eq!(off.to_string(), "2026-11-27T20:12:21");
        let east = Timestamp::parse("2026-11-27T21:12:21+01:00").unwrap();
        assert_eq!(east.to_string(), "2026-11-27T20:12:21");
        assert!(Timestamp::parse("yesterday").is_err());
    }

    #[test]
    fn dm_ids_order_numerically_when_both_are_integers() {
        let n = |v: u64| UserId::Number(v.into());
        let t = |s: &str| UserId::Text(s.into());
        assert_eq!(Scope::dm(&n(1001), &n(999)).channel(), "chat:dm:999:1001");
        assert_eq!(
            Scope::dm(&t("1001"), &t("999")).channel(),
            "chat:dm:999:1001"
        );
        assert_eq!(Scope::dm(&t("1001"), &n(999)).channel(), "chat:dm:999:1001");
        assert_eq!(
            Scope::dm(&t("bob"), &t("alice")).channel(),
            "chat:dm:alice:bob"
        );
        assert_eq!(Scope::dm(&t("b"), &n(5)).channel(), "chat:dm:5:b");
    }

    #[test]
    fn seed_events_decode_and_keep_unknown_fields() {
        let raw = br#"{"id": "x", "user_id": 1001, "username": "alice", "content": "hi", "room": "general", "timestamp": "2026-11-27T20:12:21", "type": "message", "color": "red"}"#;
        let ChatEvent::Message(m) = ChatEvent::from_slice(raw).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(m.user_id, UserId::Number(1001.into()));
        assert_eq!(m.extra.get("color"), Some(&Value::from("red")));

        let line = br#"{"type": "system", "content": "alice joined the room", "timestamp": "2026-11-27T20:12:21.000001"}"#;
        let event = ChatEvent::from_slice(line).unwrap();
        assert_eq!(event.kind(), Some(EventKind::Join));
    }

    #[test]
    fn fields_decode_in_one_pass_like_a_json_map() {
        // A repeated key keeps its last value; an escaped key is the key it spells.
        let raw = r#"{"type": "message", "id": "old", "\u0069d": "new", "user_id": "u1", "username": "a", "content": "x", "timestamp": "2026-11-27T20:12:21", "z": 1, "a": 2}"#;
        let ChatEvent::Message(m) = ChatEvent::from_text(raw).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(m.id, "new");
        assert_eq!(m.user_id, UserId::Text("u1".into()));
        assert_eq!(m.room, None);
        let extra: Vec<&str> = m.extra.keys().map(String::as_str).collect();
        assert_eq!(extra, ["z", "a"], "unknown fields kept, in order");

        // Fields another type declares stay with the event as extra fields.
        let typing = r#"{"type": "typing", "user_id": 7, "content": "c", "timestamp": "2026-11-27T20:12:21", "event": "join"}"#;
        let ChatEvent::Typing(t) = ChatEvent::from_text(typing).unwrap() else {
            panic!("not typing")
        };
        assert_eq!(t.extra.get("content"), Some(&Value::from("c")));
        assert_eq!(t.extra.get("event"), Some(&Value::from("join")));

        // A system line's `event` that is not ours stays; a null one is dropped.
        let other = r#"{"type": "system", "content": "hello", "timestamp": "2026-11-27T20:12:21", "event": 5}"#;
        let ChatEvent::System(line) = ChatEvent::from_text(other).unwrap() else {
            panic!("not a system line")
        };
        assert_eq!(
            (line.event, line.extra.get("event")),
            (None, Some(&Value::from(5)))
        );
        let null = r#"{"type": "system", "content": "bob left the room", "timestamp": "2026-11-27T20:12:21", "event": null, "user_id": null}"#;
        let ChatEvent::System(line) = ChatEvent::from_text(null).unwrap() else {
            panic!("not a system line")
        };
        assert!(line.extra.is_empty());
        assert_eq!(line.presence_kind(), Some(Presence::Leave));

        // Not an object, or a declared field of the wrong type: typed errors.
        for raw in ["[1, 2]", "\"message\"", "null", "{\"type\": 1}"] {
            let kind = ChatEvent::from_text(raw).unwrap_err().kind();
            assert!(kind == "not_json" || kind == "wrong_type", "{raw}: {kind}");
        }
        let missing = r#"{"type": "read_receipt", "user_id": 1}"#;
        assert_eq!(
            ChatEvent::from_text(missing).unwrap_err(),
            EventError::Missing("last_read")
        );
    }

    #[test]
    fn bad_payloads_are_typed_errors() {
        let cases: [(&[u8], &str); 5] = [
            (b"\xff\xfe", "not_utf8"),
            (b"{nope", "not_json"),
            (br#"{"type": "message"}"#, "missing_field"),
            (
                br#"{"type": "typing", "user_id": [1], "timestamp": "x"}"#,
                "wrong_type",
            ),
            (br#"{"type": "shout"}"#, "unknown_type"),
        ];
        for (raw, kind) in cases {
            assert_eq!(ChatEvent::from_slice(raw).unwrap_err().kind(), kind);
        }
    }

    #[test]
    fn cli_ids_become_numbers_only_when_canonical() {
        assert_eq!(UserId::from_cli("1001"), UserId::Number(1001.into()));
        assert_eq!(UserId::from_cli("0"), UserId::Number(0.into()));
        assert_eq!(UserId::from_cli("007"), UserId::Text("007".into()));
        assert_eq!(UserId::from_cli("abc"), UserId::Text("abc".into()));
        assert_eq!(UserId::from_cli("-5"), UserId::Number((-5).into()));
        assert_eq!(UserId::from_cli("-0"), UserId::Text("-0".into()));
        assert_eq!(UserId::from_cli("-05"), UserId::Text("-05".into()));
        assert_eq!(UserId::from_cli("--5"), UserId::Text("--5".into()));
        assert_eq!(UserId::from_cli("-"), UserId::Text("-".into()));
        let huge = "1000000000000000000000000000000";
        assert_eq!(UserId::from_cli(huge), UserId::Integer(huge.into()));
        let negative = "-123456789012345678901234567890";
        assert_eq!(UserId::from_cli(negative), UserId::Integer(negative.into()));
    }

    #[test]
    fn cli_integers_of_any_size_are_written_as_python_writes_them() {
        let id = |s: &str| crate::chat::pyjson::to_string(&UserId::from_cli(s));
        assert_eq!(
            id("1000000000000000000000000000000"),
            "1000000000000000000000000000000"
        );
        assert_eq!(id("-5"), "-5");
        assert_eq!(id("18446744073709551615"), "18446744073709551615");
        assert_eq!(id("-9223372036854775809"), "-9223372036854775809");
        assert_eq!(id("007"), "\"007\"");
    }

    #[test]
    fn numerically_equal_dm_ids_order_bytewise_whoever_sends() {
        let (seven, padded) = (UserId::from_cli("7"), UserId::from_cli("007"));
        assert_eq!(dm_order(&padded, &seven), Ordering::Less);
        assert_eq!(Scope::dm(&seven, &padded).channel(), "chat:dm:007:7");
        assert_eq!(Scope::dm(&padded, &seven).channel(), "chat:dm:007:7");
        let big = UserId::from_cli("100000000000000000000");
        let n = |v: i64| UserId::Number(v.into());
        assert_eq!(
            Scope::dm(&big, &n(-5)).channel(),
            "chat:dm:-5:100000000000000000000"
        );
        assert_eq!(
            Scope::dm(&n(9), &big).channel(),
            "chat:dm:9:100000000000000000000"
        );
    }

    #[test]
    fn channels_parse_to_scopes() {
        assert_eq!(
            Scope::from_channel("chat:room:general"),
            Some(Scope::Room("general".into()))
        );
        assert_eq!(
            Scope::from_channel("chat:dm:999:1001"),
            Some(Scope::Dm("999".into(), "1001".into()))
        );
        assert_eq!(Scope::from_channel("chat:room:a:b"), None);
        assert_eq!(Scope::from_channel("chat:dm:1:2:3"), None);
    }
}
