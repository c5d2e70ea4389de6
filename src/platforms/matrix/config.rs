//! `[links.<name>]` with `kind = "matrix"`: chatbridge as a Matrix application service. The
//! homeserver, the two registration tokens, how ghosts and the bot are named, and which
//! Matrix room each chat room is mirrored to (`[links.<name>.rooms]`).

use std::collections::BTreeMap;

use super::ghost;
use crate::chat::model::EventKind;
use crate::config::error::Problems;
use crate::config::links::Rules;
use crate::config::reader::{Table, string_at};
use crate::secret::{BotToken, SecretUrl};

/// What a Matrix link accepts of the common keys: every event (Matrix shows typing and read
/// receipts natively), one send at a time so a room's messages keep their order, ghosts named
/// by the chat's own `username` (no `name_format`).
pub(crate) const RULES: Rules = Rules {
    default_events: &EventKind::ALL,
    allowed_events: &EventKind::ALL,
    why_not: "",
    names: false,
    batch_max: (None, 1),
    max_in_flight: (None, 1),
    timeout: true,
};

/// The default localpart of the bridge's bot.
const DEFAULT_SENDER: &str = "chatbridge";
/// The default prefix of ghost localparts.
const DEFAULT_GHOST_PREFIX: &str = "_chat_";

/// A Matrix link: an application service registered on one homeserver.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixLinkConfig {
    /// The client-server API base (`homeserver_url`, `http` or `https`). Required.
    pub homeserver_url: SecretUrl,
    /// The part after `:` in the homeserver's user ids (`server_name`). Required.
    pub server_name: String,
    /// The registration's `as_token`: how chatbridge authenticates to the homeserver
    /// (`as_token`). Required; a secret.
    pub as_token: BotToken,
    /// The registration's `hs_token`: how the homeserver authenticates to chatbridge
    /// (`hs_token`). Required; a secret, and not the same as `as_token`.
    pub hs_token: BotToken,
    /// The bridge bot's localpart (`sender_localpart`). Default: `chatbridge`.
    pub sender_localpart: String,
    /// Ghost user ids are `@{ghost_prefix}{escaped user_id}:{server_name}` (`ghost_prefix`).
    /// Default: `_chat_`.
    pub ghost_prefix: String,
    /// Where the homeserver reaches chatbridge, for the registration's `url`
    /// (`registration_url`, e.g. behind a proxy). Default: the `[http]` listen address.
    pub registration_url: Option<String>,
    /// Chat room → Matrix room id (`!…:server`) or alias (`#…:server`) (`[links.<name>.rooms]`).
    pub rooms: BTreeMap<String, String>,
}

impl MatrixLinkConfig {
    pub(crate) fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
        let homeserver_url = link
            .required_string("homeserver_url", problems)
            .and_then(|raw| {
                SecretUrl::parse(&raw.value)
                    .map_err(|e| problems.add(&raw.path, e))
                    .ok()
            });
        let server_name = link
            .required_string("server_name", problems)
            .and_then(|raw| match server_name_problem(&raw.value) {
                Some(why) => {
                    problems.add(&raw.path, why);
                    None
                }
                None => Some(raw.value),
            });
        let mut token = |key: &'static str| {
            link.required_string(key, problems).and_then(|raw| {
                BotToken::parse(&raw.value)
                    .map_err(|e| problems.add(&raw.path, e))
                    .ok()
                    .map(|token| (raw.path, token))
            })
        };
        let as_token = token("as_token");
        let hs_token = token("hs_token");
        if let (Some((_, a)), Some((path, h))) = (&as_token, &hs_token)
            && a == h
        {
            problems.add(
                path,
                "must differ from as_token: each side proves itself with its own token",
            );
        }
        let sender_localpart = localpart(link, "sender_localpart", DEFAULT_SENDER, problems);
        let ghost_prefix = localpart(link, "ghost_prefix", DEFAULT_GHOST_PREFIX, problems);
        if let (Some(sender), Some(prefix)) = (&sender_localpart, &ghost_prefix)
            && sender.starts_with(prefix.as_str())
        {
            problems.add(
                &link.path_of("sender_localpart"),
                format!("the bot's localpart must not start with ghost_prefix {prefix:?}"),
            );
        }
        let registration_url = link.string("registration_url", problems).and_then(|raw| {
            match reqwest::Url::parse(&raw.value) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Some(raw.value),
                _ => {
                    problems.add(&raw.path, "not an http:// or https:// URL");
                    None
                }
            }
        });
        let rooms = parse_rooms(link, problems);
        Some(Self {
            homeserver_url: homeserver_url?,
            server_name: server_name?,
            as_token: as_token?.1,
            hs_token: hs_token?.1,
            sender_localpart: sender_localpart?,
            ghost_prefix: ghost_prefix?,
            registration_url,
            rooms: rooms?,
        })
    }

    /// Where the link sends, safe to print.
    pub(crate) fn describe(&self) -> String {
        let rooms = match self.rooms.len() {
            1 => "1 room".to_owned(),
            n => format!("{n} rooms"),
        };
        format!(
            "{} as {} ({rooms})",
            self.homeserver_url.redacted(),
            self.bot()
        )
    }

    /// The bot's user id.
    pub fn bot(&self) -> String {
        ghost::user_id(&self.sender_localpart, &self.server_name)
    }

    /// The ghost user id of chat user `user_id`.
    pub fn ghost(&self, user_id: &str) -> String {
        let localpart = format!("{}{}", self.ghost_prefix, ghost::escape(user_id));
        ghost::user_id(&localpart, &self.server_name)
    }
}

