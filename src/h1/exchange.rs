//! One request forwarded by the native engine: its head (already rewritten) and body to a
//! pooled upstream connection, the upstream's answer back, re-framed. The retry rules and
//! every timeout are `proxy::forward`'s and `upstream`'s: a request none of which reached
//! the upstream is tried again while `upstream_retry` lasts (idempotent methods), as is a
//! bodiless idempotent one whose connection broke before any answer; the upstream must
//! start its answer within `upstream_timeout` of the request's last byte; a client body
//! waits `body_idle_timeout` per read and `body_timeout` in all. Failures are answered
//! through `http::Failure` (the one map from failure to status).

use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::WriteHalf;

use crate::deadline;
use crate::http::Failure;
use crate::metrics::Outcome;
use crate::upstream::UpstreamError;

use super::chunked::{self, Decoder};
use super::inbound::Inbound;
use super::origin::{self, Conn};
use super::request::Framing;
use super::response::{self, Body};
use super::{buffers, Native};

/// The largest response head taken from the upstream: hyper's client read buffer limit.
const MAX_RESPONSE_HEAD: usize = 8192 + 4096 * 100;

/// How an exchange ended, for the connection and the accounting.
pub struct Ended {
    pub status: StatusCode,
    /// What was done, for the metrics and the access line.
    pub outcome: Outcome,
    /// The client connection may carry another request.
    pub keep_alive: bool,
    pub bytes_out: u64,
}

/// What is left of the request body to read from the client.
enum BodyIn {
    Length(u64),
    Chunked(Decoder),
}

impl BodyIn {
    fn done(&self) -> bool {
        match self {
            BodyIn::Length(n) => *n == 0,
            BodyIn::Chunked(d) => d.done(),
        }
    }
}

/// Why the request body did not all reach the upstream.
enum PumpError {
    Client(Failure),
    /// The upstream failed or stopped reading.
    Upstream,
    /// The upstream answered before the body was all sent: its first bytes are in the
    /// response buffer.
    Early,
}

/// The exchange's own knowledge of the request.
pub struct Ask<'a> {
    pub head: &'a [u8],
    pub framing: Framing,
    pub head_request: bool,
    pub idempotent: bool,
    /// The client asked to close, or the server is stopping.
    pub close: bool,
}

