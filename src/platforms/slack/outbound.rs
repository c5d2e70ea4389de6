//! Slack: `chat.postMessage` with a bot token (each chat user under their own name and picture,
//! every post's `ts` recorded), or an incoming webhook (the name goes into the text).
//!
//! - Text is escaped (`&`, `<`, `>`), so `<!channel>`, `<!here>`, `<@U…>`, `<#C…>` and fake
//!   `<url|label>` links show as typed; `link_names` and `parse` are never sent; unfurling is
//!   off unless the link sets `unfurl = true`.
//! - At most one post per [`PACE`] (1.1 s) per channel with a burst of [`BURST`] (2), a token
//!   bucket shared by the links of the process that post to the channel. Slack allows about
//!   one per second with short bursts; pacing at exactly that (1/s, burst 3) let the uneven
//!   delay of the path to Slack squeeze two posts into less than a second and drew a 429 about
//!   once per thousand-message burst, so the pace keeps a margin on both. When a backlog
//!   builds, the worker hands over up to `batch_max` queued events and [`crate::platforms::chatpost::render`] merges
//!   them into few posts of at most [`TEXT_LIMIT`], so a burst drains in seconds.
//! - A 429 sets a "not before" from `Retry-After`: no request before it has passed.
//! - HTTP 200 with `"ok": false` is a failure, classified by its `error` ([`classify_error`]).

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use redis::aio::ConnectionManager;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};

use super::config::{SlackLinkConfig, SlackMode};
use crate::bridge::retry::{self, Verdict};
use crate::config::LinkCommon;
use crate::platforms::chatpost::ChatLink;
use crate::platforms::chatpost::posting::{
    MakesPosts, NotBefore, Progress, Receipts, seconds, waiting,
};
use crate::platforms::chatpost::render::{Naming, Post, Style};
use crate::platforms::chatpost::split::utf16_units;
use crate::platforms::{SendOutcome, error_outcome, excerpt, read_prefix};
use crate::secret::{BotToken, SecretUrl};

/// The most a post's text may measure (Slack truncates at 40,000 and recommends 4,000).
pub const TEXT_LIMIT: usize = 4000;
/// Posts allowed at once after a quiet spell; then one per [`PACE`].
pub const BURST: u32 = 2;
/// The time between posts to one channel once the burst is spent: Slack's one second, plus
/// a tenth of margin for the path's jitter.
pub const PACE: Duration = Duration::from_millis(1100);
/// How many posts' `ts` are kept per link.
const TS_KEEP: usize = 10_000;
/// Used when a 429 carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `&`, `<`, `>` as Slack's entities: the only escaping Slack text needs, and all of it.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// What a Slack `ok: false` error means for the event and the link.
pub fn classify_error(error: &str) -> Verdict {
    match error {
        // The event itself: dead-letter it, keep going.
        "msg_too_long"
        | "no_text"
        | "invalid_blocks"
        | "invalid_blocks_format"
        | "too_many_attachments"
        | "invalid_attachments"
        | "invalid_payload"
        | "invalid_arguments"
        | "invalid_arg_name"
        | "invalid_array_arg"
        | "invalid_json"
        | "json_not_object"
        | "user_not_found" => Verdict::Reject,
        "ratelimited" | "rate_limited" | "message_limit_exceeded" => Verdict::RateLimited {
            after: Some(DEFAULT_RETRY_AFTER),
        },
        "internal_error"
        | "fatal_error"
        | "service_unavailable"
        | "request_timeout"
        | "rollup_error" => Verdict::EventFailure { after: None },
        // Gone for good: disabled until an operator re-enables the link.
        "token_revoked"
        | "account_inactive"
        | "is_archived"
        | "channel_is_archived"
        | "no_service"
        | "action_prohibited"
        | "team_access_not_granted" => Verdict::Disable,
        // Fixable outside chatbridge (invite the bot, grant a scope, fix the token): the link
        // pauses and retries with backoff, shown FAILING, messages kept. Unknown errors too.
        _ => Verdict::LinkFailure { after: None },
    }
}

/// A Slack link: the shared chat-post link with Slack's poster.
pub(crate) type Slack = ChatLink<Poster>;

/// What making one post takes: where, how, and the link's pacing.
pub(crate) struct Poster {
    /// Where and how to post.
    mode: Mode,
    /// `unfurl_links` / `unfurl_media`.
    unfurl: bool,
    /// One request's deadline.
    timeout: Duration,
    /// The shared pooled client.
    client: reqwest::Client,
    /// Set by a 429: no request before it.
    not_before: NotBefore,
    /// One post per [`PACE`], a burst of [`BURST`]: shared by every link of this process
    /// posting to the same channel (Slack's limit is per channel).
    pace: Arc<DefaultDirectRateLimiter>,
    /// Where each post's `ts` is recorded (Web API mode).
    ts: Option<TsMap>,
}

