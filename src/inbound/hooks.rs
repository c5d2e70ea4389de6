//! `POST /hooks/{link}`: a Standard Webhooks-signed event from a webhook link with
//! `inbound = true`, written as the seed's operation would write it.
//!
//! Body: `{"type": "message" | "join" | "leave" | "typing" | "read_receipt", "room": …` or
//! `"dm": [a, b]` (messages only), `"user_id", "username", "content", "last_read"}`; each type
//! takes exactly the fields it needs. Answers 202 `{"id": …}`; a repeated `webhook-id` writes
//! nothing and answers 200 with the first write's id. Nothing is written on any error.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{HOOK_DEDUP_SECS, HookLink, Inbound, Outcome, Write, Written, now_secs};
use crate::chat::model::{
    ChatEvent, Message, ReadReceipt, Scope, SystemLine, Timestamp, Typing, UserId,
};
use crate::platforms::webhook::signing;
use crate::redis::keys;

const ROUTE: &str = "hooks";
/// The longest `webhook-id` accepted (it becomes part of a Redis key name).
const MAX_ID_LEN: usize = 256;
/// The longest user id or username accepted, in characters.
const MAX_NAME_CHARS: usize = 200;

pub(super) async fn receive(
    State(shared): State<super::Shared>,
    Path(link): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(inbound) = shared.load_full() else {
        return Outcome::unavailable().respond(ROUTE);
    };
    handle(&inbound, &link, &headers, &body)
        .await
        .unwrap_or_else(|outcome| outcome)
        .respond(ROUTE)
}

async fn handle(
    inbound: &Inbound,
    link: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Outcome, Outcome> {
    let Some(hook) = inbound.hooks.get(link) else {
        return Err(Outcome::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no inbound webhook link by that name",
        ));
    };
    if !is_json(headers) {
        return Err(Outcome::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_type",
            "Content-Type must be application/json",
        ));
    }
    let id = verify(hook, headers, body)?;
    let request = parse(body)?;
    let (scope, history_limit) = scope_of(inbound, hook, &request)?;
    let too_long = |content: &String| content.chars().count() > hook.max_content_chars;
    if request.content.as_ref().is_some_and(too_long) {
        return Err(Outcome::field(
            StatusCode::PAYLOAD_TOO_LARGE,
            "content",
            format!("longer than {} characters", hook.max_content_chars),
        ));
    }
    let event = build(&request, &scope, link, &id);
    let write = Write {
        scope,
        event,
        dedup_key: keys::hook_dedup(link, &id),
        dedup_secs: HOOK_DEDUP_SECS,
        history_limit,
    };
    match inbound.writer.write(&write).await {
        Ok(Written::New(id)) => Ok(Outcome::ok(
            StatusCode::ACCEPTED,
            json!({ "id": id }),
            "accepted",
        )),
        Ok(Written::Duplicate(id)) => Ok(Outcome::ok(
            StatusCode::OK,
            json!({ "id": id, "duplicate": true }),
            "duplicate",
        )),
        Err(e) => Err(Outcome::redis_failed(&e)),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Checks the Standard Webhooks headers; the `webhook-id` on success.
fn verify(hook: &HookLink, headers: &HeaderMap, body: &[u8]) -> Result<String, Outcome> {
    let unauthorized = |why: &str| {
        Outcome::error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("signature rejected: {why}"),
        )
    };
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) = (
        text("webhook-id"),
        text("webhook-timestamp"),
        text("webhook-signature"),
    ) else {
        return Err(unauthorized(
            "webhook-id, webhook-timestamp and webhook-signature are required",
        ));
    };
    signing::verify(&hook.secret, id, timestamp, signature, body, now_secs())
        .map_err(|e| unauthorized(&e.to_string()))?;
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(Outcome::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("webhook-id must be 1 to {MAX_ID_LEN} printable characters"),
        ));
    }
    Ok(id.to_owned())
}

