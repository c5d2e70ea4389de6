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
use crate::bridge::retry::Verdict;
use crate::chat::model::{Outbound, Scope};
use crate::platforms::{SendOutcome, error_outcome, response_outcome};
use crate::secret::{SecretUrl, WebhookSecret};

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

    /// The link a `[links.<name>]` section of kind `webhook` describes.
    pub fn from_config(
        name: &str,
        common: &crate::config::LinkCommon,
        config: &super::config::WebhookLinkConfig,
        client: reqwest::Client,
    ) -> Self {
        let delivery = &common.delivery;
        Self::new(
            name,
            config.url.clone(),
            config.secret.clone(),
            delivery.timeout,
            delivery.batch_max,
            delivery.max_in_flight,
            client,
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One request's deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
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
        let (body, msg_id) = match render(batch) {
            Ok(rendered) => rendered,
            Err(err) => {
                return SendOutcome {
                    verdict: Verdict::Reject,
                    status: None,
                    detail: format!("could not encode the body: {err}"),
                };
            }
        };
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

/// The request body, one event's envelope or a `chat.batch` of them (timestamped by the
/// first), and its `webhook-id`.
fn render(batch: &[Outbound]) -> Result<(Vec<u8>, String), serde_json::Error> {
    let mut ids: Vec<String> = batch.iter().map(event_id).collect();
    let msg_id = batch_id(&ids);
    let body = match batch {
        [single] => serde_json::to_vec(&envelope(single, msg_id.clone()))?,
        _ => serde_json::to_vec(&Envelope {
            id: msg_id.clone(),
            kind: "chat.batch".into(),
            timestamp: batch.first().map(rfc3339).unwrap_or_default(),
            data: batch
                .iter()
                .zip(ids.drain(..))
                .map(|(item, id)| envelope(item, id))
                .collect::<Vec<_>>(),
        })?,
    };
    Ok((body, msg_id))
}

impl crate::platforms::Sink for Webhook {
    fn name(&self) -> &str {
        Webhook::name(self)
    }

    fn batch_max(&self) -> usize {
        Webhook::batch_max(self)
    }

    fn request_timeout(&self) -> Duration {
        self.timeout()
    }

    fn max_in_flight(&self) -> usize {
        Webhook::max_in_flight(self)
    }

    fn send<'a>(&'a self, batch: &'a [Outbound]) -> crate::platforms::Sending<'a> {
        Box::pin(Webhook::send(self, batch))
    }
}

/// [`batch_id`] of a batch.
#[cfg(test)]
fn message_id(batch: &[Outbound]) -> String {
    batch_id(&batch.iter().map(event_id).collect::<Vec<_>>())
}

/// The idempotency key (`webhook-id`), stable across retries, restarts and replays: `msg_<key>` for one
/// event (its [`Outbound::key`], derived from its room or DM and exact payload, never from an
/// id a client chose); `msg_batch_<hash of its events' keys>` for a batch, whose items each
/// carry their own `msg_<key>` as `id`, so a receiver de-duplicates a batch item by item.
fn batch_id(ids: &[String]) -> String {
    match ids {
        [single] => single.clone(),
        _ => {
            let mut hash = Sha256::new();
            for id in ids {
                hash.update(id.as_bytes());
                hash.update(b"\n");
            }
            format!("msg_batch_{}", hex::encode(&hash.finalize()[..16]))
        }
    }
}

/// One event's idempotency key.
fn event_id(item: &Outbound) -> String {
    format!("msg_{}", item.key)
}

/// The Standard Webhooks payload shape.
#[derive(Serialize)]
struct Envelope<D> {
    /// The same idempotency key as `webhook-id` (for a batch item: that event's own).
    id: String,
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

/// A payload embedded verbatim when it is JSON, or as a JSON string when (against `docs/wire.md`)
/// it is not, so the body is always valid JSON.
#[derive(Serialize)]
#[serde(untagged)]
enum EventJson<'a> {
    Verbatim(&'a RawValue),
    Text(&'a str),
}

fn envelope(item: &Outbound, id: String) -> Envelope<EventData<'_>> {
    let (room, dm) = match &item.scope {
        Scope::Room(room) => (Some(room.as_str()), None),
        Scope::Dm(a, b) => (None, Some([a.as_str(), b.as_str()])),
    };
    let event = match serde_json::from_str::<&RawValue>(&item.payload) {
        Ok(raw) => EventJson::Verbatim(raw),
        Err(_) => EventJson::Text(&item.payload),
    };
    Envelope {
        id,
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
    use crate::chat::model::{EventKind, OutboundKind};
    use crate::platforms::webhook::signing::verify;
    use axum::http::HeaderMap;
    use chrono::TimeZone;
    use serde_json::{Value, json};

    const MESSAGE: &str = r#"{"id": "3f1c", "user_id": 1001, "username": "alice", "content": "hi", "room": "general", "timestamp": "2026-11-27T20:12:21.123456", "type": "message", "color": "red"}"#;

    fn outbound(event_id: &str, scope: Scope, kind: OutboundKind, payload: &str) -> Outbound {
        Outbound {
            entry_id: "1-0".into(),
            event_id: event_id.into(),
            key: Outbound::key_of(&scope, payload),
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
        let (body, id) = render(batch).unwrap();
        assert_eq!(id, message_id(batch));
        String::from_utf8(body).unwrap()
    }

    #[test]
    fn one_room_event_embeds_the_payload_verbatim() {
        let item = room_message("3f1c");
        let body = rendered(std::slice::from_ref(&item));
        let id = format!("msg_{}", item.key);
        assert_eq!(
            body,
            format!(
                r#"{{"id":"{id}","type":"chat.message","timestamp":"2026-11-27T20:12:21.123Z","data":{{"room":"general","event":{MESSAGE}}}}}"#
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
    fn several_events_become_one_ordered_batch_whose_items_keep_their_own_ids() {
        let other = |n: &str| {
            let kind = OutboundKind::Event(EventKind::Message);
            outbound(
                n,
                Scope::Room("general".into()),
                kind,
                &MESSAGE.replace("hi", n),
            )
        };
        let batch = [other("a"), other("b"), other("c")];
        let body: Value = serde_json::from_str(&rendered(&batch)).unwrap();
        assert_eq!(body["type"], "chat.batch");
        assert_eq!(body["id"], message_id(&batch));
        for (item, sent) in batch.iter().zip(body["data"].as_array().unwrap()) {
            let single: Value =
                serde_json::from_str(&rendered(std::slice::from_ref(item))).unwrap();
            assert_eq!(
                *sent, single,
                "a batch item is the event's own body, id included"
            );
            assert_eq!(sent["id"], message_id(std::slice::from_ref(item)));
        }
        assert!(message_id(&batch).starts_with("msg_batch_"));
        assert_ne!(message_id(&batch), message_id(&batch[..2]));
    }

    #[test]
    fn ids_come_from_the_room_and_payload_not_from_what_a_client_chose() {
        let kind = OutboundKind::Event(EventKind::Message);
        let general = outbound("same", Scope::Room("general".into()), kind, MESSAGE);
        let random = outbound("same", Scope::Room("random".into()), kind, MESSAGE);
        let id = |item: &Outbound| message_id(std::slice::from_ref(item));
        assert_ne!(
            id(&general),
            id(&random),
            "the same message id in two rooms"
        );
        let mut retried = general.clone();
        retried.entry_id = "9-0".into();
        assert_eq!(
            general.key,
            Outbound::key_of(&general.scope, &general.payload)
        );
        assert_eq!(
            id(&general),
            id(&retried),
            "stable across retries and replays"
        );
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_');
        assert!(id(&general).chars().all(valid), "{}", id(&general));
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
            crate::platforms::http_client(),
        );
        let outcome = link.send(&[room_message("3f1c")]).await;
        assert_eq!(outcome.verdict, Verdict::Delivered, "{}", outcome.detail);
        assert_eq!(outcome.status, Some(200));

        let (headers, body) = requests.recv().await.unwrap();
        let (expected, id) = render(&[room_message("3f1c")]).unwrap();
        assert_eq!(body, expected);
        assert_eq!(header(&headers, "content-type"), "application/json");
        assert_eq!(header(&headers, "webhook-id"), id);
        assert!(id.starts_with("msg_h-"), "{id}");
        assert!(header(&headers, "user-agent").starts_with("chatbridge/"));
        let timestamp = header(&headers, "webhook-timestamp");
        let now = Utc::now().timestamp();
        assert!(now.abs_diff(timestamp.parse().unwrap()) <= 5);
        let signature = header(&headers, "webhook-signature");
        assert_eq!(
            verify(&secret, &id, timestamp, signature, &body, now),
            Ok(())
        );
    }

    #[tokio::test]
    async fn unsigned_requests_still_carry_id_and_timestamp() {
        let (url, mut requests) = capture().await;
        let client = crate::platforms::http_client();
        let link = Webhook::new("hook", url, None, Duration::from_secs(5), 10, 1, client);
        let batch = [room_message("a"), room_message("b")];
        assert_eq!(link.send(&batch).await.verdict, Verdict::Delivered);
        let (headers, body) = requests.recv().await.unwrap();
        assert_eq!(header(&headers, "webhook-id"), message_id(&batch));
        assert!(!header(&headers, "webhook-timestamp").is_empty());
        assert!(headers.get("webhook-signature").is_none());
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["type"], "chat.batch");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    }
}
