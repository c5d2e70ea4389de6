//! `POST /slack/events`: the Slack Events API. Every request's `v0` signature is checked
//! (300 s window, constant time); `url_verification` is answered with its challenge; each
//! `event_callback` is written at most once per `event_id`, and acknowledged at once (the
//! write is one Redis round trip).
//!
//! Plain messages become seed messages (`user_id` = the Slack user id, `username` = their
//! display name from `users.info` when it answers within 500 ms, else the id; `external_id` =
//! the message `ts`); `member_joined_channel` / `member_left_channel` become joins and leaves.
//! Our own posts coming back (our `bot_id`, our app's id) are dropped; edits, deletes, other
//! subtypes and other events are acknowledged and counted, not written.
//!
//! With `[slack] app_token` the same envelopes come through Socket Mode instead
//! ([`super::socket`]), which hands each to [`callback`]; this route then answers 404.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::state::SlackApp;
use crate::chat::model::{ChatEvent, Message, Presence, Scope, SystemLine, Timestamp, UserId};
use crate::inbound::{Inbound, Outcome, Write, Written, now_secs};
use crate::platforms::webhook::signing;
use crate::secret::SigningSecret;

const ROUTE: &str = "slack";
/// Where Slack's Events API requests arrive.
pub(crate) const PATH: &str = "/slack/events";
/// How long a Slack `event_id` is remembered: Slack retries for about 5 minutes.
const SLACK_DEDUP_SECS: u64 = 3_600;

pub(crate) async fn receive(
    State(shared): State<crate::inbound::Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(inbound) = shared.load_full() else {
        return Outcome::unavailable().respond(ROUTE);
    };
    handle(&inbound, &headers, &body)
        .await
        .unwrap_or_else(|outcome| outcome)
        .respond(ROUTE)
}

async fn handle(inbound: &Inbound, headers: &HeaderMap, body: &[u8]) -> Result<Outcome, Outcome> {
    let Some(app) = &inbound.platforms.slack.app else {
        return Err(Outcome::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the Slack Events API is not configured ([slack])",
        ));
    };
    let Some(secret) = app
        .config
        .signing_secret
        .as_ref()
        .filter(|_| app.config.app_token.is_none())
    else {
        return Err(Outcome::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Slack events come through Socket Mode ([slack] app_token), not this route",
        ));
    };
    verify(secret, headers, body)?;
    let envelope: Value = serde_json::from_slice(body)
        .map_err(|_| Outcome::error(StatusCode::BAD_REQUEST, "bad_request", "body is not JSON"))?;
    match envelope["type"].as_str() {
        Some("url_verification") => {
            let challenge = envelope["challenge"].as_str().unwrap_or_default();
            Ok(Outcome::ok(
                StatusCode::OK,
                json!({ "challenge": challenge }),
                "challenge",
            ))
        }
        Some("event_callback") => callback(inbound, app, &envelope).await,
        _ => Ok(ignored("not an event_callback")),
    }
}

fn verify(secret: &SigningSecret, headers: &HeaderMap, body: &[u8]) -> Result<(), Outcome> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let checked = match (text("x-slack-request-timestamp"), text("x-slack-signature")) {
        (Some(timestamp), Some(signature)) => {
            signing::verify_slack(secret.key(), timestamp, signature, body, now_secs())
                .map_err(|e| e.to_string())
        }
        _ => Err("X-Slack-Request-Timestamp and X-Slack-Signature are required".to_owned()),
    };
    checked.map_err(|why| {
        Outcome::error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("signature rejected: {why}"),
        )
    })
}

/// Acknowledged, counted, not written.
fn ignored(why: &str) -> Outcome {
    tracing::debug!(why, "slack event ignored");
    Outcome::ok(StatusCode::OK, json!({ "ok": true }), "ignored")
}

