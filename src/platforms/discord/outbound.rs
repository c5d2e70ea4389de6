//! Discord through a channel webhook (`POST /api/v10/webhooks/{id}/{token}`): each chat user
//! under their own (sanitised) name and picture, mentions never parsed, rate limits followed
//! from the response headers.
//!
//! - Every body carries `"allowed_mentions": {"parse": []}`: `@everyone`, `@here`, `<@123>`
//!   and role mentions in chat text show as text and notify nobody.
//! - Masked links (`[text](https://…)`, `[text](<https://…>)`), which Discord renders in
//!   webhook posts as a link that hides its target, show as typed: every `[` in user text is
//!   escaped ([`escape`]). Bare and `<…>` links show their target and stay as they are.
//! - `X-RateLimit-Remaining` / `-Reset-After` are tracked: when the bucket is empty the next
//!   request waits for its reset (inline up to [`INLINE_WAIT_MAX`], else the worker retries
//!   later), so no request goes into an exhausted bucket. A 429 sets a "not before" from the
//!   body's float `retry_after` (or `Retry-After`); a global one (`"global": true`) holds every
//!   Discord link of the process.
//! - 401, 403 and 429 answers are counted process-wide: at [`InvalidRequests::LIMIT`] in ten
//!   minutes (Discord bans an IP at 10,000), every Discord link pauses until the count drops.
//! - 404 (10015 unknown webhook) and 50027 (invalid token) disable the link: the webhook is
//!   never called again until `chatbridge enable`. 400 (50035 invalid form body, 50006 empty
//!   message) dead-letters the event. 5xx and network errors are retried.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use serde::{Deserialize, Serialize};

use super::config::DiscordLinkConfig;
use crate::bridge::retry::{self, Verdict};
use crate::config::LinkCommon;
use crate::platforms::chatpost::ChatLink;
use crate::platforms::chatpost::names;
use crate::platforms::chatpost::posting::{
    MakesPosts, NotBefore, Progress, Receipts, seconds, waiting,
};
use crate::platforms::chatpost::render::{Naming, Post, Style};
use crate::platforms::chatpost::split::utf16_units;
use crate::platforms::{SendOutcome, error_outcome, excerpt, read_prefix};
use crate::secret::SecretUrl;

/// Discord's content limit, counted in UTF-16 units (never less than Discord's own count).
pub const CONTENT_LIMIT: usize = 2000;
/// `User-Agent: DiscordBot ($url, $versionNumber)`, as Discord asks of API clients.
pub(crate) const DISCORD_USER_AGENT: &str = concat!(
    "DiscordBot (https://github.com/chatbridge/chatbridge, ",
    env!("CARGO_PKG_VERSION"),
    ")"
);
/// The longest wait for an empty bucket done inside a send; longer waits go back to the worker.
const INLINE_WAIT_MAX: Duration = Duration::from_secs(5);

const STYLE: Style = Style {
    limit: CONTENT_LIMIT,
    measure: utf16_units,
    escape,
    bold: "**",
    names_in_text: false,
    name_rules: sanitize_username,
};

/// User text as Discord shows it literally where it matters: each `[` escaped with a
/// backslash (`\[`, which Discord shows as `[`), so no masked link can start; a backslash run
/// typed just before a `[` gets one more backslash so that the `[` stays escaped (`\\[` would
/// show `\` and leave the `[` open). Nothing else changes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut backslashes = 0;
    for c in text.chars() {
        if c == '[' && backslashes % 2 == 0 {
            out.push('\\');
        }
        backslashes = if c == '\\' { backslashes + 1 } else { 0 };
        out.push(c);
    }
    out
}

/// A Discord webhook link: the shared chat-post link with Discord's poster.
pub(crate) type Discord = ChatLink<Poster>;

/// What making one post takes: where, and what the rate limits said.
pub(crate) struct Poster {
    /// The execute-webhook URL (v10); a secret, only ever printed redacted.
    url: SecretUrl,
    /// One request's deadline.
    timeout: Duration,
    /// The shared pooled client.
    client: reqwest::Client,
    /// Set by a 429: no request before it.
    not_before: NotBefore,
    /// The webhook route's rate-limit bucket as the last answer described it.
    bucket: RateBucket,
    /// This process's Discord-wide limits.
    limits: Limits,
}

