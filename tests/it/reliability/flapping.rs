//! Exactly-once writes while the guard flaps (admin API and signed webhooks alternating),
//! with `hold = "0s"` and with a hold, including clients that leave while held; reads never
//! fail because of the guard (same runs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::ledger::Ledger;
use crate::common::load::{reconcile, spawn_load, Client, Load, Tally};
use crate::common::{activity, eventually, Instance, Wg};

use super::random_ms;

/// Sleeps `d`, or less when `stop` is set meanwhile.
async fn pause(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep((end - Instant::now()).min(Duration::from_millis(20))).await;
    }
}

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
