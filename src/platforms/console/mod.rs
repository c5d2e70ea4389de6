//! The console link: one human-readable line per event on stdout, for operators and demos.
//!
//! ```text
//! [general] alice: hi
//! [general] * alice joined the room
//! [general] 1001 is typing
//! [general] 1001 read up to 3f1c…
//! [dm 999:1001] alice: hi
//! [general] ! messages may have been missed
//! ```
//! Everything that came from users is escaped, so a message cannot drive the terminal.

pub(crate) mod config;

use std::pin::Pin;

use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::bridge::retry::Verdict;
use crate::chat::model::{ChatEvent, Outbound, OutboundKind, Scope};
use crate::platforms::SendOutcome;
use crate::printable::escape_controls;

pub use config::BATCH_MAX;
/// The most characters of one user-supplied text printed; longer text is cut with `…`.
const MAX_TEXT_CHARS: usize = 2000;

/// Where console lines go: stdout in production, an in-memory pipe in tests.
pub type ConsoleWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// Prints events as text lines.
pub struct Console {
    /// The link's configured name.
    name: String,
    /// The output; locked per batch so the lines of two batches never interleave.
    out: Mutex<ConsoleWriter>,
}

impl Console {
    /// A console link printing to stdout.
    pub fn new(name: &str) -> Self {
        Self::with_writer(name, Box::pin(tokio::io::stdout()))
    }

    /// A console link printing to `out` (tests pass one end of `tokio::io::duplex`).
    pub fn with_writer(name: &str, out: ConsoleWriter) -> Self {
        Self {
            name: name.to_owned(),
            out: Mutex::new(out),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Prints the batch in one write. Always delivered: a console that cannot print would not
    /// print any better on a retry; the failure is reported in `detail`.
    pub async fn send(&self, batch: &[Outbound]) -> SendOutcome {
        let text: String = batch.iter().map(|item| line(item) + "\n").collect();
        let mut out = self.out.lock().await;
        let written = async {
            out.write_all(text.as_bytes()).await?;
            out.flush().await
        };
        let detail = match written.await {
            Ok(()) => format!("printed {} line(s)", batch.len()),
            Err(err) => format!("console output failed: {err}"),
        };
        SendOutcome {
            verdict: Verdict::Delivered,
            status: None,
            detail,
        }
    }
}

/// One event as a console line, without the newline.
pub fn line(item: &Outbound) -> String {
    let scope = match &item.scope {
        Scope::Room(room) => safe(room),
        Scope::Dm(a, b) => format!("dm {}:{}", safe(a), safe(b)),
    };
    format!("[{scope}] {}", describe(item))
}

fn describe(item: &Outbound) -> String {
    if item.kind == OutboundKind::Notice {
        return format!("! {}", safe(&notice_text(&item.payload)));
    }
    match ChatEvent::from_slice(item.payload.as_bytes()) {
        Ok(ChatEvent::Message(m)) => format!("{}: {}", safe(&m.username), safe(&m.content)),
        Ok(ChatEvent::System(line)) => format!("* {}", safe(&line.content)),
        Ok(ChatEvent::Typing(t)) => format!("{} is typing", safe(&t.user_id.to_string())),
        Ok(ChatEvent::ReadReceipt(r)) => format!(
            "{} read up to {}",
            safe(&r.user_id.to_string()),
            safe(&r.last_read)
        ),
        Err(_) => safe(&item.payload),
    }
}

/// A notice's `content` field, or its whole payload when it has none.
fn notice_text(payload: &str) -> String {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(map)) => match map.get("content") {
            Some(Value::String(content)) => content.clone(),
            _ => payload.to_owned(),
        },
        _ => payload.to_owned(),
    }
}

fn safe(text: &str) -> String {
    escape_controls(text, MAX_TEXT_CHARS)
}

impl crate::platforms::Sink for Console {
    fn name(&self) -> &str {
        Console::name(self)
    }

