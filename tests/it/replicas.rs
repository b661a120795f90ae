//! Several writeguard replicas sharing one guard through a real Redis (`[state] backend =
//! "redis"`, one `site`), seen from outside: what each replica's proxy does with a write
//! (503 without the app seeing it, or forwarded), `/status` (guarded, `store`, `replicas`),
//! `/history`, and the admin API's answers.
//!
//! - a change through any replica (operator API or signed Upsun webhook) is adopted by every
//!   replica within a second; a duplicate `complete` ends an engagement once, and a late
//!   `in_progress` of an ended activity is ignored cluster-wide;
//! - Redis lost (SIGKILL) or hung (SIGSTOP): within `stale_after` + 0.5 s every replica
//!   guards writes itself (reads pass) and refuses changes with 503 + Retry-After; within a
//!   second of Redis being back they follow the store again; `on_store_loss = "last-known"`
//!   keeps the last known treatment instead;
//! - Redis restarted empty during an engagement: the replicas keep it and re-seed Redis;
//! - a replica started while Redis is down comes up fail-safe and converges later;
//! - `/status` lists the store and the live replicas; `POST /guard` with `"wait": "all"`
//!   answers once every live replica applied it, 504 when one cannot.
//!
//! Each test has its own `redis-server` ([`Redis`]), upstream and replicas. Bounds are the
//! feature's own (1 s to propagate, `stale_after` = 1 s + 0.5 s to fail safe), plus
//! [`SLACK`] for the harness's polling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::process::Process;
use crate::common::{
    eventually, free_port, sample, Instance, Redis, Req, Resp, Upstream, Wg, COMPLETE, IN_PROGRESS,
    SAMPLE_ID, TOKEN,
};

/// What the harness's own polling may add to a bound of the feature (each round asks every
/// replica, then sleeps 50 ms).
const SLACK: Duration = Duration::from_millis(250);
/// A change through one replica is applied by every other within this.
const PROPAGATE: Duration = Duration::from_secs(1);
/// `stale_after` (1 s in [`Wg::redis`]) + 0.5 s: every replica is fail-safe by then.
const FAIL_SAFE: Duration = Duration::from_millis(1500);
/// Redis is back (answers PING): the replicas follow it again within this.
const RECOVER: Duration = Duration::from_secs(1);

fn within(bound: Duration) -> Duration {
    bound + SLACK
}

/// `n` replicas in front of `up`, sharing `site` in `redis`, with the ids `wg-0`, `wg-1`...
/// (`tweak` adds settings): each its own process, temp dir, ports and boot cache.
async fn replicas(
    n: usize,
    up: &Upstream,
    redis: &Redis,
    site: &str,
    tweak: impl Fn(Wg) -> Wg,
) -> Vec<Instance> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(replica(up, redis, site, i, &tweak).await);
    }
    all
}

/// One replica with the id `wg-<i>`.
async fn replica(
    up: &Upstream,
    redis: &Redis,
    site: &str,
    i: usize,
    tweak: impl Fn(Wg) -> Wg,
) -> Instance {
    let cfg = Wg::for_upstream(up)
        .redis(redis, site)
        .state_line(&format!("replica = \"wg-{i}\""));
    tweak(cfg).start().await
}

/// The `[state]` key prefix of `site` in Redis.
fn key(site: &str, what: &str) -> String {
    format!("writeguard:{{{site}}}:{what}")
}

