//! HTTPS for the tests: a certificate authority made at test time (rcgen), certificates it
//! signs for `localhost` and 127.0.0.1 written as PEM files, and a client that trusts that
//! authority only (HTTP/1.1, or HTTP/2 when ALPN agrees on it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::Resp;

/// A certificate authority and the directory its certificates are written to.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// A certificate signed by the [`Ca`]: its PEM files, and its DER to recognise it.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl Leaf {
    /// The `tls_cert` and `tls_key` lines of `[proxy]` for this certificate.
    pub fn config(&self) -> String {
        format!(
            "tls_cert = {:?}\ntls_key = {:?}",
            self.cert.to_string_lossy(),
            self.key.to_string_lossy()
        )
    }
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "writeguard test CA");
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
            dir: tempfile::Builder::new()
                .prefix("wg-tls-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1 named `name`, written to
    /// `<dir>/<name>.crt` (leaf then CA) and `<dir>/<name>.key`.
    pub fn issue(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{name}.crt")),
            key: self.dir.path().join(format!("{name}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&leaf.cert, cert.pem() + &self.issuer.pem()).expect("write certificate");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }

    fn client(&self, alpn: &[&str]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("the CA is a valid root");
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// One request over a fresh TLS connection to `addr` (as `localhost`), offering the ALPN
    /// protocols `alpn` and speaking HTTP/2 if the server picks `h2`. Panics on a failed
    /// handshake or when no answer comes within 10 s.
    pub async fn send(&self, addr: SocketAddr, alpn: &[&str], req: Request<Full<Bytes>>) -> Https {
        self.try_send(addr, alpn, req)
            .await
            .unwrap_or_else(|e| panic!("HTTPS request to {addr}: {e}"))
    }

    /// Writes `bytes` on a fresh HTTP/1.1 TLS connection to `addr` and reads until the server
    /// closes it (10 s at most): what came back, as text.
    pub async fn raw(&self, addr: SocketAddr, bytes: &[u8]) -> String {
        let exchange = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from("localhost").expect("server name");
            let mut tls = self
                .client(&["http/1.1"])
                .connect(name, tcp)
                .await
                .expect("TLS handshake");
            tls.write_all(bytes).await.expect("write");
            let mut out = Vec::new();
            let _ = tls.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the server closes the connection within 10 s")
    }

    pub async fn try_send(
        &self,
        addr: SocketAddr,
        alpn: &[&str],
        mut req: Request<Full<Bytes>>,
    ) -> Result<Https, String> {
        let exchange = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let name = ServerName::try_from("localhost").expect("server name");
            let tls = self
                .client(alpn)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let (_, session) = tls.get_ref();
            let cert = session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec())
                .unwrap_or_default();
            let alpn = session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let io = TokioIo::new(tls);
            let res = if alpn.as_deref() == Some("h2") {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                sender.send_request(req).await
            } else {
                if let Some(host) = req.uri().authority().map(|a| a.as_str().to_owned()) {
                    req.headers_mut()
                        .entry("host")
                        .or_insert(host.parse().expect("host header"));
                }
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                sender.send_request(req).await
            }
            .map_err(|e| e.to_string())?;
            let version = res.version();
            let (parts, body) = res.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Https {
                resp: Resp {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                },
                cert,
                alpn,
                version,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| Err("no answer within 10 s".into()))
    }
}

/// An answer over HTTPS, with what the TLS session said.
pub struct Https {
    pub resp: Resp,
    /// The certificate the server presented (DER).
    pub cert: Vec<u8>,
    /// The ALPN protocol agreed on, if any.
    pub alpn: Option<String>,
    pub version: http::Version,
}

/// `method https://{host}{path}` with `body`: `host` goes in `Host` (HTTP/1.1) or
/// `:authority` (HTTP/2).
pub fn request(method: &str, host: &str, path: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(super::method(method))
        .uri(format!("https://{host}{path}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request")
}
