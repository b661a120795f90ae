//! Any config `Config::parse` accepts, turned into every deadline the running code computes
//! from it: none may panic. `Instant + Duration` and `OffsetDateTime + Duration` panic on
//! overflow, and a panicking request handler fails open (the guard never engages). Also
//! asserted: every accepted duration is within the largest documented bound, so even the sum
//! writeguard does not control (hyper's header deadline, `Instant::now() + header_timeout`)
//! cannot overflow. The guard's own deadlines go through the real `Guard` (an in-memory
//! backend standing in for the state file), as the webhook and `POST /guard` handlers drive it.
#![no_main]

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;
use writeguard::config::Config;
use writeguard::deadline;
use writeguard::guard::{AuditRecord, Backend, Commit, Guard, GuardState, Replica, StoreError};
use writeguard::upsun::Activity;

/// Named by the seeds' `token_env` / `shared_key_env`, as in the `config` target.
const ENV: [(&str, &str); 2] = [("FUZZ_TOKEN", "fuzz-token"), ("FUZZ_KEY", "fuzz-key")];

/// The largest upper bound README's config table gives a duration (`guard.max_engaged`).
const LONGEST: Duration = Duration::from_secs(7 * 86_400);

/// The guard state in memory, serialized on every commit as the file store does.
#[derive(Default)]
struct Memory(Mutex<Option<GuardState>>);

impl Backend for Memory {
    fn load(&self) -> Result<Option<GuardState>, StoreError> {
        Ok(self.0.lock().expect("not poisoned").clone())
    }

    fn commit(&self, next: &GuardState, _records: &[AuditRecord]) -> Result<Commit, StoreError> {
        serde_json::to_vec_pretty(next).expect("guard state always serializes");
        *self.0.lock().expect("not poisoned") = Some(next.clone());
        Ok(Commit::Done)
    }

    fn newer_than(&self, version: u64) -> Result<Option<GuardState>, StoreError> {
        let stored = self.0.lock().expect("not poisoned");
        Ok(stored.clone().filter(|s| s.version > version))
    }

    fn history(&self, _limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(Vec::new())
    }

    fn set_aside(&self) -> Option<String> {
        None
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(text, &ENV) else {
        return;
    };
    let now = Instant::now();
    let tokio_now = tokio::time::Instant::now();
    let wall = OffsetDateTime::now_utc();
    for (key, d) in cfg.durations() {
        assert!(
            d <= LONGEST,
            "{key} = {d:?} accepted, beyond every documented bound"
        );
        assert!(
            now.checked_add(d).is_some(),
            "{key}: Instant + {d:?} overflows"
        );
        assert!(deadline::after(now, d) >= now);
        assert!(deadline::after_tokio(tokio_now, d) >= tokio_now);
        assert!(deadline::expiry(wall, d) >= wall);
    }

    // The proxy's and listeners' deadlines, as computed there.
    let hold = deadline::after_tokio(tokio_now, cfg.guard.hold);
    let _retry_until = hold.into_std();
    let _retry = deadline::after(now, cfg.proxy.upstream_retry);
    let body = deadline::after_tokio(tokio_now, cfg.proxy.body_timeout);
    let _next = deadline::after_tokio(tokio_now, cfg.proxy.body_idle_timeout).min(body);
    let sent = deadline::after_tokio(tokio_now, cfg.proxy.upstream_timeout);
    let _answer_by = deadline::after_tokio(sent, cfg.proxy.upstream_timeout);
    // An h2c connection's idle deadline: milliseconds since accept, plus header_timeout.
    let idle = Duration::from_millis(u64::MAX).saturating_add(cfg.proxy.header_timeout);
    let _idle_at = deadline::after_tokio(tokio_now, idle);
    let linger = cfg.server.shutdown_grace.min(Duration::from_secs(1));
    let _linger_at = deadline::after_tokio(tokio_now, linger);
    let _grace_at = deadline::after(now, cfg.server.shutdown_grace);
    let _pingora_grace = cfg.server.shutdown_grace.as_secs();

    // The guard's: a manual engagement for max_engaged (POST /guard without a ttl), one with
    // the longest ttl allowed, and an Upsun deploy in progress (the webhook handler).
    let me = Replica::this_process("fuzz".into(), String::new());
    let guard = Guard::open(&cfg, Box::new(Memory::default()), me);
    guard.engage("fuzz".into(), None).expect("in-memory commit");
    guard
        .engage("fuzz".into(), Some(cfg.guard.max_engaged))
        .expect("in-memory commit");
    let activity = Activity {
        id: "fuzz-activity".into(),
        kind: "environment.push".into(),
        state: "in_progress".into(),
        result: None,
        project: cfg.upsun.project.clone(),
        environments: cfg
            .upsun
            .environments
            .first()
            .cloned()
            .into_iter()
            .collect(),
    };
    guard.apply_activity(&activity).expect("in-memory commit");
    let status = guard.status();
    assert!(
        status.guarded,
        "engaged for {:?} yet not guarded",
        cfg.guard.max_engaged
    );
    for e in &status.engagements {
        assert!(e.expires_at > e.since);
        let _ = SystemTime::from(e.expires_at).duration_since(SystemTime::now());
    }
    let _ = guard.retry_after_secs();
    let _ = guard.public_status();
    guard.expire().expect("in-memory commit");
    // (Only for engagements long enough that a slow input cannot outlive them.)
    if cfg.guard.max_engaged >= Duration::from_secs(60) {
        assert!(guard.status().guarded, "expired at once");
    }
});
