//! Discord inbound through the Gateway: a Discord link with `bot_token` + `channel_id` also
//! brings that channel's messages into the rooms the link mirrors ([`crate::platforms::discord::gateway`]).
//! Links sharing one bot token share one Gateway connection.

use std::collections::BTreeSet;

use crate::config::error::Problems;
use crate::config::reader::Table;
use crate::platforms::chatpost::template::Template;
use crate::secret::{BotToken, SecretUrl};

/// Discord's REST API base, without version (`/v10` is always added).
const DEFAULT_API_BASE: &str = "https://discord.com/api";

/// A Discord link's inbound side (`bot_token`, `channel_id` and their options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordInbound {
    /// The bot's token (*Developer Portal* → *Bot* → *Token*, `bot_token`), with the privileged
    /// *Message Content* intent enabled. A secret: put it in an environment variable
    /// (`bot_token = "${DISCORD_BOT_TOKEN}"`).
    pub bot_token: BotToken,
    /// The id of the channel the link's webhook posts into (`channel_id`, a snowflake such as
    /// `"1234567890123456789"`): its messages are written into the link's room.
    pub channel_id: String,
    /// Discord's REST API base for the backfill after a lost session (`api_base`). Default:
    /// `https://discord.com/api`.
    pub api_base: SecretUrl,
    /// A Gateway URL to connect to instead of Discord's (`gateway_url`, e.g. a gateway proxy
    /// or a test server; `ws://` or `wss://`). Default: Discord's own, as READY names it.
    pub gateway_url: Option<String>,
    /// Whether messages from bots and from webhooks other than ours are mirrored
    /// (`inbound_bots`). Our own webhooks' posts never are. Default: false.
    pub bots: bool,
    /// Whether members joining and leaving the server become join and leave lines in the room
    /// (`inbound_joins`; needs the privileged *Server Members* intent). Default: false.
    pub joins: bool,
}

impl DiscordInbound {
    /// The inbound keys of a Discord link; `None` when neither `bot_token` nor `channel_id`
    /// is set.
    pub(crate) fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
        let token = link.string("bot_token", problems);
        let channel = link.string("channel_id", problems);
        let api_base = link.string("api_base", problems);
        let gateway_url = link.string("gateway_url", problems);
        let bots = link.boolean("inbound_bots", false, problems);
        let joins = link.boolean("inbound_joins", false, problems);
        let (token, channel) = match (token, channel) {
            (Some(token), Some(channel)) => (token, channel),
            (None, None) => {
                for (key, unused) in [("api_base", api_base), ("gateway_url", gateway_url)] {
                    if let Some(unused) = unused {
                        problems.add(
                            &unused.path,
                            format!("`{key}` needs `bot_token` + `channel_id` (Discord inbound)"),
                        );
                    }
                }
                return None;
            }
            (Some(_), None) => {
                problems.add(
                    &link.path_of("channel_id"),
                    "`bot_token` needs `channel_id`: the id of the channel the webhook posts into",
                );
                return None;
            }
            (None, Some(channel)) => {
                problems.add(
                    &channel.path,
                    "`channel_id` needs `bot_token` (the Discord bot that reads the channel)",
                );
                return None;
            }
        };
        let bot_token = BotToken::parse(&token.value)
            .map_err(|e| problems.add(&token.path, e))
            .ok();
        if !is_snowflake(&channel.value) {
            problems.add(
                &channel.path,
                format!(
                    "{} is not a Discord channel id (a number of up to 20 digits; copy it with \
                     Developer Mode → Copy Channel ID)",
                    channel.shown()
                ),
            );
        }
        let api_base = match api_base {
            Some(raw) => SecretUrl::parse(raw.value.trim_end_matches('/'))
                .map_err(|e| problems.add(&raw.path, e))
                .ok()?,
            None => SecretUrl::parse(DEFAULT_API_BASE).ok()?,
        };
        let gateway_url = match gateway_url {
            Some(raw) => match reqwest::Url::parse(&raw.value) {
                Ok(url) if matches!(url.scheme(), "ws" | "wss") && url.host().is_some() => {
                    Some(raw.value.trim_end_matches('/').to_owned())
                }
                _ => {
                    problems.add(&raw.path, "must be a ws:// or wss:// URL");
                    return None;
                }
            },
            None => None,
        };
        Some(Self {
            bot_token: bot_token?,
            channel_id: channel.value,
            api_base,
            gateway_url,
            bots,
            joins,
        })
    }
}

