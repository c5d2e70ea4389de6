//! `[links.<name>]`: where events go. Every link has the common part, [`LinkCommon`]
//! (`events`, `name_format`, delivery policy), read the same way for every kind under that kind's
//! [`Rules`]; each kind adds only its own keys in its own struct. Adding a kind means one struct
//! with a `parse`, one [`LinkKind`] variant and one arm in [`LinkConfig::parse`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::time::Duration;

use super::error::Problems;
use super::reader::Table;
use crate::model::EventKind;
use crate::platforms::chatpost::template::Template;
use crate::secret::{BotToken, SecretUrl, WebhookSecret};

/// The kinds a link may have, as written in `kind = "…"`.
const KINDS: &str = "console, webhook, slack, discord";

/// One configured link: a place events are sent to.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// What every kind has: events, name format, delivery policy.
    pub common: LinkCommon,
    /// What this kind adds.
    pub kind: LinkKind,
}

/// The part of a link every kind shares.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkCommon {
    /// Which event kinds the link receives (`message`, `join`, `leave`, `typing`,
    /// `read_receipt`). Default: the kind's (`message`, `join`, `leave` for most).
    pub events: Vec<EventKind>,
    /// How a chat user is named on the link (`name_format`), from `{username}`, `{user_id}`,
    /// `{room}`, `{origin}`. Default: `"{username}"`. Only for links that show names (Slack,
    /// Discord).
    pub name_format: Template,
    /// Timeouts, batching and concurrency.
    pub delivery: DeliveryPolicy,
    /// When `read_receipt` is in `events`: at most one "seen by …" line per room this often
    /// (`receipt_interval_secs`, 1 to 3600; Slack and Discord). Default: 30 seconds.
    pub receipt_interval: Duration,
}

/// How a link's worker hands events to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// How long one request may take before it counts as failed and is retried
    /// (`timeout_secs`, 1 to 300). Default: 15 seconds.
    pub timeout: Duration,
    /// How many queued events one send may carry (`batch_max`). Webhooks: events per POST
    /// (default 1). Slack and Discord: how many queued messages may be merged into posts when a
    /// backlog builds (default 1000).
    pub batch_max: usize,
    /// How many sends may be outstanding at once (`max_in_flight`). 1 keeps events in order.
    pub max_in_flight: usize,
}

/// What a kind accepts of the common keys.
struct Rules {
    /// `events` when absent.
    default_events: &'static [EventKind],
    /// Events this kind can show; others are refused with `why_not`.
    allowed_events: &'static [EventKind],
    why_not: &'static str,
    /// Whether `name_format` and `receipt_interval_secs` are read (chat platforms).
    names: bool,
    /// `batch_max`: allowed range and default; `None` when the key is not read (fixed value).
    batch_max: (Option<RangeInclusive<u64>>, u64),
    /// `max_in_flight`: allowed range and default; `None` when not read.
    max_in_flight: (Option<RangeInclusive<u64>>, u64),
    /// Whether `timeout_secs` is read.
    timeout: bool,
}

const DEFAULT_EVENTS: [EventKind; 3] = [EventKind::Message, EventKind::Join, EventKind::Leave];
/// What Slack and Discord can show: typing indicators never go there.
const CHAT_EVENTS: [EventKind; 4] = [
    EventKind::Message,
    EventKind::Join,
    EventKind::Leave,
    EventKind::ReadReceipt,
];

impl Rules {
    const CONSOLE: Self = Self {
        default_events: &DEFAULT_EVENTS,
        allowed_events: &EventKind::ALL,
        why_not: "",
        names: false,
        batch_max: (None, crate::platforms::console::BATCH_MAX as u64),
        max_in_flight: (None, 1),
        timeout: false,
    };
    const WEBHOOK: Self = Self {
        default_events: &EventKind::ALL,
        allowed_events: &EventKind::ALL,
        why_not: "",
        names: false,
        batch_max: (Some(1..=1000), 1),
        max_in_flight: (Some(1..=256), 1),
        timeout: true,
    };
    /// Slack and Discord: ordered (one send at a time), backlog merged up to `batch_max`.
    const CHAT: Self = Self {
        default_events: &DEFAULT_EVENTS,
        allowed_events: &CHAT_EVENTS,
        why_not: "typing indicators are never sent to Slack or Discord",
        names: true,
        batch_max: (Some(1..=1000), 1000),
        max_in_flight: (None, 1),
        timeout: true,
    };

    fn parse(&self, link: &mut Table, problems: &mut Problems) -> Option<LinkCommon> {
        let events = events(link, self, problems);
        let name_format = if self.names {
            link.string("name_format", problems)
                .and_then(|raw| {
                    Template::text(&raw.value)
                        .map_err(|e| problems.add(&raw.path, e))
                        .ok()
                })
                .unwrap_or_else(default_name_format)
        } else {
            default_name_format()
        };
        let receipt_interval = if self.names {
            link.integer("receipt_interval_secs", 1..=3600, 30, problems)
        } else {
            30
        };
        let timeout = if self.timeout {
            link.integer("timeout_secs", 1..=300, 15, problems)
        } else {
            15
        };
        let batch_max = read_rule(link, "batch_max", &self.batch_max, problems);
        let max_in_flight = read_rule(link, "max_in_flight", &self.max_in_flight, problems);
        Some(LinkCommon {
            events,
            name_format,
            delivery: DeliveryPolicy {
                timeout: Duration::from_secs(timeout),
                batch_max: usize::try_from(batch_max).ok()?,
                max_in_flight: usize::try_from(max_in_flight).ok()?,
            },
            receipt_interval: Duration::from_secs(receipt_interval),
        })
    }
}

