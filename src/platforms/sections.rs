//! The platforms' side of the configuration beyond their links: the top-level sections that
//! belong to a platform ([`Sections`], `[slack]`), the checks across links and rooms, and what
//! `chatbridge check` and a reload say about the platforms' inbound paths.

use std::collections::BTreeMap;

use super::discord::channels::{discord_channels, gateways};
use super::link::LinkConfig;
use super::slack::channels::slack_channels;
use super::slack::config::{SlackAppConfig, parse_slack};
use crate::config::error::Problems;
use crate::config::reader::Table;
use crate::config::rooms::RoomConfig;

/// The top-level sections that belong to a platform rather than to one link (`[slack]`: the
/// Slack app), read by the registry and kept in [`crate::config::Config::sections`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sections {
    /// `[slack]`: the app whose Events API requests `POST /slack/events` accepts, or whose
    /// events come through Socket Mode with `app_token`. Absent: that route answers 404.
    pub slack: Option<SlackAppConfig>,
}

impl Sections {
    /// Reads every platform's top-level section from `root`.
    pub(crate) fn parse(root: &mut Table, problems: &mut Problems) -> Self {
        Self {
            slack: parse_slack(root.optional_table("slack", problems), problems),
        }
    }

    /// Whether a section opens an inbound HTTP route (the HTTP server must run).
    pub fn has_inbound(&self) -> bool {
        self.slack.is_some()
    }
}

/// The checks that need the links, the rooms and the sections together: inbound channels
/// mapped twice, Gateway settings that disagree for one bot token.
pub(crate) fn check(
    links: &BTreeMap<String, LinkConfig>,
    rooms: &[RoomConfig],
    sections: &Sections,
    problems: &mut Problems,
) {
    if sections.slack.is_some() {
        slack_channels(links, rooms, Some(problems));
    }
    discord_channels(links, rooms, Some(problems));
    gateways(links, Some(problems));
    super::matrix::rooms::check(links, rooms, problems);
}

/// What comes in through the platforms, one line each (for `chatbridge check`): which route or
/// connection, which channel, into which room.
pub(crate) fn describe_inbound(
    links: &BTreeMap<String, LinkConfig>,
    rooms: &[RoomConfig],
    sections: &Sections,
) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(app) = &sections.slack {
        let via = if app.app_token.is_some() {
            "Slack Socket Mode"
        } else {
            "POST /slack/events"
        };
        let channels = slack_channels(links, rooms, None);
        if channels.is_empty() {
            lines.push(format!(
                "{via}  → (no Slack link in Web API mode mirrors a room)"
            ));
        }
        for (channel, target) in channels {
            lines.push(format!(
                "{via}  channel {channel} → {} (origin {})",
                target.room, target.link
            ));
        }
    }
    for (channel, target) in discord_channels(links, rooms, None) {
        lines.push(format!(
            "Discord Gateway  channel {channel} → {} (origin {})",
            target.room, target.link
        ));
    }
    lines
}

/// The settings of the connection-holding sources, which are opened once at start: the keys
/// (as an operator would write them) whose change between `old` and `new` needs a restart.
pub(crate) fn fixed_at_start(
    old: (&BTreeMap<String, LinkConfig>, &Sections),
    new: (&BTreeMap<String, LinkConfig>, &Sections),
) -> Vec<&'static str> {
    let mut changed = Vec::new();
    // The Socket Mode client: its token, API base and app.
    let socket = |(_, sections): (&BTreeMap<String, LinkConfig>, &Sections)| {
        sections
            .slack
            .as_ref()
            .and_then(|s| Some((s.app_token.clone()?, s.api_base.clone(), s.app_id.clone())))
    };
    if socket(old) != socket(new) {
        changed.push("slack.app_token / slack.api_base (Socket Mode)");
    }
    // The Gateway connections: which bot tokens, where, with which intents. The channel →
    // room mapping applies at once.
    let gateways = |(links, _): (&BTreeMap<String, LinkConfig>, &Sections)| {
        gateways(links, None)
            .into_iter()
            .map(|g| (g.key, g.api_base, g.gateway_url, g.joins))
            .collect::<Vec<_>>()
    };
    if gateways(old) != gateways(new) {
        changed
            .push("links.*.bot_token / api_base / gateway_url / inbound_joins (Discord Gateway)");
    }
    changed
}
