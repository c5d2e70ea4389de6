//! A configured link: the common part ([`LinkCommon`]) and what its kind adds ([`LinkKind`]),
//! read from `[links.<name>]`. [`LinkKind`] is the configuration half of the registry: which
//! kinds exist (`kind = "…"`), their common-key rules and their own parsers; the running half
//! (sinks, sources) is in [`crate::platforms`].

use std::collections::{BTreeMap, BTreeSet};

use super::discord::config::DiscordLinkConfig;
use super::matrix::config::MatrixLinkConfig;
use super::slack::config::SlackLinkConfig;
use super::webhook::config::WebhookLinkConfig;
use crate::chat::model::EventKind;
use crate::config::error::Problems;
use crate::config::links::{LinkCommon, Rules};
use crate::config::reader::Table;

/// One configured link: a place events are sent to.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// What every kind has: events, name format, delivery policy.
    pub common: LinkCommon,
    /// What this kind adds.
    pub kind: LinkKind,
}

impl LinkConfig {
    /// The event kinds this link receives.
    pub fn events(&self) -> &[EventKind] {
        &self.common.events
    }

    /// The `kind` as written in the config.
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// Where this link sends, safe to print (a URL shows only scheme and host).
    pub(crate) fn describe_target(&self) -> String {
        self.kind.describe()
    }

    /// Reads one `[links.<name>]` table. `None` when it cannot be built (problems recorded).
    pub(crate) fn parse(mut link: Table, problems: &mut Problems) -> Option<Self> {
        let kind = link.required_string("kind", problems)?;
        let Some(rules) = LinkKind::rules(&kind.value) else {
            let message = format!(
                "unknown link kind {} (expected one of: {})",
                kind.shown(),
                LinkKind::NAMES
            );
            problems.add(&kind.path, message);
            // Its other keys belong to a kind we do not know: do not call them unknown.
            return None;
        };
        let parsed = rules
            .parse(&mut link, problems)
            .map(|common| (common, LinkKind::parse(&kind.value, &mut link, problems)));
        link.finish(problems);
        let (common, kind) = parsed?;
        Some(Self {
            common,
            kind: kind?,
        })
    }
}

/// What each kind adds to the common part of a link: the registry of kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkKind {
    /// `kind = "console"`: prints events to standard output.
    Console,
    /// `kind = "webhook"`: POSTs events to an HTTP endpoint, signed per Standard Webhooks.
    Webhook(WebhookLinkConfig),
    /// `kind = "slack"`: posts to a Slack channel (Web API or incoming webhook).
    Slack(SlackLinkConfig),
    /// `kind = "discord"`: posts through a Discord channel webhook.
    Discord(DiscordLinkConfig),
    /// `kind = "matrix"`: an application service on a Matrix homeserver, each chat user a
    /// ghost Matrix user.
    Matrix(MatrixLinkConfig),
}

impl LinkKind {
    /// The kinds a link may have, as written in `kind = "…"`.
    pub(crate) const NAMES: &str = "console, webhook, slack, discord, matrix";

    /// The common keys' rules of the kind written `kind = "<kind>"`; `None` for no such kind.
    pub(crate) fn rules(kind: &str) -> Option<&'static Rules> {
        match kind {
            "console" => Some(&super::console::config::RULES),
            "webhook" => Some(&super::webhook::config::RULES),
            "slack" | "discord" => Some(&super::chatpost::rules::RULES),
            "matrix" => Some(&super::matrix::config::RULES),
            _ => None,
        }
    }

    /// Reads the kind's own keys of one link (`kind` is one [`Self::rules`] knows).
    pub(crate) fn parse(kind: &str, link: &mut Table, problems: &mut Problems) -> Option<Self> {
        match kind {
            "console" => Some(Self::Console),
            "webhook" => WebhookLinkConfig::parse(link, problems).map(Self::Webhook),
            "slack" => SlackLinkConfig::parse(link, problems).map(Self::Slack),
            "discord" => DiscordLinkConfig::parse(link, problems).map(Self::Discord),
            "matrix" => MatrixLinkConfig::parse(link, problems).map(Self::Matrix),
            _ => None,
        }
    }

    /// The `kind` as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Webhook(_) => "webhook",
            Self::Slack(_) => "slack",
            Self::Discord(_) => "discord",
            Self::Matrix(_) => "matrix",
        }
    }

    /// Where the link sends, safe to print (a URL shows only scheme and host).
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Console => String::new(),
            Self::Webhook(w) => w.describe(),
            Self::Slack(s) => s.describe(),
            Self::Discord(d) => d.describe(),
            Self::Matrix(m) => m.describe(),
        }
    }

    /// The webhook settings, for a webhook link.
    pub fn webhook(&self) -> Option<&WebhookLinkConfig> {
        match self {
            Self::Webhook(w) => Some(w),
            _ => None,
        }
    }

    /// The Slack settings, for a Slack link.
    pub fn slack(&self) -> Option<&SlackLinkConfig> {
        match self {
            Self::Slack(s) => Some(s),
            _ => None,
        }
    }

    /// The Discord settings, for a Discord link.
    pub fn discord(&self) -> Option<&DiscordLinkConfig> {
        match self {
            Self::Discord(d) => Some(d),
            _ => None,
        }
    }

    /// The Matrix settings, for a Matrix link.
    pub fn matrix(&self) -> Option<&MatrixLinkConfig> {
        match self {
            Self::Matrix(m) => Some(m),
            _ => None,
        }
    }

    /// Whether the link accepts signed events at `POST /hooks/{link}`.
    pub fn accepts_hooks(&self) -> bool {
        self.webhook().is_some_and(|w| w.inbound)
    }

    /// Why this build cannot run the link, if it cannot: `chatbridge check` warns and `run`
    /// (and a reload) refuse such a configuration rather than queue events nobody delivers.
    pub fn not_runnable(&self) -> Option<&'static str> {
        match self {
            Self::Matrix(_) => Some(
                "this version reads Matrix links and prints their registration \
                 (`chatbridge matrix registration`) but does not deliver to Matrix yet",
            ),
            _ => None,
        }
    }
}

/// Every link this build cannot run, as `links.<name>: why` ([`LinkKind::not_runnable`]).
pub fn not_runnable(links: &BTreeMap<String, LinkConfig>) -> Vec<String> {
    links
        .iter()
        .filter_map(|(name, link)| Some(format!("links.{name}: {}", link.kind.not_runnable()?)))
        .collect()
}

/// The links of `[links]`, and the names of all declared links, including ones that could
/// not be built: references to those are not reported a second time.
pub(crate) fn parse_links(
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
