//! `[proxy] tls_cert` and `tls_key`: the PEM files read, parsed and checked against each
//! other (the key must be the certificate's) into the key rustls serves. Read again on every
//! reload, so a broken file refuses the reload and the served certificate stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

/// TLS on the proxy listeners.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate chain and its private key, ready to serve.
    pub certified: Arc<CertifiedKey>,
}

/// Two configs are the same when they name the same files holding the same chain (the key
/// is the chain's: [`load`] checked it).
impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert
            && self.key == other.key
            && self.certified.cert == other.certified.cert
    }
}

/// The paths only: the key material stays out of every log and `Debug` output.
impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("chain", &self.certified.cert.len())
            .finish()
    }
}

/// Which of the two keys a problem concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsKey {
    Cert,
    Key,
}

impl TlsKey {
    pub(super) fn name(self) -> &'static str {
        match self {
            TlsKey::Cert => "tls_cert",
            TlsKey::Key => "tls_key",
        }
    }
}

/// Reads the chain at `cert` and the private key at `key`; what is wrong, with the key it
/// concerns. The message never quotes the key file's contents.
pub(super) fn load(cert: &Path, key: &Path) -> Result<TlsConfig, (TlsKey, String)> {
    let shown = |p: &Path| p.display().to_string();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            (
                TlsKey::Cert,
                format!("cannot read a PEM certificate from {}: {e}", shown(cert)),
            )
        })?;
    if chain.is_empty() {
        return Err((
            TlsKey::Cert,
            format!(
                "{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
                shown(cert)
            ),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            TlsKey::Key,
            format!("cannot read a PEM private key from {}: {e}", shown(key)),
        )
    })?;
    let certified =
        CertifiedKey::from_der(chain, private, &ring::default_provider()).map_err(|e| {
            (
                TlsKey::Key,
                format!(
                    "{} does not go with the certificate in {}: {e}",
                    shown(key),
                    shown(cert)
                ),
            )
        })?;
    Ok(TlsConfig {
        cert: cert.to_owned(),
        key: key.to_owned(),
        certified: Arc::new(certified),
    })
}
