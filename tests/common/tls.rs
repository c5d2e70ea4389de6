//! A throwaway certificate authority and a server certificate it signed, for serving the fakes
//! over TLS (`wss://`). The CA's PEM is written to a file so the daemon can be told to trust it
//! with `SSL_CERT_FILE` (rustls-native-certs then loads its roots from that file only); without
//! it the daemon does not know the CA and must refuse the certificate.
//!
//! ```ignore
//! let tls = TestTls::new();
//! let fake = FakeGateway::start_tls("bot-token", 1000, tls.acceptor.clone()).await;
//! let daemon = Daemon::start_with_env(&toml, &[("SSL_CERT_FILE", tls.ca_path())]);
//! ```
//!
//! The server certificate and key are written as PEM files too (for `redis-server
//! --tls-cert-file`), with a client certificate the CA signed (for mutual TLS: `[redis]
//! client_cert_file`, `redis-server --tls-auth-clients yes`).

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// The names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A test CA (PEM in `ca_file`) and a TLS acceptor presenting a `localhost`/`127.0.0.1`
/// certificate signed by it (chain: leaf, CA).
pub struct TestTls {
    /// The CA certificate, PEM; lives as long as this value (in `_dir`), like the files below.
    pub ca_file: PathBuf,
    /// The server certificate (leaf only) and its PKCS#8 key, PEM.
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
    /// A client certificate (`chatbridge test client`, client auth) the CA signed, and its key.
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    pub acceptor: TlsAcceptor,
    _dir: tempfile::TempDir,
}

impl TestTls {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "chatbridge test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().expect("server key");
        let names: Vec<String> = SERVER_NAMES.iter().map(|n| (*n).to_owned()).collect();
        let mut leaf_params = CertificateParams::new(names).expect("server params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("sign the server certificate");

        let client_key = KeyPair::generate().expect("client key");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "chatbridge test client");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &issuer)
            .expect("sign the client certificate");

        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {name}: {e}"));
            path
        };
        let ca_file = write("test-ca.pem", ca_cert.pem());
        let server_cert_file = write("server.crt", leaf_cert.pem());
        let server_key_file = write("server.key", leaf_key.serialize_pem());
        let client_cert_file = write("client.crt", client_cert.pem());
        let client_key_file = write("client.key", client_key.serialize_pem());

        // The provider named explicitly: the tree's rustls has aws-lc-rs only, but a test must
        // not depend on a process-wide default having been installed.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            vec![leaf_cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate and key");
        Self {
            ca_file,
            server_cert_file,
            server_key_file,
            client_cert_file,
            client_key_file,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            _dir: dir,
        }
    }

    /// `ca_file` as a `&str`, for `SSL_CERT_FILE`.
    pub fn ca_path(&self) -> &str {
        self.ca_file.to_str().expect("a UTF-8 temp path")
    }
}

impl Default for TestTls {
    fn default() -> Self {
        Self::new()
    }
}

/// A connection a fake accepted: plain TCP, or TLS over it.
pub type Accepted = Either<TcpStream, TlsStream<TcpStream>>;

/// The connections a fake's listener accepts: as they come, or with `tls` once their TLS
/// handshake succeeded.
pub struct Incoming {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    tls_failed: usize,
}

impl Incoming {
    pub fn new(listener: TcpListener, tls: Option<TlsAcceptor>) -> Self {
        Self {
            listener,
            tls,
            tls_failed: 0,
        }
    }

    /// The next connection ready for its websocket handshake; `None` once the listener fails.
    /// Each TLS handshake is told to `record`: `tls-accepted sni=<server name the client sent>`,
    /// or `tls-failed K: <error>` (K counts the failures; such a connection is not returned).
    pub async fn next(&mut self, record: impl Fn(String)) -> Option<Accepted> {
        loop {
            let Ok((tcp, _)) = self.listener.accept().await else {
                return None;
            };
            let Some(acceptor) = &self.tls else {
                return Some(Either::Left(tcp));
            };
            match acceptor.accept(tcp).await {
                Ok(stream) => {
                    let sni = stream.get_ref().1.server_name().unwrap_or("-").to_owned();
                    record(format!("tls-accepted sni={sni}"));
                    return Some(Either::Right(stream));
                }
                Err(e) => {
                    self.tls_failed += 1;
                    record(format!("tls-failed {}: {e}", self.tls_failed));
                }
            }
        }
    }
}
