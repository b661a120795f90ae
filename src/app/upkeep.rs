//! The background service: readiness once every listener is ours, the expiry of
//! engagements, the measure of the descriptor headroom and the dashboard's sample of the
//! traffic every second, SIGHUP's reload of `[guard]` and of the proxy's certificate, and the
//! guard's stop at shutdown (held writes are answered then).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, StateBackend};
use crate::guard::Guard;
use crate::listener::Headroom;
use crate::listening;
use crate::metrics::{DeployResult, Metrics};
use crate::reload::Reloader;

/// How long our listeners may take to come up before start-up fails. A bind takes
/// microseconds; pingora itself retries a taken address for 30 s before it panics in a task
/// and leaves the process running without that listener.
const LISTENERS_WITHIN: Duration = Duration::from_secs(5);

/// How often the stored state is checked for changes made by another process (the
/// hand-over promise: within a second), at most; four times per `state.stale_after` when
/// that is shorter than a second.
const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// How often expired engagements are swept.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How often the last confirmation of the store is compared with `stale_after`.
const CHECK_STORE_EVERY: Duration = Duration::from_millis(50);

/// Marks the process ready once every listener is OURS and accepts connections, then
/// expires engagements whose time is up, every second, and reloads `[guard]` on SIGHUP.
pub(super) struct Upkeep {
    guard: Arc<Guard>,
    ready: Arc<AtomicBool>,
    headroom: Arc<Headroom>,
    metrics: Arc<Metrics>,
    addrs: Vec<SocketAddr>,
    refresh_every: Duration,
    /// SIGHUP's reload (the admin API's `POST /reload` shares it).
    reloader: Arc<Reloader>,
}

impl Upkeep {
    pub(super) fn new(
        guard: Arc<Guard>,
        ready: Arc<AtomicBool>,
        headroom: Arc<Headroom>,
        metrics: Arc<Metrics>,
        cfg: &Config,
        reloader: Arc<Reloader>,
    ) -> Self {
        Upkeep {
            guard,
            ready,
            headroom,
            metrics,
            addrs: cfg.all_listeners().copied().collect(),
            refresh_every: match &cfg.state.backend {
                StateBackend::Redis(r) => REFRESH_EVERY.min(r.stale_after / 4),
                StateBackend::File => REFRESH_EVERY,
            },
            reloader,
        }
    }

    /// Waits until this process listens on every address, or exits the process.
    async fn wait_for_listeners(&self) {
        let started = Instant::now();
        for addr in &self.addrs {
            let mut probe = *addr;
            if probe.ip().is_unspecified() {
                probe.set_ip(match probe {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            // A connect alone is not enough: another process may hold the port (under
            // `--upgrade`, or taken between our pre-bind check and pingora's bind).
            while !(listening::holds(std::process::id(), addr).unwrap_or(true)
                && tokio::net::TcpStream::connect(probe).await.is_ok())
            {
                if started.elapsed() > LISTENERS_WITHIN {
                    tracing::error!(
                        %addr,
                        "cannot listen on {addr}: this process holds no listening socket there after {}s (is another process using it?); exiting",
                        LISTENERS_WITHIN.as_secs()
                    );
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

impl Upkeep {
    /// Adopts changes other processes committed: four times a second, and at once when the
    /// backend notices one. Each round also announces this process to the others.
    async fn refresh_loop(&self) {
        let changes = self.guard.store_changes();
        let mut tick = tokio::time::interval(self.refresh_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = async {
                    match &changes {
                        Some(changes) => changes.notified().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let guard = self.guard.clone();
            let done = tokio::task::spawn_blocking(move || {
                guard.refresh()?;
                if guard.shared() {
                    guard.announce()?;
                }
                Ok::<(), crate::guard::StoreError>(())
            })
            .await;
            match done {
                Ok(Err(e)) if !failing => {
                    failing = true;
                    tracing::error!(error = %e, "cannot read the stored guard state; changes by other processes are not seen until it can be read");
                }
                Ok(Ok(())) if failing => {
                    failing = false;
                    tracing::info!("the stored guard state can be read again");
                }
                Err(e) => tracing::error!(error = %e, "upkeep task failed"),
                _ => {}
            }
        }
    }

    /// Sweeps expired engagements (counted as deploys that expired), measures the
    /// descriptor headroom, adds up the engaged time and takes the dashboard's sample of
    /// the request counters, once a second.
    async fn expire_loop(&self) {
        let mut tick = tokio::time::interval(EXPIRE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.headroom.calibrate();
            let guarded = self.guard.snapshot().guarded();
            self.metrics.observe_guarded(guarded);
            self.metrics.sample(self.guard.traffic().held(), guarded);
            let guard = self.guard.clone();
            let done = tokio::task::spawn_blocking(move || guard.expire()).await;
            if let Ok(Ok(gone)) = &done {
                for e in gone {
                    self.metrics.deploy(e.source.into(), DeployResult::Expired);
                }
            }
            match done {
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot save expired engagements; will retry")
                }
                Err(e) => tracing::error!(error = %e, "upkeep task failed"),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Enters and leaves the fail-safe as the store's confirmations come and go. Never
    /// waits on the store, so a frozen one is noticed on time.
    async fn store_loop(&self) {
        let mut tick = tokio::time::interval(CHECK_STORE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.guard.check_store();
        }
    }
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Installed before readiness: until then SIGHUP's default action would end the
        // process. pingora itself does not handle SIGHUP.
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler: reload needs a restart");
                None
            }
        };
        // Started before readiness: under `run --upgrade` the old instance keeps taking
        // changes until it hands its listeners over, and this one must adopt them.
        let listeners = self.wait_for_listeners();
        tokio::pin!(listeners);
        let mut listening = false;
        let background = async {
            if self.guard.shared() {
                tokio::join!(self.refresh_loop(), self.expire_loop(), self.store_loop());
            } else {
                tokio::join!(self.refresh_loop(), self.expire_loop());
            }
        };
        tokio::pin!(background);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut listeners, if !listening => {
                    listening = true;
                    self.headroom.calibrate();
                    self.ready.store(true, Ordering::Release);
                    tracing::info!(addrs = ?self.addrs, "ready: listening");
                }
                _ = hup => {
                    tracing::info!(path = %self.reloader.path().display(), "SIGHUP: reloading the [guard] settings and the certificate");
                    let reloader = self.reloader.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await {
                        tracing::error!(error = %e, "reload task failed");
                    }
                }
                _ = &mut background => {}
                _ = shutdown.changed() => {
                    // Held writes get their 503 now, not an EOF at the end of the grace.
                    self.guard.stop();
                    return;
                }
            }
        }
    }
}
