//! Turns raw Pub/Sub payloads into typed events, once. Anything that is not a chat event is
//! counted by kind and skipped; each kind is logged the first time and then at most once a
//! minute, so a flood of garbage cannot flood the log or stop the process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::chat::model::{ChatEvent, EventError, Received, Scope};

/// Payloads larger than this are skipped unread when published, and dead-lettered (with an
/// excerpt) when found in history. The seed has no limit; Slack's is 40,000 characters, so a
/// real chat line is far below it.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// A history entry as catch-up reads it: whole, or (over [`MAX_PAYLOAD_BYTES`]) only its size,
/// a digest and the first bytes, so a huge entry never has to be held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEntry {
    Whole(Vec<u8>),
    Oversized {
        len: usize,
        /// SHA-1 of the whole entry in hex, computed by Redis.
        sha1: String,
        excerpt: Vec<u8>,
    },
}

/// What catch-up does with a history entry.
#[derive(Debug)]
pub enum HistoryEntry {
    /// A chat message: relayed like a live one.
    Message(Box<Received>),
    /// JSON a client stored as a message that cannot be relayed as one (not a chat event, or
    /// too large): dead-lettered with the reason, never dropped silently.
    Dead { payload: String, reason: String },
    /// Not something a chat client writes as a message (not JSON, or a signal that does not
    /// belong in history): counted and skipped.
    Skipped,
}

/// How often a kind of skip that keeps happening is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Counts of skipped payloads, by kind.
#[derive(Default)]
pub struct Decoder {
    /// Skips per kind since start.
    skipped: HashMap<&'static str, u64>,
    /// Skips per kind not yet added to the totals kept in Redis ([`Decoder::take_unsaved`]).
    unsaved: HashMap<&'static str, u64>,
    /// The metrics of live events decoded, by kind.
    received: crate::ops::metrics::Received,
    /// The metrics of skips, by kind.
    malformed: crate::ops::metrics::Malformed,
    /// When each kind was last logged, and the count then.
    logged: HashMap<&'static str, (Instant, u64)>,
}

impl Decoder {
    /// Decodes a payload published on `channel`, or counts and skips it. Takes the payload
    /// by value: an event keeps its bytes as its relayed form without a copy.
    pub fn decode(&mut self, channel: &str, payload: Vec<u8>) -> Option<Received> {
        let Some(scope) = Scope::from_channel(channel) else {
            self.skip(
                "bad_channel",
                channel,
                "channel name is not chat:room:{room} or chat:dm:{a}:{b}",
            );
            return None;
        };
        self.decode_in(scope, payload)
    }

    /// Decodes a payload whose scope is already known.
    fn decode_in(&mut self, scope: Scope, payload: Vec<u8>) -> Option<Received> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            let why = format!("{} bytes, limit {MAX_PAYLOAD_BYTES}", payload.len());
            self.skip("oversized", &scope.channel(), &why);
            return None;
        }
        // UTF-8 is checked once, here: the event is parsed from, and relays, the same text.
        let decoded = String::from_utf8(payload)
            .map_err(|_| EventError::NotUtf8)
            .and_then(|raw| ChatEvent::from_text(&raw).map(|event| (event, raw)));
        match decoded {
            Ok((event, raw)) => {
                self.received.count(event.kind());
                Some(Received { scope, event, raw })
            }
            Err(e) => {
                self.skip(e.kind(), &scope.channel(), &e.to_string());
                None
            }
        }
    }

    /// Classifies one history entry of `scope`.
    pub fn history_entry(&mut self, scope: &Scope, entry: &RawEntry) -> HistoryEntry {
        let channel = scope.channel();
        let bytes = match entry {
            RawEntry::Whole(bytes) => bytes,
            RawEntry::Oversized { len, sha1, excerpt } => {
                let why = format!("{len} bytes, limit {MAX_PAYLOAD_BYTES}");
                self.skip("oversized", &channel, &why);
                return HistoryEntry::Dead {
                    payload: String::from_utf8_lossy(excerpt).into_owned(),
                    reason: format!(
                        "history entry of {len} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit; \
                         payload cut to its first {} bytes (SHA-1 of the whole: {sha1})",
                        excerpt.len()
                    ),
                };
            }
        };
        match ChatEvent::from_slice(bytes) {
            Ok(event @ ChatEvent::Message(_)) => HistoryEntry::Message(Box::new(Received {
                scope: scope.clone(),
                event,
                raw: String::from_utf8_lossy(bytes).into_owned(),
            })),
            Ok(_) => {
                self.skip(
                    "signal_in_history",
                    &channel,
                    "a history entry that is a signal, not a message",
                );
                HistoryEntry::Skipped
            }
            Err(e @ (EventError::NotUtf8 | EventError::NotJson(_))) => {
                self.skip(e.kind(), &channel, &format!("history entry: {e}"));
                HistoryEntry::Skipped
            }
            Err(e) => {
                self.skip(e.kind(), &channel, &format!("history entry: {e}"));
                HistoryEntry::Dead {
                    payload: String::from_utf8_lossy(bytes).into_owned(),
                    reason: format!("history entry is not a chat message: {e}"),
                }
            }
        }
    }

    /// Counts a skip of some other kind (for example a system line that is neither join nor
    /// leave, which has no route).
    pub fn skip(&mut self, kind: &'static str, channel: &str, why: &str) {
        self.malformed.count(kind);
        *self.unsaved.entry(kind).or_insert(0) += 1;
        let count = self.skipped.entry(kind).or_insert(0);
        *count += 1;
        let count = *count;
        let due = match self.logged.get(kind) {
            None => true,
            Some((at, logged_count)) => at.elapsed() >= LOG_EVERY && *logged_count < count,
        };
        if due {
            let channel: String = channel.chars().take(120).collect();
            tracing::warn!(kind, channel, why, skipped_so_far = count, "skipping event");
            self.logged.insert(kind, (Instant::now(), count));
        }
    }

    /// Skips so far, by kind.
    pub fn skipped(&self) -> &HashMap<&'static str, u64> {
        &self.skipped
    }

    /// Skips since the last call, by kind: what is still to be added to the totals in Redis.
    pub fn take_unsaved(&mut self) -> HashMap<&'static str, u64> {
        std::mem::take(&mut self.unsaved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_counted_by_kind_and_good_events_pass() {
        let mut d = Decoder::default();
        assert!(
            d.decode("chat:room:general", b"{not json".to_vec())
                .is_none()
        );
        assert!(
            d.decode("chat:room:general", b"\x00\xff".to_vec())
                .is_none()
        );
        assert!(
            d.decode("chat:room:general", vec![b' '; MAX_PAYLOAD_BYTES + 1])
                .is_none()
        );
        assert!(d.decode("chat:room:a:b", b"{}".to_vec()).is_none());
        let typing = br#"{"type": "typing", "user_id": 1, "timestamp": "2026-11-27T20:12:21"}"#;
        let got = d.decode("chat:room:general", typing.to_vec()).unwrap();
        assert_eq!(got.scope, Scope::Room("general".into()));
        assert_eq!(got.raw.as_bytes(), typing);
        assert_eq!(d.skipped()["not_json"], 1);
        assert_eq!(d.skipped()["not_utf8"], 1);
        assert_eq!(d.skipped()["oversized"], 1);
        assert_eq!(d.skipped()["bad_channel"], 1);
    }
}
