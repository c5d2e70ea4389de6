//! Inbound: events from outside written into the chat, `inbound → verify → store`, after which
//! they take the normal outbound path to every *other* link of their room.
//!
//! - [`hooks`]: `POST /hooks/{link}`, Standard Webhooks-signed events from a webhook link
//!   with `inbound = true`.
//! - [`write`]: the one atomic write (de-dup, seed operation, trusted `origin`).
//! - [`lease`]: the lease that keeps one connection-holding source per deployment.
//!
//! The platforms' own sources live in their folders ([`crate::platforms`]): the daemon adds
//! their HTTP routes ([`crate::platforms::routes`]) beside [`routes`] and starts the
//! connection-holding ones ([`crate::platforms::sources`]).
//!
//! What the routes accept comes from the configuration in force: [`Shared`] holds it and the
//! daemon replaces it on every reload ([`Inbound::from_config`]). Until Redis is connected it
//! is empty and the routes answer 503.

mod hooks;
pub(crate) mod lease;
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

use crate::config::Config;
use crate::secret::WebhookSecret;

pub use write::{Write, Writer, Written};

/// The inbound settings in force, swapped whole on reload; empty until Redis is connected.
pub type Shared = Arc<ArcSwapOption<Inbound>>;

/// How long a generic hook's `webhook-id` is remembered: senders retry for hours.
const HOOK_DEDUP_SECS: u64 = 86_400;

/// What the inbound routes accept, from one configuration.
pub struct Inbound {
    /// Writes into Redis.
    pub(crate) writer: Writer,
    /// Webhook links with `inbound = true`, by name.
    hooks: BTreeMap<String, HookLink>,
    /// History limits per room (`[history]`), and for DMs.
    pub(crate) history: crate::config::HistoryConfig,
    /// What each platform's routes and sources read.
    pub(crate) platforms: crate::platforms::inbound::InboundState,
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

impl Inbound {
    /// The inbound settings of `config`, writing through `con`; `previous` (the settings
    /// replaced by a reload) hands on the platforms' caches.
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
        Self {
            writer: Writer::new(con),
            hooks,
            history: config.history.clone(),
            platforms: crate::platforms::inbound::InboundState::from_config(
                config,
                previous.map(|p| &p.platforms),
            ),
        }
    }
}

/// The generic inbound routes (the platforms add theirs, [`crate::platforms::routes`]), for
/// any server state they can take their [`Shared`] from (the HTTP
/// server's), so this module needs nothing of the server.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Shared: axum::extract::FromRef<S>,
{
    Router::new().route("/hooks/{link}", post(hooks::receive))
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
