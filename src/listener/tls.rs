//! TLS termination for a listener: the handshake (bounded by the header timeout), ALPN, and
//! the certificate, swapped in place on reload while connections keep being accepted (a
//! connection keeps the certificate it was greeted with).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The TLS side of a listener.
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
}

/// The certificate handed to every new handshake.
struct Current(ArcSwap<CertifiedKey>);

/// Without the key: it never goes into a log.
impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Current(certificate)")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl Tls {
    /// Serves `certified`; offers HTTP/2 through ALPN when `h2` (the listener's h2c), else
    /// HTTP/1.1 only.
    pub fn new(certified: Arc<CertifiedKey>, h2: bool) -> anyhow::Result<Tls> {
        let current = Arc::new(Current(ArcSwap::new(certified)));
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = match h2 {
            true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            false => vec![b"http/1.1".to_vec()],
        };
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
        })
    }

    /// The certificate for the handshakes from now on.
    pub fn replace(&self, certified: Arc<CertifiedKey>) {
        self.current.0.store(certified);
    }

    /// The server side of the handshake on `stream`, given up after `within`.
    pub(super) async fn accept<S>(
        &self,
        stream: S,
        within: Duration,
    ) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(within, self.acceptor.accept(stream))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the TLS handshake did not finish in time",
                ))
            })
    }
}
