//! Plain TCP connections to the upstream for the native engine, kept alive in a small idle
//! pool per worker thread (the proxy's runtimes are single-threaded: no lock). One
//! connection carries one request at a time; a pooled one is checked before use, so that
//! one the upstream closed while idle is dropped rather than written to.

use std::cell::RefCell;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::upstream::{Open, UpstreamError};

/// Idle upstream connections kept per worker thread (as the hyper path's pool).
const MAX_IDLE: usize = 512;

thread_local! {
    static IDLE: RefCell<Vec<Conn>> = const { RefCell::new(Vec::new()) };
}

/// An upstream connection, counted open (for the descriptor headroom) until dropped.
pub struct Conn {
    pub tcp: TcpStream,
    _open: Open,
}

pub struct Origin {
    host: String,
    port: u16,
    connect_timeout: Duration,
}

impl Origin {
    /// `upstream`: an `http://` URL (the native engine is not used for https upstreams).
    pub fn new(upstream: &http::Uri, connect_timeout: Duration) -> Self {
        let host = upstream
            .host()
            .expect("config validated the host")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Origin {
            host,
            port: upstream.port_u16().unwrap_or(80),
            connect_timeout,
        }
    }

    /// An idle pooled connection that is still open (`true`: pooled), or a new one.
    pub async fn checkout(&self) -> Result<(Conn, bool), UpstreamError> {
        while let Some(conn) = IDLE.with(|idle| idle.borrow_mut().pop()) {
            let mut probe = [0u8; 1];
            match conn.tcp.try_read(&mut probe) {
                // Nothing to read: open and quiet, as it should be between responses.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok((conn, true)),
                // Closed, failed, or bytes nobody asked for: not usable.
                _ => continue,
            }
        }
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                Ok((
                    Conn {
                        tcp,
                        _open: Open::new(),
                    },
                    false,
                ))
            }
            Ok(Err(e)) => Err(UpstreamError::Connect(e)),
            Err(_) => Err(UpstreamError::ConnectTimeout),
        }
    }
}

/// Puts a connection whose last response was read whole back in the pool.
pub fn checkin(conn: Conn) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    });
}
