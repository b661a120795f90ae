//! State-file durability: `kill -9` while the state file is being written never corrupts it,
//! and the last acknowledged change survives; a corrupt state file fails closed, loudly,
//! without a crash loop.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::ledger::{Ledger, ID_HEADER};
use crate::common::{eventually, Instance, Req, Wg, TOKEN};

use super::random_ms;

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
        wg.signal("KILL");
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

/// tests/it/admin.rs covers a garbage state file failing closed and the operator's release.
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
