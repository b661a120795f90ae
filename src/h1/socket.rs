//! The client's TCP socket, taken out of pingora's stream for the native engine's own use.
//!
//! pingora accepts each connection into its own stream type: about 850 bytes on the heap per
//! connection (the stream, its socket digest, a buffer wrapper), half of what an idle
//! native connection would otherwise cost. The engine reads and writes the socket itself,
//! so it keeps only a tokio `TcpStream` on a duplicate of the descriptor and lets pingora's
//! stream go (closing its copy). That costs a few system calls per connection (`dup`, one
//! more epoll registration, pingora's close), never per request. A connection handed to the
//! hyper path gets a pingora stream again ([`into_stream`]).

use std::os::fd::{AsRawFd, BorrowedFd};

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use tokio::net::TcpStream;

/// The socket under a freshly accepted plain TCP stream; `Err` gives the stream back
/// untouched (not TCP, or the descriptor could not be duplicated).
pub fn take(stream: Stream) -> Result<TcpStream, Stream> {
    let Some(l4) = stream.as_any().downcast_ref::<L4Stream>() else {
        return Err(stream);
    };
    // SAFETY: the descriptor is `stream`'s, which is alive (borrowed above and dropped only
    // after the duplicate is made), so it is open for the whole borrow.
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(l4.as_raw_fd()) };
    let Ok(owned) = fd.try_clone_to_owned() else {
        return Err(stream);
    };
    // The duplicate shares the socket's file status flags (non-blocking, set by tokio) and
    // options (TCP_NODELAY, set by pingora).
    match TcpStream::from_std(std::net::TcpStream::from(owned)) {
        Ok(tcp) => Ok(tcp),
        Err(_) => Err(stream),
    }
}

/// A pingora stream around the socket again, for the hyper path.
pub fn into_stream(tcp: TcpStream) -> Stream {
    Box::new(L4Stream::from(tcp))
}
