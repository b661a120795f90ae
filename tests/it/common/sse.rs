//! A Server-Sent Events client: one open `GET` of an event stream over HTTP/1.1, read event
//! by event, every read bounded by a deadline. It keeps what it received, so a test can look
//! at the raw stream (the `retry:` hint, a leaked secret) as well as at the parsed events.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Every wait on the stream: the answer to the `GET`, then each event.
const WAIT: Duration = Duration::from_secs(5);

/// One open event stream.
pub struct Events {
    body: Incoming,
    /// Bytes received and not yet parsed into an event.
    pending: String,
    /// Everything received so far, as text.
    pub seen: String,
    conn: JoinHandle<()>,
    pub headers: http::HeaderMap,
}

impl Drop for Events {
    fn drop(&mut self) {
        // Closes the connection: the client is gone.
        self.conn.abort();
    }
}

impl Events {
    /// Opens `path` on `addr` and asserts a 200 within 5 s.
    pub async fn open(addr: SocketAddr, path: &str) -> Events {
        let opened = async {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = Request::get(path)
                .header("host", addr.to_string())
                .header("accept", "text/event-stream")
                .body(Empty::<Bytes>::new())
                .expect("request");
            let res = sender.send_request(req).await.expect("events response");
            (res, conn)
        };
        let (res, conn) = tokio::time::timeout(WAIT, opened)
            .await
            .expect("the events stream answers within 5 s");
        assert_eq!(res.status(), 200);
        let (parts, body) = res.into_parts();
        Events {
            body,
            pending: String::new(),
            seen: String::new(),
            conn,
            headers: parts.headers,
        }
    }

    /// The next complete event block (`retry:` hints and comments included).
    pub async fn next_block(&mut self) -> String {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block = self.pending[..end].to_string();
                self.pending.drain(..end + 2);
                return block;
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no event within {WAIT:?}; so far: {:?}", self.seen))
                .unwrap_or_else(|| panic!("the events stream ended; so far: {:?}", self.seen))
                .expect("events stream error");
            if let Ok(data) = frame.into_data() {
                let text = std::str::from_utf8(&data).expect("events are UTF-8");
                self.pending.push_str(text);
                self.seen.push_str(text);
            }
        }
    }

    /// The data of the next `state` event, skipping hints and heartbeats.
    pub async fn next_state(&mut self) -> Value {
        loop {
            let block = self.next_block().await;
            let mut lines = block.lines();
            if lines.next() != Some("event: state") {
                continue;
            }
            let data: String = lines
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            return serde_json::from_str(&data)
                .unwrap_or_else(|e| panic!("state data is JSON ({e}): {block:?}"));
        }
    }
}
