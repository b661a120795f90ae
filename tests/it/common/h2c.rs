//! An HTTP/2 client over cleartext (h2c, prior knowledge): one connection that many requests
//! share, as browsers and gRPC clients use it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// An HTTP/2 connection to `addr`, driven in the background.
pub async fn connect<B>(addr: SocketAddr) -> SendRequest<B>
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// `method path` with `headers` and the body `x=1` on `sender`; the status and headers of
/// the answer, once its body is read. Panics when no answer comes within 10 s.
pub async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap) {
    let mut b = Request::builder()
        .method(super::method(method))
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from_static(b"x=1")))
        .expect("request");
    sender.ready().await.expect("h2 connection ready");
    let res = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an h2 answer within 10 s")
        .unwrap_or_else(|e| panic!("{method} {path} over h2: {e}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    res.into_body().collect().await.expect("h2 body");
    (status, headers)
}
