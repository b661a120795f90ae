//! Request framing firewall: a strict checker of the HTTP/1.1 request byte stream that runs
//! in front of hyper, so that no request whose framing two parsers could read differently
//! (request smuggling) is ever parsed, guarded or forwarded.
//!
//! It refuses: `Content-Length` with `Transfer-Encoding`; a `Transfer-Encoding` other than
//! exactly `chunked` (one field, one coding) or on HTTP/1.0; more than one `Content-Length`
//! (even identical) or one that is not plain digits; obs-fold; any line not ended by CRLF
//! (bare LF, bare CR); invalid chunk sizes, chunk data not followed by CRLF, chunk
//! extensions over [`MAX_CHUNK_EXTENSIONS`] per body, trailers over [`MAX_TRAILERS`] or
//! outside hyper's trailer grammar; heads
//! over the configured maximum; an HTTP/1.1 request without `Host`, any with two (RFC 9112
//! §3.2); a header name that spells a framing header with `_` for `-` (`Content_Length`,
//! `Transfer_Encoding`: CGI-style apps read it as the real one). It only decides where
//! messages begin and end and whom they are for; everything else in a head is left to hyper
//! (which rejects bad tokens itself).
//!
//! [`Checker`] is the pure state machine (bytes in, verdicts out; no I/O, no allocation),
//! reading chunked bodies with [`chunked::Decoder`] (the native engine's decoder too);
//! [`io::Framed`] wraps a connection with it. A request carrying `Upgrade` (HTTP/1.1) or
//! `CONNECT`, and an h2c prior-knowledge preface when allowed, end the checking: what
//! follows is not HTTP/1.

pub mod chunked;
pub mod io;
pub mod linger;

use memchr::memchr2;

use chunked::Decoder;

/// Chunk-extension bytes allowed in one chunked body, all chunk lines together (hyper's own
/// limit is 16 KiB; ours is lower so that we refuse first, with a clear 400).
pub const MAX_CHUNK_EXTENSIONS: usize = 4096;
/// Trailer bytes allowed after the last chunk.
pub const MAX_TRAILERS: usize = 8192;

/// Why a request stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Violation {
    BareLf = 1,
    BareCr,
    ObsFold,
    RequestLine,
    Version,
    ContentLengthInvalid,
    ContentLengthRepeated,
    TransferEncodingNotChunked,
    TransferEncodingRepeated,
    TransferEncodingHttp10,
    ContentLengthAndTransferEncoding,
    ChunkSize,
    ChunkData,
    ChunkExtensionsTooLong,
    TrailersTooLarge,
    HeadTooLarge,
    HostMissing,
    HostRepeated,
    FramingHeaderAlias,
    /// A trailer field that is not `name: value` by RFC 9110's grammar, or more than 100
    /// (as hyper): found by the native engine's chunked decoder, which is stricter here
    /// than this checker (which leaves trailers to hyper).
    TrailerInvalid,
}

impl Violation {
    pub const ALL: [Violation; 20] = [
        Violation::BareLf,
        Violation::BareCr,
        Violation::ObsFold,
        Violation::RequestLine,
        Violation::Version,
        Violation::ContentLengthInvalid,
        Violation::ContentLengthRepeated,
        Violation::TransferEncodingNotChunked,
        Violation::TransferEncodingRepeated,
        Violation::TransferEncodingHttp10,
        Violation::ContentLengthAndTransferEncoding,
        Violation::ChunkSize,
        Violation::ChunkData,
        Violation::ChunkExtensionsTooLong,
        Violation::TrailersTooLarge,
        Violation::HeadTooLarge,
        Violation::HostMissing,
        Violation::HostRepeated,
        Violation::FramingHeaderAlias,
        Violation::TrailerInvalid,
    ];

    pub(crate) fn from_u8(v: u8) -> Option<Violation> {
        Violation::ALL.get(usize::from(v).checked_sub(1)?).copied()
    }

    /// What is wrong, for the client and the log (the status is `http::failure`'s to say).
    pub fn detail(self) -> &'static str {
        match self {
            Violation::BareLf => "a line ends with LF alone (CRLF required)",
            Violation::BareCr => "a CR not followed by LF",
            Violation::ObsFold => "obsolete line folding",
            Violation::RequestLine => "malformed request line",
            Violation::Version => "unsupported HTTP version",
            Violation::ContentLengthInvalid => "invalid Content-Length",
            Violation::ContentLengthRepeated => "more than one Content-Length",
            Violation::TransferEncodingNotChunked => "Transfer-Encoding other than chunked",
            Violation::TransferEncodingRepeated => "more than one Transfer-Encoding",
            Violation::TransferEncodingHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            Violation::ContentLengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            Violation::ChunkSize => "invalid chunk size line",
            Violation::ChunkData => "chunk data not followed by CRLF",
            Violation::ChunkExtensionsTooLong => "chunk extensions too long",
            Violation::TrailersTooLarge => "trailers too large",
            Violation::HeadTooLarge => "request head too large",
            Violation::HostMissing => "an HTTP/1.1 request without Host",
            Violation::HostRepeated => "more than one Host",
            Violation::FramingHeaderAlias => {
                "a header name spelling Content-Length or Transfer-Encoding with '_'"
            }
            Violation::TrailerInvalid => "a malformed trailer field",
        }
    }
}

