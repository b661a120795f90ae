//! The accept loop of the in-process upstreams: raw connections for
//! [`Faulty`](super::faulty::Faulty), hyper's HTTP/1.1 server for
//! [`Upstream`](super::Upstream) and [`Ledger`](super::ledger::Ledger), each request answered
//! by a function of the upstream's shared state.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A listener on a free loopback port for the upstream `what`, and its address.
pub async fn loopback(what: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind the {what}: {e}"));
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Accepts on `listener` until the returned task is aborted, each connection handled by
/// `handle` on a task of its own; aborting closes every connection too.
pub fn serve_connections<H, Fut>(listener: TcpListener, handle: H) -> JoinHandle<()>
where
    H: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        // Dropping the set (when this task is aborted) aborts every connection too.
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            connections.spawn(handle(stream));
            while connections.try_join_next().is_some() {}
        }
    })
}

/// Serves HTTP/1.1 on `listener` until the returned task is aborted, which closes every
/// connection too.
pub fn serve_http1<S, F, Fut, B>(listener: TcpListener, state: Arc<S>, answer: F) -> JoinHandle<()>
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_connections(listener, move |stream| {
        let state = state.clone();
        async move {
            let service = service_fn(move |req| {
                let answer = answer(state.clone(), req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
}

/// An app on raw TCP that answers one request per connection and closes, framed as
/// `Transfer-Encoding: gzip, chunked` (body `new`), which hyper's client reads as chunked and
/// the native engine refuses to frame (502, README). With `page_first`, the first answer is
/// a plain `page` (`Content-Length`) instead.
pub async fn unframable(page_first: bool) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => head.extend_from_slice(&buf[..k]),
                }
            }
            let answer: &[u8] = match n {
                0 if page_first => {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npage"
                }
                _ => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nnew\r\n0\r\n\r\n",
            };
            let _ = s.write_all(answer).await;
        }
    });
    (format!("http://{addr}"), app)
}
