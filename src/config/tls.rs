//! `[redis]`'s TLS files: `ca_file`, `client_cert_file`, `client_key_file`.
//!
//! They are read and checked when the configuration loads, not when chatbridge first connects:
//! `chatbridge check` (and the reload that runs it) then reports an unreadable file, one that
//! holds no PEM certificate or key, or a key that does not belong to its certificate, with the
//! key path, and `run` connects with exactly the bytes that were checked. A connection that
//! fails later fails for a reason of the server or the network, not of a file.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::Problems;
use super::reader::{Table, Text};

/// The PEM files `rediss://` connections use. Empty: the platform's roots, no client
/// certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// The CA certificates to trust **instead of** the platform's roots (`ca_file`).
    pub ca: Option<PemFile>,
    /// The certificate chain and private key chatbridge presents for mutual TLS
    /// (`client_cert_file` and `client_key_file`, both or neither).
    pub client: Option<ClientIdentity>,
}

impl RedisTls {
    /// Whether any file is set (they only mean something with a `rediss://` URL).
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

/// A client certificate chain and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PemFile,
    pub key: PemFile,
}

/// A file's path (for messages) and contents as read at load.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl fmt::Debug for RedisTls {
    /// Paths only: the key file's contents are a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = |file: Option<&PemFile>| file.map(|file| file.path.display().to_string());
        f.debug_struct("RedisTls")
            .field("ca_file", &path(self.ca.as_ref()))
            .field(
                "client_cert_file",
                &path(self.client.as_ref().map(|c| &c.cert)),
            )
            .field(
                "client_key_file",
                &path(self.client.as_ref().map(|c| &c.key)),
            )
            .finish()
    }
}

/// Reads the three keys of `[redis]` and checks the files. `tls_url` says whether the URL is
/// `rediss://`; with any other URL a file would be silently ignored, so it is a problem.
pub(super) fn parse_redis_tls(
    section: &mut Table,
    tls_url: bool,
    problems: &mut Problems,
) -> RedisTls {
    let ca = section.string("ca_file", problems);
    let cert = section.string("client_cert_file", problems);
    let key = section.string("client_key_file", problems);
    if !tls_url {
        for text in [&ca, &cert, &key].into_iter().flatten() {
            problems.add(&text.path, "only used with a `rediss://` url (TLS)");
        }
    }
    let ca = ca.and_then(|text| {
        let file = read(&text, problems)?;
        certificates(&text, &file.pem, problems)
            .and_then(|certs| check_roots(&text, certs, problems))
            .map(|()| file)
    });
    let client = match (cert, key) {
        (Some(cert), Some(key)) => client_identity(&cert, &key, problems),
        (Some(one), None) | (None, Some(one)) => {
            problems.add(
                &one.path,
                "client_cert_file and client_key_file go together: set both for mutual TLS, \
                 or neither",
            );
            None
        }
        (None, None) => None,
    };
    RedisTls { ca, client }
}

/// The file at `text`, or a problem saying why it cannot be read.
fn read(text: &Text, problems: &mut Problems) -> Option<PemFile> {
    let path = PathBuf::from(&text.value);
    match std::fs::read(&path) {
        Ok(pem) => Some(PemFile { path, pem }),
        Err(e) => {
            problems.add(&text.path, format!("cannot read `{}`: {e}", path.display()));
            None
        }
    }
}

/// The PEM certificates in `pem`: at least one, all well-formed.
fn certificates(
    text: &Text,
    pem: &[u8],
    problems: &mut Problems,
) -> Option<Vec<CertificateDer<'static>>> {
    match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if certs.is_empty() => {
            problems.add(
                &text.path,
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            );
            None
        }
        Ok(certs) => Some(certs),
        Err(e) => {
            problems.add(&text.path, format!("not a valid PEM file: {e}"));
            None
        }
    }
}

/// Whether every certificate of `ca_file` can serve as a trust anchor.
fn check_roots(
    text: &Text,
    certs: Vec<CertificateDer<'static>>,
    problems: &mut Problems,
) -> Option<()> {
    let mut roots = rustls::RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        if let Err(e) = roots.add(cert) {
            problems.add(
                &text.path,
                format!(
                    "certificate {} is not a usable CA certificate: {e}",
                    index + 1
                ),
            );
            return None;
        }
    }
    Some(())
}

/// Reads and checks the client certificate and key, and that they belong together.
fn client_identity(cert: &Text, key: &Text, problems: &mut Problems) -> Option<ClientIdentity> {
    let cert_file = read(cert, problems);
    let key_file = read(key, problems);
    let chain = cert_file
        .as_ref()
        .and_then(|file| certificates(cert, &file.pem, problems));
    let private = key_file.as_ref().and_then(|file| {
        PrivateKeyDer::from_pem_slice(&file.pem)
            .map_err(|e| {
                // The parser's words only (never the file's contents).
                problems.add(
                    &key.path,
                    format!("holds no usable PEM private key (-----BEGIN … PRIVATE KEY-----): {e}"),
                );
            })
            .ok()
    });
    let (chain, private) = (chain?, private?);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    if let Err(e) = rustls::sign::CertifiedKey::from_der(chain, private, &provider) {
        let message = match e {
            rustls::Error::InconsistentKeys(_) => {
                "is not the key of client_cert_file's certificate".to_owned()
            }
            other => format!("cannot be used with client_cert_file: {other}"),
        };
        problems.add(&key.path, message);
        return None;
    }
    Some(ClientIdentity {
        cert: cert_file?,
        key: key_file?,
    })
}
