//! The webhook link over real HTTP on loopback: what it sends verifies with the reference
//! Standard Webhooks library, and every kind of answer is classified as `retry` says.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chatbridge::bridge::retry::Verdict;
use chatbridge::chat::model::{EventKind, Outbound, OutboundKind, Scope};
use chatbridge::platforms::{SendOutcome, Target, Webhook, http_client};
use chatbridge::secret::{SecretUrl, WebhookSecret};
use common::receiver::{Receiver, Recorded, Reply};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// The secret part of the receiver URL: must never show up in an outcome's detail.
const TOKEN: &str = "T0KEN-d0-not-leak";
const WAIT: Duration = Duration::from_secs(10);

fn message(id: &str) -> Outbound {
    let scope = Scope::Room("general".into());
    let payload = format!(
        r#"{{"id": "{id}", "user_id": 1001, "username": "alice", "content": "héllo \"there\"", "room": "general", "timestamp": "2026-11-27T20:12:21", "type": "message", "extra": [1, 2.50, null]}}"#
    );
    Outbound {
        entry_id: "1-0".into(),
        event_id: id.into(),
        key: Outbound::key_of(&scope, &payload),
        scope,
        kind: OutboundKind::Event(EventKind::Message),
        payload,
        enqueued_at: chrono::Utc::now(),
    }
}

fn webhook(url: &str, secret: Option<&str>, timeout: Duration) -> Target {
    let url = SecretUrl::parse(url).expect("test URL");
    let secret = secret.map(|s| WebhookSecret::parse(s).expect("test secret"));
    Target::new(Webhook::new(
        "hook",
        url,
        secret,
        timeout,
        1,
        1,
        http_client(),
    ))
}

async fn send_one(receiver: &Receiver) -> SendOutcome {
    let link = webhook(&receiver.url(&format!("/hooks/{TOKEN}")), None, WAIT);
    link.send(&[message("m1")]).await
}

/// Runs `tests/verify_standardwebhooks.py` on a recorded request (optionally with a replaced
/// body) and says whether the reference library accepted it.
fn reference_verifies(request: &Recorded, body: &[u8]) -> bool {
    let headers: serde_json::Map<String, serde_json::Value> = request
        .header_pairs()
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/verify_standardwebhooks.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .arg(SECRET)
        .arg(serde_json::Value::Object(headers).to_string())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run this test");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(body)
        .expect("write the body to the verifier");
    let output = child.wait_with_output().expect("run the verifier");
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => true,
        Some(1) => false,
        Some(2) => panic!("the reference verifier needs its library: pip install standardwebhooks"),
        other => panic!("the reference verifier failed ({other:?}): {stderr}"),
    }
}

