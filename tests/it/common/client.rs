//! Small HTTP/1.1 clients: a hyper one (one fresh connection per request, so nothing is
//! pooled behind a test's back) and a raw TCP one for byte-exact and keep-alive checks.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub type TestBody = BoxBody<Bytes, Infallible>;

/// A body sent in the given pieces with no length announced: HTTP/1.1 chunked encoding.
pub struct Chunks(VecDeque<Bytes>);

impl Chunks {
    pub fn new(pieces: Vec<Bytes>) -> Self {
        Chunks(pieces.into())
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body ({e}), got {} {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

enum Payload {
    Empty,
    Full(Bytes),
    Chunked(Vec<Bytes>),
}

/// A request under construction; `send` opens a fresh connection to `addr`.
pub struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    payload: Payload,
    timeout: Duration,
}

impl Req {
    pub fn new(method: &str, path: &str) -> Self {
        Req {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            payload: Payload::Empty,
            timeout: Duration::from_secs(30),
        }
    }

    pub fn get(path: &str) -> Self {
        Req::new("GET", path)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.payload = Payload::Full(body.into());
        self
    }

    pub fn json(self, value: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(value).expect("serialize"))
    }

    /// Sends the body in these pieces, chunked, with no content-length.
    pub fn chunked(mut self, pieces: Vec<Bytes>) -> Self {
        self.payload = Payload::Chunked(pieces);
        self
    }

    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Sends the request and reads the whole response; panics on any failure.
    pub async fn send(self, addr: SocketAddr) -> Resp {
        let what = format!("{} {} to {addr}", self.method, self.path);
        self.try_send(addr)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    pub async fn try_send(self, addr: SocketAddr) -> Result<Resp, String> {
        let limit = self.timeout;
        tokio::time::timeout(limit, self.exchange(addr))
            .await
            .map_err(|_| format!("no complete answer within {limit:?}"))?
    }

    async fn exchange(self, addr: SocketAddr) -> Result<Resp, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let method = http::Method::from_bytes(self.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut builder = Request::builder().method(method).uri(self.path.as_str());
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"))
        {
            builder = builder.header("host", addr.to_string());
        }
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let body: TestBody = match self.payload {
            Payload::Empty => Empty::new().boxed(),
            Payload::Full(b) => Full::new(b).boxed(),
            Payload::Chunked(pieces) => Chunks::new(pieces).boxed(),
        };
        let req = builder.body(body).map_err(|e| e.to_string())?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResp {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Headers to compare between two answers: a `date` (the app's, or added when it sent
/// none) only as being there, its value changes from second to second.
pub fn comparable(headers: &[(String, String)]) -> impl Iterator<Item = (String, String)> + '_ {
    headers.iter().map(|(k, v)| match k.as_str() {
        "date" => (k.clone(), "<a date>".to_owned()),
        _ => (k.clone(), v.clone()),
    })
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One TCP connection driven by hand: write exact bytes, read responses one by one.
pub struct RawConn {
    stream: BufReader<TcpStream>,
}

const RAW_TIMEOUT: Duration = Duration::from_secs(10);

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(RAW_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        RawConn {
            stream: BufReader::new(stream),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        tokio::time::timeout(RAW_TIMEOUT, self.stream.get_mut().write_all(bytes))
            .await
            .expect("write within 10 s")
            .expect("write");
    }

    /// Reads one response (content-length, chunked, or no body for `head`).
    pub async fn read_response(&mut self, head: bool) -> RawResp {
        tokio::time::timeout(RAW_TIMEOUT, self.read_inner(head))
            .await
            .expect("a response within 10 s")
            .expect("a well-formed response")
    }

    /// Writes, handing back the error (a reset) instead of panicking.
    pub async fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(RAW_TIMEOUT, self.stream.get_mut().write_all(bytes))
            .await
            .expect("write within 10 s")
    }

    /// Closes the writing side (the client is done sending), then waits for the peer's
    /// end: `Ok` for a clean close, the error for a reset. Panics if it stays open 10 s.
    pub async fn finish(&mut self) -> std::io::Result<()> {
        self.stream.get_mut().shutdown().await?;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(RAW_TIMEOUT, self.stream.read_to_end(&mut rest))
            .await
            .expect("the peer closes within 10 s");
        assert!(rest.is_empty(), "nothing more after the answer: {rest:?}");
        read.map(|_| ())
    }

    /// True when the peer has closed the connection (EOF) within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(limit, self.stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        let n = self.stream.read_line(&mut line).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    async fn read_inner(&mut self, head: bool) -> std::io::Result<RawResp> {
        let status_line = self.line().await?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| std::io::Error::other(format!("bad header {line:?}")))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut res = RawResp {
            status,
            headers,
            body: Vec::new(),
        };
        if head || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(res);
        }
        if let Some(len) = res.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| std::io::Error::other("bad content-length"))?;
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await?;
            res.body = body;
        } else if res
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size = self.line().await?;
                let size =
                    usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                let mut chunk = vec![0u8; size];
                self.stream.read_exact(&mut chunk).await?;
                res.body.extend_from_slice(&chunk);
                self.line().await?;
            }
        } else {
            self.stream.read_to_end(&mut res.body).await?;
        }
        Ok(res)
    }
}