impl Native {
    pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        ask: Ask<'_>,
        stopping: impl Fn() -> bool,
    ) -> Ended {
        let began = Instant::now();
        let mut body = match ask.framing {
            Framing::Length(n) => BodyIn::Length(n),
            Framing::Chunked => BodyIn::Chunked(Decoder::default()),
        };
        let retry_until = ask
            .idempotent
            .then(|| deadline::after(began, self.upstream_retry));
        let replayable = ask.idempotent && body.done();
        let mut rbuf = buffers::take();
        let mut enc = buffers::take();
        let mut backoff = Duration::from_millis(25);
        let may_retry = |backoff: Duration| {
            retry_until.is_some_and(|until| deadline::after(Instant::now(), backoff) < until)
        };
        let ended = 'attempts: loop {
            let (mut up, pooled) = match self.origin.checkout().await {
                Ok(c) => c,
                Err(e) => {
                    if may_retry(backoff) {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                        continue;
                    }
                    tracing::warn!(error = %e, "upstream request failed");
                    break self
                        .fail(client, Failure::of_upstream(&e), !body.done())
                        .await;
                }
            };
            if up.tcp.write_all(ask.head).await.is_err() {
                // Nothing of the body was used: the next connection gets it all.
                if pooled || may_retry(backoff) {
                    if !pooled {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    continue;
                }
                break self
                    .fail(client, Failure::UpstreamNoAnswer, !body.done())
                    .await;
            }
            rbuf.clear();
            if !body.done() {
                let (mut ur, mut uw) = up.tcp.split();
                let pumped = self
                    .pump(
                        client,
                        inb,
                        &mut body,
                        &mut uw,
                        &mut enc,
                        &mut rbuf,
                        Some(&mut ur),
                    )
                    .await;
                match pumped {
                    Ok(()) => {}
                    Err(PumpError::Early) => {
                        let close = ask.close || stopping();
                        break self
                            .early(
                                client,
                                inb,
                                &mut body,
                                up,
                                &mut rbuf,
                                &mut enc,
                                ask.head_request,
                                close,
                            )
                            .await;
                    }
                    Err(PumpError::Client(f)) => {
                        if matches!(f, Failure::ClientBodyBroken) {
                            tracing::info!("client request body failed; not the upstream's fault");
                        }
                        break self.fail(client, f, true).await;
                    }
                    Err(PumpError::Upstream) => {
                        tracing::warn!("upstream failed while the request body was sent");
                        break self.fail(client, Failure::UpstreamNoAnswer, true).await;
                    }
                }
            }
            let sent = Instant::now();
            let close = ask.close || stopping();
            let mut out = std::mem::take(&mut enc);
            out.clear();
            let head = match self
                .response_head(&mut up.tcp, &mut rbuf, &mut out, ask.head_request, close)
                .await
            {
                Ok(head) => head,
                Err((e, nothing)) => {
                    enc = out;
                    if nothing && replayable && !matches!(e, UpstreamError::Timeout) {
                        if pooled {
                            continue;
                        }
                        if may_retry(backoff) {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_millis(500));
                            continue;
                        }
                    }
                    tracing::warn!(error = %e, "upstream request failed");
                    break self
                        .fail(client, Failure::of_upstream(&e), !body.done())
                        .await;
                }
            };
            self.metrics.upstream(sent.elapsed());
            let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let streamed = stream_body(client, &mut up.tcp, &mut rbuf, &mut out, &head).await;
            enc = out;
            let (bytes_out, complete) = match streamed {
                Ok(n) => (n, true),
                Err(n) => (n, false),
            };
            if complete && head.reusable && rbuf.is_empty() {
                origin::checkin(up);
            }
            break 'attempts Ended {
                status,
                outcome: Outcome::Forwarded,
                keep_alive: complete && !close,
                bytes_out,
            };
        };
        buffers::give(rbuf);
        buffers::give(enc);
        ended
    }

    /// Sends the rest of the request body: what `inb` holds, then what the client sends.
    /// While waiting for the client, watches the upstream: an answer before the body is all
    /// sent ends the upload (its first bytes are left in `rbuf`).
    #[allow(clippy::too_many_arguments)]
    async fn pump<S: AsyncRead + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        body: &mut BodyIn,
        up: &mut WriteHalf<'_>,
        enc: &mut Vec<u8>,
        rbuf: &mut Vec<u8>,
        mut watch: Option<&mut tokio::net::tcp::ReadHalf<'_>>,
    ) -> Result<(), PumpError> {
        let all_by = deadline::after_tokio(tokio::time::Instant::now(), self.body_timeout);
        loop {
            // Never past a point the checker refused.
            let end = match inb.stop.and_then(|s| s.refused.map(|_| s.at)) {
                Some(at) => at.max(inb.start),
                None => inb.buf.len(),
            };
            let avail = &inb.buf[inb.start..end];
            match body {
                BodyIn::Length(left) => {
                    let n = (*left).min(avail.len() as u64) as usize;
                    if n > 0 {
                        self.send(up, &avail[..n]).await?;
                        inb.start += n;
                        *left -= n as u64;
                    }
                }
                BodyIn::Chunked(decoder) => {
                    enc.clear();
                    let decoded = decoder
                        .decode(avail, |data| chunked::encode(enc, data))
                        .map_err(|v| PumpError::Client(Failure::Framing(v)))?;
                    inb.start += decoded.used;
                    if decoded.done {
                        enc.extend_from_slice(chunked::END);
                    }
                    if !enc.is_empty() {
                        self.send(up, enc).await?;
                    }
                }
            }
            if body.done() {
                return Ok(());
            }
            if let Some(v) = inb.refused_before(inb.start + 1) {
                return Err(PumpError::Client(Failure::Framing(v)));
            }
            let now = tokio::time::Instant::now();
            if now >= all_by {
                return Err(PumpError::Client(Failure::ClientBodyTimeout));
            }
            let wait = deadline::after_tokio(now, self.body_idle_timeout).min(all_by);
            loop {
                tokio::select! {
                    biased;
                    read = tokio::time::timeout_at(wait, inb.fill(client)) => match read {
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            return Err(PumpError::Client(Failure::ClientBodyBroken))
                        }
                        Ok(Ok(_)) => break,
                        Err(_) => return Err(PumpError::Client(Failure::ClientBodyTimeout)),
                    },
                    ready = readable(&mut watch) => {
                        let Some(ur) = watch.as_mut().filter(|_| ready.is_ok()) else {
                            return Err(PumpError::Upstream);
                        };
                        rbuf.reserve(buffers::SIZE);
                        match ur.as_ref().try_read_buf(rbuf) {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                            Ok(n) if n > 0 => return Err(PumpError::Early),
                            _ => return Err(PumpError::Upstream),
                        }
                    }
                }
            }
        }
    }

    /// The upstream answered before the request body was all sent: the answer goes to the
    /// client while the rest of the body still goes up (as on the hyper path); the
    /// connection carries another request only if both end well. The upstream connection
    /// is not reused.
    #[allow(clippy::too_many_arguments)]
    async fn early<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        body: &mut BodyIn,
        mut up: Conn,
        rbuf: &mut Vec<u8>,
        enc: &mut Vec<u8>,
        head_request: bool,
        close: bool,
    ) -> Ended {
        let (mut ur, mut uw) = up.tcp.split();
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut out = buffers::take();
        let mut scratch = Vec::new();
        let pump = self.pump(&mut cr, inb, body, &mut uw, enc, &mut scratch, None);
        let answer = async {
            let sent = Instant::now();
            match self
                .response_head(&mut ur, rbuf, &mut out, head_request, close)
                .await
            {
                Ok(head) => {
                    self.metrics.upstream(sent.elapsed());
                    let status =
                        StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
                    let streamed = stream_body(&mut cw, &mut ur, rbuf, &mut out, &head).await;
                    let (bytes_out, complete) = match streamed {
                        Ok(n) => (n, true),
                        Err(n) => (n, false),
                    };
                    Ended {
                        status,
                        outcome: Outcome::Forwarded,
                        keep_alive: complete && !close,
                        bytes_out,
                    }
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, "upstream request failed");
                    self.fail(&mut cw, Failure::of_upstream(&e), true).await
                }
            }
        };
        let (pumped, mut ended) = tokio::join!(pump, answer);
        buffers::give(out);
        if pumped.is_err() {
            ended.keep_alive = false;
        }
        ended
    }

    /// One write to the upstream, bounded like a client read: an upstream that stopped
    /// reading (it answered early) must not hold the request forever.
    async fn send(&self, up: &mut WriteHalf<'_>, bytes: &[u8]) -> Result<(), PumpError> {
        match tokio::time::timeout(self.body_idle_timeout, up.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PumpError::Upstream),
            Err(_) => Err(PumpError::Early),
        }
    }

    /// Reads the upstream's response head into `rbuf` (after any 1xx) and writes the
    /// client's into `out`; on failure, whether no byte of an answer came at all.
    async fn response_head<R: AsyncRead + Unpin>(
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
    async fn fail<S: AsyncWrite + Unpin>(
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

/// Reads and drops a request body of at most `limit` bytes, for 2 s at most (as
/// `proxy::drain`); false when it could not, and the connection must close.
async fn drain<S: AsyncRead + Unpin>(
    client: &mut S,
    inb: &mut Inbound,
    framing: Framing,
    limit: u64,
) -> bool {
    let mut body = match framing {
        Framing::Length(0) => return true,
        Framing::Length(n) if n > limit => return false,
        Framing::Length(n) => BodyIn::Length(n),
        Framing::Chunked => BodyIn::Chunked(Decoder::default()),
    };
    let by = deadline::after_tokio(tokio::time::Instant::now(), Duration::from_secs(2));
    let mut seen = 0u64;
    loop {
        let end = match inb.stop.and_then(|s| s.refused.map(|_| s.at)) {
            Some(at) => at.max(inb.start),
            None => inb.buf.len(),
        };
        let avail = &inb.buf[inb.start..end];
        match &mut body {
            BodyIn::Length(left) => {
                let n = (*left).min(avail.len() as u64);
                inb.start += n as usize;
                *left -= n;
            }
            BodyIn::Chunked(decoder) => {
                let Ok(decoded) = decoder.decode(avail, |d| seen += d.len() as u64) else {
                    return false;
                };
                inb.start += decoded.used;
                if seen > limit {
                    return false;
                }
            }
        }
        if body.done() {
            return true;
        }
        if inb.refused_before(inb.start + 1).is_some() {
            return false;
        }
        match tokio::time::timeout_at(by, inb.fill(client)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
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

/// Resolves when the watched upstream has something to read (or never, unwatched).
async fn readable(watch: &mut Option<&mut tokio::net::tcp::ReadHalf<'_>>) -> std::io::Result<()> {
    match watch {
        Some(ur) => ur.as_ref().readable().await,
        None => std::future::pending().await,
    }
}

/// Streams the response body to the client after `out` (the head); `Ok(bytes)`: all of it
/// went out and the upstream's message ended where it said; `Err(bytes)`: cut short.
async fn stream_body<S: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
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
