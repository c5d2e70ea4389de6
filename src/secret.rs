//! Values that must never reach a log, an error message or a metric label: webhook URLs (their
//! path is a token) and signing secrets. Their `Debug` and `Display` print a redacted form.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A target URL whose path and query are secret (Slack, Discord and most webhook URLs embed
/// their token there). Only scheme, host and port are ever shown.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(reqwest::Url);

impl SecretUrl {
    /// Accepts absolute `http`/`https` URLs with a host.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "URL scheme must be http or https, not `{}`",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("URL has no host".into());
        }
        Ok(Self(url))
    }

    /// The real URL, for the HTTP client only.
    pub fn expose(&self) -> &reqwest::Url {
        &self.0
    }

    /// `https://hooks.example.com/…`: safe to print.
    pub fn redacted(&self) -> String {
        let host = self.0.host_str().unwrap_or("");
        match self.0.port() {
            Some(port) => format!("{}://{host}:{port}/…", self.0.scheme()),
            None => format!("{}://{host}/…", self.0.scheme()),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A Standard Webhooks signing secret: `whsec_` + base64 of 24–64 random bytes. Holds the
/// decoded key that HMAC uses.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let encoded = raw
            .strip_prefix("whsec_")
            .ok_or("signing secret must start with `whsec_`")?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "signing secret after `whsec_` is not valid base64".to_string())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "signing secret must encode 24 to 64 bytes, this one has {}",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    /// The HMAC key bytes.
    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_[redacted]")
    }
}

/// A bearer token (Slack `xoxb-…`): sent in the `Authorization` header, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(String);

impl BotToken {
    /// Accepts a non-empty token without whitespace or control characters (it goes into a
    /// header as is).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("token is empty".into());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("token contains whitespace or control characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    /// The token, for the HTTP client only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Names the token without showing it (lease and Redis key names, status): the first 16
    /// hex digits of its SHA-256.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted token]")
    }
}

/// A Slack app's signing secret (`[slack] signing_secret`): the HMAC key of the `v0`
/// signatures on Events API requests, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// Accepts a non-empty secret without whitespace (Slack's are 32 hex digits).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("signing secret is empty".into());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("signing secret contains whitespace or control characters".into());
        }
        Ok(Self(raw.as_bytes().to_vec()))
    }

    /// The HMAC key bytes.
    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted signing secret]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_their_token() {
        let url = SecretUrl::parse("https://hooks.slack.com/services/T1/B2/sekrit").unwrap();
        assert_eq!(url.to_string(), "https://hooks.slack.com/…");
        assert_eq!(format!("{url:?}"), "https://hooks.slack.com/…");
        assert!(SecretUrl::parse("ftp://x/y").is_err());
        assert!(SecretUrl::parse("not a url").is_err());
    }

    #[test]
    fn secrets_decode_and_never_print() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(secret.key().len(), 24);
        assert_eq!(format!("{secret:?}"), "whsec_[redacted]");
        assert!(WebhookSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        let token = BotToken::parse("xoxb-1-sekrit").unwrap();
        assert_eq!(format!("{token:?}"), "[redacted token]");
        assert!(BotToken::parse("xoxb 1").is_err());
        let signing = SigningSecret::parse("8f742231b10e8888abcd99yyyzzz85a5").unwrap();
        assert_eq!(format!("{signing:?}"), "[redacted signing secret]");
        assert!(SigningSecret::parse("").is_err());
    }
}
