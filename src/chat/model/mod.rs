//! The chat events of `docs/wire.md` as types, parsed once at the edge.
//!
//! Every event keeps the fields it did not declare in `extra`, so a relay preserves them, and
//! every user id keeps its JSON type (number or string).
//!
//! Files by concern: [`ids`] (user ids, DM order), [`time`] (timestamps), [`events`] (the
//! events and how they serialise), `fields` (reading an event's object once), [`scope`] (rooms
//! and DMs, room names), [`outbound`] (an event as received and as queued, its de-dup key).

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

pub mod events;
mod fields;
pub mod ids;
pub mod outbound;
pub mod scope;
pub mod time;

pub use events::*;
use fields::*;
pub use ids::*;
pub use outbound::*;
pub use scope::*;
pub use time::*;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::cmp::Ordering;

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
