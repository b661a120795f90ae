//! [`Framed`]: a connection's read side passed through the [`Checker`] before hyper sees it,
//! and the per-connection [`Verdict`] through which the listener's service answers for it.
//!
//! Only checked bytes reach hyper; a request head is handed on whole once it is checked. On a
//! refused head, hyper gets every earlier (checked) byte and then a sentinel request in place
//! of the refused one: hyper answers the earlier requests first, in order, then passes the
//! sentinel to the service, which answers it with the refusal ([`Verdict::before`]: 400 +
//! `Connection: close`) without calling the handler; hyper then closes the connection. Nothing after the refused
//! bytes is ever parsed. A refused chunked body ends in a read error, so the request's body
//! fails (the upstream never gets a complete request) and its answer becomes the refusal.
//! When hyper closes a connection with part of a request unread, the close lingers
//! ([`super::linger`]: the rest is read and dropped) so the client reads its answer rather
//! than a reset.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{ready, Context, Poll};

use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::linger::{self, Linger};
use super::{Checker, Scan, Violation};

/// The method of the request handed to hyper in place of a refused one. A client may send it
/// too: it then gets the refusal it asked for, and only once a violation was found.
pub const SENTINEL_METHOD: &str = "WRITEGUARD-REFUSED";
const SENTINEL: &[u8] =
    b"WRITEGUARD-REFUSED / HTTP/1.1\r\nhost: writeguard\r\nconnection: close\r\n\r\n";

const CHECKING: u8 = 0;
const UNCHECKED: u8 = 1;
const HEAD_REFUSED: u8 = 0x40;
const BODY_REFUSED: u8 = 0x80;

/// What the framing check of a connection has come to, shared between [`Framed`] (which
/// sets it) and the service (which reads it, one relaxed load per request).
#[derive(Debug, Default)]
pub struct Verdict {
    state: AtomicU8,
    /// An answer said the connection must not linger as it closes ([`linger::may_follow`]).
    no_linger: AtomicBool,
}

impl Verdict {
    fn set(&self, v: u8) {
        self.state.store(v, Ordering::Release);
    }

    /// The violation to answer instead of calling the handler: only for the sentinel.
    pub fn before<B>(&self, req: &http::Request<B>) -> Option<Violation> {
        let v = self.state.load(Ordering::Acquire);
        if v & HEAD_REFUSED == 0 || req.method().as_str() != SENTINEL_METHOD {
            return None;
        }
        Violation::from_u8(v & !HEAD_REFUSED)
    }

    /// What to do with the answer the handler gave (`status`, to a CONNECT if `connect`):
    /// refuse instead if the request's body was refused meanwhile; close the connection
    /// after it if the checking stopped (an upgrade was asked) and the answer does not
    /// switch protocols, so hyper never parses another request unchecked. A 408 also marks
    /// the connection as one that closes without lingering.
    pub fn after(&self, connect: bool, status: StatusCode) -> After {
        if !linger::may_follow(status) {
            self.no_linger.store(true, Ordering::Relaxed);
        }
        let v = self.state.load(Ordering::Acquire);
        if v == CHECKING {
            return After::Send;
        }
        if v & BODY_REFUSED != 0 {
            if let Some(violation) = Violation::from_u8(v & !BODY_REFUSED) {
                return After::Refuse(violation);
            }
        }
        let tunnel = status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success());
        if v == UNCHECKED && !tunnel {
            After::SendAndClose
        } else {
            After::Send
        }
    }
}

/// What [`Verdict::after`] says of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Send,
    /// Send it with `Connection: close`.
    SendAndClose,
    /// Answer this violation instead.
    Refuse(Violation),
}

/// Whether the service must remember the method to judge the answer (CONNECT tunnels).
pub fn is_connect(method: &Method) -> bool {
    method == Method::CONNECT
}

/// The error a refused body ends with.
#[derive(Debug, thiserror::Error)]
#[error("request framing refused: {}", .0.detail())]
pub struct Refused(pub Violation);

enum Mode {
    Checking,
    Unchecked,
    /// Handing hyper the sentinel; this many bytes of it are out.
    Sentinel(usize),
    /// Reads fail from now on.
    Failed(Violation),
}