/// What [`Checker::scan`] found in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// `data[..settled]` is checked and may be handed on; `data[settled..]` is the start of a
    /// head not complete yet: pass it again, followed by the next bytes, to the next `scan`.
    Checking { settled: usize },
    /// `data[..at]` is checked; from `at` on the stream is not HTTP/1 requests any more (an
    /// upgrade, CONNECT, or h2c): hand everything on unchecked, now and later.
    Unchecked { at: usize },
    /// `data[..at]` is fine; the stream is refused from `at` on. `in_head`: the refused bytes
    /// start a new request head (so nothing of that request was handed on); otherwise they
    /// are inside the body of the request being handed on.
    Refused {
        at: usize,
        violation: Violation,
        in_head: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At (or inside) a request head; the head starts at the next byte given to `scan`.
    Head,
    /// Content-Length body bytes still to come.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Decoder),
}

/// What the head read so far says.
#[derive(Debug, Clone, Copy, Default)]
struct Facts {
    /// The request line was seen (empty lines before it are skipped).
    line: bool,
    http10: bool,
    connect: bool,
    h2: bool,
    upgrade: bool,
    content_length: Option<u64>,
    chunked: bool,
    host: bool,
}

/// The request-stream state machine of one connection.
pub struct Checker {
    state: State,
    max_head: usize,
    h2c: bool,
    /// No request head completed yet on this connection.
    first: bool,
    /// Bytes at the start of a pending head already checked (whole lines).
    head_checked: usize,
    facts: Facts,
}

impl Checker {
    /// `max_head`: the largest head allowed (hyper's `max_header_size`); `h2c`: accept an
    /// HTTP/2 prior-knowledge preface as the first bytes.
    pub fn new(max_head: usize, h2c: bool) -> Self {
        Checker {
            state: State::Head,
            max_head,
            h2c,
            first: true,
            head_checked: 0,
            facts: Facts::default(),
        }
    }

    /// Whether the stream is between two requests (nothing of the next head pending): for
    /// the lingering close and the native engine's differential fuzz target.
    pub fn between_requests(&self) -> bool {
        self.state == State::Head && self.head_checked == 0 && !self.facts.line
    }

    /// Checks the next bytes of the stream. After a `Checking { settled }`, the next call
    /// must start with `data[settled..]` of this one; after `Unchecked` or `Refused`, the
    /// checker must not be called again.
    pub fn scan(&mut self, data: &[u8]) -> Scan {
        let mut pos = 0;
        while pos < data.len() || self.state == State::Head {
            match self.state {
                State::Head => match self.head(&data[pos..]) {
                    Ok(None) => return Scan::Checking { settled: pos },
                    Ok(Some(len)) => {
                        let facts = std::mem::take(&mut self.facts);
                        self.first = false;
                        if facts.h2 {
                            return Scan::Unchecked { at: pos };
                        }
                        pos += len;
                        if facts.connect || (facts.upgrade && !facts.http10) {
                            return Scan::Unchecked { at: pos };
                        }
                        self.state = match facts.content_length {
                            _ if facts.chunked => State::Chunked(Decoder::default()),
                            Some(n) if n > 0 => State::Body(n),
                            _ => State::Head,
                        };
                    }
                    Err(violation) => {
                        return Scan::Refused {
                            at: pos,
                            violation,
                            in_head: true,
                        }
                    }
                },
                State::Body(n) => {
                    let take = n.min((data.len() - pos) as u64);
                    pos += take as usize;
                    self.state = match n - take {
                        0 => State::Head,
                        rest => State::Body(rest),
                    };
                }
                State::Chunked(ref mut body) => match body.read(&data[pos..], |_| {}) {
                    Ok(read) => {
                        pos += read.used;
                        if read.done {
                            self.state = State::Head;
                        }
                    }
                    Err((at, violation)) => {
                        return Scan::Refused {
                            at: pos + at,
                            violation,
                            in_head: false,
                        }
                    }
                },
            }
        }
        Scan::Checking { settled: pos }
    }