/// A Discord id: 1 to 20 ASCII digits.
pub fn is_snowflake(id: &str) -> bool {
    (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// Where one Discord channel's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordTarget {
    /// The Discord link whose `channel_id` it is: the events' `origin`.
    pub link: String,
    /// The room they are written into.
    pub room: String,
    /// `inbound_bots` of that link.
    pub bots: bool,
    /// `inbound_joins` of that link.
    pub joins: bool,
    /// Which Gateway connection reads it ([`GatewaySettings::key`]).
    pub gateway: String,
}

/// One Gateway connection: a bot token and what every link using it asks of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Names the connection in logs and its Redis lease without showing the token: the first
    /// 16 hex digits of its SHA-256.
    pub key: String,
    pub bot_token: BotToken,
    pub api_base: SecretUrl,
    pub gateway_url: Option<String>,
    /// Whether any of its links mirrors joins (the `GUILD_MEMBERS` intent).
    pub joins: bool,
    /// The links it reads for, by name.
    pub links: BTreeSet<String>,
}

/// Posts through a Discord channel webhook, each chat user under their own name.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscordLinkConfig {
    /// The execute-webhook URL (`webhook_url`), always sent to `/api/v10/webhooks/{id}/{token}`
    /// (an unversioned or other-version URL is rewritten). A secret: only shown redacted.
    pub url: SecretUrl,
    /// The sender's picture (`avatar_url`), a format such as
    /// `"https://avatars.example/{user_id}.png"`. Default: the webhook's own.
    pub avatar_url: Option<Template>,
    /// The webhook's id (the URL's `{id}`, not a secret): posts that come back through the
    /// Gateway with this `webhook_id` are ours and never mirrored again.
    pub webhook_id: String,
    /// Reading the channel through the Gateway (`bot_token`, `channel_id`, …). Default: none
    /// (outbound only).
    pub inbound: Option<DiscordInbound>,
}

impl DiscordLinkConfig {
    /// Where the link posts, safe to print.
    pub(crate) fn describe(&self) -> String {
        format!("webhook {}", self.url.redacted())
    }

    pub(crate) fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
        let url = link
            .required_string("webhook_url", problems)
            .and_then(|raw| {
                SecretUrl::parse(&raw.value)
                    .and_then(|url| discord_v10(&url))
                    .map_err(|e| problems.add(&raw.path, e))
                    .ok()
            });
        let avatar_url = link
            .string("avatar_url", problems)
            .map(|raw| Template::url(&raw.value).map_err(|e| problems.add(&raw.path, e)));
        let inbound = DiscordInbound::parse(link, problems);
        let url = url?;
        let webhook_id = url
            .expose()
            .path_segments()
            .and_then(|mut s| s.nth_back(1))
            .unwrap_or_default()
            .to_owned();
        Some(Self {
            url,
            avatar_url: avatar_url.transpose().ok()?,
            webhook_id,
            inbound,
        })
    }
}

/// The execute-webhook URL with API version 10 in its path: `…/api/webhooks/…` and
/// `…/api/v9/webhooks/…` become `…/api/v10/webhooks/…`. Anything not shaped
/// `…/api[/vN]/webhooks/{id}/{token}` is refused (without echoing it).
fn discord_v10(url: &SecretUrl) -> Result<SecretUrl, String> {
    let mut exposed = url.expose().clone();
    let segments: Vec<String> = exposed
        .path_segments()
        .map(|s| s.map(str::to_owned).collect())
        .unwrap_or_default();
    let api = segments.iter().position(|s| s == "api");
    let shaped = api.and_then(|api| {
        let rest = &segments[api + 1..];
        let rest = match rest.first() {
            Some(v) if v.starts_with('v') && v[1..].bytes().all(|b| b.is_ascii_digit()) => {
                &rest[1..]
            }
            _ => rest,
        };
        match rest {
            [hooks, id, token] if hooks == "webhooks" && !id.is_empty() && !token.is_empty() => {
                Some((api, rest.to_vec()))
            }
            _ => None,
        }
    });
    let Some((api, rest)) = shaped else {
        return Err(
            "not a Discord execute-webhook URL (expected …/api/webhooks/{id}/{token})".into(),
        );
    };
    let mut path: Vec<String> = segments[..=api].to_vec();
    path.push("v10".into());
    path.extend(rest);
    exposed.set_path(&path.join("/"));
    SecretUrl::parse(exposed.as_str())
}

#[cfg(test)]
mod tests {
    use crate::config::{Env, LinkKind, load_str};

    fn link(name: &str, extra: &str) -> String {
        format!(
            "[links.{name}]\nkind = \"discord\"\n\
             webhook_url = \"https://discord.com/api/webhooks/123/sekrit-hook\"\n{extra}"
        )
    }

