//! Upstream connections: hyper's HTTP/1.1 client connection, kept alive in a small idle pool
//! per worker thread. The proxy's runtimes are single-threaded, so the pool needs no lock,
//! no hashing and no hand-off to another task per request.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::timed::{Progress, TimedBody};
use super::UpstreamError;

/// Idle upstream connections kept per worker thread.
const MAX_IDLE: usize = 512;

thread_local! {
    static IDLE: RefCell<Vec<SendRequest<UpBody>>> = const { RefCell::new(Vec::new()) };
}

/// Upstream connections open (each one file descriptor), across threads.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// How many upstream connections are open, in use or idle: for the descriptor headroom.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// One open upstream connection, counted until its task ends (and its socket is closed).
pub struct Open;

impl Open {
    pub fn new() -> Self {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What we send upstream: the client's body, streamed, or nothing (a request rebuilt for a
/// retry).
pub type UpBody = Either<TimedBody, Empty<Bytes>>;

/// A failed send, with the request back when none of it reached the upstream.
pub struct SendError {
    pub error: UpstreamError,
    /// Boxed: a request is large and errors are rare.
    pub unsent: Option<Box<Request<UpBody>>>,
}

pub struct Pool {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

impl Pool {
    /// Connections to `upstream`; over https, `server_name` (default: the URL's host) is
    /// the name sent (SNI) and checked in the upstream's certificate.
    pub fn new(upstream: &Uri, server_name: Option<&str>, connect_timeout: Duration) -> Self {
        let https = upstream.scheme_str() == Some("https");
        let host = upstream
            .host()
            .expect("config validated the host")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = upstream.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = https.then(|| {
            let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let mut config = ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = server_name
                .unwrap_or(&host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = ServerName::try_from(name).expect("config validated the server name");
            (TlsConnector::from(Arc::new(config)), name)
        });
        Pool {
            host,
            port,
            tls,
            connect_timeout,
        }
    }

    /// Sends `req` on an idle connection, or a new one. A pooled connection that the upstream
    /// closed while idle hands the request back unsent, and the next one is tried.
    pub async fn send(&self, mut req: Request<UpBody>) -> Result<Response<PooledBody>, SendError> {
        let progress = match req.body() {
            Either::Left(body) => body.progress(),
            Either::Right(_) => None,
        };
        while let Some(mut sender) = checkout() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(res) => return Ok(PooledBody::wrap(res, sender, progress)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => {
                        return Err(SendError {
                            error: e.into_error().into(),
                            unsent: None,
                        })
                    }
                },
            }
        }
        // Boxed: the connect (and TLS handshake) future is large and only needed for a new
        // connection.
        let mut sender = match Box::pin(self.connect()).await {
            Ok(sender) => sender,
            Err(error) => {
                return Err(SendError {
                    error,
                    unsent: Some(Box::new(req)),
                })
            }
        };
        match sender.try_send_request(req).await {
            Ok(res) => Ok(PooledBody::wrap(res, sender, progress)),
            Err(mut e) => Err(SendError {
                unsent: e.take_message().map(Box::new),
                error: e.into_error().into(),
            }),
        }
    }

    async fn connect(&self) -> Result<SendRequest<UpBody>, UpstreamError> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(UpstreamError::Connect)?;
            let open = Open::new();
            let _ = tcp.set_nodelay(true);
            let builder = http1::Builder::new();
            let sender = match &self.tls {
                None => {
                    let (sender, conn) = builder.handshake(TokioIo::new(tcp)).await?;
                    tokio::spawn(drive(conn.with_upgrades(), open));
                    sender
                }
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(UpstreamError::Connect)?;
                    let (sender, conn) = builder.handshake(TokioIo::new(tls)).await?;
                    tokio::spawn(drive(conn.with_upgrades(), open));
                    sender
                }
            };
            Ok(sender)
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .unwrap_or(Err(UpstreamError::ConnectTimeout))
    }
}

async fn drive<C: std::future::Future<Output = hyper::Result<()>>>(conn: C, _open: Open) {
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "upstream connection closed with an error");
    }
}

fn checkout() -> Option<SendRequest<UpBody>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    })
}

fn checkin(sender: SendRequest<UpBody>) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    });
}

/// An upstream response body that gives its connection back to the pool once it has been
/// read to the end. A body dropped early takes its connection with it.
pub struct PooledBody {
    body: Incoming,
    sender: Option<SendRequest<UpBody>>,
    /// The request's progress (None: it had no body and is no guarded write). Kept until
    /// this answer is dropped: a guarded write counts in flight until then.
    progress: Option<Arc<Progress>>,
}

impl PooledBody {
    fn wrap(
        res: Response<Incoming>,
        sender: SendRequest<UpBody>,
        progress: Option<Arc<Progress>>,
    ) -> Response<PooledBody> {
        res.map(|body| {
            let mut pooled = PooledBody {
                body,
                sender: Some(sender),
                progress,
            };
            if pooled.body.is_end_stream() {
                pooled.release();
            }
            pooled
        })
    }

    /// An upstream may answer before it has the whole request body (a 413, an early
    /// redirect): its connection stays busy sending that body, so it goes back to the pool
    /// only when the body is through; otherwise it closes once the body is done.
    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            if self.progress.as_ref().is_none_or(|p| p.sent().is_some()) {
                checkin(sender);
            }
        }
    }
}

impl PooledBody {
    /// Keeps `progress` with this answer when the request sent had none of its own (a
    /// bodiless request sent again: its first attempt's progress is the write's).
    pub fn keep(&mut self, progress: Option<Arc<Progress>>) {
        if self.progress.is_none() {
            self.progress = progress;
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.release(),
            Some(Ok(_)) if self.body.is_end_stream() => self.release(),
            Some(Err(_)) => self.sender = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
