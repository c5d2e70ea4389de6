//! Which Matrix room each mirrored chat room goes to, checked across the links and rooms: every
//! `[[rooms]]` entry that lists a Matrix link needs a Matrix room in that link's `rooms` table,
//! an entry there for a room the link does not mirror is a mistake, and one Matrix room may be
//! mapped by one link only (two application services relaying the same room would echo each
//! other's ghosts back and forth).

use std::collections::BTreeMap;

use crate::config::error::Problems;
use crate::config::rooms::RoomConfig;
use crate::platforms::link::LinkConfig;

/// Reports every missing, stray or doubled room mapping of the Matrix links.
pub(crate) fn check(
    links: &BTreeMap<String, LinkConfig>,
    rooms: &[RoomConfig],
    problems: &mut Problems,
) {
    let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, link) in links {
        let Some(matrix) = link.kind.matrix() else {
            continue;
        };
        for room in rooms.iter().filter(|r| r.links.contains(name)) {
            if !matrix.rooms.contains_key(&room.name) {
                problems.add(
                    &format!("links.{name}.rooms"),
                    format!(
                        "room {:?} is mirrored to this link but has no Matrix room here: add {} = \"!…:{}\"",
                        room.name, room.name, matrix.server_name
                    ),
                );
            }
        }
        for (room, target) in &matrix.rooms {
            if !rooms
                .iter()
                .any(|r| &r.name == room && r.links.contains(name))
            {
                problems.add(
                    &format!("links.{name}.rooms.{room}"),
                    format!("room {room:?} is not mirrored to link {name:?}: list the link in its [[rooms]] entry, or remove this line"),
                );
            }
            if let Some(first) = claimed.insert(target.as_str(), name.as_str()) {
                problems.add(
                    &format!("links.{name}.rooms.{room}"),
                    format!("Matrix room {target} is already mapped by link {first:?}: a Matrix room may be mapped once"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Env, load_str};

    fn link(name: &str, rooms: &str) -> String {
        format!(
            "[links.{name}]\nkind = \"matrix\"\nhomeserver_url = \"http://127.0.0.1:8008\"\n\
             server_name = \"example.org\"\nas_token = \"as-{name}\"\nhs_token = \"hs-{name}\"\n\
             [links.{name}.rooms]\n{rooms}"
        )
    }

    fn problems(toml: &str) -> Vec<String> {
        match load_str(toml, &Env::new()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn every_mirrored_room_needs_one_matrix_room_mapped_once() {
        let ok = format!(
            "{}[[rooms]]\nname = \"general\"\nlinks = [\"m\"]\n",
            link("m", "general = \"!g:example.org\"\n")
        );
        assert_eq!(problems(&ok), Vec::<String>::new());
        let toml = format!(
            "{}{}[[rooms]]\nname = \"general\"\nlinks = [\"m\", \"n\"]\n\
             [[rooms]]\nname = \"random\"\nlinks = [\"m\"]\n",
            link(
                "m",
                "general = \"!g:example.org\"\nstray = \"!s:example.org\"\n"
            ),
            link("n", "general = \"!g:example.org\"\n"),
        );
        let found = problems(&toml);
        let has = |start: &str, words: &str| {
            found
                .iter()
                .any(|p| p.starts_with(start) && p.contains(words))
        };
        assert!(
            has(
                "links.m.rooms",
                "\"random\" is mirrored to this link but has no Matrix room"
            ),
            "{found:#?}"
        );
        assert!(
            has("links.m.rooms.stray", "not mirrored to link \"m\""),
            "{found:#?}"
        );
        assert!(
            has("links.n.rooms.general", "already mapped by link \"m\""),
            "{found:#?}"
        );
        assert_eq!(found.len(), 3, "{found:#?}");
    }
}
