//! A generic webhook: POSTs each event (or a batch) as Standard Webhooks JSON, signed when the
//! link has a secret.
//!
//! One event: `{"type":"chat.message","timestamp":…,"data":{"room":"general","event":<payload>}}`
//! (`"dm":["999","1001"]` instead of `room` in a DM). Several: `{"type":"chat.batch",
//! "timestamp":…,"data":[<one-event bodies>…]}`. The payload is embedded byte for byte, so fields
//! we do not know survive.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::signing::sign;
use super::{SendOutcome, error_outcome, response_outcome};
use crate::model::{Outbound, Scope};
use crate::retry::Verdict;
use crate::secret::{SecretUrl, WebhookSecret};

/// The longest event id used as-is inside `webhook-id`; longer ones are hashed.
const MAX_PLAIN_ID_LEN: usize = 128;

/// A Standard Webhooks endpoint.
pub struct Webhook {
    /// The link's configured name.
    name: String,
    /// Where to POST; its path is a token, so it is only ever printed redacted.
    url: SecretUrl,
    /// Signs every request when set; receivers without one still get `webhook-id`/`-timestamp`.
    secret: Option<WebhookSecret>,
    /// The whole request's deadline (connect, send, response), per attempt.
    timeout: Duration,
    /// The most events per request; 1 sends one event per request, without a batch envelope.
    batch_max: usize,
    /// How many requests may be outstanding at once.
    max_in_flight: usize,
    /// The shared pooled client from [`super::http_client`].
    client: reqwest::Client,
}

