//! A load generator for reconciliation: clients of three kinds (keep-alive, a new connection
//! per request, and writers that hang up when held) send reads and writes, each with a unique
//! id in [`ID_HEADER`], until told to stop, and tally what each client was told. [`reconcile`]
//! then compares that tally with what the [`Ledger`] upstream really received.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ledger::{Ledger, ID_HEADER};

/// What the clients were told, per request id.
#[derive(Default, Debug)]
pub struct Tally {
    pub reads_ok: usize,
    /// Reads that did not get a 2xx from the app: id and what happened.
    pub reads_bad: Vec<String>,
    /// Writes answered by the app: id and how long the client waited.
    pub forwarded: Vec<(String, Duration)>,
    /// Writes answered 503 by writeguard.
    pub refused: Vec<String>,
    /// Writes with any other outcome (other status, transport error): id and what.
    pub writes_bad: Vec<String>,
    /// Writes whose client hung up before any answer: id and when it hung up.
    pub gone: Vec<(String, Instant)>,
    /// Requests found unsent on a keep-alive connection that had just closed, then sent on
    /// a new connection (allowed: they never left the client).
    pub resent: usize,
    /// Connections that could not be opened (a real failure: nobody listened).
    pub connect_failed: Vec<String>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.reads_ok += o.reads_ok;
        self.reads_bad.extend(o.reads_bad);
        self.forwarded.extend(o.forwarded);
        self.refused.extend(o.refused);
        self.writes_bad.extend(o.writes_bad);
        self.gone.extend(o.gone);
        self.resent += o.resent;
        self.connect_failed.extend(o.connect_failed);
    }

    pub fn total(&self) -> usize {
        self.reads_ok
            + self.reads_bad.len()
            + self.forwarded.len()
            + self.refused.len()
            + self.writes_bad.len()
            + self.gone.len()
            + self.connect_failed.len()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} requests: reads ok {}, reads failed {}, writes forwarded {}, writes refused {}, \
             writes failed {}, clients gone {}, resent unsent {}, connects failed {}",
            self.total(),
            self.reads_ok,
            self.reads_bad.len(),
            self.forwarded.len(),
            self.refused.len(),
            self.writes_bad.len(),
            self.gone.len(),
            self.resent,
            self.connect_failed.len()
        )
    }
}

/// How a load client talks to the server.
#[derive(Clone, Copy, PartialEq)]
pub enum Client {
    /// One keep-alive connection, reopened when the server closes it.
    KeepAlive,
    /// A new connection for every request.
    Fresh,
    /// Raw writes, hanging up when no answer came within 150 ms.
    Goner,
}

/// Where the load goes and what it is made of.
pub struct Load {
    pub addr: SocketAddr,
    pub tag: &'static str,
    /// Share of writes among requests, in percent.
    pub writes_percent: u32,
    pub limit: Duration,
}

/// The outcome of one exchange on a (possibly kept-alive) connection.
enum Sent {
    Answered {
        status: StatusCode,
        ledger: Option<String>,
    },
    Failed(String),
    ConnectFailed(String),
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends `req` on `conn` (opening it if needed). A request hyper hands back unsent (the
/// connection closed between requests) is resent on a new connection; one that was sent
/// and got no answer is a failure, never resent.
async fn exchange(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    mut req: Request<Full<Bytes>>,
    resent: &mut usize,
) -> Sent {
    for _ in 0..5 {
        let sender = match conn {
            Some(s) if !s.is_closed() => s,
            _ => match connect(addr).await {
                Ok(s) => conn.insert(s),
                Err(e) => return Sent::ConnectFailed(e),
            },
        };
        if sender.ready().await.is_err() {
            // Closed while idle: nothing was sent.
            *conn = None;
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(res) => {
                let status = res.status();
                let ledger = res
                    .headers()
                    .get("x-ledger")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let closing = res
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                if let Err(e) = res.into_body().collect().await {
                    *conn = None;
                    return Sent::Failed(format!("{status}, then the body failed: {e}"));
                }
                if closing {
                    *conn = None;
                }
                return Sent::Answered { status, ledger };
            }
            Err(mut e) => {
                *conn = None;
                match e.take_message() {
                    Some(unsent) => {
                        *resent += 1;
                        req = unsent;
                    }
                    None => return Sent::Failed(format!("sent, no answer: {}", e.error())),
                }
            }
        }
    }
    Sent::Failed("five connections in a row closed before the request could be sent".into())
}

fn request(method: &str, path: &str, id: &str) -> Request<Full<Bytes>> {
    let body = if method == "POST" {
        Bytes::from_static(b"x=1")
    } else {
        Bytes::new()
    };
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "app.test")
        .header(ID_HEADER, id)
        .body(Full::new(body))
        .expect("a valid request")
}

/// One client of the load: sends requests until `stop`, and tallies what it was told.
async fn client(load: Arc<Load>, kind: Client, worker: usize, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut conn = None;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let id = format!("{}-{worker}-{n}", load.tag);
        if kind == Client::Goner {
            goner(load.addr, &id, &mut tally).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            continue;
        }
        let write = rand::thread_rng().gen_range(0..100) < load.writes_percent;
        let (method, path) = if write {
            ("POST", format!("/w/{id}"))
        } else {
            ("GET", format!("/r/{id}"))
        };
        if kind == Client::Fresh {
            conn = None;
        }
        let started = Instant::now();
        let sent = tokio::time::timeout(
            load.limit,
            exchange(
                &mut conn,
                load.addr,
                request(method, &path, &id),
                &mut tally.resent,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            conn = None;
            Sent::Failed(format!("no answer within {:?}", load.limit))
        });
        let waited = started.elapsed();
        match (write, sent) {
            (_, Sent::ConnectFailed(e)) => tally.connect_failed.push(format!("{id}: {e}")),
            (false, Sent::Answered { status, ledger })
                if status.is_success() && ledger.as_deref() == Some(id.as_str()) =>
            {
                tally.reads_ok += 1
            }
            (false, Sent::Answered { status, ledger }) => tally
                .reads_bad
                .push(format!("{id}: {status}, x-ledger {ledger:?}")),
            (false, Sent::Failed(e)) => tally.reads_bad.push(format!("{id}: {e}")),
            (true, Sent::Answered { status, ledger })
                if status == 200 && ledger.as_deref() == Some(id.as_str()) =>
            {
                tally.forwarded.push((id, waited))
            }
            (
                true,
                Sent::Answered {
                    status,
                    ledger: None,
                },
            ) if status == 503 => tally.refused.push(id),
            (true, Sent::Answered { status, ledger }) => tally
                .writes_bad
                .push(format!("{id}: {status}, x-ledger {ledger:?}")),
            (true, Sent::Failed(e)) => tally.writes_bad.push(format!("{id}: {e}")),
        }
    }
    tally
}

