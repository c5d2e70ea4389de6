//! Request signatures: Standard Webhooks (what we send, and verify on inbound generic webhooks)
//! and Slack's `v0` scheme (inbound Events API). Both are HMAC-SHA256 compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret::WebhookSecret;

type HmacSha256 = Hmac<Sha256>;

/// How far a signed timestamp may be from our clock, either way.
const TOLERANCE_SECS: i64 = 300;

/// Why a signed request is not accepted. Deliberately vague about which entry failed: the
/// sender learns nothing useful for forging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("timestamp is not a whole number of unix seconds")]
    BadTimestamp,
    #[error("timestamp is more than 300 s away from now")]
    OutsideTolerance,
    #[error("no signature matches")]
    Mismatch,
}

/// The Standard Webhooks signature of one request: `v1,` + base64 of
/// HMAC-SHA256(key, `{msg_id}.{timestamp}.{body}`).
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = standard_mac(secret, msg_id, &timestamp.to_string(), body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Checks a Standard Webhooks `webhook-signature` header: any space-separated `v1,` entry may
/// match; the timestamp must be within 300 s of `now` (unix seconds).
pub fn verify(
    secret: &WebhookSecret,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    check_timestamp(timestamp, now)?;
    let mac = standard_mac(secret, msg_id, timestamp, body);
    let matches = signature_header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    matches.then_some(()).ok_or(SignatureError::Mismatch)
}

/// Checks Slack's `X-Slack-Signature` (`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`) with
/// `X-Slack-Request-Timestamp` within 300 s of `now`.
pub fn verify_slack(
    signing_secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    check_timestamp(timestamp, now)?;
    let tag = signature
        .strip_prefix("v0=")
        .and_then(|encoded| hex::decode(encoded).ok())
        .ok_or(SignatureError::Mismatch)?;
    let mut mac = new_mac(signing_secret);
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
}

fn standard_mac(secret: &WebhookSecret, msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = new_mac(secret.key());
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn check_timestamp(timestamp: &str, now: i64) -> Result<(), SignatureError> {
    let then: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now.abs_diff(then) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const PAYLOAD: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const EXPECTED: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(SECRET).unwrap()
    }

    #[test]
    fn signs_the_standard_webhooks_vector() {
        assert_eq!(sign(&secret(), MSG_ID, TS, PAYLOAD), EXPECTED);
    }

    #[test]
    fn verifies_the_vector_among_other_entries() {
        let ts = TS.to_string();
        assert_eq!(
            verify(&secret(), MSG_ID, &ts, EXPECTED, PAYLOAD, TS),
            Ok(())
        );
        let several = format!("v2,abc v1,AAAA v1,not-base64! {EXPECTED}");
        assert_eq!(
            verify(&secret(), MSG_ID, &ts, &several, PAYLOAD, TS + 300),
            Ok(())
        );
    }

    #[test]
    fn rejects_tampering_and_stale_or_future_timestamps() {
        let ts = TS.to_string();
        let verify_at =
            |id: &str, body: &[u8], sig: &str, now: i64| verify(&secret(), id, &ts, sig, body, now);
        let tampered = br#"{"email":"test@example.com","username":"test_usex"}"#;
        assert_eq!(
            verify_at(MSG_ID, tampered, EXPECTED, TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_at("msg_other", PAYLOAD, EXPECTED, TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_at(
                MSG_ID,
                PAYLOAD,
                "v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
                TS
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_at(MSG_ID, PAYLOAD, "", TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_at(MSG_ID, PAYLOAD, EXPECTED, TS + 301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify_at(MSG_ID, PAYLOAD, EXPECTED, TS - 301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify(&secret(), MSG_ID, "soon", EXPECTED, PAYLOAD, TS),
            Err(SignatureError::BadTimestamp)
        );
    }

    const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: &str = "1531420618";
    /// The docs' slash-command body. Its token is `xyzz0WbapA4vBCDEFasx0q6G`; a copy with
    /// `xyzz0WbapA4vBCDEvXZr0QQ` (seen in a brief) does not reproduce the docs' signature.
    const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn verifies_the_slack_docs_vector() {
        let now = 1531420618 + 10;
        assert_eq!(
            verify_slack(SLACK_SECRET, SLACK_TS, SLACK_SIG, SLACK_BODY, now),
            Ok(())
        );
    }

    #[test]
    fn slack_rejects_tampering_bad_encoding_and_replays() {
        let now = 1531420618;
        let mut tampered = SLACK_BODY.to_vec();
        tampered[0] = b'T';
        let check =
            |sig: &str, body: &[u8], now| verify_slack(SLACK_SECRET, SLACK_TS, sig, body, now);
        assert_eq!(
            check(SLACK_SIG, &tampered, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&SLACK_SIG.replace("v0=", "v1="), SLACK_BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check("v0=zz", SLACK_BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(SLACK_SIG, SLACK_BODY, now + 301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify_slack(SLACK_SECRET, "x", SLACK_SIG, SLACK_BODY, now),
            Err(SignatureError::BadTimestamp)
        );
    }
}