#[tokio::test]
async fn signed_requests_verify_with_the_reference_library() {
    let receiver = Receiver::start().await;
    let link = webhook(&receiver.url("/hooks/signed"), Some(SECRET), WAIT);
    let outcome = link.send(&[message("m1")]).await;
    assert_eq!(outcome.verdict, Verdict::Delivered, "{}", outcome.detail);

    let request = &receiver.wait_for(1, WAIT).await[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/signed");
    let expected = format!("msg_{}", message("m1").key);
    assert_eq!(request.header("webhook-id"), Some(expected.as_str()));
    assert_eq!(request.json()["data"]["event"]["extra"][1], 2.5);
    assert!(
        request.body.windows(9).any(|w| w == b"[1, 2.50,"),
        "payload not embedded verbatim"
    );
    assert!(
        reference_verifies(request, &request.body),
        "valid signature rejected"
    );

    let mut tampered = request.body.to_vec();
    let last_brace = tampered.len() - 2;
    tampered.insert(last_brace, b' ');
    assert!(
        !reference_verifies(request, &tampered),
        "tampered body accepted"
    );
}

#[tokio::test]
async fn retries_reuse_the_webhook_id_and_sign_each_attempt() {
    let receiver = Receiver::start().await;
    receiver.respond_next(1, Reply::status(503));
    let link = webhook(&receiver.url("/hooks/retry"), Some(SECRET), WAIT);
    let batch = [message("m2")];
    assert!(matches!(
        link.send(&batch).await.verdict,
        Verdict::EventFailure { .. }
    ));
    assert_eq!(link.send(&batch).await.verdict, Verdict::Delivered);
    let requests = receiver.wait_for(2, WAIT).await;
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    assert_eq!(requests[0].body, requests[1].body);
    assert!(requests.iter().all(|r| reference_verifies(r, &r.body)));
}

#[tokio::test]
async fn unavailable_is_retried_without_a_hint() {
    let receiver = Receiver::start().await;
    receiver.respond_with(Reply::status(503).body("down for maintenance"));
    let outcome = send_one(&receiver).await;
    assert_eq!(outcome.verdict, Verdict::EventFailure { after: None });
    assert_eq!(outcome.status, Some(503));
    assert_eq!(outcome.detail, "HTTP 503: down for maintenance");
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let receiver = Receiver::start().await;
    receiver.respond_with(Reply::status(429).header("Retry-After", "2"));
    let outcome = send_one(&receiver).await;
    assert_eq!(
        outcome.verdict,
        Verdict::RateLimited {
            after: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(outcome.detail, "HTTP 429");
}

#[tokio::test]
async fn bad_request_is_rejected_with_a_body_excerpt_and_no_token() {
    let receiver = Receiver::start().await;
    let long_tail = "x".repeat(500);
    let body = format!("invalid_payload: Cannot POST /hooks/{TOKEN} {long_tail}");
    receiver.respond_when_body_contains(r#""id": "bad""#, Reply::status(400).body(&body));
    let link = webhook(&receiver.url(&format!("/hooks/{TOKEN}")), None, WAIT);

    assert_eq!(
        link.send(&[message("good")]).await.verdict,
        Verdict::Delivered
    );
    let outcome = link.send(&[message("bad")]).await;
    assert_eq!(outcome.verdict, Verdict::Reject);
    assert_eq!(outcome.status, Some(400));
    assert!(
        outcome.detail.starts_with("HTTP 400: invalid_payload"),
        "{}",
        outcome.detail
    );
    assert!(!outcome.detail.contains(TOKEN), "{}", outcome.detail);
    assert!(outcome.detail.chars().count() <= "HTTP 400: ".len() + 201);
}

#[tokio::test]
async fn unauthorized_is_a_link_failure_whose_detail_has_no_token() {
    let receiver = Receiver::start().await;
    let body = format!("bad credentials for /hooks/{TOKEN}");
    receiver.respond_with(Reply::status(401).body(&body));
    let link = webhook(&receiver.url(&format!("/hooks/{TOKEN}")), None, WAIT);
    let outcome = link.send(&[message("m1")]).await;
    assert_eq!(outcome.verdict, Verdict::LinkFailure { after: None });
    assert_eq!(outcome.status, Some(401));
    assert_eq!(outcome.detail, "HTTP 401: bad credentials for …");
}

#[tokio::test]
async fn gone_disables_the_link() {
    let receiver = Receiver::start().await;
    receiver.respond_with(Reply::status(410).body("channel_is_archived"));
    let outcome = send_one(&receiver).await;
    assert_eq!(outcome.verdict, Verdict::Disable);
    assert_eq!(outcome.detail, "HTTP 410: channel_is_archived");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start().await;
    let elsewhere = receiver.url("/elsewhere");
    receiver.respond_with(Reply::status(307).header("Location", &elsewhere));
    assert_eq!(
        send_one(&receiver).await.verdict,
        Verdict::LinkFailure { after: None }
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.requests().len(), 1, "the redirect was followed");
}

#[tokio::test]
async fn connection_refused_is_a_link_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let link = webhook(&format!("http://{addr}/hooks/{TOKEN}"), Some(SECRET), WAIT);
    let outcome = link.send(&[message("m1")]).await;
    assert_eq!(outcome.verdict, Verdict::LinkFailure { after: None });
    assert_eq!(outcome.status, None);
    assert!(
        outcome.detail.starts_with("connect error"),
        "{}",
        outcome.detail
    );
    assert!(!outcome.detail.contains(TOKEN), "{}", outcome.detail);
}

#[tokio::test]
async fn a_slow_receiver_times_out_as_an_event_failure() {
    let receiver = Receiver::start().await;
    receiver.respond_with(Reply::status(200).delay(Duration::from_secs(5)));
    let url = receiver.url(&format!("/hooks/{TOKEN}"));
    let link = webhook(&url, None, Duration::from_millis(300));
    let outcome = link.send(&[message("m1")]).await;
    assert_eq!(outcome.verdict, Verdict::EventFailure { after: None });
    assert!(outcome.detail.starts_with("timeout"), "{}", outcome.detail);
    assert!(!outcome.detail.contains(TOKEN), "{}", outcome.detail);
}
