//! Display names of Slack users for inbound events: `users.info` with the Slack link's bot
//! token (scope `users:read`), under a short deadline so the Events API ack is never held,
//! then cached. A name not found in time is the user id, and looked up again next time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::secret::{BotToken, SecretUrl};

/// How long one look-up may hold a request (Slack wants its ack within 3 s).
const DEADLINE: Duration = Duration::from_millis(500);
/// Names kept; beyond it the cache starts over (a workspace rarely has this many speakers).
const CAPACITY: usize = 10_000;

/// Where and how one Slack link looks users up.
#[derive(Clone)]
pub(crate) struct Directory {
    /// The Slack link's bot token (`xoxb-…`, needs `users:read`).
    pub token: BotToken,
    /// The Slack link's Web API base (`api_url`).
    pub api_url: SecretUrl,
}

/// The name cache, shared by every request.
pub(crate) struct Names {
    /// Pooled connections to Slack.
    http: reqwest::Client,
    /// User id → name.
    cache: Mutex<HashMap<String, String>>,
}

impl Names {
    pub fn new() -> Self {
        Self {
            http: crate::platforms::http::http_client(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The user's display name (else real name, else handle), or the id itself when Slack
    /// does not answer in time or no directory is configured.
    pub async fn name(&self, user: &str, directory: Option<&Directory>) -> String {
        if let Some(name) = self.cached(user) {
            return name;
        }
        let Some(directory) = directory else {
            return user.to_owned();
        };
        match tokio::time::timeout(DEADLINE, self.look_up(user, directory)).await {
            Ok(Some(name)) => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= CAPACITY {
                    cache.clear();
                }
                cache.insert(user.to_owned(), name.clone());
                name
            }
            _ => user.to_owned(),
        }
    }

    fn cached(&self, user: &str) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(user).cloned()
    }

    async fn look_up(&self, user: &str, directory: &Directory) -> Option<String> {
        let mut url =
            reqwest::Url::parse(&format!("{}/users.info", directory.api_url.expose())).ok()?;
        url.query_pairs_mut().append_pair("user", user);
        let response = self
            .http
            .get(url)
            .bearer_auth(directory.token.expose())
            .send()
            .await
            .map_err(|e| tracing::debug!(error = %e.without_url(), "slack users.info failed"))
            .ok()?;
        let body: Value = response.json().await.ok()?;
        if body["ok"] != Value::Bool(true) {
            let error = body["error"].as_str().unwrap_or("unknown");
            tracing::debug!(error, "slack users.info refused");
            return None;
        }
        display_name(&body["user"])
    }
}

/// The name Slack shows: the profile's display name, else the real name, else the handle.
fn display_name(user: &Value) -> Option<String> {
    [
        &user["profile"]["display_name"],
        &user["profile"]["real_name"],
        &user["real_name"],
        &user["name"],
    ]
    .into_iter()
    .filter_map(Value::as_str)
    .map(str::trim)
    .find(|name| !name.is_empty())
    .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_display_name_wins_then_the_real_name_then_the_handle() {
        let user = serde_json::json!({"name": "h", "real_name": "R",
            "profile": {"display_name": "", "real_name": "Real"}});
        assert_eq!(display_name(&user).as_deref(), Some("Real"));
        let user = serde_json::json!({"name": "h", "profile": {"display_name": "D"}});
        assert_eq!(display_name(&user).as_deref(), Some("D"));
        assert_eq!(
            display_name(&serde_json::json!({"name": "h"})).as_deref(),
            Some("h")
        );
        assert_eq!(display_name(&serde_json::json!({})), None);
    }
}