/// A Discord route's rate-limit bucket as the last answer's `X-RateLimit-*` headers described
/// it (also used by the Gateway's REST catch-up).
#[derive(Debug, Default)]
pub(crate) struct RateBucket(Mutex<Bucket>);

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    /// Requests left in the current window.
    remaining: Option<u64>,
    /// When the window resets.
    reset_at: Option<Instant>,
}

impl RateBucket {
    /// How long until the bucket has room, when it is empty.
    pub(crate) fn wait(&self) -> Option<Duration> {
        let bucket = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        match bucket {
            Bucket {
                remaining: Some(0),
                reset_at: Some(at),
            } => at.checked_duration_since(Instant::now()),
            _ => None,
        }
    }

    /// Takes in an answer's `X-RateLimit-Remaining` and `-Reset-After`.
    pub(crate) fn note(&self, headers: &reqwest::header::HeaderMap) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let remaining = header("x-ratelimit-remaining").and_then(|v| v.trim().parse().ok());
        let reset_after = header("x-ratelimit-reset-after").and_then(seconds);
        if remaining.is_none() && reset_after.is_none() {
            return;
        }
        let mut bucket = self.0.lock().unwrap_or_else(|p| p.into_inner());
        bucket.remaining = remaining;
        bucket.reset_at = reset_after.map(|after| Instant::now() + after);
    }
}

/// How long a 429 asks to wait: the body's float `retry_after` (capped at an hour), else the
/// `Retry-After` header, else a second.
pub(crate) fn retry_after(body: Option<f64>, header: Option<Duration>) -> Duration {
    body.filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| Duration::from_secs_f64(secs.min(3600.0)))
        .or(header)
        .unwrap_or(Duration::from_secs(1))
}

/// The body Discord answers errors and 429s with.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    retry_after: Option<f64>,
    #[serde(default)]
    global: Option<bool>,
}

#[derive(Serialize)]
struct Body<'a> {
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar_url: Option<&'a str>,
    allowed_mentions: AllowedMentions,
}

#[derive(Serialize)]
struct AllowedMentions {
    parse: [&'static str; 0],
}

impl Discord {
    pub fn new(
        name: &str,
        common: &LinkCommon,
        config: &DiscordLinkConfig,
        client: reqwest::Client,
        redis: redis::aio::ConnectionManager,
        limits: &Limits,
    ) -> Self {
        let poster = Poster {
            url: config.url.clone(),
            timeout: common.delivery.timeout,
            client,
            not_before: NotBefore::default(),
            bucket: RateBucket::default(),
            limits: limits.clone(),
        };
        Self {
            name: name.to_owned(),
            batch_max: common.delivery.batch_max.max(1),
            timeout: common.delivery.timeout,
            naming: Naming {
                name: common.name_format.clone(),
                picture: config.avatar_url.clone(),
            },
            style: STYLE,
            progress: Progress::durable(redis, name),
            poster: Arc::new(poster),
            receipts: Receipts::new(common.receipt_interval, STYLE),
        }
    }
}

impl MakesPosts for Poster {
    fn make(&self, post: &Post) -> impl Future<Output = SendOutcome> + Send {
        self.post(post)
    }
}

impl Poster {
    async fn post(&self, post: &Post) -> SendOutcome {
        let global = self.limits.global().remaining();
        if let Some(wait) = self.not_before.remaining().max(global) {
            return waiting(wait, "Discord asked to slow down (429)");
        }
        if let Some(wait) = self.limits.refused().paused() {
            return SendOutcome {
                verdict: Verdict::LinkFailure { after: Some(wait) },
                status: None,
                detail: format!(
                    "paused: {} answers 401/403/429 from Discord in 10 minutes (ban protection)",
                    InvalidRequests::LIMIT
                ),
            };
        }
        if let Some(wait) = self.bucket.wait() {
            if wait > INLINE_WAIT_MAX {
                return waiting(wait, "Discord rate-limit bucket empty");
            }
            tokio::time::sleep(wait).await;
        }
        let body = Body {
            content: &post.text,
            username: post.username.as_deref(),
            avatar_url: post.picture.as_deref(),
            allowed_mentions: AllowedMentions { parse: [] },
        };
        let request = self
            .client
            .post(self.url.expose().clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, DISCORD_USER_AGENT)
            .json(&body);
        match request.send().await {
            Ok(response) => self.answered(response).await,
            Err(err) => error_outcome(err, &self.url),
        }
    }