impl Webhook {
    /// `batch_max` and `max_in_flight` below 1 are taken as 1.
    pub fn new(
        name: &str,
        url: SecretUrl,
        secret: Option<WebhookSecret>,
        timeout: Duration,
        batch_max: usize,
        max_in_flight: usize,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name: name.to_owned(),
            url,
            secret,
            timeout,
            batch_max: batch_max.max(1),
            max_in_flight: max_in_flight.max(1),
            client,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn batch_max(&self) -> usize {
        self.batch_max
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// POSTs the batch once and classifies what came back.
    pub async fn send(&self, batch: &[Outbound]) -> SendOutcome {
        if batch.is_empty() {
            return SendOutcome {
                verdict: Verdict::Delivered,
                status: None,
                detail: "empty batch: nothing sent".into(),
            };
        }
        let body = match render(batch) {
            Ok(body) => body,
            Err(err) => {
                return SendOutcome {
                    verdict: Verdict::Reject,
                    status: None,
                    detail: format!("could not encode the body: {err}"),
                };
            }
        };
        let msg_id = message_id(batch);
        let timestamp = Utc::now().timestamp();
        let mut request = self
            .client
            .post(self.url.expose().clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(secret) = &self.secret {
            request = request.header("webhook-signature", sign(secret, &msg_id, timestamp, &body));
        }
        match request.body(body).send().await {
            Ok(response) => response_outcome(response, &self.url).await,
            Err(err) => error_outcome(err, &self.url),
        }
    }
}

/// The request body: one event's envelope, or a `chat.batch` of them (timestamped by the first).
fn render(batch: &[Outbound]) -> Result<Vec<u8>, serde_json::Error> {
    match batch {
        [single] => serde_json::to_vec(&envelope(single)),
        _ => serde_json::to_vec(&Envelope {
            kind: "chat.batch".into(),
            timestamp: batch.first().map(rfc3339).unwrap_or_default(),
            data: batch.iter().map(envelope).collect::<Vec<_>>(),
        }),
    }
}

/// The idempotency key, stable across retries: `msg_<event_id>` for one event,
/// `msg_batch_<first event_id>_<count>` for a batch.
fn message_id(batch: &[Outbound]) -> String {
    let first = batch.first().map_or("", |item| item.event_id.as_str());
    match batch.len() {
        1 => format!("msg_{}", header_safe(first)),
        count => format!("msg_batch_{}_{count}", header_safe(first)),
    }
}

/// Event ids come from outside: use them as they are when they are short and plain, otherwise a
/// hash of them (still stable, always a valid header value).
fn header_safe(id: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !id.is_empty() && id.len() <= MAX_PLAIN_ID_LEN && id.chars().all(plain) {
        return id.to_owned();
    }
    let digest = Sha256::digest(id.as_bytes());
    format!("h{}", hex::encode(&digest[..16]))
}

/// The Standard Webhooks payload shape.
#[derive(Serialize)]
struct Envelope<D> {
    /// `chat.<kind>` (`chat.message`, `chat.notice`, …) or `chat.batch`.
    #[serde(rename = "type")]
    kind: String,
    /// When the event was enqueued: stable across retries, unlike the signature timestamp.
    timestamp: String,
    /// One event's [`EventData`], or a list of envelopes for a batch.
    data: D,
}

/// Where one event happened, and the event itself.
#[derive(Serialize)]
struct EventData<'a> {
    /// The room name, for room events.
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    /// The two user ids in channel order, for DM events.
    #[serde(skip_serializing_if = "Option::is_none")]
    dm: Option<[&'a str; 2]>,
    /// The payload as published.
    event: EventJson<'a>,
}

/// A payload embedded verbatim when it is JSON, or as a JSON string when (against `WIRE.md`)
/// it is not, so the body is always valid JSON.
#[derive(Serialize)]
#[serde(untagged)]
enum EventJson<'a> {
    Verbatim(&'a RawValue),
    Text(&'a str),
}

fn envelope(item: &Outbound) -> Envelope<EventData<'_>> {
    let (room, dm) = match &item.scope {
        Scope::Room(room) => (Some(room.as_str()), None),
        Scope::Dm(a, b) => (None, Some([a.as_str(), b.as_str()])),
    };
    let event = match serde_json::from_str::<&RawValue>(&item.payload) {
        Ok(raw) => EventJson::Verbatim(raw),
        Err(_) => EventJson::Text(&item.payload),
    };
    Envelope {
        kind: format!("chat.{}", item.kind.as_str()),
        timestamp: rfc3339(item),
        data: EventData { room, dm, event },
    }
}

fn rfc3339(item: &Outbound) -> String {
    item.enqueued_at
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::signing::verify;
    use crate::model::{EventKind, OutboundKind};
    use axum::http::HeaderMap;
    use chrono::TimeZone;
    use serde_json::{Value, json};

    const MESSAGE: &str = r#"{"id": "3f1c", "user_id": 1001, "username": "alice", "content": "hi", "room": "general", "timestamp": "2026-11-27T20:12:21.123456", "type": "message", "color": "red"}"#;

    fn outbound(event_id: &str, scope: Scope, kind: OutboundKind, payload: &str) -> Outbound {
        Outbound {
            entry_id: "1-0".into(),
            event_id: event_id.into(),
            scope,
            kind,
            payload: payload.into(),
            enqueued_at: Utc.with_ymd_and_hms(2026, 11, 27, 20, 12, 21).unwrap()
                + chrono::Duration::microseconds(123_456),
        }
    }

    fn room_message(event_id: &str) -> Outbound {
        let kind = OutboundKind::Event(EventKind::Message);
        outbound(event_id, Scope::Room("general".into()), kind, MESSAGE)
    }

    fn rendered(batch: &[Outbound]) -> String {
        String::from_utf8(render(batch).unwrap()).unwrap()
    }

    #[test]
    fn one_room_event_embeds_the_payload_verbatim() {
        let body = rendered(&[room_message("3f1c")]);
        assert_eq!(
            body,
            format!(
                r#"{{"type":"chat.message","timestamp":"2026-11-27T20:12:21.123Z","data":{{"room":"general","event":{MESSAGE}}}}}"#
            )
        );
    }

    #[test]
    fn dm_events_and_notices_have_their_own_shapes() {
        let dm = outbound(
            "3f1c",
            Scope::Dm("999".into(), "1001".into()),
            OutboundKind::Event(EventKind::Message),
            MESSAGE,
        );
        let body: Value = serde_json::from_str(&rendered(&[dm])).unwrap();
        assert_eq!(body["data"]["dm"], json!(["999", "1001"]));
        assert!(body["data"].get("room").is_none());
        assert_eq!(body["data"]["event"]["color"], "red");

        let notice = outbound(
            "n1",
            Scope::Room("general".into()),
            OutboundKind::Notice,
            r#"{"content":"gap"}"#,
        );
        let body: Value = serde_json::from_str(&rendered(&[notice])).unwrap();
        assert_eq!(body["type"], "chat.notice");
        assert_eq!(body["data"]["event"], json!({"content": "gap"}));

        let kinds = [
            (EventKind::Join, "chat.join"),
            (EventKind::Leave, "chat.leave"),
            (EventKind::Typing, "chat.typing"),
            (EventKind::ReadReceipt, "chat.read_receipt"),
        ];
        for (kind, name) in kinds {
            let item = outbound(
                "x",
                Scope::Room("r".into()),
                OutboundKind::Event(kind),
                "{}",
            );
            let body: Value = serde_json::from_str(&rendered(&[item])).unwrap();
            assert_eq!(body["type"], name);
        }
    }

    #[test]
    fn a_payload_that_is_not_json_becomes_a_json_string() {
        let kind = OutboundKind::Event(EventKind::Message);
        let item = outbound("x", Scope::Room("general".into()), kind, "{broken \"json");
        let body: Value = serde_json::from_str(&rendered(&[item])).unwrap();
        assert_eq!(body["data"]["event"], "{broken \"json");
    }

    #[test]
    fn several_events_become_one_ordered_batch() {
        let batch = [room_message("a"), room_message("b"), room_message("c")];
        let body = rendered(&batch);
        let single = rendered(&batch[..1]);
        assert_eq!(
            body,
            format!(
                r#"{{"type":"chat.batch","timestamp":"2026-11-27T20:12:21.123Z","data":[{single},{single},{single}]}}"#
            )
        );
        assert_eq!(message_id(&batch), "msg_batch_a_3");
        assert_eq!(message_id(&batch[1..2]), "msg_b");
    }

    #[test]
    fn odd_event_ids_are_hashed_into_valid_stable_header_values() {
        let odd = room_message("id with spaces\nand newline");
        let id = message_id(std::slice::from_ref(&odd));
        assert!(id.starts_with("msg_h") && id.len() == 4 + 33, "{id}");
        assert_eq!(id, message_id(&[odd]));
        assert!(message_id(&[room_message(&"x".repeat(500))]).len() < 40);
        assert_eq!(message_id(&[room_message("h-0f3a")]), "msg_h-0f3a");
    }

    /// One loopback endpoint that records the headers and body of each request, answering 200.
    async fn capture() -> (
        SecretUrl,
        tokio::sync::mpsc::UnboundedReceiver<(HeaderMap, Vec<u8>)>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/hook/{token}",
            axum::routing::post(
                move |headers: HeaderMap, body: axum::body::Bytes| async move {
                    let _ = tx.send((headers, body.to_vec()));
                    "ok"
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = SecretUrl::parse(&format!("http://{addr}/hook/sekrit")).unwrap();
        (url, rx)
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn signed_requests_carry_standard_webhooks_headers_that_verify() {
        let (url, mut requests) = capture().await;
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let link = Webhook::new(
            "hook",
            url,
            Some(secret.clone()),
            Duration::from_secs(5),
            1,
            1,
            super::super::http_client(),
        );
        let outcome = link.send(&[room_message("3f1c")]).await;
        assert_eq!(outcome.verdict, Verdict::Delivered, "{}", outcome.detail);
        assert_eq!(outcome.status, Some(200));

        let (headers, body) = requests.recv().await.unwrap();
        assert_eq!(body, render(&[room_message("3f1c")]).unwrap());
        assert_eq!(header(&headers, "content-type"), "application/json");
        assert_eq!(header(&headers, "webhook-id"), "msg_3f1c");
        assert!(header(&headers, "user-agent").starts_with("chatbridge/"));
        let timestamp = header(&headers, "webhook-timestamp");
        let now = Utc::now().timestamp();
        assert!(now.abs_diff(timestamp.parse().unwrap()) <= 5);
        let signature = header(&headers, "webhook-signature");
        assert_eq!(
            verify(&secret, "msg_3f1c", timestamp, signature, &body, now),
            Ok(())
        );
    }

    #[tokio::test]
    async fn unsigned_requests_still_carry_id_and_timestamp() {
        let (url, mut requests) = capture().await;
        let client = super::super::http_client();
        let link = Webhook::new("hook", url, None, Duration::from_secs(5), 10, 1, client);
        let batch = [room_message("a"), room_message("b")];
        assert_eq!(link.send(&batch).await.verdict, Verdict::Delivered);
        let (headers, body) = requests.recv().await.unwrap();
        assert_eq!(header(&headers, "webhook-id"), "msg_batch_a_2");
        assert!(!header(&headers, "webhook-timestamp").is_empty());
        assert!(headers.get("webhook-signature").is_none());
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["type"], "chat.batch");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    }
}
