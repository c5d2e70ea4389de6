//! The catch-up over REST after every READY: each mapped channel's messages since the last one
//! seen (`GET /channels/{id}/messages?after=`), oldest first, within Discord's rate limits.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;

use crate::bridge::retry::Backoff;
use crate::inbound::Inbound;
use crate::platforms::NotBefore;
use crate::platforms::discord::{DISCORD_USER_AGENT, RateBucket, retry_after};

use super::events::DiscordMessage;
use super::{Gateway, last_key};

/// Messages per backfill request: Discord's maximum.
const PAGE: usize = 100;
/// How long one REST request may take.
const REST_TIMEOUT: Duration = Duration::from_secs(15);
/// Discord's epoch (2015-01-01) in Unix milliseconds: snowflakes count from it.
const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;

impl Gateway {
    /// After a READY: each channel's messages since the last one seen, oldest first. A channel
    /// never seen starts from now.
    pub(super) async fn backfill(&self, inbound: &Inbound, me: Option<&str>) {
        let channels: Vec<String> = self.channels(inbound).map(|(c, _)| c.clone()).collect();
        let rest = Rest::default();
        for channel in channels {
            let key = last_key(&channel);
            let last: Option<String> = self
                .retrying("read the last seen message", |mut con| {
                    let key = key.clone();
                    async move { con.get::<_, Option<String>>(key).await }
                })
                .await
                .or_else(|| {
                    let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.get(&channel).cloned()
                });
            let Some(mut after) = last else {
                let now = snowflake_now();
                self.retrying("record where the channel starts", |mut con| {
                    let (key, now) = (key.clone(), now.clone());
                    async move { con.set_nx::<_, _, ()>(key, now).await }
                })
                .await;
                continue;
            };
            let mut fetched = 0usize;
            loop {
                let mut page = match self.fetch(&rest, &channel, &after).await {
                    Ok(page) => page,
                    Err(why) => {
                        tracing::error!(
                            channel = %channel,
                            error = %why,
                            "Discord Gateway: cannot fetch the messages sent while no session was \
                             open; they are not mirrored (does the bot have Read Message History?)"
                        );
                        break;
                    }
                };
                page.sort_by(|a, b| (a.id.len(), &a.id).cmp(&(b.id.len(), &b.id)));
                let full = page.len() >= PAGE;
                for message in &page {
                    self.message(inbound, me, message).await;
                    after.clone_from(&message.id);
                }
                fetched += page.len();
                if !full {
                    break;
                }
            }
            if fetched > 0 {
                tracing::info!(channel = %channel, fetched, "Discord Gateway: caught up on missed messages");
            }
        }
    }

    /// One page of `GET /channels/{id}/messages?after=`: rate limits waited out, 5xx and
    /// network errors retried; `Err` only for answers that will not change (401, 403, 404).
    pub(super) async fn fetch(
        &self,
        rest: &Rest,
        channel: &str,
        after: &str,
    ) -> Result<Vec<DiscordMessage>, String> {
        let url = format!(
            "{}/v10/channels/{channel}/messages?after={after}&limit={PAGE}",
            self.settings
                .api_base
                .expose()
                .as_str()
                .trim_end_matches('/')
        );
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            if let Some(wait) = rest.wait().max(self.limits.pause()) {
                tokio::time::sleep(wait).await;
            }
            let sent = self
                .http
                .get(&url)
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("Bot {}", self.settings.bot_token.expose()),
                )
                .header(reqwest::header::USER_AGENT, DISCORD_USER_AGENT)
                .timeout(REST_TIMEOUT)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    let wait = backoff.next(None);
                    tracing::warn!(error = %e.without_url(), retry_in_ms = wait.as_millis() as u64,
                        "Discord Gateway: message history request failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            rest.bucket.note(response.headers());
            let header_wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::platforms::seconds);
            let body = response.bytes().await.unwrap_or_default();
            match status {
                200 => {
                    return serde_json::from_slice(&body)
                        .map_err(|e| format!("the answer is not a list of messages: {e}"));
                }
                429 => {
                    let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let wait = retry_after(answer["retry_after"].as_f64(), header_wait);
                    let global = answer["global"] == true;
                    self.limits.note_refusal(global.then_some(wait));
                    rest.not_before.wait(wait);
                    tracing::info!(
                        wait_ms = wait.as_millis() as u64,
                        global,
                        "Discord Gateway: rate limited; waiting"
                    );
                }
                401 | 403 | 404 => {
                    if status != 404 {
                        self.limits.note_refusal(None);
                    }
                    let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
                    return Err(format!(
                        "HTTP {status}: {}",
                        answer["message"].as_str().unwrap_or("refused")
                    ));
                }
                _ => {
                    let wait = backoff.next(None);
                    tracing::warn!(
                        status,
                        retry_in_ms = wait.as_millis() as u64,
                        "Discord Gateway: message history request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The REST route's limits: its bucket, and the "not before" its 429s set.
#[derive(Default)]
pub(super) struct Rest {
    bucket: RateBucket,
    not_before: NotBefore,
}

impl Rest {
    /// How long until the next request may go.
    pub(super) fn wait(&self) -> Option<Duration> {
        self.bucket.wait().max(self.not_before.remaining())
    }
}

/// A snowflake for this moment: messages sent from now on have larger ids.
pub(super) fn snowflake_now() -> String {
    let ms = chrono::Utc::now().timestamp_millis() - DISCORD_EPOCH_MS;
    (u64::try_from(ms).unwrap_or(0) << 22).to_string()
}
