//! A hand-written upstream over raw TCP that misbehaves on request, by path:
//!
//! - `/ok` (and anything not below): `200 OK`, body `ok`, keep-alive;
//! - `/garbage`: bytes that are not HTTP, then close;
//! - `/badstatus`: an invalid status line;
//! - `/dupcl`: two conflicting `Content-Length` headers;
//! - `/reset-head`: a TCP reset before any response byte;
//! - `/reset-body`: a head announcing 1000 bytes, 100 of them, then a TCP reset;
//! - `/early`: `200 OK`, body `early`, sent as soon as the head is read (the body is read
//!   after the answer), keep-alive;
//! - `/stall-body`: a head announcing 1000 bytes, 10 of them, then nothing;
//! - `/hang`: reads the request and never answers;
//! - `/ws`: `101 Switching Protocols` to `Upgrade: websocket`, then `hello from upstream`,
//!   then echoes every byte back.
//!
//! [`Faulty::mute`] makes it accept new connections and never read from them.
//! It records the head of every request it read in full, byte for byte (the request line
//! exactly as the proxy wrote it), and whether the body (by `Content-Length`) arrived in full.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::server::{loopback, serve_connections};

/// One request as the faulty upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `METHOD /path HTTP/1.1`.
    pub line: String,
    /// The request line and the header lines as received, CRLFs and the blank line included.
    pub head: String,
    /// The request's body arrived in full (per its `Content-Length`; true without one).
    pub complete: bool,
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    mute: AtomicBool,
}

pub struct Faulty {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Faulty {
    pub async fn start() -> Faulty {
        let (listener, addr) = loopback("faulty upstream").await;
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = serve_connections(listener, move |stream| {
            let state = shared.clone();
            async move {
                if state.mute.load(Ordering::SeqCst) {
                    // Hold the connection open, never read: the proxy's bytes sit in
                    // the socket buffer.
                    let _keep = stream;
                    std::future::pending::<()>().await;
                } else {
                    let _ = serve(stream, &state).await;
                }
            }
        });
        Faulty { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New connections are accepted and never read (existing ones are unaffected).
    pub fn mute(&self, yes: bool) {
        self.state.mute.store(yes, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many requests (heads read in full) had this path.
    pub fn count(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.line.split(' ').nth(1) == Some(path))
            .count()
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[allow(deprecated)] // SO_LINGER 0 on purpose: close() then sends a reset and never blocks.
fn reset(stream: BufReader<TcpStream>) {
    let stream = stream.into_inner();
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn serve(stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut s = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut head = line.clone();
        let line = line.trim_end().to_string();
        let mut len = 0usize;
        let mut upgrade = false;
        loop {
            let mut h = String::new();
            if s.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            head.push_str(&h);
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        if path == "/early" {
            // Answer before reading the body, as apps do that reject an upload early.
            s.get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
                .await?;
        }
        let mut body = vec![0u8; len];
        let complete = s.read_exact(&mut body).await.is_ok();
        state
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen {
                line,
                head,
                complete,
            });
        if !complete {
            return Ok(());
        }
        let w = s.get_mut();
        match path.as_str() {
            "/garbage" => {
                w.write_all(b"this is not HTTP at all\r\n\r\n").await?;
                return Ok(());
            }
            "/badstatus" => {
                w.write_all(b"HTTP/1.1 2x0 Fine\r\nContent-Length: 0\r\n\r\n")
                    .await?;
                return Ok(());
            }
            "/dupcl" => {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!",
                )
                .await?;
                return Ok(());
            }
            "/reset-head" => {
                reset(s);
                return Ok(());
            }
            "/reset-body" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    .await?;
                w.write_all(&[b'x'; 100]).await?;
                w.flush().await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                reset(s);
                return Ok(());
            }
            "/stall-body" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    .await?;
                w.write_all(&[b'x'; 10]).await?;
                w.flush().await?;
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
                return Ok(());
            }
            "/hang" => {
                // Wait for the proxy to give up (EOF), never answering.
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
                return Ok(());
            }
            "/ws" if upgrade => {
                w.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello from upstream",
                )
                .await?;
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    s.get_mut().write_all(&buf[..n]).await?;
                }
            }
            "/early" => {}
            _ => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await?;
            }
        }
    }
}
