//! Redis connections with timeouts chosen for what each one does.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long an ordinary command may take before the connection is presumed dead.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A client for `url` whose TCP connections send small writes at once (TCP_NODELAY): with
/// Nagle's algorithm, a command queued behind an unacknowledged one can wait for a delayed
/// ACK, which is latency the data path does not need.
pub fn client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
}

/// A self-healing connection for ordinary commands. `extra_wait` lengthens the response
/// timeout for connections that issue blocking reads (`XREADGROUP … BLOCK`).
pub async fn manager(
    client: &redis::Client,
    extra_wait: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT + extra_wait))
        .set_number_of_retries(1);
    client.get_connection_manager_with_config(config).await
}

/// Redis turned chatbridge away in a way retrying cannot change: the credentials are wrong
/// or missing, or the user lacks a permission. `run` exits on it at start instead of
/// retrying forever; once it has run, it keeps retrying (an operator may be rotating them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis at {url} refused chatbridge: {reason}; fix the credentials or ACL of [redis] url")]
pub struct Denied {
    /// The server's URL, password redacted, so the operator knows which server refused.
    pub url: String,
    /// What the server said, in words (never the server's text, which may quote the user).
    pub reason: &'static str,
}

/// Whether `e` is a refusal for good ([`Denied`]), and why in words.
pub fn denial(e: &redis::RedisError) -> Option<&'static str> {
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return Some("authentication failed (wrong password or user name)");
    }
    match e.code()? {
        "WRONGPASS" => Some("authentication failed (wrong password or user name)"),
        "NOAUTH" => Some("authentication failed (the server requires a password; none is set)"),
        "NOPERM" => Some("the redis user lacks a permission chatbridge needs"),
        _ => None,
    }
}

/// Checks that a fresh connection may run commands: `PING`, whose error reveals missing
/// credentials (a server with `requirepass` accepts the connection, then refuses commands).
pub async fn probe(con: &mut ConnectionManager) -> redis::RedisResult<()> {
    redis::cmd("PING").query_async(con).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(text: &str) -> redis::RedisError {
        let reply = format!("-{text}\r\n");
        match redis::parse_redis_value(reply.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => e.into(),
            other => panic!("not a server error: {other:?}"),
        }
    }

    #[test]
    fn credentials_and_permissions_are_refusals_for_good() {
        let wrong = server_error("WRONGPASS invalid username-password pair or user is disabled.");
        assert_eq!(
            denial(&wrong),
            Some("authentication failed (wrong password or user name)")
        );
        assert!(denial(&server_error("NOAUTH Authentication required.")).is_some());
        assert!(denial(&server_error("NOPERM User x has no permissions")).is_some());
        let auth = redis::RedisError::from((redis::ErrorKind::AuthenticationFailed, "x"));
        assert!(denial(&auth).is_some());
    }

    #[test]
    fn outages_and_other_errors_are_retried() {
        assert_eq!(denial(&server_error("LOADING Redis is loading")), None);
        assert_eq!(denial(&server_error("ERR unknown command")), None);
        let io =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(denial(&io), None);
    }
}
