//! The eviction check at `run` start. chatbridge keeps its outboxes, checkpoints and de-dup
//! windows in Redis; a Redis whose `maxmemory-policy` evicts keys under memory pressure can
//! delete them, and an evicted outbox or checkpoint is message loss nobody sees. So `run`
//! refuses such a server unless the operator accepted the risk (`[redis] allow_eviction`).

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionLike;

use crate::bridge::retry::Backoff;

/// What the server says about evicting keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// `noeviction`: when memory is full, writes fail; nothing is deleted behind our back.
    NoEviction,
    /// Any other policy (`allkeys-lru`, `volatile-ttl`, …): keys may be deleted.
    Evicting(String),
    /// The policy cannot be read (CONFIG renamed or denied to this user); why.
    Unknown(String),
}

/// `run` refuses to start on an evicting Redis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to start: redis at {url} has maxmemory-policy `{policy}`, so under memory \
     pressure it may evict chatbridge's outboxes and checkpoints, which is silent message \
     loss; fix: `CONFIG SET maxmemory-policy noeviction` on that server (and in its \
     redis.conf), or accept the risk with `allow_eviction = true` under [redis]"
)]
pub struct Refused {
    /// The server's policy, as it named it.
    pub policy: String,
    /// The server's URL, password redacted, so the operator knows which server to fix.
    pub url: String,
}

/// Reads the policy, retrying while Redis does not answer at all (a connection error, or a
/// server still loading its data), then decides: `Ok` to run (logging a warning when the
/// policy is evicting but allowed, or unknown), or the refusal.
pub async fn check(
    con: &mut impl ConnectionLike,
    allow_eviction: bool,
    url: &str,
) -> Result<(), Refused> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match policy(con).await {
            Ok(policy) => return admit(policy, allow_eviction, url),
            Err(e) => {
                let wait = backoff.next(None);
                tracing::warn!(error = %e, retry_in = ?wait, "cannot read redis's maxmemory-policy yet");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// `CONFIG GET maxmemory-policy`. An error reply (CONFIG renamed away, or denied by an ACL)
/// is an unknown policy; a connection error is an error.
pub async fn policy(con: &mut impl ConnectionLike) -> redis::RedisResult<Policy> {
    let reply: redis::RedisResult<HashMap<String, String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(con)
        .await;
    match reply {
        Ok(settings) => Ok(match settings.get("maxmemory-policy") {
            Some(policy) if policy == "noeviction" => Policy::NoEviction,
            Some(policy) => Policy::Evicting(policy.clone()),
            None => Policy::Unknown("CONFIG GET did not list maxmemory-policy".to_owned()),
        }),
        Err(e) if is_refusal(&e) => Ok(Policy::Unknown(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Whether the server answered with an error reply that will not change by retrying.
fn is_refusal(e: &redis::RedisError) -> bool {
    match e.code() {
        Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN") | None => false,
        Some(_) => true,
    }
}

/// Decides on a policy read from the server at `url`.
pub fn admit(policy: Policy, allow_eviction: bool, url: &str) -> Result<(), Refused> {
    match policy {
        Policy::NoEviction => Ok(()),
        Policy::Evicting(policy) if allow_eviction => {
            tracing::warn!(
                policy,
                "redis may evict keys (maxmemory-policy `{policy}`), and allow_eviction = true: \
                 an evicted outbox or checkpoint is silent message loss"
            );
            Ok(())
        }
        Policy::Evicting(policy) => Err(Refused {
            policy,
            url: url.to_owned(),
        }),
        Policy::Unknown(why) => {
            tracing::warn!(
                why,
                "cannot check redis's maxmemory-policy; running anyway: make sure it is \
                 `noeviction`, or an evicted outbox or checkpoint is silent message loss"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "redis://127.0.0.1:6390/";

    #[test]
    fn only_noeviction_runs_without_allow_eviction() {
        assert_eq!(admit(Policy::NoEviction, false, URL), Ok(()));
        let refused = admit(Policy::Evicting("allkeys-lru".into()), false, URL).unwrap_err();
        assert_eq!(refused.policy, "allkeys-lru");
        let line = refused.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        for needed in [
            "allkeys-lru",
            URL,
            "silent message loss",
            "CONFIG SET maxmemory-policy noeviction",
            "allow_eviction = true",
        ] {
            assert!(line.contains(needed), "{needed:?} missing from: {line}");
        }
    }

    #[test]
    fn allow_eviction_or_an_unknown_policy_runs() {
        assert_eq!(
            admit(Policy::Evicting("volatile-lru".into()), true, URL),
            Ok(())
        );
        assert_eq!(admit(Policy::Unknown("NOPERM".into()), false, URL), Ok(()));
    }
}