/// A write sent by hand; the client hangs up when no answer has come within 150 ms (it is
/// then most likely held).
async fn goner(addr: SocketAddr, id: &str, tally: &mut Tally) {
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return tally.connect_failed.push(format!("{id}: connect: {e}")),
    };
    let head = format!(
        "POST /g/{id} HTTP/1.1\r\nhost: app.test\r\n{ID_HEADER}: {id}\r\n\
         content-length: 3\r\nconnection: close\r\n\r\nx=1"
    );
    if let Err(e) = s.write_all(head.as_bytes()).await {
        return tally.writes_bad.push(format!("{id}: write: {e}"));
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(150), async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    if read.is_err() && got.is_empty() {
        drop(s);
        tally.gone.push((id.to_string(), Instant::now()));
        return;
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    if text.starts_with("http/1.1 200") && text.contains(&format!("x-ledger: {id}")) {
        tally.forwarded.push((id.to_string(), Duration::ZERO));
    } else if text.starts_with("http/1.1 503") && !text.contains("x-ledger") {
        tally.refused.push(id.to_string());
    } else {
        tally
            .writes_bad
            .push(format!("{id}: {:?}", text.lines().next().unwrap_or("")));
    }
}

/// Runs `clients` until `stop` is set; returns the merged tally.
pub fn spawn_load(
    load: Load,
    clients: &[(Client, usize)],
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Tally> {
    let load = Arc::new(load);
    let mut tasks = Vec::new();
    let mut worker = 0;
    for &(kind, count) in clients {
        for _ in 0..count {
            worker += 1;
            tasks.push(tokio::spawn(client(
                load.clone(),
                kind,
                worker,
                stop.clone(),
            )));
        }
    }
    tokio::spawn(async move {
        let mut all = Tally::default();
        for t in tasks {
            all.merge(t.await.expect("a load client panicked"));
        }
        all
    })
}

/// Checks every write against the ledger; returns the violations.
pub fn reconcile(tally: &Tally, ledger: &Ledger) -> Vec<String> {
    // A client that hangs up just as the guard is released may race the forward: allow an
    // arrival this soon after the hang-up, and no later.
    const GONE_RACE: Duration = Duration::from_millis(300);
    let book = ledger.snapshot();
    let mut bad = Vec::new();
    let mut told_forwarded = HashSet::new();
    for (id, _) in &tally.forwarded {
        told_forwarded.insert(id.as_str());
        let n = book.get(id).map_or(0, Vec::len);
        if n != 1 {
            bad.push(format!(
                "{id}: answered by the app, but it arrived {n} times"
            ));
        }
    }
    for id in &tally.refused {
        if let Some(e) = book.get(id) {
            bad.push(format!(
                "{id}: answered 503, but reached the app {} times",
                e.len()
            ));
        }
    }
    let mut gone = HashMap::new();
    for (id, at) in &tally.gone {
        gone.insert(id.as_str(), *at);
        match book.get(id).map(Vec::as_slice) {
            None | Some([]) => {}
            Some([one]) if one.at <= *at + GONE_RACE => {}
            Some([one]) => bad.push(format!(
                "{id}: the client hung up, and the write reached the app {:?} later",
                one.at - *at
            )),
            Some(more) => bad.push(format!(
                "{id}: the client hung up, and the write reached the app {} times",
                more.len()
            )),
        }
    }
    for (id, entries) in &book {
        let writes = entries.iter().filter(|e| e.method == "POST").count();
        if writes > 0 && !told_forwarded.contains(id.as_str()) && !gone.contains_key(id.as_str()) {
            bad.push(format!(
                "{id}: reached the app {writes} times, but its client was not told so"
            ));
        }
    }
    bad.sort();
    bad
}
