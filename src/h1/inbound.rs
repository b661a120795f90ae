//! The client's side of a native connection: the bytes read and not yet used, every one of
//! them run through the framing checker (`crate::framing::Checker`) as it arrives, exactly
//! as the hyper path's `Framed` does. Where the checker stops (an upgrade, CONNECT, an h2c
//! preface, or a refusal) is remembered: no byte at or past that point is ever acted on by
//! the native engine; the request there is handed to the hyper path, whose own checker
//! finds the same thing and answers it as it always has.

use std::future::Future;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::framing::{Checker, Scan, Violation};

use super::buffers;

/// Where the checker stopped, as an index into the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub at: usize,
    /// `Some`: refused (inside a body when `!in_head`); `None`: not HTTP/1 from the end of
    /// the head before `at` on.
    pub refused: Option<(Violation, bool)>,
}

pub struct Inbound {
    checker: Checker,
    /// Taken from the pool while a request is in flight; empty (no allocation) while idle.
    pub buf: Vec<u8>,
    /// The first byte not used yet.
    pub start: usize,
    /// `buf[..checked]` is settled by the checker.
    checked: usize,
    pub stop: Option<Stop>,
}

impl Inbound {
    pub fn new(checker: Checker) -> Self {
        Inbound {
            checker,
            buf: Vec::new(),
            start: 0,
            checked: 0,
            stop: None,
        }
    }

    /// Bytes read and not used yet.
    pub fn unused(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Whether the buffer holds nothing: it then goes back to the pool.
    pub fn release_if_empty(&mut self) {
        if self.start == self.buf.len() && self.buf.capacity() > 0 {
            buffers::give(std::mem::take(&mut self.buf));
            self.moved_out(self.start);
        }
    }

    /// For a long wait (a held request): the unused bytes moved to an allocation of their
    /// own size (none when there are none) and the pool buffer given back. The next read, or
    /// [`Inbound::regrow`], takes one from the pool again.
    pub fn shrink(&mut self) {
        if self.buf.capacity() == 0 {
            return;
        }
        let pooled = std::mem::take(&mut self.buf);
        self.buf = pooled[self.start..].to_vec();
        buffers::give(pooled);
        self.moved_out(self.start);
    }

    /// After [`Inbound::shrink`]: the unused bytes back in a pool buffer, with room to read.
    pub fn regrow(&mut self) {
        if self.buf.capacity() > 0 && self.buf.capacity() < buffers::SIZE {
            let mut pooled = buffers::take();
            pooled.extend_from_slice(&self.buf[self.start..]);
            self.buf = pooled;
            self.moved_out(self.start);
        }
    }

    /// The first `n` bytes of the buffer are gone: positions follow.
    fn moved_out(&mut self, n: usize) {
        self.start -= n;
        self.checked = self.checked.saturating_sub(n);
        if let Some(stop) = &mut self.stop {
            stop.at = stop.at.saturating_sub(n);
        }
    }

    /// Appends `bytes` and checks them.
    #[cfg(test)]
    fn push(&mut self, bytes: &[u8]) {
        self.room();
        self.buf.extend_from_slice(bytes);
        self.scan();
    }

    /// Tries to read the next request's first bytes between requests: a buffer is taken
    /// from the pool for the try and given back when nothing came, so a connection waiting
    /// for its client holds none (0: the client closed its side).
    pub fn poll_idle<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
    ) -> Poll<std::io::Result<usize>> {
        self.room();
        let read = std::pin::pin!(io.read_buf(&mut self.buf)).poll(cx);
        if matches!(read, Poll::Ready(Ok(n)) if n > 0) {
            self.scan();
        } else {
            self.release_if_empty();
        }
        read
    }

    /// Whether the buffer is full from its first unused byte (a head too large for it).
    pub fn full(&self) -> bool {
        self.start == 0 && self.buf.len() == self.buf.capacity() && self.buf.capacity() > 0
    }

    /// Reads more from `io` (0: the client closed its side, or the buffer is full).
    pub async fn fill<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> std::io::Result<usize> {
        self.room();
        if self.buf.len() == self.buf.capacity() {
            return Ok(0);
        }
        let n = io.read_buf(&mut self.buf).await?;
        self.scan();
        Ok(n)
    }

    /// The refusal the checker found before `end` (an index), if any.
    pub fn refused_before(&self, end: usize) -> Option<Violation> {
        self.stop
            .and_then(|s| s.refused.filter(|_| s.at < end).map(|(v, _)| v))
    }

    /// Whether the checker has passed everything up to `end` without stopping.
    pub fn settled(&self, end: usize) -> bool {
        self.checked >= end && self.stop.is_none_or(|s| s.at > end)
    }

