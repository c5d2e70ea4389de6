//! `[slack]`: the Slack app that sends Events API requests to `POST /slack/events` (or, with
//! `app_token`, through Socket Mode: [`crate::platforms::slack::socket`]). Each Slack
//! link's `channel` (Web API mode) doubles as the inbound mapping: events from that channel
//! are written into the rooms that link mirrors, with `origin` = the link.

use crate::config::error::Problems;
use crate::config::reader::Table;
use crate::platforms::chatpost::template::Template;
use crate::secret::{BotToken, SecretUrl, SigningSecret};

/// `[slack]`: present only when the section is; without it `/slack/events` answers 404.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackAppConfig {
    /// The app's signing secret (*Basic Information* → *App Credentials*), which checks the
    /// `v0` signature of every request (`signing_secret`). Required unless `app_token` is set;
    /// put it in an environment variable (`signing_secret = "${SLACK_SIGNING_SECRET}"`).
    pub signing_secret: Option<SigningSecret>,
    /// An app-level token (`xapp-…`, scope `connections:write`, `app_token`): when set, Slack
    /// events come through Socket Mode (an outgoing websocket) instead of `POST
    /// /slack/events`, which then answers 404. Default: none (the HTTP Events API).
    pub app_token: Option<BotToken>,
    /// The Slack Web API base that `apps.connections.open` is called on (`api_base`).
    /// Default: `https://slack.com/api`.
    pub api_base: SecretUrl,
    /// Our own app's id (`A…`, `app_id`): events posted by this app are dropped (no echo).
    /// The envelope's `api_app_id` is always treated as ours too. Default: none.
    pub app_id: Option<String>,
    /// Our own bot's id (`B…`, `bot_id`): messages it posted are dropped (no echo). Default:
    /// none.
    pub bot_id: Option<String>,
}

/// Where one Slack channel's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackInbound {
    /// The Slack link whose `channel` it is: the events' `origin`.
    pub link: String,
    /// The room they are written into.
    pub room: String,
}

pub(crate) fn parse_slack(
    section: Option<Table>,
    problems: &mut Problems,
) -> Option<SlackAppConfig> {
    let mut section = section?;
    let raw_token = section.string("app_token", problems);
    let socket_mode = raw_token.is_some();
    let app_token = raw_token.and_then(|raw| {
        BotToken::parse(&raw.value)
            .map_err(|e| problems.add(&raw.path, e))
            .ok()
    });
    let secret = if socket_mode {
        section.string("signing_secret", problems)
    } else {
        section.required_string("signing_secret", problems)
    };
    let secret = secret.and_then(|raw| {
        SigningSecret::parse(&raw.value)
            .map_err(|e| problems.add(&raw.path, e))
            .ok()
    });
    let api_base = match section.string("api_base", problems) {
        Some(raw) => SecretUrl::parse(raw.value.trim_end_matches('/'))
            .map_err(|e| problems.add(&raw.path, e))
            .ok()?,
        None => SecretUrl::parse("https://slack.com/api").ok()?,
    };
    let app_id = section.string("app_id", problems).map(|t| t.value);
    let bot_id = section.string("bot_id", problems).map(|t| t.value);
    section.finish(problems);
    if app_token.is_none() && secret.is_none() {
        return None;
    }
    Some(SlackAppConfig {
        signing_secret: secret,
        app_token,
        api_base,
        app_id,
        bot_id,
    })
}

/// Posts to one Slack channel, each chat user under their own name.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackLinkConfig {
    /// Web API with a bot token (preferred), or an incoming webhook.
    pub mode: SlackMode,
    /// Whether Slack may unfurl links and media in relayed text (`unfurl`). Default: false.
    pub unfurl: bool,
}