/// A delivery key read under its rule, or the kind's fixed value when the kind has no such key.
fn read_rule(
    link: &mut Table,
    key: &'static str,
    rule: &(Option<RangeInclusive<u64>>, u64),
    problems: &mut Problems,
) -> u64 {
    match &rule.0 {
        Some(range) => link.integer(key, range.clone(), rule.1, problems),
        None => rule.1,
    }
}

fn default_name_format() -> Template {
    // A fixed, valid format: parsing it cannot fail.
    Template::text("{username}").unwrap_or_else(|_| unreachable!("the default name format"))
}

/// What each kind adds to [`LinkCommon`].
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
}

impl LinkConfig {
    /// The event kinds this link receives.
    pub fn events(&self) -> &[EventKind] {
        &self.common.events
    }

    /// The `kind` as written in the config.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            LinkKind::Console => "console",
            LinkKind::Webhook(_) => "webhook",
            LinkKind::Slack(_) => "slack",
            LinkKind::Discord(_) => "discord",
        }
    }

    /// Where this link sends, safe to print (a URL shows only scheme and host).
    pub(super) fn describe_target(&self) -> String {
        match &self.kind {
            LinkKind::Console => String::new(),
            LinkKind::Webhook(w) => {
                let signed = if w.secret.is_some() {
                    "signed"
                } else {
                    "unsigned"
                };
                let inbound = if w.inbound { ", inbound" } else { "" };
                format!("{}  {signed}{inbound}", w.url.redacted())
            }
            LinkKind::Slack(s) => match &s.mode {
                SlackMode::Api {
                    channel, api_url, ..
                } => {
                    format!("chat.postMessage {} channel {channel}", api_url.redacted())
                }
                SlackMode::Webhook { url } => format!("incoming webhook {}", url.redacted()),
            },
            LinkKind::Discord(d) => format!("webhook {}", d.url.redacted()),
        }
    }

    /// Reads one `[links.<name>]` table. `None` when it cannot be built (problems recorded).
    fn parse(mut link: Table, problems: &mut Problems) -> Option<Self> {
        let kind = link.required_string("kind", problems)?;
        let parsed = match kind.value.as_str() {
            "console" => Rules::CONSOLE
                .parse(&mut link, problems)
                .map(|common| (common, Some(LinkKind::Console))),
            "webhook" => Rules::WEBHOOK.parse(&mut link, problems).map(|common| {
                let kind = WebhookLinkConfig::parse(&mut link, problems).map(LinkKind::Webhook);
                (common, kind)
            }),
            "slack" => Rules::CHAT.parse(&mut link, problems).map(|common| {
                let kind = SlackLinkConfig::parse(&mut link, problems).map(LinkKind::Slack);
                (common, kind)
            }),
            "discord" => Rules::CHAT.parse(&mut link, problems).map(|common| {
                let kind = DiscordLinkConfig::parse(&mut link, problems).map(LinkKind::Discord);
                (common, kind)
            }),
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
        let (common, kind) = parsed?;
        Some(Self {
            common,
            kind: kind?,
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
    /// every request carries `webhook-signature`. Default: unsigned. With `inbound`, the same
    /// secret verifies what the link's sender posts to `/hooks/{link}`.
    pub secret: Option<WebhookSecret>,
    /// Whether the link also accepts signed events at `POST /hooks/{link}` (`inbound`), written
    /// into its rooms (and DMs, when `[dms]` routes them to it) with `origin` = the link.
    /// Needs `secret`. Default: false.
    pub inbound: bool,
    /// The longest inbound `content` accepted, in characters; longer gets 413
    /// (`max_content_chars`, 1 to 1000000). Default: 4000.
    pub max_content_chars: usize,
}

impl WebhookLinkConfig {
    fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
        let url = secret_url(link, "url", problems);
        let secret = link
            .string("secret", problems)
            .map(|raw| WebhookSecret::parse(&raw.value).map_err(|e| problems.add(&raw.path, e)));
        let inbound_path = link.path_of("inbound");
        let inbound = link.boolean("inbound", false, problems);
        if inbound && secret.is_none() {
            problems.add(
                &inbound_path,
                "inbound webhooks must be signed: set `secret` (`whsec_…`)",
            );
        }
        let max_content = link.integer("max_content_chars", 1..=1_000_000, 4000, problems);
        Some(Self {
            url: url?,
            secret: secret.transpose().ok()?,
            inbound,
            max_content_chars: usize::try_from(max_content).unwrap_or(4000),
        })
    }
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
    fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
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
    pub inbound: Option<super::DiscordInbound>,
}

impl DiscordLinkConfig {
    fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
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
        let inbound = super::DiscordInbound::parse(link, problems);
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

/// A required URL whose value is a secret.
fn secret_url(link: &mut Table, key: &'static str, problems: &mut Problems) -> Option<SecretUrl> {
    link.required_string(key, problems).and_then(|raw| {
        SecretUrl::parse(&raw.value)
            .map_err(|e| problems.add(&raw.path, e))
            .ok()
    })
}

/// The `events` list of a link, or the kind's default when absent. Unknown names and events
/// the kind cannot show are reported; repeated names are kept once.
fn events(link: &mut Table, rules: &Rules, problems: &mut Problems) -> Vec<EventKind> {
    let default = rules.default_events;
    let when_empty = "list at least one event, or leave `events` out for the default";
    let Some(names) = link.string_list("events", when_empty, problems) else {
        return default.to_vec();
    };
    let mut kinds = Vec::new();
    for name in names {
        match EventKind::parse(&name.value) {
            Some(kind) if !rules.allowed_events.contains(&kind) => {
                problems.add(&name.path, rules.why_not);
            }
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
