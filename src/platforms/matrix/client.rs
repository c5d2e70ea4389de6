//! The homeserver calls an application service makes, as its bot or as a ghost
//! (`?user_id=` with the `as_token`): register a ghost, set its display name, join a room, send
//! a text message. Each returns what the homeserver said: the facts a sink reports
//! ([`CallError`] keeps the status, `errcode` and `retry_after_ms`), never a retry decision.

use std::time::Duration;

use serde_json::{Value, json};

use crate::secret::{BotToken, SecretUrl};

/// What a failed call came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The HTTP status; `None` when no answer came (connection, timeout).
    pub status: Option<u16>,
    /// The Matrix `errcode` (`M_FORBIDDEN`, `M_LIMIT_EXCEEDED`, …), when the body had one.
    pub errcode: Option<String>,
    /// `retry_after_ms` of a rate-limited answer.
    pub retry_after: Option<Duration>,
    /// A short description, without tokens.
    pub detail: String,
}

/// Calls one homeserver as one application service.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: SecretUrl,
    as_token: BotToken,
    timeout: Duration,
}

impl Client {
    pub fn new(
        http: reqwest::Client,
        base: SecretUrl,
        as_token: BotToken,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            base,
            as_token,
            timeout,
        }
    }

    /// `POST /_matrix/client/v3/register` for `localpart` (`m.login.application_service`,
    /// no login). A ghost that exists already (`M_USER_IN_USE`) is fine.
    pub async fn register(&self, localpart: &str) -> Result<(), CallError> {
        let url = self.url(&["_matrix", "client", "v3", "register"], None);
        let body = json!({
            "type": "m.login.application_service",
            "username": localpart,
            "inhibit_login": true,
        });
        match self.call(self.http.post(url).json(&body)).await {
            Ok(_) => Ok(()),
            Err(e) if e.errcode.as_deref() == Some("M_USER_IN_USE") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `PUT /_matrix/client/v3/profile/{user}/displayname` as `user`.
    pub async fn set_display_name(&self, user: &str, name: &str) -> Result<(), CallError> {
        let url = self.url(
            &["_matrix", "client", "v3", "profile", user, "displayname"],
            Some(user),
        );
        let body = json!({ "displayname": name });
        self.call(self.http.put(url).json(&body)).await.map(drop)
    }

    /// `POST /_matrix/client/v3/join/{room}` as `user`: the room id joined (`room` may be an
    /// alias).
    pub async fn join(&self, user: &str, room: &str) -> Result<String, CallError> {
        let url = self.url(&["_matrix", "client", "v3", "join", room], Some(user));
        let answer = self.call(self.http.post(url).json(&json!({}))).await?;
        answer["room_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad_answer("join answered without room_id"))
    }

    /// `PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}` as `user`: a plain
    /// `m.text` with `"m.mentions": {}` (so nothing in the text pings anyone), at `ts` (Unix
    /// milliseconds, for messages replayed late) when given. The same `txn` from the same user
    /// gives the same event: the event id.
    pub async fn send_text(
        &self,
        user: &str,
        room_id: &str,
        txn: &str,
        body: &str,
        ts: Option<i64>,
    ) -> Result<String, CallError> {
        let mut url = self.url(
            &[
                "_matrix",
                "client",
                "v3",
                "rooms",
                room_id,
                "send",
                "m.room.message",
                txn,
            ],
            Some(user),
        );
        if let Some(ts) = ts {
            url.query_pairs_mut().append_pair("ts", &ts.to_string());
        }
        let content = json!({
            "msgtype": "m.text",
            "body": body,
            "m.mentions": {},
        });
        let answer = self.call(self.http.put(url).json(&content)).await?;
        answer["event_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad_answer("send answered without event_id"))
    }

    /// The homeserver URL with `segments` appended (each percent-encoded) and `?user_id=`.
    fn url(&self, segments: &[&str], user: Option<&str>) -> reqwest::Url {
        let mut url = self.base.expose().clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if let Some(user) = user {
            url.query_pairs_mut().append_pair("user_id", user);
        }
        url
    }

    /// Sends with the `as_token`; a 2xx answer's JSON body, else what went wrong.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, CallError> {
        let response = request
            .bearer_auth(self.as_token.expose())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| CallError {
                status: None,
                errcode: None,
                retry_after: None,
                detail: e.without_url().to_string(),
            })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let errcode = body["errcode"].as_str().map(str::to_owned);
        Err(CallError {
            status: Some(status.as_u16()),
            retry_after: body["retry_after_ms"].as_u64().map(Duration::from_millis),
            detail: format!(
                "{} {}: {}",
                status.as_u16(),
                errcode.as_deref().unwrap_or("(no errcode)"),
                body["error"].as_str().unwrap_or("")
            ),
            errcode,
        })
    }
}

fn bad_answer(what: &str) -> CallError {
    CallError {
        status: None,
        errcode: None,
        retry_after: None,
        detail: what.to_owned(),
    }
}