/// A POST through `wg` to a path never used before: true when refused (503, and the app
/// never saw it), false when forwarded (200, and the app got it).
async fn refuses(wg: &Instance, up: &Upstream) -> bool {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = format!("/probe/{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let res = wg.post(&path).await;
    let seen = up.records().iter().any(|r| r.uri == path);
    match res.status.as_u16() {
        503 => {
            assert!(!seen, "the 503'd POST {path} reached the app");
            true
        }
        200 => {
            assert!(
                seen,
                "the POST {path} answered 200 without reaching the app"
            );
            false
        }
        other => panic!("POST {path}: unexpected {other}: {}", res.text()),
    }
}

/// Every replica refuses writes, and says so in `/status`.
async fn all_refuse(ws: &[&Instance], up: &Upstream) -> bool {
    for wg in ws {
        if !refuses(wg, up).await || !wg.guarded().await {
            return false;
        }
    }
    true
}

/// Every replica forwards writes, and says it is not guarded.
async fn all_pass(ws: &[&Instance], up: &Upstream) -> bool {
    for wg in ws {
        if refuses(wg, up).await || wg.guarded().await {
            return false;
        }
    }
    true
}

/// `check` holds at every poll (every 50 ms) for `span`.
async fn stays<F, Fut>(span: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + span;
    loop {
        if !check().await {
            return false;
        }
        if Instant::now() >= end {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every replica's `/status`, for failure messages.
async fn statuses(ws: &[&Instance]) -> String {
    let mut out = String::new();
    for wg in ws {
        out += &format!("{}: {}\n", wg.admin, wg.status().await);
    }
    out
}

/// `GET /history` (newest first) through `wg`.
async fn history(wg: &Instance) -> Vec<Value> {
    let res = wg.admin(Req::get("/history").bearer(&wg.cfg.token)).await;
    assert_eq!(res.status, 200, "GET /history: {}", res.text());
    res.json().as_array().expect("an array").clone()
}

/// The records of `history` for `action` on `engagement`.
fn records<'a>(history: &'a [Value], action: &str, engagement: &str) -> Vec<&'a Value> {
    history
        .iter()
        .filter(|r| r["action"] == action && r["engagement"] == engagement)
        .collect()
}

/// `/status`'s `store` of `wg`.
async fn store(wg: &Instance) -> Value {
    wg.status().await["store"].clone()
}

/// Every replica reads the store (`store.ok`) and is not fail-safe.
async fn all_store_ok(ws: &[&Instance]) -> bool {
    for wg in ws {
        let s = store(wg).await;
        if s["ok"] != true || s["failsafe"] != false {
            return false;
        }
    }
    true
}

/// Every replica has lost the store (`store.ok` false).
async fn all_store_lost(ws: &[&Instance]) -> bool {
    for wg in ws {
        if store(wg).await["ok"] != false {
            return false;
        }
    }
    true
}

/// Whether `wg`'s engagements include one with this reason.
async fn has_reason(wg: &Instance, reason: &str) -> bool {
    wg.status().await["engagements"]
        .as_array()
        .is_some_and(|es| es.iter().any(|e| e["reason"] == reason))
}

/// A 503 with a `Retry-After` of whole seconds; returns them.
#[track_caller]
fn assert_unavailable(res: &Resp, what: &str) -> u64 {
    assert_eq!(res.status, 503, "{what}: {}", res.text());
    let retry = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: a 503 without Retry-After"));
    retry
        .parse()
        .unwrap_or_else(|e| panic!("{what}: Retry-After {retry:?}: {e}"))
}

/// What a fail-safe replica shows: writes refused with a short Retry-After (without the app
/// seeing them), reads forwarded, and `/status` guarded by the store with the store lost.
async fn assert_fail_safe(wg: &Instance, up: &Upstream) {
    let before = up.count_method("POST");
    let res = wg.post("/orders").await;
    let retry = assert_unavailable(&res, "a write while the store is lost");
    assert!(retry <= 5, "Retry-After {retry} while the store is lost");
    assert_eq!(up.count_method("POST"), before, "a write reached the app");
    let read = wg.proxy(Req::get("/catalog")).await;
    assert_eq!(
        read.status,
        200,
        "a read while the store is lost: {}",
        read.text()
    );
    let status = wg.status().await;
    assert_eq!(status["guarded"], true, "{status}");
    let by_store = status["engagements"]
        .as_array()
        .is_some_and(|es| es.iter().any(|e| e["source"] == "store"));
    assert!(by_store, "no engagement with source \"store\": {status}");
    let store = &status["store"];
    assert_eq!(store["backend"], "redis", "{status}");
    assert_eq!(store["ok"], false, "{status}");
    assert_eq!(store["failsafe"], true, "{status}");
    assert!(store["version"].is_u64(), "{status}");
}

/// The harness itself (no writeguard): a server answers PING on its port, stops answering
/// when frozen and again when thawed, is gone when killed, comes back EMPTY on the same
/// port (waiting while another process holds it), and is killed by its PID when dropped,
/// frozen or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_harness_starts_freezes_kills_and_restarts_an_empty_server() {
    let mut redis = Redis::start().await;
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));
    assert_eq!(redis.cli(&["PING"]), "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    let (port, pid) = (redis.port(), redis.pid());

    redis.freeze();
    assert!(!redis.ping().await, "a frozen server answered");
    redis.thaw();
    assert!(redis.ping().await, "a thawed server did not answer");
    assert_eq!(redis.cli(&["GET", "k"]), "v");

    redis.kill();
    assert!(!redis.ping().await, "a killed server answered");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    // Someone holds the port for a moment: the restart waits it out.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the old port");
    let squatting = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(squatter);
    });
    let started = Instant::now();
    redis.restart_empty().await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    squatting.join().expect("squatter thread");
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), pid);
    assert_eq!(
        redis.cli(&["DBSIZE"]),
        "0",
        "the restarted server is not empty"
    );
    assert_eq!(redis.cli(&["GET", "k"]), "");

    let mut other = Redis::start().await;
    assert_ne!(other.port(), port);
    let other_pid = other.pid();
    other.freeze();
    drop(other);
    assert!(
        !std::path::Path::new(&format!("/proc/{other_pid}")).exists(),
        "a dropped, frozen server is still there"
    );
    assert!(redis.ping().await, "dropping one server touched another");
}