/// How a Slack link posts.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackMode {
    /// `bot_token` + `channel`: `chat.postMessage`, per-message `username` and `icon_url` (the
    /// app needs `chat:write` and `chat:write.customize`); each post's `ts` is recorded.
    Api {
        /// `xoxb-…`; put it in an environment variable (`bot_token = "${SLACK_BOT_TOKEN}"`).
        token: BotToken,
        /// The channel id (`C…`) or name.
        channel: String,
        /// The Web API base (`api_url`). Default: `https://slack.com/api`.
        api_url: SecretUrl,
        /// The sender's picture (`icon_url`), a format such as
        /// `"https://avatars.example/{user_id}.png"`. Default: the app's own icon.
        icon_url: Option<Template>,
    },
    /// `webhook_url`: an incoming webhook, bound to one channel; it ignores per-message names,
    /// so the sender's name goes into the text.
    Webhook {
        /// `https://hooks.slack.com/services/…`: a secret, only shown redacted.
        url: SecretUrl,
    },
}

impl SlackLinkConfig {
    /// Where the link posts, safe to print.
    pub(crate) fn describe(&self) -> String {
        match &self.mode {
            SlackMode::Api {
                channel, api_url, ..
            } => {
                format!("chat.postMessage {} channel {channel}", api_url.redacted())
            }
            SlackMode::Webhook { url } => format!("incoming webhook {}", url.redacted()),
        }
    }