    /// Checks a head starting at `data[0]`: `Ok(Some(len))` when it is complete and fine,
    /// `Ok(None)` when more bytes are needed. One `memchr2` per line: the hot path.
    fn head(&mut self, data: &[u8]) -> Result<Option<usize>, Violation> {
        let mut pos = self.head_checked;
        loop {
            let found = memchr2(b'\r', b'\n', &data[pos..]);
            let end = match found {
                Some(i) if data[pos + i] == b'\n' => return Err(Violation::BareLf),
                Some(i) if pos + i + 1 < data.len() => pos + i,
                _ => {
                    if data.len() > self.max_head {
                        return Err(Violation::HeadTooLarge);
                    }
                    self.head_checked = pos;
                    return Ok(None);
                }
            };
            if data[end + 1] != b'\n' {
                return Err(Violation::BareCr);
            }
            if end + 2 > self.max_head {
                return Err(Violation::HeadTooLarge);
            }
            let line = &data[pos..end];
            pos = end + 2;
            if !self.facts.line {
                // RFC 9112 §2.2: empty lines before the request line are ignored.
                if !line.is_empty() {
                    self.request_line(line)?;
                }
                continue;
            }
            if line.is_empty() {
                self.head_checked = 0;
                let f = &self.facts;
                if f.chunked && f.content_length.is_some() {
                    return Err(Violation::ContentLengthAndTransferEncoding);
                }
                if f.chunked && f.http10 {
                    return Err(Violation::TransferEncodingHttp10);
                }
                // RFC 9112 §3.2; HTTP/1.0 had no Host, and the h2c preface is no request.
                if !f.host && !f.http10 && !f.h2 {
                    return Err(Violation::HostMissing);
                }
                return Ok(Some(pos));
            }
            self.field(line)?;
        }
    }

    /// Only the version (and CONNECT, PRI) matter here; hyper checks the rest.
    fn request_line(&mut self, line: &[u8]) -> Result<(), Violation> {
        let n = line.len();
        if n < 10 || line[n - 9] != b' ' {
            return Err(Violation::RequestLine);
        }
        match &line[n - 8..] {
            b"HTTP/1.1" => {}
            b"HTTP/1.0" => self.facts.http10 = true,
            b"HTTP/2.0" if self.first && self.h2c && line == b"PRI * HTTP/2.0" => {
                self.facts.h2 = true
            }
            _ => return Err(Violation::Version),
        }
        self.facts.connect = line.starts_with(b"CONNECT ");
        self.facts.line = true;
        Ok(())
    }

    /// A header line. Names are matched with the colon right after them: a name followed by
    /// whitespace, or a line without a colon, is no field to hyper either (it answers 400).
    fn field(&mut self, line: &[u8]) -> Result<(), Violation> {
        match line[0] {
            b' ' | b'\t' => return Err(Violation::ObsFold),
            b'c' | b'C' if named(line, b"content-length") => {
                if self.facts.content_length.is_some() {
                    return Err(Violation::ContentLengthRepeated);
                }
                self.facts.content_length = Some(digits(trim(&line[15..]))?);
            }
            b't' | b'T' if named(line, b"transfer-encoding") => {
                if self.facts.chunked {
                    return Err(Violation::TransferEncodingRepeated);
                }
                if !trim(&line[18..]).eq_ignore_ascii_case(b"chunked") {
                    return Err(Violation::TransferEncodingNotChunked);
                }
                self.facts.chunked = true;
            }
            b'u' | b'U' if named(line, b"upgrade") => self.facts.upgrade = true,
            b'h' | b'H' if named(line, b"host") => {
                if self.facts.host {
                    return Err(Violation::HostRepeated);
                }
                self.facts.host = true;
            }
            b'c' | b'C' | b't' | b'T'
                if ALIASED.iter().any(|f| {
                    line.get(f.len()) == Some(&b':') && is_framing_alias(&line[..f.len()])
                }) =>
            {
                return Err(Violation::FramingHeaderAlias)
            }
            _ => {}
        }
        Ok(())
    }
}

/// Framing headers that have a `-` to spell as `_`. (`Host` and `Connection` have none: no
/// other spelling reaches the same CGI variable.)
const ALIASED: [&[u8]; 2] = [b"content-length", b"transfer-encoding"];

/// Whether header `name` is `Content-Length` or `Transfer-Encoding` spelt with `_` for some
/// `-`: CGI, FastCGI, WSGI and Rack map both to one variable (gunicorn refuses such names for
/// this reason), so the app could frame or size the body by a header we did not check.
pub fn is_framing_alias(name: &[u8]) -> bool {
    ALIASED.iter().any(|framing| {
        framing.len() == name.len()
            && name.contains(&b'_')
            && framing
                .iter()
                .zip(name)
                .all(|(&f, &n)| f == n.to_ascii_lowercase() || (f == b'-' && n == b'_'))
    })
}

/// Whether header `line` is field `name` (lower case): the name, then the colon.
fn named(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len()
        && line[name.len()] == b':'
        && line[..name.len()].eq_ignore_ascii_case(name)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// A Content-Length value: 1 to 19 digits, nothing else.
fn digits(v: &[u8]) -> Result<u64, Violation> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Violation::ContentLengthInvalid);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests;
