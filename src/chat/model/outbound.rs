//! An event as received and as queued for a link, and its de-dup key.

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::*;

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
