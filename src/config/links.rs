//! The part of `[links.<name>]` every kind shares, [`LinkCommon`] (`events`, `name_format`,
//! delivery policy), read the same way for every kind under that kind's [`Rules`]. The link
//! itself, its kind and the kind's own keys are the platforms' ([`crate::platforms::link`]).

use std::ops::RangeInclusive;
use std::time::Duration;

use super::error::Problems;
use super::reader::Table;
use crate::chat::model::EventKind;
use crate::platforms::chatpost::template::Template;

/// The part of a link every kind shares.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkCommon {
    /// Which event kinds the link receives (`message`, `join`, `leave`, `typing`,
    /// `read_receipt`). Default: the kind's (`message`, `join`, `leave` for most).
    pub events: Vec<EventKind>,
    /// How a chat user is named on the link (`name_format`), from `{username}`, `{user_id}`,
    /// `{room}`, `{origin}`. Default: `"{username}"`. Only for links that show names (Slack,
    /// Discord).
    pub name_format: Template,
    /// Timeouts, batching and concurrency.
    pub delivery: DeliveryPolicy,
    /// When `read_receipt` is in `events`: at most one "seen by …" line per room this often
    /// (`receipt_interval_secs`, 1 to 3600; Slack and Discord). Default: 30 seconds.
    pub receipt_interval: Duration,
}

/// How a link's worker hands events to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// How long one request may take before it counts as failed and is retried
    /// (`timeout_secs`, 1 to 300). Default: 15 seconds.
    pub timeout: Duration,
    /// How many queued events one send may carry (`batch_max`). Webhooks: events per POST
    /// (default 1). Slack and Discord: how many queued messages may be merged into posts when a
    /// backlog builds (default 1000).
    pub batch_max: usize,
    /// How many sends may be outstanding at once (`max_in_flight`). 1 keeps events in order.
    pub max_in_flight: usize,
}

/// What a kind accepts of the common keys; each platform defines its own (the registry,
/// [`crate::platforms::LinkKind::rules`], says which).
pub(crate) struct Rules {
    /// `events` when absent.
    pub(crate) default_events: &'static [EventKind],
    /// Events this kind can show; others are refused with `why_not`.
    pub(crate) allowed_events: &'static [EventKind],
    pub(crate) why_not: &'static str,
    /// Whether `name_format` and `receipt_interval_secs` are read (chat platforms).
    pub(crate) names: bool,
    /// `batch_max`: allowed range and default; `None` when the key is not read (fixed value).
    pub(crate) batch_max: (Option<RangeInclusive<u64>>, u64),
    /// `max_in_flight`: allowed range and default; `None` when not read.
    pub(crate) max_in_flight: (Option<RangeInclusive<u64>>, u64),
    /// Whether `timeout_secs` is read.
    pub(crate) timeout: bool,
}

/// The events most kinds receive when `events` is absent.
pub(crate) const DEFAULT_EVENTS: [EventKind; 3] =
    [EventKind::Message, EventKind::Join, EventKind::Leave];

impl Rules {
    /// Reads the common keys of one link under these rules.
    pub(crate) fn parse(&self, link: &mut Table, problems: &mut Problems) -> Option<LinkCommon> {
        let events = events(link, self, problems);
        let name_format = if self.names {
            link.string("name_format", problems)
                .and_then(|raw| {
                    Template::text(&raw.value)
                        .map_err(|e| problems.add(&raw.path, e))
                        .ok()
                })
                .unwrap_or_else(default_name_format)
        } else {
            default_name_format()
        };
        let receipt_interval = if self.names {
            link.integer("receipt_interval_secs", 1..=3600, 30, problems)
        } else {
            30
        };
        let timeout = if self.timeout {
            link.integer("timeout_secs", 1..=300, 15, problems)
        } else {
            15
        };
        let batch_max = read_rule(link, "batch_max", &self.batch_max, problems);
        let max_in_flight = read_rule(link, "max_in_flight", &self.max_in_flight, problems);
        Some(LinkCommon {
            events,
            name_format,
            delivery: DeliveryPolicy {
                timeout: Duration::from_secs(timeout),
                batch_max: usize::try_from(batch_max).ok()?,
                max_in_flight: usize::try_from(max_in_flight).ok()?,
            },
            receipt_interval: Duration::from_secs(receipt_interval),
        })
    }
}

/// A delivery key read under its rule, or the kind's fixed value when the kind has no such key.
fn read_rule(
    link: &mut Table,
    key: &'static str,
    rule: &(Option<RangeInclusive<u64>>, u64),
    problems: &mut Problems,
) -> u64 {
    match &rule.0 {
        Some(range) => link.integer(key, range.clone(), rule.1, problems),
        None => rule.1,
    }
}

fn default_name_format() -> Template {
    // A fixed, valid format: parsing it cannot fail.
    Template::text("{username}").unwrap_or_else(|_| unreachable!("the default name format"))
}

/// The `events` list of a link, or the kind's default when absent. Unknown names and events
/// the kind cannot show are reported; repeated names are kept once.
fn events(link: &mut Table, rules: &Rules, problems: &mut Problems) -> Vec<EventKind> {
    let default = rules.default_events;
    let when_empty = "list at least one event, or leave `events` out for the default";
    let Some(names) = link.string_list("events", when_empty, problems) else {
        return default.to_vec();
    };
    let mut kinds = Vec::new();
    for name in names {
        match EventKind::parse(&name.value) {
            Some(kind) if !rules.allowed_events.contains(&kind) => {
                problems.add(&name.path, rules.why_not);
            }
            Some(kind) if !kinds.contains(&kind) => kinds.push(kind),
            Some(_) => {}
            None => problems.add(
                &name.path,
                format!(
                    "unknown event {} (expected one of: message, join, leave, typing, read_receipt)",
                    name.shown()
                ),
            ),
        }
    }
    kinds
}
