//! Inbound: events from outside written into the chat, `inbound → verify → store`, after which
//! they take the normal outbound path to every *other* link of their room.
//!
//! - [`hooks`]: `POST /hooks/{link}`, Standard Webhooks-signed events from a webhook link
//!   with `inbound = true`.
//! - [`names`]: Slack user names (`users.info`, short deadline, cached).
//! - [`lease`]: how a Socket Mode or Gateway connection holds its [`crate::redis::lease`].
//! - [`write`]: the one atomic write (de-dup, seed operation, trusted `origin`).
//! - [`lease`]: the lease that keeps one connection-holding source per deployment.
//!
//! The platforms' own sources live in their folders ([`crate::platforms`]): their HTTP routes
//! join [`routes`] through [`crate::platforms::routes`], the connection-holding ones are
//! started by the daemon from [`crate::platforms::sources`].
//!
//! What the routes accept comes from the configuration in force: [`Shared`] holds it and the
//! daemon replaces it on every reload ([`Inbound::from_config`]). Until Redis is connected it
//! is empty and the routes answer 503.

mod hooks;
pub(crate) mod lease;
pub(crate) mod names;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use redis::aio::ConnectionManager;
use serde_json::json;

use crate::config::{Config, SlackAppConfig, SlackInbound};
use crate::secret::WebhookSecret;

pub use write::{Write, Writer, Written};

/// The inbound settings in force, swapped whole on reload; empty until Redis is connected.
pub type Shared = Arc<ArcSwapOption<Inbound>>;

/// How long a generic hook's `webhook-id` is remembered: senders retry for hours.
const HOOK_DEDUP_SECS: u64 = 86_400;
/// How long a Slack `event_id` is remembered: Slack retries for about 5 minutes.
pub(crate) const SLACK_DEDUP_SECS: u64 = 3_600;

/// What the inbound routes accept, from one configuration.
pub struct Inbound {
    /// Writes into Redis.
    pub(crate) writer: Writer,
    /// Webhook links with `inbound = true`, by name.
    hooks: BTreeMap<String, HookLink>,
    /// `[slack]` and the channel → room mapping.
    pub(crate) slack: Option<SlackApp>,
    /// History limits per room (`[history]`), and for DMs.
    pub(crate) history: crate::config::HistoryConfig,
    /// Slack user names, kept across reloads.
    pub(crate) names: Arc<names::Names>,
    /// Discord channel id → where its messages go (Discord links with `bot_token`).
    pub(crate) discord: BTreeMap<String, crate::config::DiscordTarget>,
    /// The ids of our Discord links' webhooks: their posts coming back are ours.
    pub(crate) discord_webhooks: BTreeSet<String>,
}

/// One webhook link that accepts inbound events.
struct HookLink {
    /// Verifies `webhook-signature` (the link's `secret`).
    secret: WebhookSecret,
    /// Rooms the link is configured for.
    rooms: BTreeSet<String>,
    /// Whether `[dms]` routes DMs to the link.
    dms: bool,
    /// Longer `content` gets 413 (`max_content_chars`).
    max_content_chars: usize,
}

/// The Slack app and where each channel's events go.
pub(crate) struct SlackApp {
    /// `[slack]`: the signing secret and our own app and bot ids.
    pub(crate) config: SlackAppConfig,
    /// Slack channel id → the room (and link) its events go to.
    pub(crate) channels: BTreeMap<String, SlackInbound>,
    /// Per Slack link (Web API mode): its token and API base, for `users.info`.
    pub(crate) directories: BTreeMap<String, names::Directory>,
}

impl Inbound {
    /// The inbound settings of `config`, writing through `con`; `previous` (the settings
    /// replaced by a reload) hands on its cache of Slack names.
    pub fn from_config(config: &Config, con: ConnectionManager, previous: Option<&Self>) -> Self {
        let hooks = config
            .links
            .iter()
            .filter_map(|(name, link)| {
                let w = link.kind.webhook()?;
                let secret = w.secret.clone().filter(|_| w.inbound)?;
                let rooms = config
                    .rooms
                    .iter()
                    .filter(|room| room.links.contains(name))
                    .map(|room| room.name.clone())
                    .collect();
                let hook = HookLink {
                    secret,
                    rooms,
                    dms: config.links_for_dms().contains(name),
                    max_content_chars: w.max_content_chars,
                };
                Some((name.clone(), hook))
            })
            .collect();
        let slack = config.slack.clone().map(|app| SlackApp {
            config: app,
            channels: config.slack_channels(),
            directories: directories(config),
        });
        Self {
            writer: Writer::new(con),
            hooks,
            slack,
            history: config.history.clone(),
            names: previous.map_or_else(|| Arc::new(names::Names::new()), |p| p.names.clone()),
            discord: config.discord_channels(),
            discord_webhooks: config
                .links
                .values()
                .filter_map(|link| Some(link.kind.discord()?.webhook_id.clone()))
                .collect(),
        }
    }
}

/// The token and API base of every Slack link in Web API mode, by link name.
fn directories(config: &Config) -> BTreeMap<String, names::Directory> {
    config
        .links
        .iter()
        .filter_map(|(name, link)| match &link.kind.slack()?.mode {
            crate::config::SlackMode::Api { token, api_url, .. } => Some((
                name.clone(),
                names::Directory {
                    token: token.clone(),
                    api_url: api_url.clone(),
                },
            )),
            crate::config::SlackMode::Webhook { .. } => None,
        })
        .collect()
}

/// The inbound routes, for any server state they can take their [`Shared`] from (the HTTP
/// server's), so this module needs nothing of the server.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Shared: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/hooks/{link}", post(hooks::receive))
        .merge(crate::platforms::routes())
}

/// A request's outcome: its status, body and the bounded `result` label it is counted under.
pub(crate) struct Outcome {
    /// The HTTP status answered.
    pub(crate) status: StatusCode,
    /// The JSON body answered.
    pub(crate) body: serde_json::Value,
    /// The metric's `result` label: one of a fixed set.
    pub(crate) result: &'static str,
}

impl Outcome {
    pub(crate) fn ok(status: StatusCode, body: serde_json::Value, result: &'static str) -> Self {
        Self {
            status,
            body,
            result,
        }
    }

    /// An error answer: `{"error": message}` plus `field` when one field is at fault.
    pub(crate) fn error(
        status: StatusCode,
        result: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::ok(status, json!({ "error": message.into() }), result)
    }

    pub(crate) fn field(status: StatusCode, field: &str, message: impl Into<String>) -> Self {
        let result = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_request"
        };
        Self::ok(
            status,
            json!({ "error": message.into(), "field": field }),
            result,
        )
    }

    pub(crate) fn unavailable() -> Self {
        Self::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "not connected to Redis yet",
        )
    }

    pub(crate) fn redis_failed(e: &redis::RedisError) -> Self {
        tracing::warn!(error = %e, "inbound write failed");
        Self::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the chat's Redis is unavailable; retry later",
        )
    }

    /// Counts the request (and logs a refusal at debug level) and answers.
    pub(crate) fn respond(self, route: &'static str) -> Response {
        if !self.status.is_success() {
            tracing::debug!(
                route,
                result = self.result,
                status = self.status.as_u16(),
                why = %self.body["error"].as_str().unwrap_or_default(),
                "inbound request refused"
            );
        }
        metrics::counter!(crate::ops::metrics::INBOUND_REQUESTS, "route" => route, "result" => self.result)
            .increment(1);
        (self.status, Json(self.body)).into_response()
    }
}

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}