/// Operator changes and signed webhooks through any replica are adopted by all within a
/// second; `/history` on any replica holds the cluster's records, one per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_any_replica_is_applied_by_every_replica_within_a_second() {
    let up = Upstream::start().await;
    let redis = Redis::start().await;
    let ws = replicas(3, &up, &redis, "shop-propagate", |w| w).await;
    let (a, b, c) = (&ws[0], &ws[1], &ws[2]);
    let all = [a, b, c];
    assert!(all_pass(&all, &up).await, "{}", statuses(&all).await);

    // The operator engages through A: B and C refuse writes.
    let engaged = a.engage("migrations", None).await;
    assert_eq!(engaged.status, 201, "{}", engaged.text());
    let engagement = engaged.json()["id"].as_str().expect("id").to_string();
    assert!(
        eventually(within(PROPAGATE), || all_refuse(&all, &up)).await,
        "A's engagement did not reach every replica:\n{}",
        statuses(&all).await
    );
    // ...and releases through B: all forward writes again.
    let res = b.release(false).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        eventually(within(PROPAGATE), || all_pass(&all, &up)).await,
        "B's release did not reach every replica:\n{}",
        statuses(&all).await
    );

    // A deploy starts (webhook to C) and ends (webhook to A).
    let res = c.webhook_signed(sample(IN_PROGRESS)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["guarded"], true, "{}", res.text());
    assert!(
        eventually(within(PROPAGATE), || all_refuse(&all, &up)).await,
        "C's webhook did not reach every replica:\n{}",
        statuses(&all).await
    );
    let res = a.webhook_signed(sample(COMPLETE)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["guarded"], false, "{}", res.text());
    assert!(
        eventually(within(PROPAGATE), || all_pass(&all, &up)).await,
        "A's webhook did not reach every replica:\n{}",
        statuses(&all).await
    );

    // Four changes, whichever replica made them: the same four records everywhere.
    let got = history(c).await;
    let actions: Vec<_> = got
        .iter()
        .map(|r| (r["action"].as_str(), r["source"].as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (Some("release"), Some("webhook")),
            (Some("engage"), Some("webhook")),
            (Some("release"), Some("api")),
            (Some("engage"), Some("api")),
        ],
        "{got:#?}"
    );
    assert_eq!(got[3]["engagement"], engagement.as_str());
    assert_eq!(got[2]["engagement"], engagement.as_str());
    assert_eq!(got[1]["engagement"], SAMPLE_ID);
    assert_eq!(got[0]["engagement"], SAMPLE_ID);
    assert_eq!(history(a).await, got);
    assert_eq!(history(b).await, got);
}