/// A stream whose reads are checked by a [`Checker`]; writes pass straight through.
pub struct Framed<S> {
    inner: S,
    checker: Checker,
    mode: Mode,
    /// Read but not handed on yet: `ready` checked bytes, then an unfinished head.
    held: Vec<u8>,
    ready: usize,
    verdict: std::sync::Arc<Verdict>,
    /// Set when hyper closes the connection with part of a request unread.
    linger: Option<Box<Linger>>,
}

impl<S> Framed<S> {
    pub fn new(inner: S, checker: Checker, verdict: std::sync::Arc<Verdict>) -> Self {
        Framed {
            inner,
            checker,
            mode: Mode::Checking,
            held: Vec::new(),
            ready: 0,
            verdict,
            linger: None,
        }
    }

    /// Whether the client may still be sending a request when the connection closes: part
    /// of one was read (or refused) and not all of it. Not known past an upgrade or h2c.
    fn unread(&self) -> bool {
        if self.verdict.no_linger.load(Ordering::Relaxed) {
            return false;
        }
        match self.mode {
            Mode::Checking => !self.held.is_empty() || !self.checker.between_requests(),
            Mode::Unchecked => false,
            Mode::Sentinel(_) | Mode::Failed(_) => true,
        }
    }

    /// Acts on a scan of `len` bytes; returns how many of them may be handed on.
    fn judge(&mut self, scan: Scan, len: usize) -> usize {
        match scan {
            Scan::Checking { settled } => settled,
            Scan::Unchecked { .. } => {
                self.mode = Mode::Unchecked;
                self.verdict.set(UNCHECKED);
                len
            }
            Scan::Refused {
                at,
                violation,
                in_head,
            } => {
                if in_head {
                    self.verdict.set(HEAD_REFUSED | violation as u8);
                    self.mode = Mode::Sentinel(0);
                } else {
                    self.mode = Mode::Failed(violation);
                }
                at
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                if this.held.is_empty() {
                    // Not kept for the next head: an idle connection holds no buffer here.
                    this.held = Vec::new();
                }
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Checking => {}
                Mode::Unchecked => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Mode::Sentinel(sent) if sent == SENTINEL.len() => {
                    // Nothing more, ever: hyper closes after answering the sentinel. Not an
                    // end of stream, which hyper would take for a client gone mid-request
                    // (and then not answer); its header timeout bounds any wait.
                    return Poll::Pending;
                }
                Mode::Sentinel(sent) => {
                    let n = (SENTINEL.len() - sent).min(buf.remaining());
                    buf.put_slice(&SENTINEL[sent..sent + n]);
                    this.mode = Mode::Sentinel(sent + n);
                    return Poll::Ready(Ok(()));
                }
                Mode::Failed(violation) => {
                    this.verdict.set(BODY_REFUSED | violation as u8);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        Refused(violation),
                    )));
                }
            }
            if this.held.is_empty() {
                // The hot path: read straight into hyper's buffer, check in place.
                let start = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let len = buf.filled().len() - start;
                if len == 0 {
                    return Poll::Ready(Ok(()));
                }
                let scan = this.checker.scan(&buf.filled()[start..]);
                let pass = this.judge(scan, len);
                if pass < len {
                    if matches!(this.mode, Mode::Checking) {
                        this.held.extend_from_slice(&buf.filled()[start + pass..]);
                    }
                    buf.set_filled(start + pass);
                }
                if pass > 0 {
                    return Poll::Ready(Ok(()));
                }
            } else {
                // An unfinished head is held: read more behind it and check it again.
                let mut more = [0u8; 4096];
                let mut rb = ReadBuf::new(&mut more);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                if rb.filled().is_empty() {
                    // The client left mid-head: hyper sees the end of the stream.
                    this.held.clear();
                    return Poll::Ready(Ok(()));
                }
                this.held.extend_from_slice(rb.filled());
                let scan = this.checker.scan(&this.held);
                let pass = this.judge(scan, this.held.len());
                if !matches!(this.mode, Mode::Checking | Mode::Unchecked) {
                    this.held.truncate(pass);
                }
                this.ready = pass;
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// hyper shuts the stream down as it closes the connection: with part of a request
    /// unread, that is a lingering close ([`Linger`]).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() && this.unread() {
            this.linger = Some(Box::default());
        }
        match &mut this.linger {
            Some(linger) => linger.poll(cx, &mut this.inner),
            None => Pin::new(&mut this.inner).poll_shutdown(cx),
        }
    }
}
