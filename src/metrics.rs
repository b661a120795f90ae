//! The Prometheus metrics (`GET /metrics` on the admin port): every handle is created once,
//! here, so a hit on the hot path is an atomic add on a handle already held (no label
//! lookup, no allocation). Gauges that mirror state (guarded, held writes, connections...)
//! are set from a [`Live`] reading just before each scrape is encoded. The last 15 minutes
//! of the request counters are also kept, a sample a second, for the dashboard ([`recent`]).
//!
//! At the bottom of the module order: it knows no other module; the listener, the proxy,
//! the webhook and the admin API hand it what they saw.

mod recent;
mod stale;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use recent::Recently;
use recent::{Recent, CAPACITY};
pub use stale::{Eviction, StaleMetrics};

/// What happened to a request, as `writeguard_requests_total{outcome}` and the access line
/// say it. `Admin`: a request on the admin port (access line only, not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Forwarded,
    /// The guard's 503.
    Refused,
    HeldForwarded,
    HeldRefused,
    /// Answered under the public prefix.
    Public,
    /// 400/408/413/414/431/405 answered by writeguard.
    Invalid,
    /// 502/504 answered by writeguard.
    UpstreamError,
    /// On the admin port: not counted in the proxy's families (access line only).
    Admin,
    /// On the HTTPS redirect listener: not counted either (access line only).
    Redirect,
}

impl Outcome {
    /// The outcomes of the proxy port, in label order.
    pub const PROXY: [Outcome; 7] = [
        Outcome::Forwarded,
        Outcome::Refused,
        Outcome::HeldForwarded,
        Outcome::HeldRefused,
        Outcome::Public,
        Outcome::Invalid,
        Outcome::UpstreamError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Refused => "refused",
            Outcome::HeldForwarded => "held_forwarded",
            Outcome::HeldRefused => "held_refused",
            Outcome::Public => "public",
            Outcome::Invalid => "invalid",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Admin => "admin",
            Outcome::Redirect => "redirect",
        }
    }

    /// An answer writeguard wrote itself on the forwarding path, by its status: the
    /// upstream's fault (502/504) or the client's.
    pub fn of_failure(status: http::StatusCode) -> Outcome {
        match status.as_u16() {
            502 | 504 => Outcome::UpstreamError,
            _ => Outcome::Invalid,
        }
    }
}

/// How a webhook delivery ended (`writeguard_webhooks_total{source="upsun", result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    Accepted,
    Ignored,
    BadSignature,
    Malformed,
    TooLarge,
    Unavailable,
}

impl WebhookResult {
    pub const ALL: [WebhookResult; 6] = [
        WebhookResult::Accepted,
        WebhookResult::Ignored,
        WebhookResult::BadSignature,
        WebhookResult::Malformed,
        WebhookResult::TooLarge,
        WebhookResult::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Ignored => "ignored",
            WebhookResult::BadSignature => "bad_signature",
            WebhookResult::Malformed => "malformed",
            WebhookResult::TooLarge => "too_large",
            WebhookResult::Unavailable => "unavailable",
        }
    }
}

/// Who ran a deploy (`writeguard_deploys_total{source}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploySource {
    Upsun,
    Manual,
    Webhook,
    Github,
    Gitlab,
}

impl From<crate::guard::Source> for DeploySource {
    fn from(source: crate::guard::Source) -> DeploySource {
        use crate::guard::Source;
        match source {
            Source::Upsun => DeploySource::Upsun,
            Source::Webhook => DeploySource::Webhook,
            Source::Github => DeploySource::Github,
            Source::Gitlab => DeploySource::Gitlab,
            Source::Manual | Source::Store => DeploySource::Manual,
        }
    }
}

/// Which endpoint a webhook delivery came to (`writeguard_webhooks_total{source}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookSource {
    Upsun,
    /// Standard Webhooks, `POST /webhooks/deploy`.
    Webhook,
    /// `POST /webhooks/github`.
    Github,
    /// `POST /webhooks/gitlab`.
    Gitlab,
}

/// How a deploy ended (`writeguard_deploys_total{result}`): Upsun's activity result, or for
/// a manual engagement, released or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployResult {
    Success,
    Failure,
    Cancelled,
    Released,
    Expired,
    Other,
}