enum Mode {
    Api {
        token: BotToken,
        channel: String,
        /// `{api_url}/chat.postMessage`.
        endpoint: SecretUrl,
    },
    Webhook {
        url: SecretUrl,
    },
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon_url: Option<&'a str>,
    unfurl_links: bool,
    unfurl_media: bool,
}

#[derive(Deserialize, Default)]
struct ApiAnswer {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

impl Slack {
    pub fn new(
        name: &str,
        common: &LinkCommon,
        config: &SlackLinkConfig,
        client: reqwest::Client,
        redis: ConnectionManager,
        paces: &Paces,
    ) -> Self {
        let (mode, picture, ts) = match &config.mode {
            SlackMode::Api {
                token,
                channel,
                api_url,
                icon_url,
            } => {
                let endpoint = format!("{}/chat.postMessage", api_url.expose());
                let endpoint = SecretUrl::parse(&endpoint).unwrap_or_else(|_| api_url.clone());
                let mode = Mode::Api {
                    token: token.clone(),
                    channel: channel.clone(),
                    endpoint,
                };
                (
                    mode,
                    icon_url.clone(),
                    Some(TsMap::new(name, redis.clone())),
                )
            }
            SlackMode::Webhook { url } => (Mode::Webhook { url: url.clone() }, None, None),
        };
        let style = Style {
            limit: TEXT_LIMIT,
            measure: utf16_units,
            escape,
            bold: "*",
            names_in_text: matches!(mode, Mode::Webhook { .. }),
            name_rules: <str as ToOwned>::to_owned,
        };
        let channel_key = match &mode {
            Mode::Api {
                channel, endpoint, ..
            } => format!("{channel} {}", endpoint.expose()),
            Mode::Webhook { url } => url.expose().to_string(),
        };
        let poster = Poster {
            mode,
            unfurl: config.unfurl,
            timeout: common.delivery.timeout,
            client,
            not_before: NotBefore::default(),
            pace: paces.channel(&channel_key),
            ts,
        };
        Self {
            name: name.to_owned(),
            batch_max: common.delivery.batch_max.max(1),
            timeout: common.delivery.timeout,
            naming: Naming {
                name: common.name_format.clone(),
                picture,
            },
            style,
            progress: Progress::durable(redis, name),
            poster: Arc::new(poster),
            receipts: Receipts::new(common.receipt_interval, style),
        }
    }
}

impl MakesPosts for Poster {
    fn make(&self, post: &Post) -> impl Future<Output = SendOutcome> + Send {
        self.post(post)
    }
}

impl Poster {
    /// Removes the bot token from text a server sent back (never shown, even if echoed).
    fn scrub(&self, text: String) -> String {
        match &self.mode {
            Mode::Api { token, .. } => text.replace(token.expose(), "…"),
            Mode::Webhook { .. } => text,
        }
    }

    fn url(&self) -> &SecretUrl {
        match &self.mode {
            Mode::Api { endpoint, .. } => endpoint,
            Mode::Webhook { url } => url,
        }
    }

