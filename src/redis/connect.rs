//! Redis connections with timeouts chosen for what each one does, and TLS (`rediss://`) as
//! `[redis]` configures it.
//!
//! Every `redis::Client` of the process comes from [`client`], so the CLI commands and the
//! daemon's connections (commands, blocking reads, the subscription, the trimmer) trust the
//! same CAs and present the same client certificate.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;

/// How long an ordinary command may take before the connection is presumed dead.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A client for `[redis]`'s URL whose TCP connections send small writes at once
/// (TCP_NODELAY): with Nagle's algorithm, a command queued behind an unacknowledged one can
/// wait for a delayed ACK, which is latency the data path does not need.
///
/// With a `rediss://` URL the server's certificate is checked against `ca_file` when set
/// (instead of the platform's roots, which rustls-native-certs loads otherwise, honouring
/// `SSL_CERT_FILE`), and the client certificate is presented when set.
pub fn client(config: &RedisConfig) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = config
        .url
        .as_str()
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        return redis::Client::open(info);
    }
    install_crypto_provider();
    let tls = &config.tls;
    let certificates = redis::TlsCertificates {
        client_tls: tls.client.as_ref().map(|client| redis::ClientTlsConfig {
            client_cert: client.cert.pem.clone(),
            client_key: client.key.pem.clone(),
        }),
        root_cert: tls.ca.as_ref().map(|ca| ca.pem.clone()),
    };
    redis::Client::build_with_tls(info, certificates)
}

/// redis-rs builds its rustls configuration with the process-wide default provider. The tree
/// compiles in aws-lc-rs only, which rustls would pick by itself; installing it explicitly
/// keeps a future second provider in the tree from turning every TLS connection into a panic.
fn install_crypto_provider() {
    // Err: one is installed already (by us, or by another TLS client of the process).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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
/// or missing, the user lacks a permission, or TLS cannot be established with the
/// certificates configured (the server's is not trusted, or the server wants a client
/// certificate chatbridge does not have). `run` exits on it at start instead of retrying
/// forever; once it has run, it keeps retrying (an operator may be rotating them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis at {url} refused chatbridge: {reason}; {fix}")]
pub struct Denied {
    /// The server's URL, password redacted, so the operator knows which server refused.
    pub url: String,
    /// What went wrong, in words (never the server's text, which may quote the user).
    pub reason: &'static str,
    /// Which setting to fix.
    pub fix: &'static str,
}

/// Whether `e` is a refusal for good ([`Denied`]): why, and what to fix, in words.
pub fn denial(e: &redis::RedisError) -> Option<(&'static str, &'static str)> {
    const CREDENTIALS: &str = "fix the credentials or ACL of [redis] url";
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return Some((
            "authentication failed (wrong password or user name)",
            CREDENTIALS,
        ));
    }
    if let Some(refusal) = tls_refusal(e) {
        return Some(refusal);
    }
    let reason = match e.code()? {
        "WRONGPASS" => "authentication failed (wrong password or user name)",
        "NOAUTH" => "authentication failed (the server requires a password; none is set)",
        "NOPERM" => "the redis user lacks a permission chatbridge needs",
        _ => return None,
    };
    Some((reason, CREDENTIALS))
}

/// A TLS failure that the certificates chatbridge has decide, in words: the rustls error
/// inside `e` (redis-rs keeps the I/O error tokio-rustls made of it).
fn tls_refusal(e: &redis::RedisError) -> Option<(&'static str, &'static str)> {
    use rustls::{AlertDescription, CertificateError, Error};
    use std::error::Error as _;
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let shared = e.source()?.downcast_ref::<Shared>()?;
    let io = shared.downcast_ref::<std::io::Error>()?;
    let tls = io.get_ref()?.downcast_ref::<Error>()?;
    const CA: &str = "trust its CA with [redis] ca_file (or the system's roots)";
    const CLIENT: &str = "set [redis] client_cert_file and client_key_file to a certificate \
                          the server's CA signed";
    Some(match tls {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => (
                "its TLS certificate is not signed by a CA chatbridge trusts",
                CA,
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                (
                    "its TLS certificate is not valid for the host name in the URL",
                    "connect by a name the certificate holds",
                )
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => (
                "its TLS certificate has expired or is not valid yet",
                "renew the server's certificate",
            ),
            _ => ("its TLS certificate is not acceptable", CA),
        },
        Error::AlertReceived(AlertDescription::CertificateRequired) => (
            "it requires a TLS client certificate and none is set",
            CLIENT,
        ),
        Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied,
        ) => ("it refused chatbridge's TLS client certificate", CLIENT),
        _ => return None,
    })
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
            denial(&wrong).map(|(reason, _)| reason),
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
