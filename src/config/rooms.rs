//! `[[rooms]]` and `[dms]`: which chat scopes are mirrored, and to which links.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::error::Problems;
use super::reader::{Table, Text};
use crate::chat::model::room_name_problem;

/// Where one platform channel's inbound events go: the link whose channel it is, and its room.
pub(crate) struct ChannelRoom<'a> {
    pub link: &'a str,
    pub room: &'a str,
}

/// Platform channel → the one room (and link) its inbound events go to, over the links for
/// which `channel_of` names a channel. A channel in two rooms is ambiguous: the first wins,
/// and the others are reported when `report` is given (`platform`: "Slack", "Discord").
pub(crate) fn inbound_channels<'a, L>(
    links: &'a BTreeMap<String, L>,
    rooms: &'a [RoomConfig],
    platform: &str,
    channel_of: impl Fn(&'a L) -> Option<&'a str>,
    mut report: Option<&mut Problems>,
) -> BTreeMap<&'a str, ChannelRoom<'a>> {
    let mut map: BTreeMap<&str, ChannelRoom> = BTreeMap::new();
    for (index, room) in rooms.iter().enumerate() {
        for link in &room.links {
            let Some(channel) = links.get(link).and_then(&channel_of) else {
                continue;
            };
            if let Some(first) = map.get(channel) {
                if let Some(problems) = report.as_deref_mut() {
                    problems.add(
                        &format!("rooms[{index}].links"),
                        format!(
                            "{platform} channel {channel} (link `{link}`) is already mirrored to \
                             room `{}` by link `{}`: inbound {platform} events need one room per \
                             channel",
                            first.room, first.link
                        ),
                    );
                }
                continue;
            }
            map.insert(
                channel,
                ChannelRoom {
                    link,
                    room: &room.name,
                },
            );
        }
    }
    map
}

/// One mirrored room (`[[rooms]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    /// The room as the chat names it: events of channel `chat:room:<name>` are mirrored.
    /// Must not be empty or contain `:` or whitespace. Required; each room appears once.
    pub name: String,
    /// The names of the links (`[links.<name>]`) that receive this room's events, each at most
    /// once. Required, at least one.
    pub links: Vec<String>,
}

/// Direct messages (`[dms]`): every DM between any two users is mirrored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmsConfig {
    /// The names of the links that receive direct messages. Required, at least one.
    pub links: Vec<String>,
}

/// Reads `[[rooms]]`; absent means no room is mirrored.
pub(super) fn parse_rooms(
    root: &mut Table,
    declared: &BTreeSet<String>,
    problems: &mut Problems,
) -> Vec<RoomConfig> {
    let Some(entries) = root.list("rooms", problems) else {
        return Vec::new();
    };
    let mut rooms = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (path, value) in entries {
        let Some(mut room) = Table::try_new(path, value, problems) else {
            continue;
        };
        let name = room.required_string("name", problems);
        let links = link_references(&mut room, declared, problems);
        room.finish(problems);
        let Some(name) = name else { continue };
        if let Some(problem) = room_name_problem(&name.value) {
            problems.add(&name.path, problem);
        }
        if let Some(first) = seen.get(&name.value) {
            problems.add(
                &name.path,
                format!("room {} is already configured at {first}", name.shown()),
            );
            continue;
        }
        seen.insert(name.value.clone(), name.path.clone());
        rooms.push(RoomConfig {
            name: name.value,
            links,
        });
    }
    rooms
}

/// Reads `[dms]`; absent means DMs are not mirrored.
pub(super) fn parse_dms(
    root: &mut Table,
    declared: &BTreeSet<String>,
    problems: &mut Problems,
) -> Option<DmsConfig> {
    let mut section = root.optional_table("dms", problems)?;
    let links = link_references(&mut section, declared, problems);
    section.finish(problems);
    Some(DmsConfig { links })
}

/// The required `links` list of a room or of `[dms]`: each name must be a configured link,
/// listed once.
fn link_references(
    table: &mut Table,
    declared: &BTreeSet<String>,
    problems: &mut Problems,
) -> Vec<String> {
    let path = table.path_of("links");
    let Some(names) = table.string_list("links", "list at least one link", problems) else {
        if !problems.any_at(&path) {
            problems.add(
                &path,
                "missing (required): list the links that receive these events",
            );
        }
        return Vec::new();
    };
    let mut links: Vec<String> = Vec::new();
    for name in names {
        if let Some(problem) = reference_problem(&name, declared, &links) {
            problems.add(&name.path, problem);
        } else {
            links.push(name.value);
        }
    }
    links
}

fn reference_problem(
    name: &Text,
    declared: &BTreeSet<String>,
    so_far: &[String],
) -> Option<String> {
    if !declared.contains(&name.value) {
        Some(format!(
            "no link named {} is configured under [links]",
            name.shown()
        ))
    } else if so_far.contains(&name.value) {
        Some(format!("link {} is listed twice", name.shown()))
    } else {
        None
    }
}
