//! The platforms chatbridge bridges to, one folder each, behind two traits and one registry.
//!
//! - A [`Sink`] takes a batch of outbox entries, sends it once and reports a [`SendOutcome`]:
//!   the facts (status, headers, body) go to [`crate::bridge::retry`], which alone decides the
//!   [`Verdict`]. The delivery worker holds it as a [`Target`].
//! - A source ([`Source`]) runs while the daemon does and writes what it receives through the
//!   shared inbound writer ([`crate::inbound::Writer`]).
//! - [`LinkKind`] is the registry: the one place in `src/` that matches on the kind. It says
//!   which kinds exist (`kind = "…"`), their common-key rules, reads each kind's own keys with
//!   the kind's own parser, and builds each link's sink.
//!
//! The folders: [`console`] (stdout, for operators and demos), [`webhook`] (generic Standard
//! Webhooks, with their [`webhook::signing`]), [`slack`] and [`discord`] (each with its config,
//! outbound sink and inbound sources); [`chatpost`] holds the chat-post rendering Slack and
//! Discord share, [`http`] what every HTTP-calling sink shares. [`Platforms`] holds the limits
//! shared by every link of one process.

pub mod chatpost;
pub mod console;
pub mod discord;
pub mod http;
pub mod slack;
pub mod webhook;

pub(crate) use chatpost::{NotBefore, seconds};
pub use http::http_client;
pub(crate) use http::{error_outcome, excerpt, read_prefix, response_outcome};

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use console::Console;
pub(crate) use discord::Discord;
pub(crate) use slack::Slack;
pub use webhook::Webhook;

use crate::config::error::Problems;
use crate::config::reader::Table;
use tokio_util::sync::CancellationToken;

use crate::bridge::retry::Verdict;
use crate::chat::model::Outbound;
use crate::config::{Config, LinkConfig, RoomConfig, Rules};
use discord::config::DiscordLinkConfig;
use slack::config::SlackLinkConfig;
use webhook::config::WebhookLinkConfig;

/// A boxed send, so that every kind's `send` fits one trait object.
pub type Sending<'a> = Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>>;

/// An outbound link: sends a batch once, in outbox order, and reports what came of it.
pub trait Sink: Send + Sync {
    /// The link's configured name: the outbox key, the `origin` of events it relays back.
    fn name(&self) -> &str;
    /// The most outbox entries one `send` may carry.
    fn batch_max(&self) -> usize;
    /// One request's deadline (`timeout_secs`); zero for a link that makes none.
    fn request_timeout(&self) -> Duration;
    /// How many sends may be outstanding at once (1 keeps delivery in order).
    fn max_in_flight(&self) -> usize {
        1
    }
    /// Sends one batch (at most [`Self::batch_max`] entries, in outbox order) once.
    fn send<'a>(&'a self, batch: &'a [Outbound]) -> Sending<'a>;
}

/// One configured outbound link, as the delivery worker holds it.
pub struct Target(Box<dyn Sink>);

impl Target {
    /// Wraps a sink built outside the registry (tests, benchmarks).
    pub fn new(sink: impl Sink + 'static) -> Self {
        Self(Box::new(sink))
    }

    /// Builds the link a `[links.<name>]` section describes, sharing the pooled HTTP client,
    /// Redis (where Slack records the `ts` of its posts) and this process's limits.
    pub fn from_config(
        name: &str,
        config: &LinkConfig,
        client: reqwest::Client,
        redis: redis::aio::ConnectionManager,
        platforms: &Platforms,
    ) -> Self {
        Self(config.kind.sink(name, config, client, redis, platforms))
    }

    /// The link's configured name: the outbox key, the `origin` of events it relays back.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The most outbox entries one `send` may carry.
    pub fn batch_max(&self) -> usize {
        self.0.batch_max()
    }

    /// One request's deadline (`timeout_secs`); zero for the console, which makes none.
    pub fn request_timeout(&self) -> Duration {
        self.0.request_timeout()
    }

    /// How many sends may be outstanding at once (1 keeps delivery in order; chat platforms
    /// are always ordered).
    pub fn max_in_flight(&self) -> usize {
        self.0.max_in_flight()
    }

    /// Sends one batch (at most [`Self::batch_max`] entries, in outbox order) once.
    pub async fn send(&self, batch: &[Outbound]) -> SendOutcome {
        self.0.send(batch).await
    }
}