/// Upsun delivers the same `complete` to two replicas at once: both acknowledge it, the
/// engagement ends once. A late `in_progress` of that activity, delivered to the third
/// replica (which never saw the activity itself), engages nothing anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_complete_ends_an_engagement_once_and_a_late_in_progress_is_ignored() {
    let up = Upstream::start().await;
    let redis = Redis::start().await;
    let ws = replicas(3, &up, &redis, "shop-dedupe", |w| w).await;
    let (a, b, c) = (&ws[0], &ws[1], &ws[2]);
    let all = [a, b, c];

    let res = b.webhook_signed(sample(IN_PROGRESS)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        eventually(within(PROPAGATE), || all_refuse(&all, &up)).await,
        "{}",
        statuses(&all).await
    );

    let (to_b, to_c) = tokio::join!(
        b.webhook_signed(sample(COMPLETE)),
        c.webhook_signed(sample(COMPLETE))
    );
    assert!(to_b.status.is_success(), "B: {}", to_b.text());
    assert!(to_c.status.is_success(), "C: {}", to_c.text());
    assert!(
        eventually(within(PROPAGATE), || all_pass(&all, &up)).await,
        "{}",
        statuses(&all).await
    );
    for wg in all {
        let got = history(wg).await;
        assert_eq!(
            records(&got, "release", SAMPLE_ID).len(),
            1,
            "{}: {got:#?}",
            wg.admin
        );
        assert_eq!(records(&got, "engage", SAMPLE_ID).len(), 1, "{got:#?}");
    }

    // The same activity's `in_progress`, late and out of order, to A.
    let res = a.webhook_signed(sample(IN_PROGRESS)).await;
    assert!(res.status.is_success(), "{}", res.text());
    assert_eq!(res.json()["guarded"], false, "{}", res.text());
    assert!(
        stays(within(PROPAGATE), || all_pass(&all, &up)).await,
        "a late in_progress engaged:\n{}",
        statuses(&all).await
    );
    let got = history(c).await;
    assert_eq!(records(&got, "engage", SAMPLE_ID).len(), 1, "{got:#?}");
    assert_eq!(got.len(), 2, "{got:#?}");
}

/// Redis is SIGKILLed: within `stale_after` + 0.5 s every replica refuses writes (reads
/// pass), and changes are refused with 503 + Retry-After since none can be stored. Redis
/// restarted (empty): within a second writes pass again, and the refused changes never
/// happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_every_replica_refuses_writes_until_it_is_back() {
    let up = Upstream::start().await;
    let mut redis = Redis::start().await;
    let ws = replicas(3, &up, &redis, "shop-kill", |w| w).await;
    let all = [&ws[0], &ws[1], &ws[2]];
    assert!(all_pass(&all, &up).await, "{}", statuses(&all).await);
    assert!(all_store_ok(&all).await, "{}", statuses(&all).await);

    redis.kill();
    assert!(
        eventually(within(FAIL_SAFE), || all_refuse(&all, &up)).await,
        "not every replica refuses writes {FAIL_SAFE:?} after Redis died:\n{}",
        statuses(&all).await
    );
    let posts = up.count_method("POST");
    for wg in all {
        assert_fail_safe(wg, &up).await;
        let token = &wg.cfg.token;
        let limit = Duration::from_secs(10);
        let engage = Req::new("POST", "/guard")
            .bearer(token)
            .json(&serde_json::json!({ "reason": "while Redis is dead" }))
            .timeout(limit);
        assert_unavailable(&wg.admin(engage).await, "POST /guard");
        let release = Req::new("DELETE", "/guard?all=true")
            .bearer(token)
            .timeout(limit);
        assert_unavailable(&wg.admin(release).await, "DELETE /guard");
        assert_unavailable(
            &wg.webhook_signed(sample(IN_PROGRESS)).await,
            "a signed webhook",
        );
    }
    assert_eq!(up.count_method("POST"), posts, "a write reached the app");

    redis.restart_empty().await;
    assert!(
        eventually(within(RECOVER), || async {
            all_pass(&all, &up).await && all_store_ok(&all).await
        })
        .await,
        "not every replica forwards writes {RECOVER:?} after Redis is back:\n{}",
        statuses(&all).await
    );
    for wg in all {
        let status = wg.status().await;
        assert_eq!(status["engagements"], Value::Array(vec![]), "{status}");
    }
}