    async fn post(&self, post: &Post) -> SendOutcome {
        if let Some(wait) = self.not_before.remaining() {
            return waiting(wait, "Slack asked to slow down (429)");
        }
        self.pace.until_ready().await;
        let (channel, username, icon_url) = match &self.mode {
            Mode::Api { channel, .. } => (
                Some(channel.as_str()),
                post.username.as_deref(),
                post.picture.as_deref(),
            ),
            Mode::Webhook { .. } => (None, None, None),
        };
        let body = Body {
            channel,
            text: &post.text,
            username,
            icon_url,
            unfurl_links: self.unfurl,
            unfurl_media: self.unfurl,
        };
        let mut request = self
            .client
            .post(self.url().expose().clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .json(&body);
        if let Mode::Api { token, .. } = &self.mode {
            request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        match request.send().await {
            Ok(response) => self.answered(response, post).await,
            Err(err) => error_outcome(err, self.url()),
        }
    }

    async fn answered(&self, mut response: reqwest::Response, post: &Post) -> SendOutcome {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(seconds);
        let raw = read_prefix(&mut response).await;
        let text = self.scrub(excerpt(&raw, self.url()));
        let outcome = |verdict, detail: String| SendOutcome {
            verdict,
            status: Some(status),
            detail,
        };
        if status == 429 {
            let after = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            self.not_before.wait(after);
            let verdict = Verdict::RateLimited { after: Some(after) };
            return outcome(verdict, format!("HTTP 429: {text}"));
        }
        let detail = if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {text}")
        };
        if !(200..=299).contains(&status) {
            let verdict = match (&self.mode, status) {
                (Mode::Webhook { .. }, 400) => Verdict::Reject,
                (Mode::Webhook { .. }, 403 | 404 | 410) => Verdict::Disable,
                _ => retry::classify_status(status, None),
            };
            return outcome(verdict, detail);
        }
        if let Mode::Webhook { .. } = self.mode {
            return outcome(Verdict::Delivered, detail);
        }
        let answer: ApiAnswer = serde_json::from_slice(&raw).unwrap_or_default();
        if !answer.ok {
            let error = answer
                .error
                .unwrap_or_else(|| "no ok:true in the answer".into());
            let verdict = classify_error(&error);
            if let Verdict::RateLimited { after: Some(after) } = verdict {
                self.not_before.wait(retry_after.unwrap_or(after));
            }
            let detail = excerpt(
                format!("HTTP {status}, ok: false: {error}").as_bytes(),
                self.url(),
            );
            return outcome(verdict, detail);
        }
        if let (Some(map), Some(ts)) = (&self.ts, &answer.ts)
            && post.part.is_none_or(|(index, _)| index == 0)
        {
            map.record(&post.keys, ts).await;
        }
        outcome(Verdict::Delivered, format!("HTTP {status}: ok"))
    }
}

/// The token buckets of Slack channels (a Web API channel at an API base, or an incoming
/// webhook, which is bound to one channel), one per channel: created once per daemon
/// ([`super::super::Platforms`]) and shared by the links of this process that post there.
#[derive(Clone, Default)]
pub struct Paces(Arc<Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>>);

impl Paces {
    /// The bucket of `channel`, made on first use.
    fn channel(&self, channel: &str) -> Arc<DefaultDirectRateLimiter> {
        let mut paces = self.0.lock().unwrap_or_else(|p| p.into_inner());
        paces
            .entry(channel.to_owned())
            .or_insert_with(|| {
                let burst = NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(PACE).map_or_else(
                    || Quota::per_second(NonZeroU32::MIN),
                    |quota| quota.allow_burst(burst),
                );
                Arc::new(RateLimiter::direct(quota))
            })
            .clone()
    }
}

/// Event key → the `ts` of the post that carries it (the first part of a split message), so
/// later work can thread, edit and delete. Bounded: the newest [`TS_KEEP`] per link.
struct TsMap {
    /// `chatbridge:slack_ts:{link}`: HASH event key → ts.
    map: String,
    /// `chatbridge:slack_ts:{link}:order`: ZSET event key by time recorded, for trimming.
    order: String,
    con: ConnectionManager,
}

/// Records keys → ts and trims the map to the newest entries.
const RECORD_TS: &str = include_str!("../../redis/scripts/slack_ts_record.lua");

impl TsMap {
    fn new(link: &str, con: ConnectionManager) -> Self {
        Self {
            map: crate::redis::keys::slack_ts(link),
            order: crate::redis::keys::slack_ts_order(link),
            con,
        }
    }

    /// Records where `keys` were posted; a failure is logged, never fails the delivery.
    async fn record(&self, keys: &[String], ts: &str) {
        if keys.is_empty() {
            return;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let script = redis::Script::new(RECORD_TS);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.map)
            .key(&self.order)
            .arg(TS_KEEP)
            .arg(now)
            .arg(ts);
        for key in keys {
            invocation.arg(key);
        }
        let mut con = self.con.clone();
        let done: redis::RedisResult<i64> = invocation.invoke_async(&mut con).await;
        if let Err(e) = done {
            tracing::warn!(map = self.map, error = %e, "could not record Slack message ts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_exactly_the_three_characters() {
        assert_eq!(
            escape("<!channel> <!here> <@U123> <#C1> <https://evil|bank> a&b \"q\" 'x' *b*"),
            "&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt; &lt;#C1&gt; \
             &lt;https://evil|bank&gt; a&amp;b \"q\" 'x' *b*"
        );
    }

    #[test]
    fn ok_false_errors_are_classified() {
        assert_eq!(classify_error("msg_too_long"), Verdict::Reject);
        assert_eq!(classify_error("no_text"), Verdict::Reject);
        assert_eq!(classify_error("token_revoked"), Verdict::Disable);
        assert_eq!(classify_error("channel_is_archived"), Verdict::Disable);
        assert_eq!(classify_error("is_archived"), Verdict::Disable);
        assert_eq!(classify_error("no_service"), Verdict::Disable);
        for pause in [
            "channel_not_found",
            "not_in_channel",
            "invalid_auth",
            "missing_scope",
            "???",
        ] {
            assert_eq!(
                classify_error(pause),
                Verdict::LinkFailure { after: None },
                "{pause}"
            );
        }
        assert!(matches!(
            classify_error("ratelimited"),
            Verdict::RateLimited { .. }
        ));
        assert!(matches!(
            classify_error("internal_error"),
            Verdict::EventFailure { .. }
        ));
    }

    #[test]
    fn the_pace_allows_a_burst_of_2_then_one_post_per_1_1_s() {
        let pace = Paces::default().channel("C-pace-test https://slack.example/api");
        assert!(pace.check().is_ok() && pace.check().is_ok(), "a burst of 2");
        let Err(not_until) = pace.check() else {
            panic!("a third post at once");
        };
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        assert!(
            wait > Duration::from_millis(1050) && wait <= PACE,
            "the next post waits {wait:?}"
        );
    }
}
