//! `[links.<name>]`: where events go. Each link kind is one variant of [`LinkConfig`] and one
//! struct with its own `parse`; adding a kind (Slack, Discord) means adding both and one arm
//! in [`LinkConfig::parse`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::error::Problems;
use super::reader::Table;
use crate::model::EventKind;
use crate::secret::{SecretUrl, WebhookSecret};

/// The kinds a link may have, as written in `kind = "…"`.
const KINDS: &str = "console, webhook";

/// One configured link: a place events are sent to.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkConfig {
    /// `kind = "console"`: prints events to standard output.
    Console(ConsoleLinkConfig),
    /// `kind = "webhook"`: POSTs events to an HTTP endpoint, signed per Standard Webhooks.
    Webhook(WebhookLinkConfig),
}

impl LinkConfig {
    /// The event kinds this link receives.
    pub fn events(&self) -> &[EventKind] {
        match self {
            Self::Console(c) => &c.events,
            Self::Webhook(w) => &w.events,
        }
    }

    /// The `kind` as written in the config.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Console(_) => "console",
            Self::Webhook(_) => "webhook",
        }
    }

    /// Where this link sends, safe to print (a webhook shows only scheme and host).
    pub(super) fn describe_target(&self) -> String {
        match self {
            Self::Console(_) => String::new(),
            Self::Webhook(w) => {
                let signed = if w.secret.is_some() {
                    "signed"
                } else {
                    "unsigned"
                };
                format!("{}  {signed}", w.url.redacted())
            }
        }
    }

    /// Reads one `[links.<name>]` table. `None` when it cannot be built (problems recorded).
    fn parse(mut link: Table, problems: &mut Problems) -> Option<Self> {
        let kind = link.required_string("kind", problems)?;
        let parsed = match kind.value.as_str() {
            "console" => ConsoleLinkConfig::parse(&mut link, problems).map(Self::Console),
            "webhook" => WebhookLinkConfig::parse(&mut link, problems).map(Self::Webhook),
            _ => {
                let message = format!(
                    "unknown link kind {} (expected one of: {KINDS})",
                    kind.shown()
                );
                problems.add(&kind.path, message);
                // Its other keys belong to a kind we do not know: do not call them unknown.
                return None;
            }
        };
        link.finish(problems);
        parsed
    }
}

/// Prints events to standard output, one line each. For trying chatbridge out and for
/// debugging routing; it never fails, so it never retries.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleLinkConfig {
    /// Which event kinds to print (`message`, `join`, `leave`, `typing`, `read_receipt`).
    /// Default: `["message", "join", "leave"]`.
    pub events: Vec<EventKind>,
}

impl ConsoleLinkConfig {
    const DEFAULT_EVENTS: [EventKind; 3] = [EventKind::Message, EventKind::Join, EventKind::Leave];

    fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
        Some(Self {
            events: events(link, &Self::DEFAULT_EVENTS, problems),
        })
    }
}

/// POSTs events as JSON to an HTTP endpoint, signed the Standard Webhooks way when a secret is
/// set. Failed deliveries are retried with backoff (`[delivery]`).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookLinkConfig {
    /// The endpoint (`http` or `https`). Required. Its path often holds a token, so it is
    /// only ever shown as `scheme://host/…`; put it in an environment variable with
    /// `url = "${MY_HOOK_URL}"`.
    pub url: SecretUrl,
    /// The Standard Webhooks signing secret (`whsec_` + base64 of 24 to 64 bytes). When set,
    /// every request carries `webhook-signature`. Default: unsigned.
    pub secret: Option<WebhookSecret>,
    /// Which event kinds to send. Default: all of them (`message`, `join`, `leave`, `typing`,
    /// `read_receipt`).
    pub events: Vec<EventKind>,
    /// How long one request may take before it counts as failed and is retried
    /// (`timeout_secs`, 1 to 300). Default: 15 seconds.
    pub timeout: Duration,
    /// How many events one POST may carry (1 to 1000). Above 1, a request body is a
    /// `chat.batch` holding up to this many events. Default: 1.
    pub batch_max: usize,
    /// How many requests may be outstanding at once (1 to 256). 1 keeps events in order;
    /// more is faster but the endpoint may see them out of order. Default: 1.
    pub max_in_flight: usize,
}

impl WebhookLinkConfig {
    fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
        let url = link.required_string("url", problems).and_then(|raw| {
            SecretUrl::parse(&raw.value)
                .map_err(|e| problems.add(&raw.path, e))
                .ok()
        });
        let secret = link
            .string("secret", problems)
            .map(|raw| WebhookSecret::parse(&raw.value).map_err(|e| problems.add(&raw.path, e)));
        let events = events(link, &EventKind::ALL, problems);
        let timeout = link.integer("timeout_secs", 1..=300, 15, problems);
        let batch_max = link.integer("batch_max", 1..=1000, 1, problems);
        let max_in_flight = link.integer("max_in_flight", 1..=256, 1, problems);
        Some(Self {
            url: url?,
            secret: secret.transpose().ok()?,
            events,
            timeout: Duration::from_secs(timeout),
            batch_max: usize::try_from(batch_max).ok()?,
            max_in_flight: usize::try_from(max_in_flight).ok()?,
        })
    }
}

/// The `events` list of a link, or `default` when absent. Unknown names are reported;
/// repeated names are kept once.
fn events(link: &mut Table, default: &[EventKind], problems: &mut Problems) -> Vec<EventKind> {
    let when_empty = "list at least one event, or leave `events` out for the default";
    let Some(names) = link.string_list("events", when_empty, problems) else {
        return default.to_vec();
    };
    let mut kinds = Vec::new();
    for name in names {
        match EventKind::parse(&name.value) {
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

/// The links of `[links]`, and the names of all declared links, including ones that could
/// not be built: references to those are not reported a second time.
pub(super) fn parse_links(
    mut section: Table,
    problems: &mut Problems,
) -> (BTreeMap<String, LinkConfig>, BTreeSet<String>) {
    let mut links = BTreeMap::new();
    let mut declared = BTreeSet::new();
    for (name, value) in section.drain() {
        let path = section.path_of(&name);
        if !is_link_name(&name) {
            problems.add(
                &path,
                "link names must be 1 to 64 characters of A-Z, a-z, 0-9, `_` and `-` \
                 (they become part of Redis key names)",
            );
        }
        declared.insert(name.clone());
        let Some(table) = Table::try_new(path, value, problems) else {
            continue;
        };
        if let Some(link) = LinkConfig::parse(table, problems) {
            links.insert(name, link);
        }
    }
    section.finish(problems);
    (links, declared)
}

fn is_link_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