/// The checks each platform makes across links and rooms, reported into `problems`: a
/// channel read into two rooms, Gateway links that share a token but disagree. `app` says
/// whether `[slack]` is set (Slack channels are read only then).
pub(crate) fn check(
    links: &BTreeMap<String, LinkConfig>,
    rooms: &[RoomConfig],
    app: bool,
    problems: &mut Problems,
) {
    if app {
        slack::config::slack_channels(links, rooms, Some(problems));
    }
    discord::config::discord_channels(links, rooms, Some(problems));
    discord::config::gateways(links, Some(problems));
}

/// The HTTP routes of the platforms' inbound sources that come in through the server
/// (`POST /slack/events`); the daemon adds them beside the generic webhooks' route.
pub(crate) fn routes<S>() -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
    crate::inbound::Shared: axum::extract::FromRef<S>,
{
    axum::Router::new().route("/slack/events", axum::routing::post(slack::events::receive))
}

/// An inbound source: runs until `stop`, writing what it receives through the shared inbound
/// writer ([`crate::inbound::Writer`]), reading the inbound settings in force from
/// [`crate::inbound::Shared`] (so reloads apply at once).
pub trait Source: Send {
    /// The daemon's name for its task (logs, the supervisor).
    fn task(&self) -> &'static str;
    /// Runs until `stop` is cancelled.
    fn run(self: Box<Self>, stop: CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The inbound sources `config` asks for (the ones with a connection of their own; the HTTP
/// routes join the server through [`crate::inbound::routes`]).
pub fn sources(
    config: &Config,
    inbound: &crate::inbound::Shared,
    con: &redis::aio::ConnectionManager,
    http: &reqwest::Client,
    platforms: &Platforms,
) -> Vec<Box<dyn Source>> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if let Some(socket) =
        slack::socket::SocketMode::from_config(config, inbound.clone(), con.clone(), http.clone())
    {
        sources.push(Box::new(socket));
    }
    for gateway in discord::gateway::from_config(config, inbound, con, http, &platforms.discord) {
        sources.push(Box::new(gateway));
    }
    sources
}

/// What the links of one process share with each other, created once per daemon and passed
/// to every link and source built: Slack's per-channel pacing, Discord's process-wide limits.
#[derive(Default, Clone)]
pub struct Platforms {
    /// One token bucket per Slack channel, shared by every link posting there.
    pub(crate) slack: slack::Paces,
    /// Discord's global "not before" and its count of refused requests.
    pub(crate) discord: discord::Limits,
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
}

impl LinkKind {
    /// The kinds a link may have, as written in `kind = "…"`.
    pub(crate) const NAMES: &str = "console, webhook, slack, discord";

    /// The common keys' rules of the kind written `kind = "<kind>"`; `None` for no such kind.
    pub(crate) fn rules(kind: &str) -> Option<&'static Rules> {
        match kind {
            "console" => Some(&console::RULES),
            "webhook" => Some(&webhook::RULES),
            "slack" | "discord" => Some(&chatpost::RULES),
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
        }
    }

    /// Where the link sends, safe to print (a URL shows only scheme and host).
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Console => String::new(),
            Self::Webhook(w) => w.describe(),
            Self::Slack(s) => s.describe(),
            Self::Discord(d) => d.describe(),
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

    /// Whether the link accepts signed events at `POST /hooks/{link}`.
    pub fn accepts_hooks(&self) -> bool {
        self.webhook().is_some_and(|w| w.inbound)
    }

    /// Builds the link's outbound sink.
    fn sink(
        &self,
        name: &str,
        config: &LinkConfig,
        client: reqwest::Client,
        redis: redis::aio::ConnectionManager,
        platforms: &Platforms,
    ) -> Box<dyn Sink> {
        let common = &config.common;
        match self {
            Self::Console => Box::new(Console::new(name)),
            Self::Webhook(hook) => Box::new(Webhook::from_config(name, common, hook, client)),
            Self::Slack(slack) => Box::new(Slack::new(
                name,
                common,
                slack,
                client,
                redis,
                &platforms.slack,
            )),
            Self::Discord(discord) => Box::new(Discord::new(
                name,
                common,
                discord,
                client,
                redis,
                &platforms.discord,
            )),
        }
    }
}

/// What one send attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// What the delivery worker does next: acknowledge, retry, dead-letter or disable.
    pub verdict: Verdict,
    /// The HTTP status, when a response arrived at all (metrics, logs).
    pub status: Option<u16>,
    /// A short description for logs and alerts, e.g. `HTTP 400: invalid_payload` or
    /// `connect error: Connection refused (os error 111)`. Never holds the URL or a secret.
    pub detail: String,
}