/// What the body asks for, every field checked.
#[derive(Debug)]
struct Request {
    /// `type`.
    kind: Kind,
    /// `room`, or else `dm` (exactly one of them).
    room: Option<String>,
    /// `dm`: the two users of a direct message.
    dm: Option<(UserId, UserId)>,
    /// `user_id`: the sender, JSON type kept.
    user_id: UserId,
    /// `username` (messages, joins, leaves).
    username: Option<String>,
    /// `content` (messages).
    content: Option<String>,
    /// `last_read` (read receipts).
    last_read: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Join,
    Leave,
    Typing,
    ReadReceipt,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "message" => Self::Message,
            "join" => Self::Join,
            "leave" => Self::Leave,
            "typing" => Self::Typing,
            "read_receipt" => Self::ReadReceipt,
            _ => return None,
        })
    }

    /// The fields this type takes besides `type` and its place (`room`/`dm`).
    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Message => &["user_id", "username", "content"],
            Self::Join | Self::Leave => &["user_id", "username"],
            Self::Typing => &["user_id"],
            Self::ReadReceipt => &["user_id", "last_read"],
        }
    }
}

fn bad(field: &str, message: impl Into<String>) -> Outcome {
    Outcome::field(StatusCode::BAD_REQUEST, field, message)
}

fn parse(body: &[u8]) -> Result<Request, Outcome> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Outcome::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err(Outcome::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body must be a JSON object",
        ));
    };
    let kind = match map.remove("type") {
        None => return Err(bad("type", "missing (required)")),
        Some(Value::String(s)) => Kind::parse(&s).ok_or_else(|| {
            bad(
                "type",
                "must be one of message, join, leave, typing, read_receipt",
            )
        })?,
        Some(_) => return Err(bad("type", "must be a string")),
    };
    let room = match map.remove("room") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(bad("room", "must be a string")),
    };
    let dm = match map.remove("dm") {
        None => None,
        Some(Value::Array(pair)) if pair.len() == 2 => {
            let mut ids = pair.into_iter().map(|v| user_id(v, "dm"));
            match (ids.next(), ids.next()) {
                (Some(a), Some(b)) => Some((a?, b?)),
                _ => None,
            }
        }
        Some(_) => return Err(bad("dm", "must be a list of two user ids")),
    };
    match (&room, &dm) {
        (None, None) => return Err(bad("room", "missing: set `room` or `dm`")),
        (Some(_), Some(_)) => return Err(bad("dm", "set `room` or `dm`, not both")),
        (None, Some(_)) if kind != Kind::Message => {
            return Err(bad("dm", "only messages can go to a DM"));
        }
        _ => {}
    }
    let wanted = kind.fields();
    if let Some(extra) = map.keys().find(|k| !wanted.contains(&k.as_str())) {
        let message = match extra.as_str() {
            "user_id" | "username" | "content" | "last_read" => "not used by this type",
            _ => "unknown field",
        };
        return Err(bad(extra, message));
    }
    let user_id = match map.remove("user_id") {
        Some(v) => user_id(v, "user_id")?,
        None => return Err(bad("user_id", "missing (required)")),
    };
    Ok(Request {
        kind,
        room,
        dm,
        user_id,
        username: text(&mut map, "username", wanted)?,
        content: text(&mut map, "content", wanted)?,
        last_read: text(&mut map, "last_read", wanted)?,
    })
}

/// A user id: a JSON integer or a non-empty string of at most 200 characters.
fn user_id(value: Value, field: &str) -> Result<UserId, Outcome> {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(UserId::Number(n)),
        Value::String(s)
            if !s.is_empty()
                && s.chars().count() <= MAX_NAME_CHARS
                && !s.chars().any(char::is_control) =>
        {
            Ok(UserId::Text(s))
        }
        _ => Err(bad(
            field,
            "a user id is an integer or a string of 1 to 200 printable characters",
        )),
    }
}