/// Redis is frozen (SIGSTOP: connections open, no answers): the same fail-safe within
/// `stale_after` + 0.5 s; thawed, writes pass again within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_frozen_every_replica_refuses_writes_until_it_thaws() {
    let up = Upstream::start().await;
    let mut redis = Redis::start().await;
    let ws = replicas(3, &up, &redis, "shop-freeze", |w| w).await;
    let all = [&ws[0], &ws[1], &ws[2]];
    assert!(all_pass(&all, &up).await, "{}", statuses(&all).await);

    redis.freeze();
    assert!(
        eventually(within(FAIL_SAFE), || all_refuse(&all, &up)).await,
        "not every replica refuses writes {FAIL_SAFE:?} after Redis froze:\n{}",
        statuses(&all).await
    );
    for wg in all {
        assert_fail_safe(wg, &up).await;
    }
    // A change cannot be stored: refused, in bounded time, and it stays refused: nothing
    // queued for the frozen server engages the guard once it thaws.
    let release = Req::new("DELETE", "/guard?all=true")
        .bearer(&ws[1].cfg.token)
        .timeout(Duration::from_secs(10));
    assert_unavailable(&ws[1].admin(release).await, "DELETE /guard");
    let engage = Req::new("POST", "/guard")
        .bearer(&ws[2].cfg.token)
        .json(&serde_json::json!({"reason": "refused while frozen"}))
        .timeout(Duration::from_secs(10));
    assert_unavailable(&ws[2].admin(engage).await, "POST /guard");

    redis.thaw();
    assert!(
        eventually(within(RECOVER), || async {
            all_pass(&all, &up).await && all_store_ok(&all).await
        })
        .await,
        "not every replica forwards writes {RECOVER:?} after Redis thawed:\n{}",
        statuses(&all).await
    );
    assert!(
        stays(Duration::from_millis(1500), || all_pass(&all, &up)).await,
        "an engagement refused with 503 while Redis was frozen took effect after it thawed:\n{}",
        statuses(&all).await
    );
}

/// `on_store_loss = "last-known"`: with Redis gone, writes keep the treatment they had:
/// forwarded while nothing was engaged, refused while engaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_last_known_mode_writes_keep_their_last_treatment_while_redis_is_gone() {
    let up = Upstream::start().await;
    let mut redis = Redis::start().await;
    let ws = replicas(2, &up, &redis, "shop-last-known", |w| {
        w.state_line("on_store_loss = \"last-known\"")
    })
    .await;
    let all = [&ws[0], &ws[1]];

    // Not engaged: writes keep passing, well past the fail-safe bound.
    redis.kill();
    assert!(
        stays(within(FAIL_SAFE) * 2, || all_pass(&all, &up)).await,
        "a write was refused with nothing engaged:\n{}",
        statuses(&all).await
    );
    assert!(all_store_lost(&all).await, "{}", statuses(&all).await);

    // Engaged: writes keep being refused.
    redis.restart_empty().await;
    assert!(
        eventually(within(RECOVER), || all_store_ok(&all)).await,
        "{}",
        statuses(&all).await
    );
    let res = ws[0].engage("migrations", None).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert!(
        eventually(within(PROPAGATE), || all_refuse(&all, &up)).await,
        "{}",
        statuses(&all).await
    );
    redis.kill();
    assert!(
        eventually(within(FAIL_SAFE), || all_store_lost(&all)).await,
        "{}",
        statuses(&all).await
    );
    assert!(
        stays(within(PROPAGATE), || async {
            all_refuse(&all, &up).await
                && has_reason(all[0], "migrations").await
                && has_reason(all[1], "migrations").await
        })
        .await,
        "a write passed while engaged:\n{}",
        statuses(&all).await
    );
}

