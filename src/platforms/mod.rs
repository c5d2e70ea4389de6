//! The platforms chatbridge bridges to, one folder each, behind two traits and one registry.
//!
//! - A [`Sink`] takes a batch of outbox entries, sends it once and reports a [`SendOutcome`]:
//!   the facts (status, headers, body) go to [`crate::bridge::retry`], which alone decides the
//!   [`crate::bridge::retry::Verdict`]. The delivery worker holds it as a [`Target`]; the trait
//!   and the outcome are in [`sink`], the `Source` trait in [`source`]: the platforms' parts
//!   import those files, never this one, so the registry here can build them without a circle.
//! - A source ([`Source`]) runs while the daemon does and writes what it receives through the
//!   shared inbound writer ([`crate::inbound::Writer`]).
//! - The registry is the one place in `src/` that matches on the kind or names each platform:
//!   [`link`] (a configured link, [`LinkKind`]: which kinds exist, their common-key rules and
//!   own parsers), [`sections`] (platform top-level sections such as `[slack]`, checks across
//!   links and rooms), [`inbound`] (each platform's part of the inbound state), and this file,
//!   which builds each link's sink ([`Target::from_config`]), the sources ([`sources`]) and the
//!   platforms' HTTP routes ([`routes`]). The configuration imports only the first two, so the
//!   files form no circle.
//!
//! The folders: [`console`] (stdout, for operators and demos), [`webhook`] (generic Standard
//! Webhooks, with their [`webhook::signing`]), [`slack`] and [`discord`] (each with its config,
//! outbound sink and inbound sources); [`chatpost`] holds the chat-post rendering Slack and
//! Discord share, [`http`] what every HTTP-calling sink shares. [`Platforms`] holds the limits
//! shared by every link of one process.

pub mod chatpost;
pub mod commands;
pub mod console;
pub mod discord;
pub mod http;
pub mod inbound;
pub mod link;
pub mod matrix;
pub mod sections;
pub mod sink;
pub mod slack;
pub mod source;
pub mod webhook;

pub(crate) use chatpost::{NotBefore, seconds};
pub use http::http_client;
pub(crate) use http::{error_outcome, excerpt, read_prefix, response_outcome};

use std::time::Duration;

pub use console::Console;
pub(crate) use discord::Discord;
pub(crate) use slack::Slack;
pub use webhook::Webhook;

use crate::chat::model::Outbound;
use crate::config::Config;
pub use inbound::InboundState;
pub use link::{LinkConfig, LinkKind};
pub use sections::Sections;
pub use sink::{SendOutcome, Sending, Sink};
pub use source::Source;

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
        Self(sink(name, config, client, redis, platforms))
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

/// The names under which the connections `config` holds report their state
/// (`chatbridge:inbound:state` fields), so a state left by an old token is not shown as news.
pub(crate) fn connections(config: &Config) -> Vec<String> {
    discord::channels::gateways(&config.links, None)
        .iter()
        .map(|g| discord::gateway::state_field(&g.key))
        .collect()
}

/// The paths of the platforms' inbound HTTP routes ([`routes`]), for the server's start line.
pub(crate) const ROUTE_PATHS: &[&str] = &[slack::events::PATH];

/// The HTTP routes of the platforms' inbound sources that come in through the server
/// (`POST /slack/events`); the daemon adds them beside the generic webhooks' route.
pub(crate) fn routes<S>() -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
    crate::inbound::Shared: axum::extract::FromRef<S>,
{
    axum::Router::new().route(
        slack::events::PATH,
        axum::routing::post(slack::events::receive),
    )
}

/// The inbound sources `config` asks for (the ones with a connection of their own; the HTTP
/// routes join the server beside [`crate::inbound::routes`], through [`routes`]).
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

/// Builds the link's outbound sink: the running half of the registry.
fn sink(
    name: &str,
    config: &LinkConfig,
    client: reqwest::Client,
    redis: redis::aio::ConnectionManager,
    platforms: &Platforms,
) -> Box<dyn Sink> {
    let common = &config.common;
    match &config.kind {
        LinkKind::Console => Box::new(Console::new(name)),
        LinkKind::Webhook(hook) => Box::new(Webhook::from_config(name, common, hook, client)),
        LinkKind::Slack(slack) => Box::new(Slack::new(
            name,
            common,
            slack,
            client,
            redis,
            &platforms.slack,
        )),
        LinkKind::Discord(discord) => Box::new(Discord::new(
            name,
            common,
            discord,
            client,
            redis,
            &platforms.discord,
        )),
        LinkKind::Matrix(_) => Box::new(matrix::NotDelivered::new(name)),
    }
}
