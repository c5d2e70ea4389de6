//! A console link has no keys of its own: only the common ones, under these rules, and a
//! fixed batch size.

use crate::chat::model::EventKind;
use crate::config::links::{DEFAULT_EVENTS, Rules};

/// The most events printed per write.
pub const BATCH_MAX: usize = 256;

/// What a console link accepts of the common keys: every event, no delivery tuning.
pub(crate) const RULES: Rules = Rules {
    default_events: &DEFAULT_EVENTS,
    allowed_events: &EventKind::ALL,
    why_not: "",
    names: false,
    batch_max: (None, BATCH_MAX as u64),
    max_in_flight: (None, 1),
    timeout: false,
};
