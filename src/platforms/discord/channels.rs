//! Which Discord channel's messages go to which room, and the Gateway connections that read
//! them: one per bot token, shared by the links that use it.

use std::collections::{BTreeMap, BTreeSet};

use super::config::{DiscordInbound, DiscordTarget, GatewaySettings};
use crate::config::error::Problems;
use crate::config::rooms::RoomConfig;
use crate::platforms::link::LinkConfig;

/// The Gateway connections the links ask for, one per bot token. Links that share a token but
/// not its `api_base` / `gateway_url` are reported when `report` is given (the first wins).
pub(crate) fn gateways(
    links: &BTreeMap<String, LinkConfig>,
    mut report: Option<&mut Problems>,
) -> Vec<GatewaySettings> {
    let mut by_token: Vec<GatewaySettings> = Vec::new();
    for (name, link) in links {
        let Some(discord) = link.kind.discord() else {
            continue;
        };
        let Some(inbound) = &discord.inbound else {
            continue;
        };
        match by_token
            .iter_mut()
            .find(|g| g.bot_token == inbound.bot_token)
        {
            Some(gateway) => {
                if (gateway.api_base != inbound.api_base
                    || gateway.gateway_url != inbound.gateway_url)
                    && let Some(problems) = report.as_deref_mut()
                {
                    problems.add(
                        &format!("links.{name}.bot_token"),
                        "links with the same bot token share one Gateway connection: their \
                         `api_base` and `gateway_url` must be the same",
                    );
                }
                gateway.joins |= inbound.joins;
                gateway.links.insert(name.clone());
            }
            None => by_token.push(GatewaySettings {
                key: inbound.bot_token.fingerprint(),
                bot_token: inbound.bot_token.clone(),
                api_base: inbound.api_base.clone(),
                gateway_url: inbound.gateway_url.clone(),
                joins: inbound.joins,
                links: BTreeSet::from([name.clone()]),
            }),
        }
    }
    by_token
}

/// Discord channel id → the one room (and link) its messages go to. A channel read for two
/// rooms is ambiguous: reported as a problem when `report` is given.
pub(crate) fn discord_channels(
    links: &BTreeMap<String, LinkConfig>,
    rooms: &[RoomConfig],
    report: Option<&mut Problems>,
) -> BTreeMap<String, DiscordTarget> {
    fn inbound(link: &LinkConfig) -> Option<&DiscordInbound> {
        link.kind.discord()?.inbound.as_ref()
    }
    fn channel_of(link: &LinkConfig) -> Option<&str> {
        inbound(link).map(|i| i.channel_id.as_str())
    }
    let gateways = gateways(links, None);
    crate::config::rooms::inbound_channels(links, rooms, "Discord", channel_of, report)
        .into_iter()
        .filter_map(|(channel, to)| {
            let settings = inbound(links.get(to.link)?)?;
            let gateway = gateways
                .iter()
                .find(|g| g.links.contains(to.link))
                .map(|g| g.key.clone())
                .unwrap_or_default();
            let target = DiscordTarget {
                link: to.link.to_owned(),
                room: to.room.to_owned(),
                bots: settings.bots,
                joins: settings.joins,
                gateway,
            };
            Some((channel.to_owned(), target))
        })
        .collect()
}