impl DeployResult {
    const ALL: [DeployResult; 6] = [
        DeployResult::Success,
        DeployResult::Failure,
        DeployResult::Cancelled,
        DeployResult::Released,
        DeployResult::Expired,
        DeployResult::Other,
    ];

    /// A sender's result of a finished deploy (Upsun's `result`, GitHub's and GitLab's
    /// final state).
    pub fn of(result: Option<&str>) -> DeployResult {
        match result {
            Some("success") => DeployResult::Success,
            Some("failure" | "failed" | "error") => DeployResult::Failure,
            Some("cancelled" | "canceled") => DeployResult::Cancelled,
            _ => DeployResult::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            DeployResult::Success => "success",
            DeployResult::Failure => "failure",
            DeployResult::Cancelled => "cancelled",
            DeployResult::Released => "released",
            DeployResult::Expired => "expired",
            DeployResult::Other => "other",
        }
    }
}

/// The state gauges, read by the admin API at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub guarded: bool,
    pub engagements: usize,
    pub held: usize,
    pub in_flight_writes: usize,
    pub connections: usize,
    pub store_ok: bool,
}

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Request durations: 100 µs to 60 s (held writes wait up to `guard.hold`).
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

pub struct Metrics {
    registry: Registry,
    requests: [Counter; 7],
    request_duration: Histogram,
    upstream_duration: Histogram,
    webhooks: [[Counter; 6]; 4],
    deploys: [[Counter; 6]; 5],
    engaged_seconds: Counter<f64, AtomicU64>,
    /// Since when the guard is engaged (as last observed).
    engaged_since: Mutex<Option<Instant>>,
    guarded: Gauge,
    engagements: Gauge,
    held: Gauge,
    in_flight_writes: Gauge,
    connections: Gauge,
    store_ok: Gauge,
    recent: Mutex<Recent>,
    /// The stale-read store's (`[stale]`): registered whether it is on or not.
    pub stale: StaleMetrics,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("writeguard");
        let requests_family = Family::<Labels, Counter>::default();
        let requests =
            Outcome::PROXY.map(|o| requests_family.get_or_create_owned(&[("outcome", o.as_str())]));
        registry.register(
            "requests",
            "Requests on the proxy port, by what writeguard did with them",
            requests_family,
        );
        let request_duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "request_duration_seconds",
            "Proxy requests, from the head received to the answer's last byte",
            request_duration.clone(),
        );
        let upstream_duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "upstream_duration_seconds",
            "Forwarded requests, from sending to the upstream's response head",
            upstream_duration.clone(),
        );
        let webhooks_family = Family::<Labels2, Counter>::default();
        let webhooks = ["upsun", "webhook", "github", "gitlab"].map(|source| {
            WebhookResult::ALL.map(|r| {
                webhooks_family.get_or_create_owned(&[("source", source), ("result", r.as_str())])
            })
        });
        registry.register(
            "webhooks",
            "Webhook deliveries, by how they ended",
            webhooks_family,
        );
        let deploys_family = Family::<Labels2, Counter>::default();
        let deploys = ["upsun", "manual", "webhook", "github", "gitlab"].map(|source| {
            DeployResult::ALL.map(|r| {
                deploys_family.get_or_create_owned(&[("source", source), ("result", r.as_str())])
            })
        });
        registry.register(
            "deploys",
            "Deploys (engagements) that ended, by who ran them and how they ended",
            deploys_family,
        );
        let engaged_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "engaged_seconds",
            "Seconds the guard was engaged",
            engaged_seconds.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let guarded = gauge(&mut registry, "guarded", "1 while writes are guarded");
        let engagements = gauge(&mut registry, "engagements", "Active engagements");
        let held = gauge(
            &mut registry,
            "held_requests",
            "Writes held, waiting for the release",
        );
        let in_flight_writes = gauge(
            &mut registry,
            "in_flight_writes",
            "Guarded writes forwarded and not yet answered",
        );
        let connections = gauge(&mut registry, "connections", "Open client connections");
        let store_ok = gauge(
            &mut registry,
            "store_ok",
            "1 while the guard state is stored and confirmed (0: fail-safe)",
        );
        let stale = StaleMetrics::register(&mut registry);
        registry.register(
            "build",
            "This build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Arc::new(Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            webhooks,
            deploys,
            engaged_seconds,
            engaged_since: Mutex::new(None),
            guarded,
            engagements,
            held,
            in_flight_writes,
            connections,
            store_ok,
            recent: Mutex::new(Recent::new(CAPACITY)),
            stale,
        })
    }

    /// A proxy request answered (`elapsed`: head to last byte). The hot path: two atomic
    /// adds and a histogram observation.
    #[inline]
    pub fn request(&self, outcome: Outcome, elapsed: Duration) {
        if let Some(counter) = self.requests.get(outcome as usize) {
            counter.inc();
            self.request_duration.observe(elapsed.as_secs_f64());
        }
    }

    /// A forwarded request's wait for the upstream's response head.
    #[inline]
    pub fn upstream(&self, elapsed: Duration) {
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }

    pub fn webhook(&self, source: WebhookSource, result: WebhookResult) {
        self.webhooks[source as usize][result as usize].inc();
    }

    pub fn deploy(&self, source: DeploySource, result: DeployResult) {
        self.deploys[source as usize][result as usize].inc();
    }

    /// The guard is (or is not) engaged now: accumulates `engaged_seconds`.
    pub fn observe_guarded(&self, guarded: bool) {
        let now = Instant::now();
        let mut since = self.engaged_since.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(from) = since.take() {
            self.engaged_seconds
                .inc_by(now.saturating_duration_since(from).as_secs_f64());
        }
        if guarded {
            *since = Some(now);
        }
    }

    /// Takes the second's sample for [`Metrics::recent`]: the request counters as they are
    /// now, the writes `held` and whether writes are `guarded`. Called once a second.
    pub fn sample(&self, held: usize, guarded: bool) {
        let totals = self.requests.each_ref().map(Counter::get);
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(t, totals, held, guarded);
    }

    /// The last 15 minutes of samples, oldest first.
    pub fn recent(&self) -> Recently {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).view()
    }

    /// The exposition (OpenMetrics text), with the gauges set from `live`.
    pub fn encode(&self, live: &Live) -> String {
        self.observe_guarded(live.guarded);
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.guarded.set(i64::from(live.guarded));
        self.engagements.set(n(live.engagements));
        self.held.set(n(live.held));
        self.in_flight_writes.set(n(live.in_flight_writes));
        self.connections.set(n(live.connections));
        self.store_ok.set(i64::from(live.store_ok));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_with_its_children_at_zero() {
        let m = Metrics::new();
        m.request(Outcome::Refused, Duration::from_millis(2));
        m.request(Outcome::Admin, Duration::from_millis(2));
        m.webhook(WebhookSource::Upsun, WebhookResult::BadSignature);
        m.deploy(DeploySource::Upsun, DeployResult::of(Some("success")));
        let text = m.encode(&Live {
            guarded: true,
            held: 3,
            store_ok: true,
            ..Live::default()
        });
        for line in [
            "writeguard_requests_total{outcome=\"refused\"} 1",
            "writeguard_requests_total{outcome=\"forwarded\"} 0",
            "writeguard_request_duration_seconds_count 1",
            "writeguard_upstream_duration_seconds_count 0",
            "writeguard_webhooks_total{source=\"upsun\",result=\"bad_signature\"} 1",
            "writeguard_deploys_total{source=\"upsun\",result=\"success\"} 1",
            "writeguard_guarded 1",
            "writeguard_held_requests 3",
            "writeguard_store_ok 1",
            "writeguard_connections 0",
            "writeguard_engagements 0",
            "writeguard_in_flight_writes 0",
            "writeguard_build_info{version=\"",
            "writeguard_stale_stored_total 0",
            "writeguard_stale_evicted_total{reason=\"size\"} 0",
            "writeguard_stale_bytes 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(text.contains("writeguard_engaged_seconds_total"));
        assert!(!text.contains("admin"));
    }

    #[test]
    fn engaged_seconds_add_up_only_while_guarded() {
        let m = Metrics::new();
        m.observe_guarded(true);
        std::thread::sleep(Duration::from_millis(20));
        m.observe_guarded(false);
        let after = m.engaged_seconds.get();
        assert!(after >= 0.02, "{after}");
        std::thread::sleep(Duration::from_millis(20));
        m.observe_guarded(false);
        assert_eq!(m.engaged_seconds.get(), after);
    }
}
