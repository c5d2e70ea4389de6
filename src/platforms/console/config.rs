//! A console link has no keys of its own: only the common ones, under these rules.

use crate::chat::model::EventKind;
use crate::config::links::{DEFAULT_EVENTS, Rules};

/// What a console link accepts of the common keys: every event, no delivery tuning.
pub(crate) const RULES: Rules = Rules {
    default_events: &DEFAULT_EVENTS,
    allowed_events: &EventKind::ALL,
    why_not: "",
    names: false,
    batch_max: (None, super::BATCH_MAX as u64),
    max_in_flight: (None, 1),
    timeout: false,
};
