//! Stream entries read back through redis-rs's typed stream replies, one damaged entry at a
//! time: an entry whose fields are not text is an error in its place, never the whole read's.

use chrono::{DateTime, TimeZone, Utc};
use redis::streams::StreamRangeReply;
use redis::{FromRedisValue, Value};

use super::{OutboxError, Result};
use crate::chat::model::{Outbound, OutboundKind, Scope};

/// One stream entry: its id, and its fields as text or why they are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The stream entry id, kept even when the fields are damaged so the caller can name it.
    pub id: String,
    /// Field name → value, or why they cannot be read as text.
    pub fields: std::result::Result<Fields, String>,
}

/// An entry's fields in stream order. A handful per entry: a scan beats hashing, and the
/// hot path reads thousands of entries a second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.swap_remove(i).1)
    }
}

/// The entries of an XREADGROUP reply, in stream order; entries deleted while pending are
/// left out. Converted with redis-rs's typed conversions straight from the owned reply, one
/// entry at a time: `StreamReadReply` would copy the whole reply twice on this hot path, and
/// converts all or nothing, while a damaged entry must not strand the others of a `>` read
/// in the pending list unseen.
pub(super) fn read_reply(reply: Value) -> Result<Vec<Entry>> {
    if reply == Value::Nil {
        return Ok(Vec::new());
    }
    let streams: Vec<(String, Vec<(String, Value)>)> = from_reply(reply)?;
    let raw = streams.into_iter().flat_map(|(_, entries)| entries);
    Ok(raw.filter_map(Entry::from_raw).collect())
}

/// The entries of an XRANGE reply, in stream order, damaged ones in place as for
/// [`read_reply`].
pub(super) fn range_reply(reply: Value) -> Result<Vec<Entry>> {
    if let Ok(range) = StreamRangeReply::from_redis_value_ref(&reply) {
        let ids = range.ids.into_iter();
        return Ok(ids
            .filter_map(|id| Entry::new(id.id, id.map.into_iter()))
            .collect());
    }
    let raw: Vec<(String, Value)> = from_reply(reply)?;
    Ok(raw.into_iter().filter_map(Entry::from_raw).collect())
}

fn from_reply<T: FromRedisValue>(reply: Value) -> Result<T> {
    T::from_redis_value(reply).map_err(|e| OutboxError::Reply(e.to_string()))
}

impl Entry {
    /// `None` for an entry without fields: XADD always writes some, so it was deleted while
    /// pending (XREADGROUP answers such an entry with nil fields).
    fn new(id: String, pairs: impl ExactSizeIterator<Item = (String, Value)>) -> Option<Self> {
        if pairs.len() == 0 {
            return None;
        }
        let mut fields = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            match String::from_redis_value(value) {
                Ok(text) => fields.push((name, text)),
                Err(_) => {
                    let why = format!("field `{name}` is not UTF-8 text");
                    return Some(Self {
                        id,
                        fields: Err(why),
                    });
                }
            }
        }
        Some(Self {
            id,
            fields: Ok(Fields(fields)),
        })
    }

    /// One entry of a reply: its fields converted as a flat list of pairs (no intermediate
    /// map), on their own so a damaged entry stays in its place.
    fn from_raw((id, fields): (String, Value)) -> Option<Self> {
        match Vec::<(String, Value)>::from_redis_value(fields) {
            Ok(pairs) => Self::new(id, pairs.into_iter()),
            Err(_) => Some(Self {
                id,
                fields: Err("field names are not UTF-8 text".to_owned()),
            }),
        }
    }

    /// The entry as an outbox event, or its id and why it cannot be one.
    pub fn into_outbound(self) -> std::result::Result<Outbound, (String, String)> {
        let fields = match self.fields {
            Ok(fields) => fields,
            Err(why) => return Err((self.id, why)),
        };
        outbound_from_fields(self.id.clone(), fields).map_err(|e| (self.id, e.to_string()))
    }
}

