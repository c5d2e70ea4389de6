//! Reading an event's JSON object once: the fields the wire format names into fixed slots, the rest kept.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::*;

/// The fields `docs/wire.md` names, in the order of [`Fields::known`].
pub(super) const KNOWN: [&str; 9] = [
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
pub(super) struct Fields {
    known: [Option<Value>; KNOWN.len()],
    extra: Map<String, Value>,
}

impl Fields {
    pub(super) fn slot(name: &str) -> Option<usize> {
        KNOWN.iter().position(|known| *known == name)
    }

    /// Takes a field the event's type declares.
    pub(super) fn remove(&mut self, name: &'static str) -> Option<Value> {
        Self::slot(name).and_then(|i| self.known[i].take())
    }

    /// Puts back a declared field the event does not interpret after all.
    pub(super) fn put_back(&mut self, name: &'static str, value: Value) {
        self.extra.insert(name.to_owned(), value);
    }

    /// The fields the event's type did not take, in `extra`.
    pub(super) fn into_extra(self) -> Map<String, Value> {
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

pub(super) struct FieldsVisitor;

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
pub(super) enum FieldName {
    Known(usize),
    Other(String),
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FieldNameVisitor)
    }
}

pub(super) struct FieldNameVisitor;

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

pub(super) fn take_string(map: &mut Fields, field: &'static str) -> Result<String, EventError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(EventError::WrongType(field)),
        None => Err(EventError::Missing(field)),
    }
}

pub(super) fn take_optional_string(
    map: &mut Fields,
    field: &'static str,
) -> Result<Option<String>, EventError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(EventError::WrongType(field)),
    }
}

pub(super) fn take_user_id(map: &mut Fields, field: &'static str) -> Result<UserId, EventError> {
    let value = map.remove(field).ok_or(EventError::Missing(field))?;
    UserId::from_value(value, field)
}

pub(super) fn take_timestamp(map: &mut Fields) -> Result<Timestamp, EventError> {
    Timestamp::parse(&take_string(map, "timestamp")?)
}

pub(super) fn take_presence(map: &mut Fields) -> Result<Option<Presence>, EventError> {
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