    pub(crate) fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
        let path = link.path_of("bot_token");
        let token = link.string("bot_token", problems);
        let channel = link.string("channel", problems);
        let webhook = link.string("webhook_url", problems);
        let api_url = link.string("api_url", problems);
        let icon_url = link.string("icon_url", problems);
        let unfurl = link.boolean("unfurl", false, problems);
        let mode = match (token, channel, webhook) {
            (Some(token), Some(channel), None) => {
                let token = BotToken::parse(&token.value)
                    .map_err(|e| problems.add(&token.path, e))
                    .ok();
                if channel.value.trim().is_empty() {
                    problems.add(&channel.path, "is empty");
                }
                let api_url = match api_url {
                    Some(raw) => SecretUrl::parse(raw.value.trim_end_matches('/'))
                        .map_err(|e| problems.add(&raw.path, e))
                        .ok(),
                    None => SecretUrl::parse("https://slack.com/api").ok(),
                };
                let icon_url = icon_url.and_then(|raw| {
                    Template::url(&raw.value)
                        .map_err(|e| problems.add(&raw.path, e))
                        .map(Some)
                        .ok()
                });
                SlackMode::Api {
                    token: token?,
                    channel: channel.value,
                    api_url: api_url?,
                    icon_url: icon_url.unwrap_or(None),
                }
            }
            (None, None, Some(raw)) => {
                for (unused, key) in [(api_url, "api_url"), (icon_url, "icon_url")] {
                    if let Some(unused) = unused {
                        problems.add(
                            &unused.path,
                            format!("`{key}` needs `bot_token` + `channel` (incoming webhooks ignore it)"),
                        );
                    }
                }
                let url = SecretUrl::parse(&raw.value)
                    .map_err(|e| problems.add(&raw.path, e))
                    .ok()?;
                SlackMode::Webhook { url }
            }
            (_, _, Some(webhook)) => {
                problems.add(
                    &webhook.path,
                    "set either `webhook_url` or `bot_token` + `channel`, not both",
                );
                return None;
            }
            (token, channel, None) => {
                let message = match (token.is_some(), channel.is_some()) {
                    (true, false) => "`bot_token` needs `channel` (the channel id, `C…`)",
                    (false, true) => "`channel` needs `bot_token` (`xoxb-…`)",
                    _ => "missing: set `bot_token` + `channel` (Web API) or `webhook_url`",
                };
                problems.add(&path, message);
                return None;
            }
        };
        Some(Self { mode, unfurl })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Env, HttpConfig, load_str};

    const SLACK_LINK: &str =
        "[links.s]\nkind = \"slack\"\nbot_token = \"xoxb-1\"\nchannel = \"C1\"\n";

    fn problems(toml: &str) -> Vec<String> {
        match load_str(toml, &Env::new()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(|e| e.path.clone()).collect(),
        }
    }

    #[test]
    fn a_slack_channel_maps_to_one_room_and_starts_the_server_with_defaults() {
        let toml = format!(
            "[slack]\nsigning_secret = \"abc\"\nbot_id = \"B1\"\n\n{SLACK_LINK}\n\
             [[rooms]]\nname = \"general\"\nlinks = [\"s\"]\n"
        );
        let config = load_str(&toml, &Env::new()).expect("valid");
        let channels =
            crate::platforms::slack::channels::slack_channels(&config.links, &config.rooms, None);
        assert_eq!(channels["C1"].room, "general");
        assert_eq!(channels["C1"].link, "s");
        assert_eq!(config.http, None);
        assert_eq!(config.http_server(), Some(HttpConfig::default()));
        assert_eq!(
            config.http_server().unwrap().listen.to_string(),
            "127.0.0.1:8700"
        );
        assert!(!format!("{config:?}").contains("abc"), "the secret printed");
        let table = config.routing_table();
        assert!(
            table.ends_with("inbound:\n  POST /slack/events  channel C1 → general (origin s)\n"),
            "{table}"
        );
        let mirrored_twice = format!("{toml}[[rooms]]\nname = \"random\"\nlinks = [\"s\"]\n");
        assert_eq!(problems(&mirrored_twice), ["rooms[1].links"]);
        assert_eq!(problems("[slack]\n"), ["slack.signing_secret"]);
    }

    #[test]
    fn an_app_token_switches_to_socket_mode_without_a_signing_secret() {
        let toml = format!(
            "[slack]\napp_token = \"xapp-1-secret\"\napi_base = \"http://127.0.0.1:9/api/\"\n\n\
             {SLACK_LINK}\n[[rooms]]\nname = \"general\"\nlinks = [\"s\"]\n"
        );
        let config = load_str(&toml, &Env::new()).expect("valid");
        let app = config.sections.slack.as_ref().unwrap();
        assert!(app.app_token.is_some() && app.signing_secret.is_none());
        assert_eq!(app.api_base.expose().as_str(), "http://127.0.0.1:9/api");
        assert!(
            !format!("{config:?}").contains("xapp-1-secret"),
            "the token printed"
        );
        assert!(
            config
                .routing_table()
                .ends_with("inbound:\n  Slack Socket Mode  channel C1 → general (origin s)\n"),
            "{}",
            config.routing_table()
        );
        let default = load_str("[slack]\nsigning_secret = \"abc\"\n", &Env::new()).expect("valid");
        assert_eq!(
            default.sections.slack.unwrap().api_base.expose().as_str(),
            "https://slack.com/api"
        );
        assert_eq!(
            problems("[slack]\napp_token = \"x y\"\n"),
            ["slack.app_token"]
        );
        assert_eq!(
            problems("[slack]\nsigning_secret = \"abc\"\napi_base = \"nope\"\n"),
            ["slack.api_base"]
        );
    }

    #[test]
    fn inbound_webhooks_must_be_signed_and_nothing_inbound_means_no_server() {
        let hook = "[links.h]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n";
        assert_eq!(
            problems(&format!("{hook}inbound = true\n")),
            ["links.h.inbound"]
        );
        let plain = load_str(hook, &Env::new()).expect("valid");
        assert_eq!(plain.http_server(), None);
        let signed =
            format!("{hook}inbound = true\nsecret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n");
        let config = load_str(&signed, &Env::new()).expect("valid");
        assert!(config.has_inbound());
        assert!(config.http_server().is_some());
        assert!(
            config
                .routing_table()
                .contains("inbound:\n  POST /hooks/h  → (no room)\n"),
            "{}",
            config.routing_table()
        );
    }
}