    /// Makes room at the end: a buffer from the pool, or the used bytes moved out.
    fn room(&mut self) {
        if self.buf.capacity() == 0 {
            self.buf = buffers::take();
        }
        self.regrow();
        if self.start > 0 && (self.start == self.buf.len() || self.buf.len() == self.buf.capacity())
        {
            let start = self.start;
            self.buf.drain(..start);
            self.moved_out(start);
        }
    }

    fn scan(&mut self) {
        if self.stop.is_some() || self.checked >= self.buf.len() {
            return;
        }
        let from = self.checked;
        match self.checker.scan(&self.buf[from..]) {
            Scan::Checking { settled } => self.checked = from + settled,
            Scan::Unchecked { at } => {
                self.checked = from + at;
                self.stop = Some(Stop {
                    at: from + at,
                    refused: None,
                });
            }
            Scan::Refused {
                at,
                violation,
                in_head,
            } => {
                self.checked = from + at;
                self.stop = Some(Stop {
                    at: from + at,
                    refused: Some((violation, in_head)),
                });
            }
        }
    }

    /// Whether the client may still be sending a request (part of one read, or refused):
    /// the connection then closes lingering ([`crate::framing::linger`]).
    pub fn mid_request(&self) -> bool {
        self.stop.is_some() || !self.checker.between_requests()
    }

    /// Gives up the buffer's unused bytes (for the hyper path) and the buffer itself.
    pub fn into_unused(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(bytes: &[u8]) -> Inbound {
        let mut inb = Inbound::new(Checker::new(8192, false));
        for piece in bytes.chunks(7) {
            inb.push(piece);
        }
        inb
    }

    #[test]
    fn a_refused_head_stops_everything_from_its_first_byte() {
        let good = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut stream = good.to_vec();
        stream.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n");
        let inb = inbound(&stream);
        assert!(inb.settled(good.len() - 1));
        // The bad head starts right where the good request ends: not settled there.
        assert!(!inb.settled(good.len()));
        assert_eq!(inb.stop.map(|s| s.at), Some(good.len()));
        assert_eq!(inb.refused_before(good.len()), None);
        assert!(inb.refused_before(good.len() + 1).is_some());
    }

    #[test]
    fn a_bad_chunk_is_refused_inside_the_body() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = head.to_vec();
        stream.extend_from_slice(b"3\r\nabcX\r\n");
        let inb = inbound(&stream);
        assert!(inb.settled(head.len()));
        let stop = inb.stop.expect("refused");
        assert_eq!(stop.at, head.len() + 6);
        assert_eq!(stop.refused.map(|(_, in_head)| in_head), Some(false));
    }

    #[test]
    fn an_upgrade_stops_the_checking_at_the_end_of_its_head() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
        let mut stream = head.to_vec();
        stream.extend_from_slice(b"\x81\x05hello");
        let inb = inbound(&stream);
        assert_eq!(
            inb.stop,
            Some(Stop {
                at: head.len(),
                refused: None
            })
        );
        assert!(!inb.settled(head.len()));
    }

    #[test]
    fn a_shrunk_buffer_keeps_its_bytes_and_positions_and_grows_back() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = head.to_vec();
        stream.extend_from_slice(b"3\r\nabc\r\n3\r\nde");
        let mut inb = inbound(&stream);
        inb.start = head.len();
        inb.shrink();
        assert_eq!(inb.start, 0);
        assert_eq!(inb.unused(), b"3\r\nabc\r\n3\r\nde");
        assert_eq!(
            inb.buf.capacity(),
            inb.unused().len(),
            "exact size while held"
        );
        inb.push(b"f\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(inb.buf.capacity() >= buffers::SIZE, "a pool buffer again");
        assert_eq!(inb.stop, None);
        // The chunked body ends after 21 bytes, checked across the shrink.
        assert!(inb.settled(21));
        assert!(inb
            .unused()
            .starts_with(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\nGET /next"));

        // Nothing unused: nothing kept; a refusal's position follows the bytes.
        let mut inb = inbound(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        );
        inb.start = 27;
        inb.shrink();
        assert_eq!(inb.stop.map(|s| s.at), Some(0));
        inb.start = inb.buf.len();
        inb.shrink();
        assert_eq!(inb.buf.capacity(), 0);
        inb.regrow();
        assert_eq!(inb.buf.capacity(), 0);
    }

    #[test]
    fn used_bytes_are_moved_out_and_positions_follow() {
        let one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut inb = inbound(one);
        inb.start = one.len();
        inb.release_if_empty();
        assert_eq!(inb.buf.capacity(), 0, "an idle connection holds no buffer");
        inb.push(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(inb.start, 0);
        assert!(inb.settled(one.len() - 1));
    }
}