/// An outbox (or dead-letter) entry's fields back into the event they were written from.
pub(super) fn outbound_from_fields(entry_id: String, mut f: Fields) -> Result<Outbound> {
    let missing = |name: &str| OutboxError::Reply(format!("outbox entry lacks `{name}`"));
    if let Some(meta) = f.remove("m") {
        return packed(entry_id, &meta, f).ok_or_else(|| missing("valid `m`"))?;
    }
    let scope = f.get("scope").ok_or_else(|| missing("scope"))?;
    let scope = Scope::from_channel(scope).ok_or_else(|| missing("valid scope"))?;
    let kind = f.get("kind").ok_or_else(|| missing("kind"))?;
    let kind = OutboundKind::parse(kind).ok_or_else(|| missing("valid kind"))?;
    // The enqueue script leaves `at` out: an outbox entry's id is Redis's time of the XADD.
    // Entries moved between streams (dead-letter, replay) carry it to keep the original.
    let at: i64 = f
        .get("at")
        .or_else(|| entry_id.split('-').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let enqueued_at: DateTime<Utc> = Utc.timestamp_millis_opt(at).single().unwrap_or_default();
    let payload = f.remove("payload").ok_or_else(|| missing("payload"))?;
    Ok(Outbound {
        entry_id,
        event_id: f.remove("id").ok_or_else(|| missing("id"))?,
        key: f
            .remove("key")
            .unwrap_or_else(|| Outbound::key_of(&scope, &payload)),
        scope,
        kind,
        payload,
        enqueued_at,
    })
}

/// An entry the enqueue script wrote: `m` is "{key}\n{kind}\n{scope length}\n{scope}{id}"
/// (see `enqueue.lua`), beside `payload`; the id is the stream's. `None` when `m` is not of
/// that form; an `Err` when the payload is missing.
fn packed(entry_id: String, meta: &str, mut f: Fields) -> Option<Result<Outbound>> {
    let mut parts = meta.splitn(4, '\n');
    let (key, kind, len, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let len: usize = len.parse().ok()?;
    let (scope, id) = (rest.get(..len)?, rest.get(len..)?);
    let scope = Scope::from_channel(scope)?;
    let kind = OutboundKind::parse(kind)?;
    let at: i64 = entry_id.split('-').next()?.parse().ok()?;
    let Some(payload) = f.remove("payload") else {
        return Some(Err(OutboxError::Reply(
            "outbox entry lacks `payload`".to_owned(),
        )));
    };
    Some(Ok(Outbound {
        enqueued_at: Utc.timestamp_millis_opt(at).single().unwrap_or_default(),
        entry_id,
        event_id: id.to_owned(),
        key: key.to_owned(),
        scope,
        kind,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn fields(pairs: &[(&[u8], &[u8])]) -> Value {
        let flat = pairs
            .iter()
            .flat_map(|(k, v)| [Value::BulkString(k.to_vec()), Value::BulkString(v.to_vec())]);
        Value::Array(flat.collect())
    }

    fn good(id: &str) -> Value {
        let pairs: [(&[u8], &[u8]); 5] = [
            (b"id", id.as_bytes()),
            (b"scope", b"chat:room:general"),
            (b"kind", b"message"),
            (b"at", b"1700000000000"),
            (b"payload", b"{}"),
        ];
        Value::Array(vec![text(&format!("{id}-0")), fields(&pairs)])
    }

    fn entry(id: &str, fields: Value) -> Value {
        Value::Array(vec![text(id), fields])
    }

    /// `[[key, entries]]`, as XREADGROUP answers over RESP2.
    fn read(entries: Vec<Value>) -> Value {
        Value::Array(vec![Value::Array(vec![
            text("chatbridge:outbox:a"),
            Value::Array(entries),
        ])])
    }

    fn outcomes(entries: Vec<Entry>) -> Vec<std::result::Result<String, String>> {
        entries
            .into_iter()
            .map(|e| match e.into_outbound() {
                Ok(outbound) => Ok(outbound.event_id),
                Err((id, why)) => Err(format!("{id}: {why}")),
            })
            .collect()
    }

    #[test]
    fn packed_entries_read_back_with_any_id_and_old_entries_still_read() {
        let meta = "h-abc\nmessage\n17\nchat:room:generalid 1\nwith\nnewlines";
        let packed = entry(
            "1700000000123-4",
            fields(&[(b"m", meta.as_bytes()), (b"payload", b"{}")]),
        );
        let bad = entry(
            "2-0",
            fields(&[(b"m", b"h-abc\nmessage\n99\nshort"), (b"payload", b"{}")]),
        );
        let got: Vec<_> = read_reply(read(vec![packed, good("7"), bad]))
            .unwrap()
            .into_iter()
            .map(Entry::into_outbound)
            .collect();
        let first = got[0].as_ref().unwrap();
        assert_eq!(first.event_id, "id 1\nwith\nnewlines");
        assert_eq!(first.key, "h-abc");
        assert_eq!(first.scope, Scope::Room("general".into()));
        assert_eq!(first.enqueued_at.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(got[1].as_ref().unwrap().event_id, "7");
        assert!(got[2].is_err(), "a damaged `m` is an error in its place");
    }

    #[test]
    fn entries_come_back_in_order_and_deleted_ones_are_skipped() {
        let reply = read(vec![good("1"), entry("2-0", Value::Nil), good("3")]);
        let got = outcomes(read_reply(reply).unwrap());
        assert_eq!(got, [Ok("1".to_owned()), Ok("3".to_owned())]);
        assert!(read_reply(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn a_non_utf8_value_damages_only_its_entry() {
        let bad = entry("2-0", fields(&[(b"id", b"2"), (b"payload", b"\xff\xfe")]));
        let got = outcomes(read_reply(read(vec![good("1"), bad, good("3")])).unwrap());
        assert_eq!(got[0], Ok("1".to_owned()));
        assert_eq!(
            got[1],
            Err("2-0: field `payload` is not UTF-8 text".to_owned())
        );
        assert_eq!(got[2], Ok("3".to_owned()));
    }

    #[test]
    fn a_non_utf8_field_name_damages_only_its_entry() {
        let bad = entry("2-0", fields(&[(b"\xff", b"x")]));
        let deleted = entry("4-0", Value::Nil);
        let got = outcomes(read_reply(read(vec![good("1"), bad, good("3"), deleted])).unwrap());
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], Ok("1".to_owned()));
        assert_eq!(
            got[1],
            Err("2-0: field names are not UTF-8 text".to_owned())
        );
        assert_eq!(got[2], Ok("3".to_owned()));

        let range = Value::Array(vec![good("1"), entry("2-0", fields(&[(b"\xff", b"x")]))]);
        let got = outcomes(range_reply(range).unwrap());
        assert_eq!(got[0], Ok("1".to_owned()));
        assert!(got[1].is_err(), "{got:?}");
    }

    #[test]
    fn an_entry_missing_a_field_is_named_in_place() {
        let partial = entry("2-0", fields(&[(b"id", b"2")]));
        let got = outcomes(range_reply(Value::Array(vec![partial, good("3")])).unwrap());
        assert_eq!(
            got[0],
            Err("2-0: unexpected reply from redis: outbox entry lacks `scope`".to_owned())
        );
        assert_eq!(got[1], Ok("3".to_owned()));
    }

    #[test]
    fn the_enqueue_time_is_the_entry_ids_unless_the_entry_carries_one() {
        let pairs: [(&[u8], &[u8]); 4] = [
            (b"id", b"e"),
            (b"scope", b"chat:room:general"),
            (b"kind", b"message"),
            (b"payload", b"{}"),
        ];
        let entries = range_reply(Value::Array(vec![
            entry("1700000000123-4", fields(&pairs)),
            good("5"),
        ]))
        .unwrap();
        let at: Vec<i64> = entries
            .into_iter()
            .map(|e| e.into_outbound().unwrap().enqueued_at.timestamp_millis())
            .collect();
        assert_eq!(at, [1_700_000_000_123, 1_700_000_000_000]);
    }

    #[test]
    fn a_reply_of_another_shape_is_an_error() {
        assert!(read_reply(text("OK")).is_err());
        assert!(range_reply(Value::Int(3)).is_err());
    }
}
