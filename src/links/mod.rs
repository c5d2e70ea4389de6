//! The outbound link kinds behind one [`Target`]: each takes a batch of outbox entries, sends it,
//! and reports a [`SendOutcome`] whose [`Verdict`] comes from [`crate::retry`].
//!
//! One variant and one file per kind: [`console`] (stdout, for operators and demos) and
//! [`webhook`] (generic Standard Webhooks). [`signing`] holds the request signatures.

pub mod console;
pub mod signing;
pub mod webhook;

use std::time::Duration;

use reqwest::header::RETRY_AFTER;

pub use console::Console;
pub use webhook::Webhook;

use crate::config::LinkConfig;
use crate::model::Outbound;
use crate::retry::{self, Verdict};
use crate::secret::SecretUrl;

/// How much of a response body is read: enough for an error excerpt, bounded against huge replies.
const BODY_READ_LIMIT: usize = 16 * 1024;
/// How many characters of a response body an outcome's `detail` quotes.
const EXCERPT_CHARS: usize = 200;

/// One configured outbound link.
pub enum Target {
    Console(Console),
    Webhook(Webhook),
}

impl Target {
    /// Builds the link a `[links.<name>]` section describes, sharing the pooled HTTP client.
    pub fn from_config(name: &str, config: &LinkConfig, client: reqwest::Client) -> Self {
        match config {
            LinkConfig::Console(_) => Self::Console(Console::new(name)),
            LinkConfig::Webhook(hook) => Self::Webhook(Webhook::new(
                name,
                hook.url.clone(),
                hook.secret.clone(),
                hook.timeout,
                hook.batch_max,
                hook.max_in_flight,
                client,
            )),
        }
    }

    /// The link's configured name: the outbox key, the `origin` of events it relays back.
    pub fn name(&self) -> &str {
        match self {
            Self::Console(link) => link.name(),
            Self::Webhook(link) => link.name(),
        }
    }

    /// The most outbox entries one `send` may carry.
    pub fn batch_max(&self) -> usize {
        match self {
            Self::Console(_) => console::BATCH_MAX,
            Self::Webhook(link) => link.batch_max(),
        }
    }

    /// How many sends may be outstanding at once (1 keeps delivery in order).
    pub fn max_in_flight(&self) -> usize {
        match self {
            Self::Console(_) => 1,
            Self::Webhook(link) => link.max_in_flight(),
        }
    }

    /// Sends one batch (at most [`Self::batch_max`] entries, in outbox order) once.
    pub async fn send(&self, batch: &[Outbound]) -> SendOutcome {
        match self {
            Self::Console(link) => link.send(batch).await,
            Self::Webhook(link) => link.send(batch).await,
        }
    }
}

/// What one send attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// What the delivery worker does next: acknowledge, retry, dead-letter or disable.
    pub verdict: Verdict,
    /// The HTTP status, when a response arrived at all (metrics, logs).
    pub status: Option<u16>,
    /// A short description for logs and alerts, e.g. `HTTP 400: invalid_payload` or
    /// `connect error: Connection refused (os error 111)`. Never holds the URL or a secret.
    pub detail: String,
}

/// The one HTTP client all links share: pooled keep-alive connections, redirects never followed
/// (Standard Webhooks: a 3xx is a failure), no proxy picked up from the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("chatbridge/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        // Fails only when the TLS backend cannot initialise, as `reqwest::Client::new` would.
        .expect("the HTTP client (TLS backend) failed to initialise")
}

/// Turns an HTTP response into an outcome: classify the status (honouring `Retry-After`) and
/// quote the start of the body, with anything from the URL scrubbed out.
pub(crate) async fn response_outcome(
    mut response: reqwest::Response,
    url: &SecretUrl,
) -> SendOutcome {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok());
    let verdict = retry::classify_status(status, retry_after);
    let body = read_prefix(&mut response).await;
    let text = String::from_utf8_lossy(&body);
    let excerpt = escape_controls(scrub_url(text.trim(), url).trim(), EXCERPT_CHARS);
    let detail = if excerpt.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {excerpt}")
    };
    SendOutcome {
        verdict,
        status: Some(status),
        detail,
    }
}

/// Turns a failed request (no response) into an outcome whose detail names the failure and its
/// root cause, never the URL.
pub(crate) fn error_outcome(err: reqwest::Error, url: &SecretUrl) -> SendOutcome {
    let verdict = retry::classify_error(&err);
    let err = err.without_url();
    let what = if err.is_connect() && err.is_timeout() {
        "connect timeout"
    } else if err.is_connect() {
        "connect error"
    } else if err.is_timeout() {
        "timeout"
    } else if err.is_builder() {
        "invalid request"
    } else if err.is_body() {
        "body error"
    } else {
        "transport error"
    };
    let mut cause: &dyn std::error::Error = &err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let detail = format!("{what}: {}", scrub_url(&cause.to_string(), url));
    SendOutcome {
        verdict,
        status: None,
        detail: escape_controls(&detail, EXCERPT_CHARS),
    }
}

/// Reads the body up to [`BODY_READ_LIMIT`] (so a small reply frees the connection for reuse);
/// a body that breaks off midway yields what arrived.
async fn read_prefix(response: &mut reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < BODY_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(BODY_READ_LIMIT);
    body
}

/// Replaces every secret-bearing part of `url` found in `text` (a server may echo the request
/// path, as in `Cannot POST /hooks/<token>`) with `…`.
fn scrub_url(text: &str, url: &SecretUrl) -> String {
    let url = url.expose();
    let path_and_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let mut secrets = vec![
        url.as_str().to_owned(),
        path_and_query,
        url.path().to_owned(),
    ];
    secrets.extend(url.query().map(str::to_owned));
    secrets.extend(url.path().split('/').map(str::to_owned));
    secrets.retain(|s| s.len() >= 6);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "…")
    })
}

/// Makes untrusted text safe to print on a terminal or in a log line: control characters and
/// bidirectional overrides become visible escapes (`\n`, `\u{1b}`), and the text is cut to
/// `max_chars` characters (marked with `…`).
pub(crate) fn escape_controls(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    for (count, c) in text.chars().enumerate() {
        if count == max_chars {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_and_truncates() {
        assert_eq!(
            escape_controls("a\x1b[2Jb\nc\u{202e}d", 100),
            "a\\u{1b}[2Jb\\nc\\u{202e}d"
        );
        assert_eq!(escape_controls("héllo", 3), "hél…");
        assert_eq!(escape_controls("abc", 3), "abc");
    }

    #[test]
    fn scrubs_the_url_token_from_echoed_text() {
        let url =
            SecretUrl::parse("https://hooks.example.com/hooks/T123/sekrit-token?k=v").unwrap();
        let echoed = "Cannot POST /hooks/T123/sekrit-token?k=v; token sekrit-token; full \
                      https://hooks.example.com/hooks/T123/sekrit-token?k=v";
        let scrubbed = scrub_url(echoed, &url);
        assert!(!scrubbed.contains("sekrit"), "{scrubbed}");
        assert_eq!(scrubbed, "Cannot POST …; token …; full …");
    }

    #[test]
    fn the_shared_client_builds() {
        let _client = http_client();
    }
}
