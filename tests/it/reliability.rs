//! Reliability under load, crashes and upgrades, reconciled against what the app received:
//!
//! - exactly-once writes while the guard flaps (admin API and signed webhooks alternating),
//!   with `hold = "0s"` and with a hold, including clients that leave while held;
//! - reads never fail because of the guard (same runs);
//! - `kill -9` while the state file is being written never corrupts it, and the last
//!   acknowledged change survives; a corrupt state file fails closed, loudly, without a
//!   crash loop;
//! - `run --upgrade` takes the listeners over from a running instance without failing a
//!   request, and the guard state carries over.
//!
//! Every request carries a unique id ([`ID_HEADER`]); the [`Ledger`] upstream writes down
//! each arrival, so a test compares what each client was told with what the app saw.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;
use crate::common::ledger::{Ledger, ID_HEADER};
use crate::common::{activity, eventually, Instance, Req, Wg, TOKEN};

/// A random duration in `[lo, hi)` milliseconds.
fn random_ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(lo..hi))
}

/// Sleeps `d`, or less when `stop` is set meanwhile.
async fn pause(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep((end - Instant::now()).min(Duration::from_millis(20))).await;
    }
}

// ---------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------

/// What the clients were told, per request id.
#[derive(Default, Debug)]
struct Tally {
    reads_ok: usize,
    /// Reads that did not get a 2xx from the app: id and what happened.
    reads_bad: Vec<String>,
    /// Writes answered by the app: id and how long the client waited.
    forwarded: Vec<(String, Duration)>,
    /// Writes answered 503 by writeguard.
    refused: Vec<String>,
    /// Writes with any other outcome (other status, transport error): id and what.
    writes_bad: Vec<String>,
    /// Writes whose client hung up before any answer: id and when it hung up.
    gone: Vec<(String, Instant)>,
    /// Requests found unsent on a keep-alive connection that had just closed, then sent on
    /// a new connection (allowed: they never left the client).
    resent: usize,
    /// Connections that could not be opened (a real failure: nobody listened).
    connect_failed: Vec<String>,
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

    fn total(&self) -> usize {
        self.reads_ok
            + self.reads_bad.len()
            + self.forwarded.len()
            + self.refused.len()
            + self.writes_bad.len()
            + self.gone.len()
            + self.connect_failed.len()
    }

