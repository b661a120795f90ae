//! The answers of a native exchange going to the client: the upstream's (its head read and
//! rewritten by [`super::response`], its body streamed and re-framed: [`stream_body`]), or
//! ours (a failure through `http::Failure`, the one map from failure to status, or the
//! guard's 503 from `Proxy::refusal`: [`write_ours`]).

use std::io::IoSlice;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::deadline;
use crate::framing::chunked::Decoder;
use crate::http::Failure;
use crate::metrics::Outcome;
use crate::stale::{Asked, Keeping};
use crate::upstream::UpstreamError;

use super::chunked;
use super::exchange::Ended;
use super::inbound::Inbound;
use super::request::Framing;
use super::response::{self, Body};
use super::upload::drain;
use super::{buffers, Native};

/// Room the upstream's answer is first read into: a head and a 16 KiB body in one read
/// (the buffer, grown once, stays in the pool at this size).
const ANSWER_ROOM: usize = 2 * buffers::SIZE;

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
            rbuf.reserve(ANSWER_ROOM.max(rbuf.len() + buffers::SIZE) - rbuf.len());
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
    /// connection closes after it. For a read asked of `[stale]` (`asked`), a failure that
    /// is the app's (refused, reset, too slow) is answered with its stored answer instead,
    /// when there is one (`Stale::instead_of`, as on the hyper path).
    pub(super) async fn fail<S: AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        failure: Failure,
        close: bool,
        reply: Reply<'_>,
    ) -> Ended {
        let res = failure.response();
        let stale = self.proxy.stale().zip(reply.asked);
        if let Some(stored) = stale.and_then(|(s, asked)| s.instead_of(asked, res.status(), true)) {
            return write_ours(
                client,
                stored,
                close,
                Outcome::Forwarded,
                reply.head_request,
            )
            .await;
        }
        let outcome = Outcome::of_failure(res.status());
        write_ours(client, res, close, outcome, reply.head_request).await
    }

    /// The guard's 503 for a plain request (`Admit::Refuse`): its body read and dropped
    /// first, up to `proxy.drain_limit` within 2 s, as the hyper path does (`proxy::drain`);
    /// past that, the answer says `Connection: close` and the rest is never parsed (read and
    /// dropped by the lingering close, `framing::linger`).
    pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        framing: Framing,
        html: bool,
        close: bool,
        head_request: bool,
    ) -> Ended {
        let drained = drain(client, inb, framing, self.proxy.drain_limit()).await;
        let close = close || !drained;
        let refused = self.proxy.refused(html);
        let mut out = buffers::take();
        out.extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: ");
        out.extend_from_slice(response::itoa(refused.retry_after, &mut [0u8; 20]));
        out.extend_from_slice(b"\r\ncache-control: no-store\r\ncontent-type: ");
        out.extend_from_slice(refused.content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
        end_head(&mut out, refused.body.len(), true, close);
        let body: &[u8] = if head_request { &[] } else { &refused.body };
        send(
            client,
            out,
            body,
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Refused,
            close,
        )
        .await
    }

    /// A whole answer not streamed from the upstream (a `[stale]` answer served while
    /// guarded, a public read), after the request body is drained as for the 503.
    pub async fn answer_whole<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        framing: Framing,
        res: http::Response<crate::http::Body>,
        head_request: bool,
        close: bool,
    ) -> Ended {
        let drained = drain(client, inb, framing, self.proxy.drain_limit()).await;
        let close = close || !drained;
        write_ours(client, res, close, Outcome::Forwarded, head_request).await
    }
}

/// What an answer of ours depends on besides the failure: a HEAD gets no body, and a read
/// asked of `[stale]` may get its stored answer instead.
#[derive(Clone, Copy)]
pub struct Reply<'a> {
    pub head_request: bool,
    pub asked: Option<&'a Asked>,
}

/// Writes a whole answer (a failure, the 503, or a stored answer: its head as built,
/// framed by the body's length; no body after a HEAD); `close`: with `Connection: close`,
/// and the connection is not kept.
pub(super) async fn write_ours<S: AsyncWrite + Unpin>(
    client: &mut S,
    res: http::Response<crate::http::Body>,
    close: bool,
    outcome: Outcome,
    head_request: bool,
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
        // Framed here (a stored answer keeps the app's length; it is this body's).
        if name == http::header::CONNECTION
            || name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let dated = parts.headers.contains_key(http::header::DATE);
    end_head(&mut out, body.len(), !dated, closes);
    let body: &[u8] = if head_request { &[] } else { &body };
    send(client, out, body, status, outcome, closes).await
}

/// Ends a head of ours in `out`: the body's length, `Date` when `date`, `Connection: close`
/// when `close`, the blank line.
fn end_head(out: &mut Vec<u8>, len: usize, date: bool, close: bool) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(response::itoa(len as u64, &mut [0u8; 20]));
    out.extend_from_slice(b"\r\n");
    if date {
        super::date::append(out);
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a head of ours (`out`, from the pool) and `body` in one write; the connection is
/// kept unless `close` or the write failed.
async fn send<S: AsyncWrite + Unpin>(
    client: &mut S,
    mut out: Vec<u8>,
    body: &[u8],
    status: StatusCode,
    outcome: Outcome,
    close: bool,
) -> Ended {
    out.extend_from_slice(body);
    let written = client.write_all(&out).await.is_ok() && client.flush().await.is_ok();
    buffers::give(out);
    Ended {
        status,
        outcome,
        keep_alive: written && !close,
        bytes_out: body.len() as u64,
    }
}

/// Streams the response body to the client after `out` (the head); `Ok(bytes)`: all of it
/// went out and the upstream's message ended where it said; `Err(bytes)`: cut short. `tee`:
/// a copy for `[stale]`, fed each piece as it passes and stored only when the answer ended
/// whole and reached the client (the caller's call, on `Ok`); emptied once it grows too large.
pub(super) async fn stream_body<S: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
    client: &mut S,
    up: &mut R,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    head: &response::Head,
    tee: &mut Option<Keeping>,
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
                // The head (until it is sent) and this piece of the body go out in one
                // write, from where they lie: the body is not copied.
                let n = left.min(rbuf.len() as u64) as usize;
                feed(tee, &rbuf[..n]);
                sent += n as u64;
                if write_both(client, out, &rbuf[..n]).await.is_err() {
                    return Err(sent);
                }
                out.clear();
                rbuf.drain(..n);
                left -= n as u64;
                left == 0
            }
            Body::Chunked => {
                let mut n = 0u64;
                let Ok(decoded) = decoder.decode(rbuf, |data| {
                    n += data.len() as u64;
                    feed(tee, data);
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
                feed(tee, rbuf);
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

/// Writes `a` then `b`, in as few `writev` calls as the socket takes.
async fn write_both<S: AsyncWrite + Unpin>(
    client: &mut S,
    mut a: &[u8],
    mut b: &[u8],
) -> std::io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = client
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

/// Copies a piece of the body into `tee`; an answer grown too large is not kept.
fn feed(tee: &mut Option<Keeping>, data: &[u8]) {
    if tee.as_mut().is_some_and(|copy| !copy.push(data)) {
        *tee = None;
    }
}
