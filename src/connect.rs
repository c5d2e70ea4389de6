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
