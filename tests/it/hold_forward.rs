//! Held writes served by the engine that read them (the native one by default, hyper with
//! `WG_TEST_ENGINE=hyper`), over one client connection each: a held write with a body
//! larger than any buffer (`Content-Length` or chunked) is forwarded exactly once at the
//! release with its body intact, and the connection then carries the next request; a write
//! held past its budget gets the 503 with `Retry-After`, never reaches the app, and its
//! connection goes on, and its 503 is the same from both engines; and the native engine
//! forwards a held write itself (an answer only it refuses to frame shows whose it was).

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::common::client::comparable;
use crate::common::server::unframable;
use crate::common::upstream::sha256_hex;
use crate::common::{pattern, Instance, Upstream, Wg};

const LIMIT: Duration = Duration::from_secs(10);

/// One client connection: what it sends goes out from a task of its own (a held write's
/// body stays in the client until the release, so writing it blocks), its answers are read
/// one by one.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: Option<OwnedWriteHalf>,
    sending: Option<JoinHandle<OwnedWriteHalf>>,
}

/// An answer: status, headers (names lower-cased), body (`Content-Length` or chunked).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    async fn connect(wg: &Instance) -> Client {
        let stream = tokio::time::timeout(LIMIT, TcpStream::connect(wg.proxy))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        let (reader, writer) = stream.into_split();
        Client {
            reader: BufReader::new(reader),
            writer: Some(writer),
            sending: None,
        }
    }

    /// Starts sending `bytes`, in pieces, without waiting for them to be taken.
    async fn send(&mut self, bytes: Vec<u8>) {
        self.sent().await;
        let mut writer = self.writer.take().expect("the writer is back");
        self.sending = Some(tokio::spawn(async move {
            for piece in bytes.chunks(4096) {
                // A reset: what the answers say is what the test checks.
                if writer.write_all(piece).await.is_err() {
                    break;
                }
            }
            writer
        }));
    }

    /// Waits (bounded) until everything sent so far was taken by the socket.
    async fn sent(&mut self) {
        if let Some(sending) = self.sending.take() {
            let writer = tokio::time::timeout(LIMIT, sending)
                .await
                .expect("the request is all sent within 10 s")
                .expect("the sending task");
            self.writer = Some(writer);
        }
    }

    async fn answer(&mut self) -> Answer {
        tokio::time::timeout(LIMIT, self.read_answer())
            .await
            .expect("an answer within 10 s")
    }

    async fn read_answer(&mut self) -> Answer {
        let mut line = String::new();
        self.reader.read_line(&mut line).await.expect("status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line, not {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.expect("header line");
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':').expect("a header line");
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse::<usize>().expect("a numeric content-length"));
        let body = match length {
            Some(len) => {
                let mut body = vec![0u8; len];
                self.reader.read_exact(&mut body).await.expect("the body");
                body
            }
            None => self.read_chunked().await,
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.expect("chunk size");
            let size = line.trim_end().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
            if size == 0 {
                // No trailers from writeguard: the blank line ends the body.
                line.clear();
                self.reader.read_line(&mut line).await.expect("last line");
                return body;
            }
            let mut chunk = vec![0u8; size + 2];
            self.reader.read_exact(&mut chunk).await.expect("a chunk");
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

/// `held` in `/status` reaches `n` (bounded).
async fn wait_held(wg: &Instance, n: u64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let held = wg.status().await["held"].as_u64().expect("numeric `held`");
        if held == n {
            return;
        }
        assert!(Instant::now() < deadline, "held {held}, expected {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A POST with `body`, as `Content-Length` or chunked (in 10,000-byte chunks).
fn post(path: &str, id: &str, body: &[u8], chunked: bool) -> Vec<u8> {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: app.test\r\nx-id: {id}\r\n").into_bytes();
    if chunked {
        raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for chunk in body.chunks(10_000) {
            raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            raw.extend_from_slice(chunk);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
    } else {
        raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        raw.extend_from_slice(body);
    }
    raw
}

fn posted_ids(up: &Upstream) -> Vec<String> {
    up.records()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.header("x-id").unwrap_or("<no x-id>").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_of_either_framing_is_forwarded_once_whole_and_its_connection_goes_on() {
    for chunked in [false, true] {
        let what = if chunked { "chunked" } else { "content-length" };
        let up = Upstream::start().await;
        let wg = Wg::for_upstream(&up).hold("10s").start().await;
        assert_eq!(wg.engage("deploy", None).await.status, 201, "{what}");

        // Larger than a buffer of either engine, and than the socket buffers.
        let body = pattern(100_000, 5);
        let mut client = Client::connect(&wg).await;
        client
            .send(post("/orders/1", "held-1", &body, chunked))
            .await;
        wait_held(&wg, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(up.count_method("POST"), 0, "{what}: held, not forwarded");

        assert_eq!(wg.release(false).await.status, 200, "{what}");
        let res = client.answer().await;
        assert_eq!(res.status, 200, "{what}: {}", res.text());
        assert_eq!(
            res.header("x-body-sha256"),
            Some(sha256_hex(&body).as_str()),
            "{what}: the app saw another body than the client sent"
        );
        assert_eq!(up.last().body, body, "{what}");
        client.sent().await;

        // The same connection carries the next requests: a read, and a write (released).
        client
            .send(b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec())
            .await;
        let read = client.answer().await;
        assert_eq!(read.status, 200, "{what}: {}", read.text());
        assert!(read.text().contains("/after"), "{what}: {}", read.text());
        client
            .send(post("/orders/2", "next-2", b"x=2", chunked))
            .await;
        let next = client.answer().await;
        assert_eq!(next.status, 200, "{what}: {}", next.text());

        // Exactly once each, also a while later.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(posted_ids(&up), ["held-1", "next-2"], "{what}");
        assert_eq!(wg.status().await["held"], 0, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_past_its_budget_gets_the_503_and_its_connection_goes_on() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).hold("1s").start().await;
    assert_eq!(wg.engage("deploy", Some("30s")).await.status, 201);

    let mut client = Client::connect(&wg).await;
    let started = Instant::now();
    client
        .send(post("/late", "late", &pattern(300, 1), true))
        .await;
    let res = client.answer().await;
    let waited = started.elapsed();
    assert_eq!(res.status, 503, "{}", res.text());
    let retry_after = res.header("retry-after").expect("the 503 has Retry-After");
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After {retry_after:?}"
    );
    assert_eq!(res.header("connection"), None, "its body was drained: kept");
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}: not held for its budget (1s)"
    );
    client.sent().await;

    // A read on the same connection while still guarded.
    client
        .send(b"GET /still HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec())
        .await;
    assert_eq!(client.answer().await.status, 200);

    assert_eq!(wg.release(false).await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        up.count_method("POST"),
        0,
        "the timed-out write reached the app"
    );
    assert_eq!(up.hits(), 1, "only the read: {:?}", up.done());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_past_its_budget_gets_the_same_503_from_both_engines() {
    let mut seen = Vec::new();
    for engine in ["hyper", "native"] {
        let up = Upstream::start().await;
        let wg = Wg::for_upstream(&up)
            .hold("1s")
            .proxy_line(&format!("engine = \"{engine}\""))
            .proxy_line("drain_limit = 1000")
            .start()
            .await;
        assert_eq!(
            wg.engage("deploy", Some("30s")).await.status,
            201,
            "{engine}"
        );
        let mut client = Client::connect(&wg).await;
        let mut answers = Vec::new();
        // problem+json, then the page (on the same connection), then one whose body is
        // past `drain_limit`: closed after its 503.
        for (accept, body) in [("*/*", 10), ("text/html", 10), ("*/*", 100_000)] {
            let mut raw =
                format!("POST /w HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n").into_bytes();
            raw.extend_from_slice(format!("Content-Length: {body}\r\n\r\n").as_bytes());
            raw.extend_from_slice(&pattern(body, 2));
            client.send(raw).await;
            let res = client.answer().await;
            let mut headers: Vec<(String, String)> = comparable(&res.headers).collect();
            headers.sort();
            answers.push((res.status, headers, res.text()));
            if body < 1000 {
                client.sent().await;
            }
        }
        assert_eq!(up.hits(), 0, "{engine}: a held write reached the app");
        seen.push(answers);
    }
    for (i, (hyper, native)) in seen[0].iter().zip(&seen[1]).enumerate() {
        assert_eq!(hyper, native, "answer {i}: hyper, then native");
    }
    let (status, headers, _) = &seen[1][2];
    assert_eq!(*status, 503);
    assert!(headers.contains(&("connection".to_owned(), "close".to_owned())));
    assert!(headers.iter().any(|(k, _)| k == "retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_engine_forwards_the_writes_it_held_itself() {
    let mut seen = Vec::new();
    for engine in ["hyper", "native"] {
        let (url, app) = unframable(false).await;
        let wg = Wg::new(url)
            .hold("10s")
            .proxy_line(&format!("engine = \"{engine}\""))
            .proxy_line("upstream_retry = \"0s\"")
            .start()
            .await;
        assert_eq!(wg.engage("deploy", None).await.status, 201, "{engine}");
        let mut client = Client::connect(&wg).await;
        client.send(post("/w", "w", b"x=1", false)).await;
        wait_held(&wg, 1).await;
        assert_eq!(wg.release(false).await.status, 200, "{engine}");
        let res = client.answer().await;
        seen.push((res.status, res.text()));
        app.abort();
    }
    // hyper passes the app's answer on; the native engine, which held the write and then
    // forwarded it, cannot frame it: before, it handed held writes to hyper.
    assert_eq!(seen[0], (200, "new".to_owned()), "hyper");
    assert_eq!(seen[1].0, 502, "native: {}", seen[1].1);
}
