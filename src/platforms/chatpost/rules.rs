//! What a chat-platform link (Slack, Discord) accepts of the common keys.

use crate::chat::model::EventKind;
use crate::config::links::{DEFAULT_EVENTS, Rules};

/// What chat platforms can show: typing indicators never go there.
const CHAT_EVENTS: [EventKind; 4] = [
    EventKind::Message,
    EventKind::Join,
    EventKind::Leave,
    EventKind::ReadReceipt,
];

/// What a chat-platform link accepts of the common keys: ordered (one send at a time),
/// backlog merged up to `batch_max`, names and receipts configurable.
pub(crate) const RULES: Rules = Rules {
    default_events: &DEFAULT_EVENTS,
    allowed_events: &CHAT_EVENTS,
    why_not: "typing indicators are never sent to Slack or Discord",
    names: true,
    batch_max: (Some(1..=1000), 1000),
    max_in_flight: (None, 1),
    timeout: true,
};