/// One `event_callback` envelope, once its origin is established (a verified signature over
/// HTTP, or our own Socket Mode connection): the one code path of both transports.
pub(crate) async fn callback(
    inbound: &Inbound,
    app: &SlackApp,
    envelope: &Value,
) -> Result<Outcome, Outcome> {
    let event = &envelope["event"];
    let Some(event_id) = envelope["event_id"].as_str().filter(|id| valid_id(id)) else {
        return Err(Outcome::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "event_id is missing or not an id",
        ));
    };
    if is_ours(app, envelope, event) {
        return Ok(Outcome::ok(StatusCode::OK, json!({ "ok": true }), "echo"));
    }
    let Some(channel) = event["channel"].as_str() else {
        return Ok(ignored("no channel"));
    };
    let Some(target) = app.channels.get(channel) else {
        return Ok(ignored("channel not mirrored"));
    };
    let Some(user) = event["user"].as_str().filter(|u| valid_id(u)) else {
        return Ok(ignored("no user"));
    };
    let user_id = UserId::Text(user.to_owned());
    let directory = app.directories.get(&target.link);
    let username = inbound.platforms.slack.names.name(user, directory).await;
    let mut extra = Map::new();
    extra.insert("origin".into(), Value::String(target.link.clone()));
    let chat = match (event["type"].as_str(), event.get("subtype")) {
        (Some("message"), None) => {
            let (Some(text), Some(ts)) = (event["text"].as_str(), event["ts"].as_str()) else {
                return Ok(ignored("message without text or ts"));
            };
            extra.insert("external_id".into(), Value::String(ts.to_owned()));
            ChatEvent::Message(Message {
                id: uuid::Uuid::new_v4().to_string(),
                user_id,
                username,
                content: unescape(text),
                room: Some(target.room.clone()),
                timestamp: Timestamp::now(),
                extra,
            })
        }
        (Some(kind @ ("member_joined_channel" | "member_left_channel")), None) => {
            let presence = if kind == "member_joined_channel" {
                Presence::Join
            } else {
                Presence::Leave
            };
            extra.insert("external_id".into(), Value::String(event_id.to_owned()));
            let mut line = SystemLine::presence(presence, user_id, &username);
            line.extra = extra;
            ChatEvent::System(line)
        }
        _ => return Ok(ignored("event type or subtype not mirrored")),
    };
    let write = Write {
        scope: Scope::Room(target.room.clone()),
        event: chat,
        dedup_key: crate::redis::keys::slack_dedup(event_id),
        dedup_secs: SLACK_DEDUP_SECS,
        history_limit: inbound.history.room_limit_of(&target.room),
    };
    match inbound.writer.write(&write).await {
        Ok(Written::New(_)) => Ok(Outcome::ok(
            StatusCode::OK,
            json!({ "ok": true }),
            "accepted",
        )),
        Ok(Written::Duplicate(_)) => Ok(Outcome::ok(
            StatusCode::OK,
            json!({ "ok": true }),
            "duplicate",
        )),
        Err(e) => Err(Outcome::redis_failed(&e)),
    }
}

/// Whether our own app or bot posted this event (a relayed post coming back).
fn is_ours(app: &SlackApp, envelope: &Value, event: &Value) -> bool {
    let ours = |id: Option<&str>, configured: &Option<String>| {
        id.is_some_and(|id| configured.as_deref() == Some(id))
    };
    let app_ids = [
        event["app_id"].as_str(),
        event["bot_profile"]["app_id"].as_str(),
    ];
    let own_app = envelope["api_app_id"].as_str();
    ours(event["bot_id"].as_str(), &app.config.bot_id)
        || app_ids
            .iter()
            .any(|id| ours(*id, &app.config.app_id) || (id.is_some() && *id == own_app))
}

/// A Slack id fit for a key name: 1 to 128 characters of letters, digits, `.`, `_`, `-`.
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Slack's escaping undone (`&lt;`, `&gt;`, `&amp;`): the chat shows text as typed.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_escaping_is_undone_once() {
        assert_eq!(unescape("a &lt;b&gt; &amp;lt;"), "a <b> &lt;");
    }

    #[test]
    fn ids_that_would_bend_key_names_are_refused() {
        assert!(valid_id("Ev0123ABC"));
        assert!(valid_id("1700000000.000100"));
        assert!(!valid_id("a:b"));
        assert!(!valid_id(""));
    }
}
