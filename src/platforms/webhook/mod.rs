//! Generic webhook links: events POSTed to an HTTP endpoint ([`outbound`]), signed per Standard
//! Webhooks ([`signing`], which also verifies what `POST /hooks/{link}` receives).

pub mod config;
pub mod outbound;
pub mod signing;

pub use outbound::Webhook;

use crate::chat::model::EventKind;
use crate::config::Rules;

/// What a webhook link accepts of the common keys: every event, batches and parallel sends.
pub(crate) const RULES: Rules = Rules {
    default_events: &EventKind::ALL,
    allowed_events: &EventKind::ALL,
    why_not: "",
    names: false,
    batch_max: (Some(1..=1000), 1),
    max_in_flight: (Some(1..=256), 1),
    timeout: true,
};