/// A required non-empty string field of this type (`None` when the type does not take it).
fn text(
    map: &mut Map<String, Value>,
    field: &'static str,
    wanted: &[&str],
) -> Result<Option<String>, Outcome> {
    if !wanted.contains(&field) {
        return Ok(None);
    }
    match map.remove(field) {
        None => Err(bad(field, "missing (required)")),
        Some(Value::String(s)) if s.is_empty() => Err(bad(field, "is empty")),
        Some(Value::String(s)) if field == "username" && s.chars().count() > MAX_NAME_CHARS => {
            Err(bad(field, "longer than 200 characters"))
        }
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

/// The room or DM, if the link is configured for it, with its history limit.
fn scope_of(
    inbound: &Inbound,
    hook: &HookLink,
    request: &Request,
) -> Result<(Scope, usize), Outcome> {
    let not_configured = |what: &str| {
        Outcome::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} is not configured for this link"),
        )
    };
    if let Some(room) = &request.room {
        if !hook.rooms.contains(room) {
            return Err(not_configured("this room"));
        }
        return Ok((
            Scope::Room(room.clone()),
            inbound.history.room_limit_of(room),
        ));
    }
    let Some((a, b)) = &request.dm else {
        return Err(bad("room", "missing: set `room` or `dm`"));
    };
    if !hook.dms {
        return Err(not_configured("direct messages"));
    }
    let sender = request.user_id.to_string();
    if sender != a.to_string() && sender != b.to_string() {
        return Err(bad("user_id", "the sender must be one of the `dm` pair"));
    }
    let scope = Scope::dm(a, b);
    let ambiguous = [a, b]
        .iter()
        .any(|id| crate::chat::model::room_name_problem(&id.to_string()).is_some());
    if ambiguous {
        return Err(bad(
            "dm",
            "user ids in a DM cannot contain `:` or whitespace",
        ));
    }
    Ok((scope, inbound.history.dm_limit))
}

/// The seed event for the request, marked with its origin link and the sender's id.
fn build(request: &Request, scope: &Scope, link: &str, id: &str) -> ChatEvent {
    let mut extra = Map::new();
    extra.insert("origin".into(), Value::String(link.to_owned()));
    extra.insert("external_id".into(), Value::String(id.to_owned()));
    let user_id = request.user_id.clone();
    let username = request.username.clone().unwrap_or_default();
    match request.kind {
        Kind::Message => ChatEvent::Message(Message {
            id: uuid::Uuid::new_v4().to_string(),
            user_id,
            username,
            content: request.content.clone().unwrap_or_default(),
            room: scope.room().map(str::to_owned),
            timestamp: Timestamp::now(),
            extra,
        }),
        Kind::Join | Kind::Leave => {
            let presence = if request.kind == Kind::Join {
                crate::chat::model::Presence::Join
            } else {
                crate::chat::model::Presence::Leave
            };
            let mut line = SystemLine::presence(presence, user_id, &username);
            line.extra = extra;
            ChatEvent::System(line)
        }
        Kind::Typing => ChatEvent::Typing(Typing {
            user_id,
            timestamp: Timestamp::now(),
            extra,
        }),
        Kind::ReadReceipt => ChatEvent::ReadReceipt(ReadReceipt {
            user_id,
            last_read: request.last_read.clone().unwrap_or_default(),
            extra,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: Value) -> Result<Request, Value> {
        parse(body.to_string().as_bytes()).map_err(|o| o.body)
    }

    #[test]
    fn each_type_takes_exactly_its_fields() {
        let ok = parsed(json!({"type": "message", "room": "general", "user_id": 7,
            "username": "a", "content": "hi"}))
        .unwrap();
        assert_eq!(ok.kind, Kind::Message);
        assert_eq!(ok.user_id, UserId::Number(7.into()));
        let forged = parsed(json!({"type": "message", "room": "general", "user_id": 7,
            "username": "a", "content": "hi", "origin": "slack"}));
        assert_eq!(forged.unwrap_err()["field"], "origin");
        let extra = parsed(json!({"type": "typing", "room": "r", "user_id": 7, "content": "x"}));
        assert_eq!(extra.unwrap_err()["field"], "content");
        let missing = parsed(json!({"type": "read_receipt", "room": "r", "user_id": "u"}));
        assert_eq!(missing.unwrap_err()["field"], "last_read");
        let wrong = parsed(json!({"type": "join", "room": "r", "user_id": [1], "username": "a"}));
        assert_eq!(wrong.unwrap_err()["field"], "user_id");
        let dm_join = parsed(json!({"type": "join", "dm": [1, 2], "user_id": 1, "username": "a"}));
        assert_eq!(dm_join.unwrap_err()["field"], "dm");
        let nowhere = parsed(json!({"type": "typing", "user_id": 1}));
        assert_eq!(nowhere.unwrap_err()["field"], "room");
        assert!(parse(b"[1]").is_err());
        assert!(parse(b"{").is_err());
    }
}