/// Redis dies during an engagement and comes back EMPTY: every replica stays guarded by
/// the engagement (not only by the fail-safe), and the replicas write the state back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engagement_survives_redis_restarting_empty_and_is_stored_again() {
    let up = Upstream::start().await;
    let mut redis = Redis::start().await;
    let site = "shop-reseed";
    let ws = replicas(3, &up, &redis, site, |w| w).await;
    let all = [&ws[0], &ws[1], &ws[2]];
    let res = ws[0].engage("migrations", Some("10m")).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert!(
        eventually(within(PROPAGATE), || all_refuse(&all, &up)).await,
        "{}",
        statuses(&all).await
    );

    redis.kill();
    assert!(
        eventually(within(FAIL_SAFE), || all_store_lost(&all)).await,
        "{}",
        statuses(&all).await
    );
    assert!(all_refuse(&all, &up).await, "{}", statuses(&all).await);
    redis.restart_empty().await;

    let state = key(site, "state");
    assert!(
        eventually(Duration::from_secs(3), || async {
            !redis.cli(&["HGET", &state, "version"]).is_empty() && all_store_ok(&all).await
        })
        .await,
        "the state is not back in Redis: {:?}\n{}",
        redis.cli(&["HGETALL", &state]),
        statuses(&all).await
    );
    assert!(
        redis.cli(&["HGET", &state, "doc"]).contains("migrations"),
        "{}",
        redis.cli(&["HGETALL", &state])
    );
    assert!(
        stays(within(PROPAGATE), || async {
            let mut ok = all_refuse(&all, &up).await;
            for wg in all {
                ok = ok && has_reason(wg, "migrations").await;
            }
            ok
        })
        .await,
        "a replica lost the engagement:\n{}",
        statuses(&all).await
    );

    // The re-seeded state is the cluster's again: a release through B reaches everyone.
    assert_eq!(ws[1].release(false).await.status, 200);
    assert!(
        eventually(within(PROPAGATE), || all_pass(&all, &up)).await,
        "{}",
        statuses(&all).await
    );
}

/// A replica started (with nothing cached) while Redis is down comes up ready but
/// fail-safe; once Redis is back it forwards writes and takes part in changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_redis_is_down_is_fail_safe_until_it_is_back() {
    let up = Upstream::start().await;
    let mut redis = Redis::start().await;
    let site = "shop-cold-start";
    let a = replica(&up, &redis, site, 0, |w| w).await;

    redis.kill();
    let b = replica(&up, &redis, site, 1, |w| w).await;
    assert!(refuses(&b, &up).await, "{}", b.status().await);
    assert_fail_safe(&b, &up).await;

    redis.restart_empty().await;
    let all = [&a, &b];
    assert!(
        eventually(within(RECOVER), || async {
            all_pass(&all, &up).await && all_store_ok(&all).await
        })
        .await,
        "{}",
        statuses(&all).await
    );
    let res = b.engage("from the late one", None).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert!(
        eventually(within(PROPAGATE), || all_refuse(&all, &up)).await,
        "{}",
        statuses(&all).await
    );
}

/// A replica restarted while Redis is down comes up from its boot cache: the engagement it
/// knew, plus the fail-safe. Redis back (empty): both replicas converge on the engagement,
/// and a release through the restarted one reaches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_while_redis_is_down_comes_up_from_its_boot_cache() {
    let up = Upstream::start().await;
    let mut redis = Redis::start().await;
    let mut ws = replicas(2, &up, &redis, "shop-boot-cache", |w| w).await;
    let res = ws[0].engage("migrations", Some("10m")).await;
    assert_eq!(res.status, 201, "{}", res.text());
    {
        let all = [&ws[0], &ws[1]];
        assert!(
            eventually(within(PROPAGATE), || all_refuse(&all, &up)).await,
            "{}",
            statuses(&all).await
        );
    }

    redis.kill();
    ws[1].restart().await;
    let b = &ws[1];
    assert_fail_safe(b, &up).await;
    assert!(
        has_reason(b, "migrations").await,
        "the boot cache did not bring the engagement: {}",
        b.status().await
    );

    redis.restart_empty().await;
    let all = [&ws[0], &ws[1]];
    assert!(
        eventually(Duration::from_secs(3), || async {
            all_store_ok(&all).await
                && has_reason(all[0], "migrations").await
                && has_reason(all[1], "migrations").await
                && all_refuse(&all, &up).await
        })
        .await,
        "{}",
        statuses(&all).await
    );
    assert_eq!(ws[1].release(false).await.status, 200);
    assert!(
        eventually(within(PROPAGATE), || all_pass(&all, &up)).await,
        "{}",
        statuses(&all).await
    );
}

