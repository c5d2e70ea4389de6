//! Which Slack channel's events go to which room: each Slack link's `channel` (Web API mode)
//! doubles as the inbound mapping.

use std::collections::BTreeMap;

use super::config::{SlackInbound, SlackMode};
use crate::config::error::Problems;
use crate::config::rooms::RoomConfig;
use crate::platforms::link::LinkConfig;

/// Slack channel id → the one room (and link) its inbound events go to. A channel mirrored
/// to two rooms is ambiguous: reported as a problem when `report` is given.
pub(crate) fn slack_channels(
    links: &BTreeMap<String, LinkConfig>,
    rooms: &[RoomConfig],
    report: Option<&mut Problems>,
) -> BTreeMap<String, SlackInbound> {
    fn channel_of(link: &LinkConfig) -> Option<&str> {
        match &link.kind.slack()?.mode {
            SlackMode::Api { channel, .. } => Some(channel.as_str()),
            SlackMode::Webhook { .. } => None,
        }
    }
    crate::config::rooms::inbound_channels(links, rooms, "Slack", channel_of, report)
        .into_iter()
        .map(|(channel, to)| {
            let target = SlackInbound {
                link: to.link.to_owned(),
                room: to.room.to_owned(),
            };
            (channel.to_owned(), target)
        })
        .collect()
}