    fn summary(&self) -> String {
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

#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// One keep-alive connection, reopened when the server closes it.
    KeepAlive,
    /// A new connection for every request.
    Fresh,
    /// Raw writes, hanging up when no answer came within 150 ms.
    Goner,
}

struct Load {
    addr: SocketAddr,
    tag: &'static str,
    /// Share of writes among requests, in percent.
    writes_percent: u32,
    limit: Duration,
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
fn spawn_load(
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

// ---------------------------------------------------------------------------------------
// Guard flapping
// ---------------------------------------------------------------------------------------

/// Engages and releases the guard every 0.5-1.5 s until `stop`, alternating the admin API
/// and signed Upsun webhooks; leaves it released. Returns how many times it engaged.
async fn flap(wg: &Instance, stop: &AtomicBool) -> usize {
    let mut cycles = 0;
    while !stop.load(Ordering::SeqCst) {
        pause(random_ms(500, 1500), stop).await;
        cycles += 1;
        let by_webhook = cycles % 2 == 0;
        let activity_id = format!("flap{cycles:09}");
        if by_webhook {
            let res = wg
                .webhook_signed(activity(&activity_id, "environment.push", "in_progress"))
                .await;
            assert_eq!(res.status, 200, "in_progress webhook: {}", res.text());
            assert_eq!(res.json()["guarded"], true, "{}", res.text());
        } else {
            let res = wg.engage("flapping", Some("1m")).await;
            assert_eq!(res.status, 201, "engage: {}", res.text());
        }
        // Stay engaged for a while even when stopping, so the last cycle is a whole one.
        tokio::time::sleep(random_ms(500, 1500)).await;
        if by_webhook {
            let res = wg
                .webhook_signed(activity(&activity_id, "environment.push", "complete"))
                .await;
            assert_eq!(res.status, 200, "complete webhook: {}", res.text());
            assert_eq!(res.json()["guarded"], false, "{}", res.text());
        } else {
            let res = wg.release(false).await;
            assert_eq!(res.status, 200, "release: {}", res.text());
            assert_eq!(res.json()["guarded"], false, "{}", res.text());
        }
    }
    cycles
}

/// Checks every write against the ledger; returns the violations.
fn reconcile(tally: &Tally, ledger: &Ledger) -> Vec<String> {
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

/// Waits (bounded) until nothing is held and no write is in flight.
async fn wait_quiet(wg: &Instance) {
    let quiet = eventually(Duration::from_secs(10), || async {
        let s = wg.status().await;
        s["held"] == 0 && s["in_flight_writes"] == 0
    })
    .await;
    assert!(
        quiet,
        "writes still held or in flight: {}",
        wg.status().await
    );
}

/// About 10 s of mixed load while the guard flaps; reconciles and checks every invariant.
async fn mixed_load_while_flapping(tag: &'static str, hold: &str, goners: usize) -> Tally {
    let ledger = Ledger::start().await;
    let wg = Wg::new(ledger.url())
        .hold(hold)
        .retry_after("1s")
        .start()
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(
        Load {
            addr: wg.proxy,
            tag,
            writes_percent: 40,
            limit: Duration::from_secs(10),
        },
        &[
            (Client::KeepAlive, 8),
            (Client::Fresh, 2),
            (Client::Goner, goners),
        ],
        stop.clone(),
    );
    let flapping = flap(&wg, &stop);
    let timer = async {
        tokio::time::sleep(Duration::from_secs(9)).await;
        stop.store(true, Ordering::SeqCst);
    };
    let (cycles, ()) = tokio::join!(flapping, timer);
    let tally = load.await.expect("load task");
    wait_quiet(&wg).await;
    eprintln!("{tag}: {cycles} guard cycles; {}", tally.summary());

    let violations = reconcile(&tally, &ledger);
    assert!(
        violations.is_empty(),
        "{} exactly-once violations ({}):\n{}",
        violations.len(),
        tally.summary(),
        violations.join("\n")
    );
    assert!(
        tally.reads_bad.is_empty(),
        "reads failed ({}):\n{}",
        tally.summary(),
        tally.reads_bad.join("\n")
    );
    assert!(
        tally.writes_bad.is_empty() && tally.connect_failed.is_empty(),
        "writes neither forwarded nor refused ({}):\n{}\n{}",
        tally.summary(),
        tally.writes_bad.join("\n"),
        tally.connect_failed.join("\n")
    );
    // The run really exercised both sides of the guard.
    assert!(cycles >= 3, "only {cycles} guard cycles");
    assert!(
        tally.total() >= 1000,
        "too little load: {}",
        tally.summary()
    );
    assert!(tally.reads_ok >= 300, "{}", tally.summary());
    assert!(tally.forwarded.len() >= 100, "{}", tally.summary());
    assert_eq!(
        ledger.anonymous(),
        0,
        "requests without an id reached the app"
    );
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_exactly_once_and_reads_never_fail_while_the_guard_flaps_without_hold() {
    let tally = mixed_load_while_flapping("nohold", "0s", 0).await;
    assert!(
        tally.refused.len() >= 50,
        "the guard refused too few writes to mean anything: {}",
        tally.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_writes_are_forwarded_once_on_release_and_leavers_never_while_the_guard_flaps() {
    // Longer than any engaged phase of the flapping: every held write that stays is
    // forwarded at the release.
    let tally = mixed_load_while_flapping("hold", "5s", 2).await;
    let held_then_forwarded = tally
        .forwarded
        .iter()
        .filter(|(_, waited)| *waited >= Duration::from_millis(400))
        .count();
    assert!(
        held_then_forwarded >= 10,
        "too few writes were held then forwarded: {held_then_forwarded}; {}",
        tally.summary()
    );
    assert!(
        tally.gone.len() >= 5,
        "too few clients left while held: {}",
        tally.summary()
    );
}

// ---------------------------------------------------------------------------------------
// State durability
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Engage,
    Release,
}

/// Engagement ids in `/status`.
async fn engagement_ids(wg: &Instance) -> Vec<String> {
    let doc = wg.status().await;
    doc["engagements"]
        .as_array()
        .unwrap_or_else(|| panic!("/status has engagements: {doc}"))
        .iter()
        .map(|e| e["id"].as_str().expect("an engagement id").to_string())
        .collect()
}

/// The mutator's view: the engagements after the last acknowledged change, and the change
/// in flight (sent, not yet acknowledged).
#[derive(Default, Debug)]
struct Acked {
    ids: Vec<String>,
    in_flight: Option<Op>,
    acks: usize,
}

/// Engages and releases as fast as it can until a request fails (the process died).
async fn mutate(admin: SocketAddr, view: Arc<Mutex<Acked>>) {
    loop {
        let op = if view.lock().unwrap().ids.is_empty() {
            Op::Engage
        } else {
            Op::Release
        };
        view.lock().unwrap().in_flight = Some(op.clone());
        let req = match op {
            Op::Engage => Req::new("POST", "/guard")
                .bearer(TOKEN)
                .json(&json!({"reason": "kill test"})),
            Op::Release => Req::new("DELETE", "/guard").bearer(TOKEN),
        };
        let Ok(res) = req.timeout(Duration::from_secs(5)).try_send(admin).await else {
            return;
        };
        let mut v = view.lock().unwrap();
        match (op, res.status.as_u16()) {
            (Op::Engage, 201) => {
                let id = res.json()["id"]
                    .as_str()
                    .expect("engagement id")
                    .to_string();
                v.ids = vec![id];
            }
            (Op::Release, 200) => v.ids.clear(),
            (op, status) => panic!("{op:?} answered {status}: {}", res.text()),
        }
        v.in_flight = None;
        v.acks += 1;
    }
}

fn kill_9(pid: u32) {
    let ok = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -KILL {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_writing_state_never_corrupts_it_and_keeps_acknowledged_changes() {
    let ledger = Ledger::start().await;
    let mut wg = Wg::new(ledger.url()).start().await;
    let mut total_acks = 0;
    // Rounds that ended with a change in flight, and those where it had landed.
    let (mut cut, mut landed) = (0, 0);
    let mut seen_ids = HashSet::new();
    for round in 0..24 {
        let ids = engagement_ids(&wg).await;
        seen_ids.extend(ids.iter().cloned());
        let view = Arc::new(Mutex::new(Acked {
            ids,
            ..Acked::default()
        }));
        let mutator = tokio::spawn(mutate(wg.admin, view.clone()));
        // Let some changes land, then kill at a random moment (the randomness is the point).
        assert!(
            eventually(Duration::from_secs(5), || async {
                view.lock().unwrap().acks >= 1
            })
            .await,
            "round {round}: no change acknowledged within 5 s"
        );
        tokio::time::sleep(random_ms(0, 150)).await;
        kill_9(wg.pid());
        let died = wg.wait_exit(Duration::from_secs(5)).await;
        assert!(died.is_some(), "round {round}: still alive after kill -9");
        match tokio::time::timeout(Duration::from_secs(6), mutator).await {
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(_) => {}
            Err(_) => panic!("round {round}: the mutator still runs after kill -9"),
        }
        let acked = std::mem::take(&mut *view.lock().unwrap());
        total_acks += acked.acks;

        // Readable as it is on disk...
        if let Ok(bytes) = std::fs::read(wg.state_path()) {
            if let Err(e) = serde_json::from_slice::<Value>(&bytes) {
                panic!(
                    "round {round}: state file not JSON after kill -9 ({e}):\n{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
        // ...and at the next start.
        wg.restart().await;
        let doc = wg.status().await;
        assert!(
            doc.get("problem").is_none_or(Value::is_null),
            "round {round}: the restart found a problem: {doc}"
        );
        assert!(
            !wg.logs().contains("unreadable"),
            "round {round}: {}",
            wg.logs()
        );

        // The last acknowledged state, or the one the change in flight made.
        let now = engagement_ids(&wg).await;
        let acknowledged = now == acked.ids;
        let later = match acked.in_flight {
            Some(Op::Release) => now.is_empty(),
            Some(Op::Engage) => {
                acked.ids.is_empty() && now.len() == 1 && !seen_ids.contains(&now[0])
            }
            None => false,
        };
        cut += usize::from(acked.in_flight.is_some());
        landed += usize::from(later && !acknowledged);
        assert!(
            acknowledged || later,
            "round {round}: after kill -9 the state is {now:?}; last acknowledged {:?}, \
             in flight {:?}",
            acked.ids,
            acked.in_flight
        );
    }
    assert!(total_acks >= 24, "only {total_acks} changes acknowledged");
    eprintln!(
        "kill -9: 24 rounds, {total_acks} acknowledged changes; {cut} rounds killed with a \
         change in flight, {landed} of which had landed"
    );
}

/// tests/admin.rs covers a garbage state file failing closed and the operator's release.
/// This adds what an operator sees (log, `/status`), that reads flow, and that the
/// fail-closed guard does not vanish at the next restart (no crash loop, no silent open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_state_file_fails_closed_loudly_serves_reads_and_stays_closed_across_restarts()
{
    let ledger = Ledger::start().await;
    let mut wg = Wg::new(ledger.url()).start().await;
    assert_eq!(wg.engage("before", None).await.status, 201);
    assert!(wg.stop().is_some_and(|s| s.success()));
    let whole = std::fs::read(wg.state_path()).expect("state file written");
    // What a non-atomic writer killed mid-write would leave.
    std::fs::write(wg.state_path(), &whole[..whole.len() / 2]).expect("truncate");

    wg.restart().await;
    let log = wg.logs();
    assert!(
        log.contains("ERROR") && log.contains("unreadable"),
        "no loud error in the log:\n{log}"
    );
    let doc = wg.status().await;
    assert_eq!(doc["guarded"], true, "{doc}");
    assert!(
        doc["problem"].as_str().is_some_and(|p| !p.is_empty()),
        "/status does not say why: {doc}"
    );
    let why = doc["engagements"][0]["reason"].as_str().unwrap_or_default();
    assert!(why.contains("state file"), "engagement reason {why:?}");

    let read = wg.proxy(Req::get("/r/1").header(ID_HEADER, "read-1")).await;
    assert_eq!(read.status, 200, "reads are served");
    let write = wg
        .proxy(
            Req::new("POST", "/w/1")
                .header(ID_HEADER, "write-1")
                .body("x"),
        )
        .await;
    assert_eq!(write.status, 503);
    assert_eq!(ledger.count("write-1"), 0);

    // A second start (crash, orchestrator restart) must neither fail nor come up open.
    wg.restart().await;
    let doc = wg.status().await;
    assert_eq!(
        doc["guarded"], true,
        "the fail-closed guard vanished at the next restart: {doc}"
    );
    let write = wg
        .proxy(
            Req::new("POST", "/w/2")
                .header(ID_HEADER, "write-2")
                .body("x"),
        )
        .await;
    assert_eq!(write.status, 503);
    assert_eq!(ledger.count("write-2"), 0);
    assert_eq!(wg.release(true).await.json()["guarded"], false);
}

// ---------------------------------------------------------------------------------------
// Upgrades
// ---------------------------------------------------------------------------------------

/// The new instance of an upgrade, stopped when dropped.
struct Successor(Child);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What an upgrade under load left: the tally, and each real failure with how many times
/// its request reached the app.
struct Upgraded {
    tally: Tally,
    failures: Vec<(String, usize)>,
    successor_log: String,
}

/// Engages the guard, runs keep-alive and new-connection load, starts `run --upgrade`,
/// SIGQUITs the old instance, waits for it to exit and for the successor to carry the load,
/// then checks what must hold whatever the keep-alive race does: no connection refused, no
/// write through while guarded, the guard and the admin port carried over.
async fn upgrade_under_load() -> Upgraded {
    let ledger = Ledger::start().await;
    let mut wg = Wg::new(ledger.url()).start().await;
    let engaged = wg.engage("deploy across the upgrade", None).await;
    assert_eq!(engaged.status, 201);
    let engagement = engaged.json()["id"].clone();

    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(
        Load {
            addr: wg.proxy,
            tag: "upgrade",
            writes_percent: 20,
            limit: Duration::from_secs(10),
        },
        &[(Client::KeepAlive, 6), (Client::Fresh, 2)],
        stop.clone(),
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            ledger.count_method("GET") >= 200
        })
        .await,
        "the load never got going"
    );

    // The new instance waits for the listeners on the upgrade socket; the old one sends
    // them on SIGQUIT.
    let sock = wg.dir().join("upgrade.sock");
    let _ = std::fs::remove_file(&sock);
    let log_path = wg.dir().join("successor.log");
    let log = std::fs::File::create(&log_path).expect("create log");
    let successor = Successor(
        common::writeguard()
            .arg("run")
            .arg("--upgrade")
            .arg("-c")
            .arg(wg.config_path())
            .env("WRITEGUARD_LOG", "info")
            .current_dir(wg.dir())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn the successor"),
    );
    let successor_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || async { sock.exists() }).await,
        "the successor never opened {}; log:\n{}",
        sock.display(),
        successor_log()
    );
    let old = wg.pid();
    let ok = Command::new("kill")
        .args(["-QUIT", &old.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -QUIT {old}");
    let exited = wg.wait_exit(Duration::from_secs(15)).await;
    assert!(
        exited.is_some(),
        "the old instance did not exit after handing over; successor log:\n{}",
        successor_log()
    );
    // Keep the load on the successor alone for a while.
    let after = ledger.count_method("GET");
    assert!(
        eventually(Duration::from_secs(5), || async {
            ledger.count_method("GET") >= after + 200
        })
        .await,
        "the successor does not serve the load; log:\n{}",
        successor_log()
    );
    stop.store(true, Ordering::SeqCst);
    let tally = load.await.expect("load task");
    eprintln!("upgrade: {}", tally.summary());

    // The admin port is the successor's (the old process is gone) and the guard held.
    let doc = wg.status().await;
    assert_eq!(doc["guarded"], true, "{doc}");
    assert_eq!(doc["engagements"][0]["id"], engagement, "{doc}");
    let ready = wg.admin(Req::get("/readyz")).await;
    assert_eq!(ready.status, 200);
    assert!(
        tally.connect_failed.is_empty(),
        "connections refused across the upgrade: {:?}",
        tally.connect_failed
    );
    assert!(
        tally.forwarded.is_empty(),
        "writes went through while guarded: {:?}",
        tally.forwarded
    );
    let violations = reconcile(&tally, &ledger);
    assert!(violations.is_empty(), "{violations:?}");
    assert!(tally.refused.len() >= 20, "{}", tally.summary());
    assert!(tally.reads_ok >= 400, "{}", tally.summary());

    let failures = tally
        .reads_bad
        .iter()
        .chain(&tally.writes_bad)
        .map(|s| {
            let id = s.split(':').next().unwrap_or_default();
            (s.clone(), ledger.count(id))
        })
        .collect();
    let successor_log = successor_log();
    drop(successor);
    Upgraded {
        tally,
        failures,
        successor_log,
    }
}

/// The listener hand-over itself, the guard and the admin port, and zero failed requests:
/// at the hand-over the old instance answers with `Connection: close` for a second before
/// it closes idle connections, so a request a client has sent always gets an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_hands_over_and_fails_no_request() {
    let up = upgrade_under_load().await;
    assert!(
        up.failures.is_empty(),
        "{} requests failed across the upgrade ({}):\n{}\nsuccessor log:\n{}",
        up.failures.len(),
        up.tally.summary(),
        up.failures
            .iter()
            .map(|(what, reached)| format!("{what} (reached the app {reached} times)"))
            .collect::<Vec<_>>()
            .join("\n"),
        up.successor_log
    );
}