    async fn answered(&self, mut response: reqwest::Response) -> SendOutcome {
        let status = response.status().as_u16();
        self.bucket.note(response.headers());
        let retry_after_header = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(seconds);
        let raw = read_prefix(&mut response).await;
        let body: ErrorBody = serde_json::from_slice(&raw).unwrap_or_default();
        if matches!(status, 401 | 403 | 429) {
            self.limits.refused().count();
        }
        let verdict = match (status, body.code) {
            (200..=299, _) => Verdict::Delivered,
            (429, _) => {
                let after = retry_after(body.retry_after, retry_after_header);
                self.not_before.wait(after);
                if body.global == Some(true) {
                    self.limits.global().wait(after);
                }
                Verdict::RateLimited { after: Some(after) }
            }
            (404, _) | (_, Some(10015 | 50027)) => Verdict::Disable,
            (401 | 403, _) => Verdict::LinkFailure { after: None },
            (400, _) => Verdict::Reject,
            _ => retry::classify_status(status, None),
        };
        let mut detail = format!("HTTP {status}");
        if let Some(message) = &body.message {
            detail.push_str(&format!(": {message}"));
        }
        if let Some(code) = body.code {
            detail.push_str(&format!(" (code {code})"));
        }
        if body.global == Some(true) {
            detail.push_str(" (global)");
        }
        if body.message.is_none() && verdict != Verdict::Delivered {
            let text = excerpt(&raw, &self.url);
            if !text.is_empty() {
                detail.push_str(&format!(": {text}"));
            }
        }
        SendOutcome {
            verdict,
            status: Some(status),
            detail: excerpt(detail.as_bytes(), &self.url),
        }
    }
}

/// A username Discord accepts: no `@`, `#`, `:`, ```` ``` ````, no "discord" or "clyde" in any
/// case, not "everyone" or "here", no control characters, at most 80 characters (cut at a
/// grapheme boundary). Empty when nothing is left ([`crate::platforms::chatpost::render`] then falls back to
/// `user {user_id}`).
pub fn sanitize_username(name: &str) -> String {
    let mut clean: String = name
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '@' | '#' | ':' | '`'))
        .collect();
    loop {
        let lower = clean.to_lowercase();
        let found = ["discord", "clyde"]
            .iter()
            .find_map(|word| lower.find(word).map(|at| (at, word.len())));
        match found {
            // Lower-casing kept byte offsets only if it kept every char's length.
            Some((at, len)) if lower.len() == clean.len() && clean.is_char_boundary(at) => {
                clean.replace_range(at..at + len, "");
            }
            Some(_) => {
                clean = lower.replace("discord", "").replace("clyde", "");
            }
            None => break,
        }
    }
    let clean = names::cut(clean.trim());
    let reserved = ["everyone", "here"].contains(&clean.to_lowercase().as_str());
    if reserved { String::new() } else { clean }
}

/// 401, 403 and 429 answers from Discord in the last ten minutes, across all Discord links of
/// this process (Discord's ban counts per IP).
pub struct InvalidRequests {
    at: Mutex<VecDeque<Instant>>,
    limit: usize,
}

impl InvalidRequests {
    /// The count at which Discord links pause: a tenth of Discord's ban threshold.
    pub const LIMIT: usize = 1000;
    const WINDOW: Duration = Duration::from_secs(600);

    pub fn new(limit: usize) -> Self {
        Self {
            at: Mutex::default(),
            limit,
        }
    }

    pub fn count(&self) {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        at.push_back(Instant::now());
        while at.len() > self.limit {
            at.pop_front();
        }
    }

    /// How long until the count is below the limit again, while it is not.
    pub fn paused(&self) -> Option<Duration> {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        while at.front().is_some_and(|t| t.elapsed() >= Self::WINDOW) {
            at.pop_front();
        }
        if at.len() < self.limit {
            return None;
        }
        at.front()
            .map(|oldest| Self::WINDOW.saturating_sub(oldest.elapsed()))
    }
}