    fn batch_max(&self) -> usize {
        BATCH_MAX
    }

    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    fn send<'a>(&'a self, batch: &'a [Outbound]) -> crate::platforms::Sending<'a> {
        Box::pin(Console::send(self, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn outbound(scope: Scope, kind: OutboundKind, payload: &str) -> Outbound {
        Outbound {
            entry_id: "1-0".into(),
            event_id: "e1".into(),
            key: Outbound::key_of(&scope, payload),
            scope,
            kind,
            payload: payload.into(),
            enqueued_at: chrono::Utc::now(),
        }
    }

    fn room(kind: OutboundKind, payload: &str) -> Outbound {
        outbound(Scope::Room("general".into()), kind, payload)
    }

    use crate::chat::model::EventKind::{Join, Leave, Message, ReadReceipt, Typing};
    use OutboundKind::{Event, Notice};

    #[tokio::test]
    async fn prints_one_line_per_event_in_one_write() {
        let (writer, mut reader) = tokio::io::duplex(64 * 1024);
        let console = Console::with_writer("console", Box::pin(writer));
        let batch = [
            room(
                Event(Message),
                r#"{"id": "x", "user_id": 1001, "username": "alice", "content": "hi", "room": "general", "timestamp": "2026-11-27T20:12:21", "type": "message"}"#,
            ),
            room(
                Event(Join),
                r#"{"type": "system", "content": "alice joined the room", "timestamp": "2026-11-27T20:12:21"}"#,
            ),
            room(
                Event(Leave),
                r#"{"type": "system", "content": "alice left the room", "timestamp": "2026-11-27T20:12:21"}"#,
            ),
            room(
                Event(Typing),
                r#"{"type": "typing", "user_id": 1001, "timestamp": "2026-11-27T20:12:21"}"#,
            ),
            room(
                Event(ReadReceipt),
                r#"{"type": "read_receipt", "user_id": 1001, "last_read": "3f1c"}"#,
            ),
            outbound(
                Scope::Dm("999".into(), "1001".into()),
                Event(Message),
                r#"{"id": "y", "user_id": 1001, "username": "alice", "content": "hi", "room": null, "timestamp": "2026-11-27T20:12:21", "type": "message"}"#,
            ),
            room(Notice, r#"{"content": "messages may have been missed"}"#),
            room(Event(Message), "not json at all"),
        ];
        let outcome = console.send(&batch).await;
        assert_eq!(outcome.verdict, Verdict::Delivered);
        drop(console);
        let mut printed = String::new();
        reader.read_to_string(&mut printed).await.unwrap();
        assert_eq!(
            printed,
            "[general] alice: hi\n\
             [general] * alice joined the room\n\
             [general] * alice left the room\n\
             [general] 1001 is typing\n\
             [general] 1001 read up to 3f1c\n\
             [dm 999:1001] alice: hi\n\
             [general] ! messages may have been missed\n\
             [general] not json at all\n"
        );
    }

    #[test]
    fn user_text_cannot_inject_terminal_escapes() {
        let evil = room(
            Event(Message),
            r#"{"id": "x", "user_id": "u\u001b", "username": "ev\u001b[31mil", "content": "a\nb\r\u0007\u202e", "room": "general", "timestamp": "2026-11-27T20:12:21", "type": "message"}"#,
        );
        let printed = line(&evil);
        assert!(!printed.chars().any(char::is_control), "{printed:?}");
        assert_eq!(printed, r"[general] ev\u{1b}[31mil: a\nb\r\u{7}\u{202e}");
        let raw = line(&room(Event(Message), "\u{1b}]0;pwned\u{7}"));
        assert_eq!(raw, r"[general] \u{1b}]0;pwned\u{7}");
    }

    #[test]
    fn notices_without_content_print_their_payload() {
        assert_eq!(
            line(&room(Notice, "gap in history")),
            "[general] ! gap in history"
        );
    }
}
