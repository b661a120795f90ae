//! Hardening over real sockets: no way around the guard (method spelling, extension methods,
//! override headers, path tricks, HTTP/2, WebSocket upgrades); slow and greedy clients are cut
//! off and cannot starve others; upstream faults end in one clean 502/504, logged once.

mod bypass;
mod oversized;
mod slow_clients;
mod upstream_faults;

use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::common::Wg;

/// Reads until the peer closes; what it sent. None if it is still open after `limit`.
async fn until_closed(s: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(got)
}

/// In front of `url` with short upstream deadlines, so a fault shows within a second.
fn faulty_wg(url: String) -> Wg {
    Wg::new(url)
        .proxy_line("upstream_timeout = \"1s\"")
        .proxy_line("upstream_retry = \"300ms\"")
}