/// Discord's limits on this whole process, created once per daemon ([`super::super::Platforms`])
/// and shared by every Discord link and the Gateway's REST catch-up: the "not before" a 429 whose
/// body says `"global": true` sets, and the count of refused (401, 403, 429) requests.
#[derive(Clone)]
pub struct Limits(Arc<(NotBefore, InvalidRequests)>);

impl Default for Limits {
    fn default() -> Self {
        Self(Arc::new((
            NotBefore::default(),
            InvalidRequests::new(InvalidRequests::LIMIT),
        )))
    }
}

impl Limits {
    /// Set by a global 429: no Discord call of this process before it.
    fn global(&self) -> &NotBefore {
        &self.0.0
    }

    /// This process's refused requests.
    fn refused(&self) -> &InvalidRequests {
        &self.0.1
    }

    /// For other callers of Discord's API (the Gateway's REST backfill): how long to wait
    /// before the next call, after a global 429 or while this process's refusals are at the
    /// limit.
    pub(crate) fn pause(&self) -> Option<Duration> {
        let global = self.global().remaining();
        let refused = self.refused().paused();
        global.max(refused)
    }

    /// For other callers of Discord's API: a 401, 403 or 429 answer (counted towards the
    /// pause), and, for a global 429, how long every caller must wait.
    pub(crate) fn note_refusal(&self, global_wait: Option<Duration>) {
        self.refused().count();
        if let Some(wait) = global_wait {
            self.global().wait(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_discord_rules() {
        assert_eq!(sanitize_username("alice"), "alice");
        assert_eq!(sanitize_username("@everyone"), "");
        assert_eq!(sanitize_username("HERE"), "");
        assert_eq!(sanitize_username("bob#1234: ```x```"), "bob1234 x");
        assert_eq!(sanitize_username("DiscordFan"), "Fan");
        assert_eq!(sanitize_username("disdiscordcord"), "");
        assert_eq!(sanitize_username("ClYdE bot"), "bot");
        assert_eq!(sanitize_username("a\u{1b}[31m"), "a[31m");
        assert_eq!(sanitize_username("   "), "");
        let long = "👨‍👩‍👧‍👦".repeat(20);
        let cut = sanitize_username(&long);
        assert!(utf16_units(&cut) <= names::NAME_MAX);
        assert_eq!(cut, "👨‍👩‍👧‍👦".repeat(7), "cut between whole clusters");
    }

    #[test]
    fn invalid_answers_pause_at_the_limit_and_resume() {
        let guard = InvalidRequests::new(3);
        guard.count();
        guard.count();
        assert_eq!(guard.paused(), None);
        guard.count();
        let wait = guard.paused().expect("paused at the limit");
        assert!(wait > Duration::from_secs(590));
    }

    #[test]
    fn the_user_agent_is_discords_form() {
        assert!(DISCORD_USER_AGENT.starts_with("DiscordBot (https://"));
        assert!(DISCORD_USER_AGENT.ends_with(&format!(", {})", env!("CARGO_PKG_VERSION"))));
    }

    /// What Discord shows of `sent`: its escape rule makes `\\x` show `x` for punctuation.
    fn shown(sent: &str) -> String {
        let mut out = String::new();
        let mut chars = sent.chars().peekable();
        while let Some(c) = chars.next() {
            match chars.peek() {
                Some(&next) if c == '\\' && next.is_ascii_punctuation() => {
                    out.push(next);
                    chars.next();
                }
                _ => out.push(c),
            }
        }
        out
    }

    #[test]
    fn masked_links_are_escaped_so_they_show_as_typed() {
        for typed in [
            "[bank](https://evil.example)",
            "[bank](<https://evil.example>)",
            "x [[a](https://e.example)] y",
            "\\[pre-escaped](https://e.example)",
            "\\\\[two backslashes](https://e.example)",
            "see <https://shown.example> and https://bare.example",
        ] {
            let sent = escape(typed);
            let open = sent
                .char_indices()
                .filter(|&(_, c)| c == '[')
                .all(|(at, _)| {
                    sent[..at].chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
                });
            assert!(open, "an unescaped [ in {sent:?}");
            if typed.contains("<https://shown") {
                assert_eq!(sent, typed, "other links stay as they are");
            }
            if !typed.contains('\\') {
                assert_eq!(shown(&sent), typed, "shown as typed: {sent:?}");
            }
        }
    }
}
