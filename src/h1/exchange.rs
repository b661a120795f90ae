//! One request forwarded by the native engine: its head (already rewritten) and body to a
//! pooled upstream connection, the upstream's answer back, re-framed. The retry rules and
//! every timeout are `proxy::forward`'s and `upstream`'s: a request none of which reached
//! the upstream is tried again while `upstream_retry` lasts (idempotent methods), as is a
//! bodiless idempotent one whose connection broke before any answer; the upstream must
//! start its answer within `upstream_timeout` of the request's last byte; a client body
//! waits `body_idle_timeout` per read and `body_timeout` in all ([`super::upload`]). Answers
//! go to the client through [`super::reply`].

use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::deadline;
use crate::framing::chunked::Decoder;
use crate::http::Failure;
use crate::metrics::Outcome;
use crate::stale::Asked;
use crate::upstream::UpstreamError;

use super::inbound::Inbound;
use super::origin::{self, Conn};
use super::reply::Reply;
use super::request::Framing;
use super::upload::{BodyIn, PumpError};
use super::{buffers, Native};

/// How an exchange ended, for the connection and the accounting.
pub struct Ended {
    pub status: StatusCode,
    /// What was done, for the metrics and the access line.
    pub outcome: Outcome,
    /// The client connection may carry another request.
    pub keep_alive: bool,
    pub bytes_out: u64,
}

/// The exchange's own knowledge of the request.
pub struct Ask<'a> {
    pub head: &'a [u8],
    pub framing: Framing,
    pub head_request: bool,
    pub idempotent: bool,
    /// The client asked to close, or the server is stopping.
    pub close: bool,
    /// A read asked of `[stale]` (`Stale::ask`): answered from the store when the app
    /// fails, its answer teed into the store when wanted ([`super::stored`]).
    pub stale: Option<Asked>,
}

impl Native {
    pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        ask: Ask<'_>,
        stopping: impl Fn() -> bool,
    ) -> Ended {
        let retry_until = ask
            .idempotent
            .then(|| deadline::after(Instant::now(), self.upstream_retry));
        self.exchange_until(client, inb, ask, retry_until, stopping)
            .await
    }

    /// [`Native::exchange`], retried until `retry_until` (`upstream_retry` for an
    /// idempotent request; for a held write, the end of its hold budget, as on the hyper
    /// path): a request none of which reached the app, or, idempotent and bodiless, none of
    /// whose answer came back.
    pub(super) async fn exchange_until<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        ask: Ask<'_>,
        retry_until: Option<Instant>,
        stopping: impl Fn() -> bool,
    ) -> Ended {
        let mut body = match ask.framing {
            Framing::Length(n) => BodyIn::Length(n),
            Framing::Chunked => BodyIn::Chunked(Decoder::default()),
        };
        let replayable = ask.idempotent && body.done();
        let mut asked = ask.stale;
        let reply = |asked| Reply {
            head_request: ask.head_request,
            asked,
        };
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
                        .fail(
                            client,
                            Failure::of_upstream(&e),
                            !body.done(),
                            reply(asked.as_ref()),
                        )
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
                    .fail(
                        client,
                        Failure::UpstreamNoAnswer,
                        !body.done(),
                        reply(asked.as_ref()),
                    )
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
                        // Boxed: the rare case does not size every exchange's future.
                        let early = self.early(
                            client,
                            inb,
                            &mut body,
                            up,
                            &mut rbuf,
                            &mut enc,
                            close,
                            ask.head_request,
                            asked.take(),
                        );
                        break Box::pin(early).await;
                    }
                    Err(PumpError::Client(f)) => {
                        if matches!(f, Failure::ClientBodyBroken) {
                            tracing::info!("client request body failed; not the upstream's fault");
                        }
                        break self.fail(client, f, true, reply(asked.as_ref())).await;
                    }
                    Err(PumpError::Upstream) => {
                        tracing::warn!("upstream failed while the request body was sent");
                        break self
                            .fail(
                                client,
                                Failure::UpstreamNoAnswer,
                                true,
                                reply(asked.as_ref()),
                            )
                            .await;
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
                        .fail(
                            client,
                            Failure::of_upstream(&e),
                            !body.done(),
                            reply(asked.as_ref()),
                        )
                        .await;
                }
            };
            self.metrics.upstream(sent.elapsed());
            let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let delivered = self
                .deliver(
                    client,
                    &mut up.tcp,
                    &mut rbuf,
                    &mut out,
                    &head,
                    asked.take(),
                    ask.head_request,
                    close,
                )
                .await;
            enc = out;
            let streamed = match delivered {
                Ok(streamed) => streamed,
                // The stored answer went in place of the app's failed one.
                Err(ended) => break 'attempts ended,
            };
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
        close: bool,
        head_request: bool,
        asked: Option<Asked>,
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
                    let delivered = self
                        .deliver(
                            &mut cw,
                            &mut ur,
                            rbuf,
                            &mut out,
                            &head,
                            asked,
                            head_request,
                            close,
                        )
                        .await;
                    let streamed = match delivered {
                        Ok(streamed) => streamed,
                        Err(ended) => return ended,
                    };
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
                    let reply = Reply {
                        head_request,
                        asked: asked.as_ref(),
                    };
                    self.fail(&mut cw, Failure::of_upstream(&e), true, reply)
                        .await
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
}
