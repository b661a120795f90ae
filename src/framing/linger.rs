//! Lingering close, as nginx's `lingering_close`: a connection that closes with part of a
//! request still unread (a body refused for its declared size, a guarded upload past
//! `proxy.drain_limit`, a refused framing) is not closed at once. Closing a socket with
//! unread bytes, or with more still on the way, makes the kernel answer them with a reset,
//! and clients that are still sending (a browser uploading, hyper, Go) then report the reset
//! instead of the answer already sent to them. So the write side is shut first (the answer
//! and a FIN go out), then whatever the client still sends is read and dropped, never
//! parsed, until it closes its side, for at most [`LINGER_FOR`] in all and [`LINGER_IDLE`]
//! between two reads (nginx's `lingering_time` and `lingering_timeout` defaults). Not after
//! a 408: a client too slow to send its body in time is not waited for any longer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The longest a connection lingers.
pub const LINGER_FOR: Duration = Duration::from_secs(30);
/// The longest it waits for the client's next bytes while lingering.
pub const LINGER_IDLE: Duration = Duration::from_secs(5);

/// Whether a connection that closes after an answer with `status` may linger.
pub fn may_follow(status: StatusCode) -> bool {
    status != StatusCode::REQUEST_TIMEOUT
}

/// One lingering close in progress: polled until the client has closed its side or the
/// time is up. Errors end it too: the connection is gone either way.
pub struct Linger {
    shut: bool,
    until: Instant,
    wait: Pin<Box<Sleep>>,
}

impl Default for Linger {
    fn default() -> Self {
        Self::new()
    }
}

impl Linger {
    pub fn new() -> Self {
        let now = Instant::now();
        Linger {
            shut: false,
            until: now + LINGER_FOR,
            wait: Box::pin(tokio::time::sleep_until(now + LINGER_IDLE)),
        }
    }

    /// Shuts `io`'s write side, then reads and drops until the client is done.
    pub fn poll<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
    ) -> Poll<io::Result<()>> {
        if !self.shut {
            ready!(Pin::new(&mut *io).poll_shutdown(cx))?;
            self.shut = true;
        }
        let mut scratch = [0u8; 4096];
        // A few reads per poll, then the task yields: a client sending as fast as it can
        // shares the thread like any other.
        for _ in 0..16 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let now = Instant::now();
                    if now >= self.until {
                        return Poll::Ready(Ok(()));
                    }
                    self.wait
                        .as_mut()
                        .reset((now + LINGER_IDLE).min(self.until));
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    ready!(self.wait.as_mut().poll(cx));
                    return Poll::Ready(Ok(()));
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The same, as a future (for code that owns its stream).
    pub async fn close<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
        let mut linger = Linger::new();
        let _ = std::future::poll_fn(|cx| linger.poll(cx, io)).await;
    }
}
