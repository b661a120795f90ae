//! The answers of a native exchange going to the client: the upstream's (its head read and
//! rewritten by [`super::response`], its body streamed and re-framed: [`stream_body`]), or
//! ours (a failure through `http::Failure`, the one map from failure to status, or the
//! guard's 503 from `Proxy::refusal`: [`write_ours`]).

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::deadline;
use crate::http::Failure;
use crate::metrics::Outcome;
use crate::upstream::UpstreamError;

use super::chunked::{self, Decoder};
use super::exchange::Ended;
use super::inbound::Inbound;
use super::request::Framing;
use super::response::{self, Body};
use super::upload::drain;
use super::{buffers, Native};

/// The largest response head taken from the upstream: hyper's client read buffer limit.
const MAX_RESPONSE_HEAD: usize = 8192 + 4096 * 100;

impl Native {
    /// Reads the upstream's response head into `rbuf` (after any 1xx) and writes the
    /// client's into `out`; on failure, whether no byte of an answer came at all.
    pub(super) async fn response_head<R: AsyncRead + Unpin>(
        &self,
        up: &mut R,
        rbuf: &mut Vec<u8>,
        out: &mut Vec<u8>,
        head_request: bool,
        close: bool,
    ) -> Result<response::Head, (UpstreamError, bool)> {
        let by = deadline::after_tokio(tokio::time::Instant::now(), self.upstream_timeout);
        let mut any = !rbuf.is_empty();
        loop {
            if !rbuf.is_empty() {
                match response::parse(rbuf, head_request, close, out) {
                    response::Parsed::Head(head) => {
                        rbuf.drain(..head.head_len);
                        return Ok(head);
                    }
                    response::Parsed::Interim(n) => {
                        rbuf.drain(..n);
                        continue;
                    }
                    response::Parsed::Bad(why) => {
                        return Err((UpstreamError::Protocol(why), false));
                    }
                    response::Parsed::Partial if rbuf.len() >= MAX_RESPONSE_HEAD => {
                        return Err((UpstreamError::Protocol("response head too large"), false));
                    }
                    response::Parsed::Partial => {}
                }
            }
            rbuf.reserve(buffers::SIZE);
            match tokio::time::timeout_at(by, up.read_buf(rbuf)).await {
                Ok(Ok(n)) if n > 0 => any = true,
                Ok(Ok(_)) => {
                    return Err((UpstreamError::Protocol("closed before answering"), !any))
                }
                Ok(Err(e)) => return Err((UpstreamError::Connect(e), !any)),
                Err(_) => return Err((UpstreamError::Timeout, false)),
            }
        }
    }

    /// Answers a failure of ours; `close`: the client's body was not all read, so the
    /// connection closes after it.
    pub(super) async fn fail<S: AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        failure: Failure,
        close: bool,
    ) -> Ended {
        let res = failure.response();
        let outcome = Outcome::of_failure(res.status());
        write_ours(client, res, close, outcome).await
    }

    /// The guard's 503 for a plain request (`Admit::Refuse`): its body read and dropped
    /// first, up to `proxy.drain_limit` within 2 s, as the hyper path does (`proxy::drain`);
    /// past that, the answer says `Connection: close` and the rest is never read.
    pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        framing: Framing,
        html: bool,
        close: bool,
    ) -> Ended {
        let drained = drain(client, inb, framing, self.proxy.drain_limit()).await;
        let close = close || !drained;
        let res = self.proxy.refusal(html, close);
        write_ours(client, res, close, Outcome::Refused).await
    }
}

/// Writes an answer of ours (a failure or the 503: a whole body); `close`: with
/// `Connection: close`, and the connection is not kept.
async fn write_ours<S: AsyncWrite + Unpin>(
    client: &mut S,
    res: http::Response<crate::http::Body>,
    close: bool,
    outcome: Outcome,
) -> Ended {
    let status = res.status();
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let closes = close || parts.headers.contains_key(http::header::CONNECTION);
    let mut out = buffers::take();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    super::date::append(&mut out);
    if closes {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    let written = client.write_all(&out).await.is_ok() && client.flush().await.is_ok();
    buffers::give(out);
    Ended {
        status,
        outcome,
        keep_alive: written && !closes,
        bytes_out: body.len() as u64,
    }
}

/// Streams the response body to the client after `out` (the head); `Ok(bytes)`: all of it
/// went out and the upstream's message ended where it said; `Err(bytes)`: cut short.
pub(super) async fn stream_body<S: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
    client: &mut S,
    up: &mut R,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    head: &response::Head,
) -> Result<u64, u64> {
    let mut sent = 0u64;
    let mut decoder = Decoder::default();
    let mut left = match head.body {
        Body::Length(n) => n,
        _ => 0,
    };
    loop {
        // Move what `rbuf` holds of the body into `out`, framed for the client.
        let done = match head.body {
            Body::None => true,
            Body::Length(_) => {
                let n = left.min(rbuf.len() as u64) as usize;
                out.extend_from_slice(&rbuf[..n]);
                rbuf.drain(..n);
                sent += n as u64;
                left -= n as u64;
                left == 0
            }
            Body::Chunked => {
                let mut n = 0u64;
                let Ok(decoded) = decoder.decode(rbuf, |data| {
                    n += data.len() as u64;
                    chunked::encode(out, data)
                }) else {
                    let _ = client.write_all(out).await;
                    return Err(sent);
                };
                sent += n;
                rbuf.drain(..decoded.used);
                if decoded.done {
                    out.extend_from_slice(chunked::END);
                }
                decoded.done
            }
            Body::Close => {
                sent += rbuf.len() as u64;
                chunked::encode(out, rbuf);
                rbuf.clear();
                false
            }
        };
        if !out.is_empty() {
            if client.write_all(out).await.is_err() {
                return Err(sent);
            }
            out.clear();
        }
        if done {
            return match client.flush().await {
                Ok(()) => Ok(sent),
                Err(_) => Err(sent),
            };
        }
        if client.flush().await.is_err() {
            return Err(sent);
        }
        rbuf.reserve(buffers::SIZE);
        match up.read_buf(rbuf).await {
            Ok(0) if head.body == Body::Close => {
                out.extend_from_slice(chunked::END);
                let ok = client.write_all(out).await.is_ok() && client.flush().await.is_ok();
                out.clear();
                return if ok { Ok(sent) } else { Err(sent) };
            }
            Ok(n) if n > 0 => {}
            _ => return Err(sent),
        }
    }
}