/// A localpart key, or its default; reported when it is not a valid localpart.
fn localpart(
    link: &mut Table,
    key: &'static str,
    default: &str,
    problems: &mut Problems,
) -> Option<String> {
    let Some(raw) = link.string(key, problems) else {
        return Some(default.to_owned());
    };
    if ghost::is_localpart(&raw.value) {
        Some(raw.value)
    } else {
        problems.add(
            &raw.path,
            "not a Matrix localpart: use a-z, 0-9 and . _ = - / only",
        );
        None
    }
}

/// `[links.<name>.rooms]`: chat room → Matrix room id or alias; a Matrix room mapped twice is
/// reported (its events could not say which chat room they belong to).
fn parse_rooms(link: &mut Table, problems: &mut Problems) -> Option<BTreeMap<String, String>> {
    let Some(mut table) = link.optional_table("rooms", problems) else {
        problems.add(
            &link.path_of("rooms"),
            "missing (required): which Matrix room each chat room is mirrored to, e.g. \
             general = \"!abcdef:example.org\"",
        );
        return None;
    };
    let mut rooms = BTreeMap::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (room, value) in table.drain() {
        let path = table.path_of(&room);
        let Some(raw) = string_at(path.clone(), value, problems) else {
            continue;
        };
        if let Some(why) = matrix_room_problem(&raw.value) {
            problems.add(&path, why);
            continue;
        }
        if let Some(first) = seen.insert(raw.value.clone(), room.clone()) {
            problems.add(
                &path,
                format!(
                    "Matrix room {} is already mapped to chat room {first:?}: a Matrix room may be mapped once",
                    raw.value
                ),
            );
            continue;
        }
        rooms.insert(room, raw.value);
    }
    table.finish(problems);
    Some(rooms)
}

/// Why `name` is not a server name (`host` or `host:port`), if it is not.
fn server_name_problem(name: &str) -> Option<&'static str> {
    let (host, port) = match name.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (name, None),
        Some((host, port)) => (host, Some(port)),
        None => (name, None),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    (!(host_ok && port_ok))
        .then_some("not a Matrix server name (a host name, optionally with :port)")
}

/// Why `room` is not a Matrix room id (`!…:server`) or alias (`#…:server`), if it is not.
fn matrix_room_problem(room: &str) -> Option<&'static str> {
    let well_formed = (room.starts_with('!') || room.starts_with('#'))
        && room[1..]
            .split_once(':')
            .is_some_and(|(local, server)| !local.is_empty() && !server.is_empty())
        && !room.chars().any(|c| c.is_whitespace() || c.is_control());
    (!well_formed).then_some("not a Matrix room id (!…:server) or alias (#…:server)")
}

#[cfg(test)]
mod tests {
    use crate::config::{Env, LinkKind, load_str};

    pub(crate) const LINK: &str = "[links.m]\nkind = \"matrix\"\n\
        homeserver_url = \"http://127.0.0.1:8008\"\nserver_name = \"example.org\"\n\
        as_token = \"as-sekrit\"\nhs_token = \"hs-sekrit\"\n";

    fn problems(toml: &str) -> Vec<String> {
        match load_str(toml, &Env::new()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_matrix_link_reads_its_rooms_and_names_its_ghosts() {
        let toml = format!(
            "{LINK}[links.m.rooms]\ngeneral = \"!abc:example.org\"\nrandom = \"#random:example.org\"\n\
             [[rooms]]\nname = \"general\"\nlinks = [\"m\"]\n[[rooms]]\nname = \"random\"\nlinks = [\"m\"]\n"
        );
        let config = load_str(&toml, &Env::new()).expect("valid");
        let LinkKind::Matrix(m) = &config.links["m"].kind else {
            panic!("a matrix link");
        };
        assert_eq!(m.rooms["general"], "!abc:example.org");
        assert_eq!(m.bot(), "@chatbridge:example.org");
        assert_eq!(m.ghost("Alice 1"), "@_chat__alice=201:example.org");
        assert_eq!(config.links["m"].events().len(), 5);
        let shown = format!("{config:?}{}", config.routing_table());
        assert!(!shown.contains("sekrit"), "a token printed: {shown}");
    }

    #[test]
    fn bad_matrix_settings_are_each_reported() {
        let toml = "[links.m]\nkind = \"matrix\"\nhomeserver_url = \"nope\"\n\
            server_name = \"exa mple\"\nas_token = \"same\"\nhs_token = \"same\"\n\
            sender_localpart = \"Bot\"\nghost_prefix = \"_chat_\"\nregistration_url = \"ftp://x\"\n\
            [links.m.rooms]\ngeneral = \"abc\"\nrandom = \"!r:example.org\"\nother = \"!r:example.org\"\n";
        let found = problems(toml);
        for key in [
            "links.m.homeserver_url",
            "links.m.server_name",
            "links.m.hs_token",
            "links.m.sender_localpart",
            "links.m.registration_url",
            "links.m.rooms.general",
            "links.m.rooms.random",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(key)),
                "{key} not reported in {found:#?}"
            );
        }
        let missing = problems("[links.m]\nkind = \"matrix\"\n");
        for key in [
            "homeserver_url",
            "server_name",
            "as_token",
            "hs_token",
            "rooms",
        ] {
            assert!(
                missing
                    .iter()
                    .any(|p| p.starts_with(&format!("links.m.{key}"))),
                "{key} not reported missing in {missing:#?}"
            );
        }
    }
}