/// `/status` shows the store (backend, ok, version, fail-safe) and every live replica; a
/// replica that stops (gracefully or killed) leaves the list within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_store_and_every_live_replica() {
    let up = Upstream::start().await;
    let redis = Redis::start().await;
    let mut ws = replicas(3, &up, &redis, "shop-status", |w| w).await;
    let ids = |doc: &Value| -> Vec<String> {
        let mut ids: Vec<String> = doc["replicas"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| r["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    {
        let all = [&ws[0], &ws[1], &ws[2]];
        assert!(
            eventually(within(PROPAGATE), || async {
                let mut every = true;
                for wg in all {
                    every = every && ids(&wg.status().await) == ["wg-0", "wg-1", "wg-2"];
                }
                every
            })
            .await,
            "{}",
            statuses(&all).await
        );
        for wg in all {
            let doc = wg.status().await;
            let store = &doc["store"];
            assert_eq!(store["backend"], "redis", "{doc}");
            assert_eq!(store["ok"], true, "{doc}");
            assert_eq!(store["failsafe"], false, "{doc}");
            assert!(store["version"].is_u64(), "{doc}");
            for r in doc["replicas"].as_array().expect("replicas") {
                assert!(r["address"].as_str().is_some_and(|a| !a.is_empty()), "{r}");
                assert!(r["version"].is_u64(), "{r}");
                assert_eq!(r["failsafe"], false, "{r}");
            }
        }

        // A change moves every replica to the same, newer version.
        let before = store(all[0]).await["version"].as_u64().expect("version");
        assert_eq!(all[1].engage("bump", None).await.status, 201);
        assert!(
            eventually(within(PROPAGATE), || async {
                let mut versions = Vec::new();
                for wg in all {
                    versions.push(store(wg).await["version"].as_u64());
                }
                versions.iter().all(|v| v.is_some_and(|v| v > before))
                    && versions.windows(2).all(|w| w[0] == w[1])
            })
            .await,
            "{}",
            statuses(&all).await
        );
    }

    // C stops cleanly, B is killed: A lists itself only.
    ws[2].stop();
    ws[1].signal("KILL");
    assert!(ws[1].wait_exit(Duration::from_secs(5)).await.is_some());
    assert!(
        eventually(Duration::from_secs(6), || async {
            ids(&ws[0].status().await) == ["wg-0"]
        })
        .await,
        "stopped replicas are still listed: {}",
        ws[0].status().await
    );
}

/// `POST /guard` with `"wait": "all"` answers 201 once every live replica applied the
/// engagement; with one replica frozen, 504 after the timeout, and the engagement stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_all_answers_once_every_live_replica_applied_the_engagement() {
    let up = Upstream::start().await;
    let redis = Redis::start().await;
    let ws = replicas(3, &up, &redis, "shop-wait-all", |w| w).await;
    let all = [&ws[0], &ws[1], &ws[2]];
    let live = |doc: Value| doc["replicas"].as_array().map_or(0, Vec::len);
    assert!(
        eventually(within(PROPAGATE), || async {
            live(all[0].status().await) == 3
        })
        .await,
        "{}",
        statuses(&all).await
    );
    let engage = |reason: &str, timeout: &str| {
        Req::new("POST", "/guard")
            .bearer(&ws[0].cfg.token)
            .json(&serde_json::json!({ "reason": reason, "wait": "all", "timeout": timeout }))
            .timeout(Duration::from_secs(15))
    };

    let res = ws[0].admin(engage("everyone", "5s")).await;
    assert_eq!(res.status, 201, "{}", res.text());
    // Applied everywhere when answered: no waiting here.
    assert!(all_refuse(&all, &up).await, "{}", statuses(&all).await);
    assert_eq!(ws[0].release(true).await.status, 200);
    assert!(
        eventually(within(PROPAGATE), || all_pass(&all, &up)).await,
        "{}",
        statuses(&all).await
    );

    // C frozen: it cannot apply anything. (A short timeout: C must still count as live.)
    ws[2].signal("STOP");
    let started = Instant::now();
    let res = ws[0].admin(engage("not everyone", "2s")).await;
    let took = started.elapsed();
    ws[2].signal("CONT");
    assert_eq!(res.status, 504, "{}", res.text());
    assert!(
        res.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        res.text()
    );
    assert!(
        took >= Duration::from_millis(1900),
        "504 after {took:?}, before the timeout"
    );
    assert!(took < Duration::from_secs(5), "504 only after {took:?}");
    assert!(
        eventually(within(PROPAGATE), || async {
            all_refuse(&all, &up).await && has_reason(all[2], "not everyone").await
        })
        .await,
        "the engagement did not stay (or C did not catch up):\n{}",
        statuses(&all).await
    );
}