    const READ: &str = "bot_token = \"bot-sekrit\"\nchannel_id = \"800000000000000002\"\n";

    fn room(links: &str) -> String {
        format!("[[rooms]]\nname = \"general\"\nlinks = [{links}]\n")
    }

    fn problems(toml: &str) -> Vec<String> {
        match load_str(toml, &Env::new()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(|e| e.path.clone()).collect(),
        }
    }

    #[test]
    fn a_discord_link_with_a_bot_token_reads_its_channel_into_its_room() {
        let toml = format!("{}{}", link("d", READ), room("\"d\""));
        let config = load_str(&toml, &Env::new()).expect("valid");
        let channels = crate::platforms::discord::channels::discord_channels(
            &config.links,
            &config.rooms,
            None,
        );
        let target = &channels["800000000000000002"];
        assert_eq!(
            (target.link.as_str(), target.room.as_str()),
            ("d", "general")
        );
        assert!(!target.bots && !target.joins);
        let gateways = crate::platforms::discord::channels::gateways(&config.links, None);
        assert_eq!(gateways.len(), 1);
        assert_eq!(gateways[0].key, target.gateway);
        assert_eq!(
            gateways[0].api_base.expose().as_str(),
            "https://discord.com/api"
        );
        assert_eq!(gateways[0].gateway_url, None);
        let LinkKind::Discord(d) = &config.links["d"].kind else {
            panic!("a discord link");
        };
        assert_eq!(d.webhook_id, "123");
        let shown = format!("{config:?}{}", config.routing_table());
        assert!(!shown.contains("bot-sekrit"), "the token printed");
        assert!(
            shown.contains("Discord Gateway  channel 800000000000000002 → general (origin d)"),
            "{shown}"
        );
        assert_eq!(
            config.http_server(),
            None,
            "the Gateway needs no HTTP server"
        );
        // Without the inbound keys the link is outbound only.
        let plain =
            load_str(&format!("{}{}", link("d", ""), room("\"d\"")), &Env::new()).expect("valid");
        assert!(
            crate::platforms::discord::channels::gateways(&plain.links, None).is_empty()
                && crate::platforms::discord::channels::discord_channels(
                    &plain.links,
                    &plain.rooms,
                    None
                )
                .is_empty()
        );
    }

    #[test]
    fn links_sharing_a_bot_token_share_one_connection() {
        let second = "bot_token = \"bot-sekrit\"\nchannel_id = \"900\"\ninbound_joins = true\n";
        let toml = format!(
            "{}{}{}[[rooms]]\nname = \"random\"\nlinks = [\"e\"]\n",
            link("d", READ),
            link("e", second),
            room("\"d\"")
        );
        let config = load_str(&toml, &Env::new()).expect("valid");
        let gateways = crate::platforms::discord::channels::gateways(&config.links, None);
        assert_eq!(gateways.len(), 1);
        assert!(
            gateways[0].joins,
            "one link mirrors joins: the intent is asked for"
        );
        assert_eq!(
            crate::platforms::discord::channels::discord_channels(
                &config.links,
                &config.rooms,
                None
            )["900"]
                .room,
            "random"
        );
        let elsewhere = format!("{second}api_base = \"http://127.0.0.1:9/api\"\n");
        let toml = format!(
            "{}{}{}",
            link("d", READ),
            link("e", &elsewhere),
            room("\"d\", \"e\"")
        );
        assert_eq!(problems(&toml), ["links.e.bot_token"]);
    }

    #[test]
    fn inbound_keys_are_checked_with_their_paths() {
        let with = |extra: &str| problems(&format!("{}{}", link("d", extra), room("\"d\"")));
        assert_eq!(with("bot_token = \"t\"\n"), ["links.d.channel_id"]);
        assert_eq!(with("channel_id = \"1\"\n"), ["links.d.channel_id"]);
        assert_eq!(
            with("bot_token = \"t\"\nchannel_id = \"general\"\n"),
            ["links.d.channel_id"]
        );
        assert_eq!(
            with(&format!(
                "{READ}gateway_url = \"https://gateway.example\"\n"
            )),
            ["links.d.gateway_url"]
        );
        assert_eq!(
            with("api_base = \"http://127.0.0.1:9/api\"\n"),
            ["links.d.api_base"]
        );
        assert!(with(&format!("{READ}gateway_url = \"ws://127.0.0.1:9\"\n")).is_empty());
        let twice = format!(
            "{}{}[[rooms]]\nname = \"random\"\nlinks = [\"d\"]\n",
            link("d", READ),
            room("\"d\"")
        );
        assert_eq!(problems(&twice), ["rooms[1].links"]);
    }
}
