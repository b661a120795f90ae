//! `run --upgrade` under load: the new instance takes the listeners over from the running
//! one without failing a request, and the guard state and the admin port carry over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::ledger::Ledger;
use crate::common::load::{reconcile, spawn_load, Client, Load, Tally};
use crate::common::process::Process;
use crate::common::{eventually, Req, Wg};

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
    let config = std::fs::read_to_string(wg.config_path()).expect("read config");
    let successor = Process::successor(&wg, &config).await;
    wg.signal("QUIT");
    let exited = wg.wait_exit(Duration::from_secs(15)).await;
    assert!(
        exited.is_some(),
        "the old instance did not exit after handing over; successor log:\n{}",
        successor.logs()
    );
    // Keep the load on the successor alone for a while.
    let after = ledger.count_method("GET");
    assert!(
        eventually(Duration::from_secs(5), || async {
            ledger.count_method("GET") >= after + 200
        })
        .await,
        "the successor does not serve the load; log:\n{}",
        successor.logs()
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
    let successor_log = successor.logs();
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