/// With the file backend `/status` says so, and lists this process as the only replica
/// (its id `<hostname>-<pid>` by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_file_backend_status_shows_one_replica() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let doc = wg.status().await;
    assert_eq!(doc["store"]["backend"], "file", "{doc}");
    let replicas = doc["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 1, "{doc}");
    let id = replicas[0]["id"].as_str().expect("id");
    assert!(id.ends_with(&format!("-{}", wg.pid())), "{doc}");
}

/// `WRITEGUARD_REDIS_URL` overrides `state.redis_url`: the config names a port nobody
/// listens on, the environment the real server, and the state lands in the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_url_from_the_environment_overrides_the_config() {
    let up = Upstream::start().await;
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (proxy, admin) = (free_port(), free_port());
    let nobody = free_port();
    let text = Wg::for_upstream(&up)
        .state_line("backend = \"redis\"")
        .state_line(&format!("redis_url = \"redis://{nobody}/0\""))
        .state_line("site = \"shop-env\"")
        .state_line("stale_after = \"1s\"")
        .render(proxy, admin, dir.path());
    let env = [("WRITEGUARD_REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut wg = Process::spawn(dir.path(), "wg", &text, &[], &env, (proxy, admin));
    wg.ready().await;
    assert!(
        eventually(within(RECOVER), || async {
            wg.status().await["store"]["ok"] == true
        })
        .await,
        "{}",
        wg.status().await
    );
    let res = Req::new("POST", "/guard")
        .bearer(TOKEN)
        .json(&serde_json::json!({ "reason": "set through the env url" }))
        .send(admin)
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let state = key("shop-env", "state");
    assert!(
        redis
            .cli(&["HGET", &state, "doc"])
            .contains("set through the env url"),
        "{}",
        redis.cli(&["HGETALL", &state])
    );
}

/// The commit script refuses a change that reaches Redis after its deadline (what a frozen
/// Redis runs when it thaws, after the caller was answered 503): nothing stored, no audit
/// record, no notice; the same change before its deadline is stored. Run against a real
/// server with `redis-cli --no-raw`, the script as shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_script_refuses_a_change_past_its_deadline() {
    let redis = Redis::start().await;
    let script = include_str!("../../src/store/redis/commit.lua");
    let (state, audit) = (key("late", "state"), key("late", "audit"));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let commit = |deadline: i64| {
        redis.cli(&[
            "--no-raw",
            "EVAL",
            script,
            "2",
            &state,
            &audit,
            "1",
            r#"{"version":1,"engagements":[]}"#,
            &key("late", "changes"),
            "100",
            &deadline.to_string(),
            r#"{"record":"x"}"#,
        ])
    };
    let late = commit(now_ms - 1_000);
    assert!(late.starts_with("1) (integer) 2"), "{late}");
    assert_eq!(redis.cli(&["HGET", &state, "version"]).trim(), "");
    assert_eq!(redis.cli(&["XLEN", &audit]).trim(), "0");
    let on_time = commit(now_ms + 60_000);
    assert!(on_time.starts_with("1) (integer) 1"), "{on_time}");
    assert_eq!(redis.cli(&["HGET", &state, "version"]).trim(), "1");
    assert_eq!(redis.cli(&["XLEN", &audit]).trim(), "1");
}

/// The deploy-script step as a command: `writeguard engage --wait all` through one of two
/// replicas exits 0 once both applied it, and prints both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_engages_and_waits_for_every_replica() {
    let up = Upstream::start().await;
    let redis = Redis::start().await;
    let ws = replicas(2, &up, &redis, "shop-cli", |w| w).await;
    let admin = ws[0].admin_url();
    let args = [
        "engage",
        "--reason",
        "migrations",
        "--wait",
        "all",
        "--timeout",
        "5s",
    ];
    let out = crate::common::run(
        ws[0].dir(),
        &[&args[..], &["--admin", &admin, "--token", TOKEN]].concat(),
        &[],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(created["reason"], "migrations");
    let ids: Vec<&str> = created["replicas"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["wg-0", "wg-1"], "{created}");
    assert!(refuses(&ws[1], &up).await, "{}", ws[1].status().await);
}
