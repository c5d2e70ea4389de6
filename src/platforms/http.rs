//! What every HTTP-calling link shares: the one pooled client, and turning a response (or a
//! failed request) into a [`SendOutcome`]: its status, `Retry-After` and body facts go to
//! [`crate::bridge::retry`], which decides; the body excerpt is scrubbed of anything from the URL.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;

use super::sink::SendOutcome;
use crate::bridge::retry;
use crate::printable::escape_controls;
use crate::secret::SecretUrl;

/// How much of a response body is read: enough for an error excerpt, bounded against huge replies.
const BODY_READ_LIMIT: usize = 16 * 1024;
/// How many characters of a response body an outcome's `detail` quotes.
const EXCERPT_CHARS: usize = 200;

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
    let excerpt = excerpt(&body, url);
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

/// The start of a response body (or a detail built from one) fit for logs: anything from the
/// URL scrubbed out, control characters escaped, at most [`EXCERPT_CHARS`].
pub(crate) fn excerpt(body: &[u8], url: &SecretUrl) -> String {
    let text = String::from_utf8_lossy(body);
    escape_controls(scrub_url(text.trim(), url).trim(), EXCERPT_CHARS)
}

/// Reads the body up to [`BODY_READ_LIMIT`] (so a small reply frees the connection for reuse);
/// a body that breaks off midway yields what arrived.
pub(crate) async fn read_prefix(response: &mut reqwest::Response) -> Vec<u8> {
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

/// Replaces every secret-bearing part of `url` found in `text` with `…`: the whole URL, its
/// path and query, each path segment (a server may echo the request path, as in
/// `Cannot POST /hooks/<token>`), each query value as sent and decoded (`?key=<secret>`), and
/// any user name or password. Parts shorter than 6 characters (`v1`, `api`) are left alone:
/// scrubbing them would mangle the excerpt and they carry no secret worth the name.
fn scrub_url(text: &str, url: &SecretUrl) -> String {
    let mut secrets = secret_parts(url.expose());
    secrets.retain(|s| s.chars().count() >= 6);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "…")
    })
}

/// Every part of `url` that may be a secret, longest forms first where they overlap.
fn secret_parts(url: &reqwest::Url) -> Vec<String> {
    let mut parts = vec![url.as_str().to_owned(), url.path().to_owned()];
    if let Some(query) = url.query() {
        parts.push(format!("{}?{query}", url.path()));
        parts.push(query.to_owned());
        for pair in query.split('&') {
            parts.push(pair.to_owned());
            parts.extend(pair.split_once('=').map(|(_, value)| value.to_owned()));
        }
        parts.extend(url.query_pairs().map(|(_, value)| value.into_owned()));
    }
    parts.extend(url.path().split('/').map(str::to_owned));
    parts.extend(url.password().map(str::to_owned));
    parts.push(url.username().to_owned());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn scrubs_query_secrets_as_sent_and_decoded() {
        let url =
            SecretUrl::parse("https://hooks.example/x?key=QSECRET-123&sig=abc%2Bdef%3D%3D&v=1")
                .unwrap();
        let echoed = "bad key QSECRET-123 (sig abc+def== / abc%2Bdef%3D%3D) for \
                      https://hooks.example/x?key=QSECRET-123&sig=abc%2Bdef%3D%3D&v=1 \
                      or /x?key=QSECRET-123&sig=abc%2Bdef%3D%3D&v=1";
        let scrubbed = scrub_url(echoed, &url);
        for secret in ["QSECRET", "abc+def", "abc%2B"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert_eq!(scrubbed, "bad key … (sig … / …) for … or …");
    }

    #[test]
    fn the_shared_client_builds() {
        let _client = http_client();
    }
}
