//! A request body on its way: streamed from the client to the upstream while watching for
//! an early answer ([`Native::pump`]), or read and dropped before the guard's 503
//! ([`drain`]). Every byte stays behind the framing checker's stops; a chunked body is
//! decoded by `crate::framing::chunked` and re-framed by [`super::chunked`]. The timeouts are the hyper path's:
//! `body_idle_timeout` per client read, `body_timeout` in all.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::deadline;
use crate::framing::chunked::Decoder;
use crate::http::Failure;

use super::chunked;
use super::inbound::Inbound;
use super::request::Framing;
use super::{buffers, Native};

/// What is left of the request body to read from the client.
pub(super) enum BodyIn {
    Length(u64),
    Chunked(Decoder),
}

impl BodyIn {
    pub(super) fn done(&self) -> bool {
        match self {
            BodyIn::Length(n) => *n == 0,
            BodyIn::Chunked(d) => d.done(),
        }
    }
}

/// Why the request body did not all reach the upstream.
pub(super) enum PumpError {
    Client(Failure),
    /// The upstream failed or stopped reading.
    Upstream,
    /// The upstream answered before the body was all sent: its first bytes are in the
    /// response buffer.
    Early,
}

impl Native {
    /// Sends the rest of the request body: what `inb` holds, then what the client sends.
    /// While waiting for the client, watches the upstream: an answer before the body is all
    /// sent ends the upload (its first bytes are left in `rbuf`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn pump<S: AsyncRead + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        body: &mut BodyIn,
        up: &mut WriteHalf<'_>,
        enc: &mut Vec<u8>,
        rbuf: &mut Vec<u8>,
        mut watch: Option<&mut ReadHalf<'_>>,
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

    /// One write to the upstream, bounded like a client read: an upstream that stopped
    /// reading (it answered early) must not hold the request forever.
    async fn send(&self, up: &mut WriteHalf<'_>, bytes: &[u8]) -> Result<(), PumpError> {
        match tokio::time::timeout(self.body_idle_timeout, up.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PumpError::Upstream),
            Err(_) => Err(PumpError::Early),
        }
    }
}

/// Reads and drops a request body of at most `limit` bytes, for 2 s at most (as
/// `proxy::drain`); false when it could not, and the connection must close.
pub(super) async fn drain<S: AsyncRead + Unpin>(
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

/// Resolves when the watched upstream has something to read (or never, unwatched).
async fn readable(watch: &mut Option<&mut ReadHalf<'_>>) -> std::io::Result<()> {
    match watch {
        Some(ur) => ur.as_ref().readable().await,
        None => std::future::pending().await,
    }
}
