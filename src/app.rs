//! The one place that wires everything into pingora's `Server`: both listeners, the guard's
//! maintenance task, signals, graceful shutdown and zero-downtime upgrades.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{
    ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::Admin;
use crate::config::Config;
use crate::guard::Guard;
use crate::listener::{Connections, HttpApp, HttpOptions};
use crate::proxy::Proxy;

/// Runs writeguard until SIGTERM/SIGINT (graceful stop) or SIGQUIT (hand the listeners to
/// a new instance started with `run --upgrade`). Returns only on a start-up error.
pub fn run(cfg: Config, upgrade: bool) -> anyhow::Result<()> {
    if !upgrade {
        for addr in cfg.proxy.listen.iter().chain(&cfg.admin.listen) {
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        }
    }
    let guard = Arc::new(Guard::open(&cfg));
    let ready = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(Connections::default());

    // pingora sleeps the whole grace period; the drain watcher below exits as soon as the
    // last connection is done.
    let conf = ServerConf {
        threads: cfg.server.threads,
        work_stealing: false,
        upgrade_sock: cfg.server.upgrade_sock.to_string_lossy().into_owned(),
        pid_file: cfg.server.pid_file.to_string_lossy().into_owned(),
        grace_period_seconds: Some(cfg.server.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        daemon: false,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let http = HttpOptions {
        header_timeout: cfg.proxy.header_timeout,
        max_header_size: cfg.proxy.max_header_size,
        h2c: cfg.proxy.h2c,
    };
    let proxy = Arc::new(Proxy::new(&cfg, guard.clone()));
    let mut proxy_service = Service::new(
        "proxy".into(),
        HttpApp::new(proxy, &http, connections.clone()),
    );
    proxy_service.threads = Some(cfg.server.threads);
    for addr in &cfg.proxy.listen {
        proxy_service.add_listener(listener(addr));
    }
    let admin = Arc::new(Admin::new(&cfg, guard.clone(), ready.clone()));
    let mut admin_service = Service::new(
        "admin".into(),
        HttpApp::new(admin, &http, connections.clone()),
    );
    admin_service.threads = Some(1);
    for addr in &cfg.admin.listen {
        admin_service.add_listener(listener(addr));
    }
    let proxy_id = server.add_service(proxy_service);
    let admin_id = server.add_service(admin_service);
    let upkeep = background_service(
        "upkeep",
        Upkeep {
            guard,
            ready,
            addrs: cfg
                .proxy
                .listen
                .iter()
                .chain(&cfg.admin.listen)
                .copied()
                .collect(),
        },
    );
    let upkeep_id = server.add_service(upkeep);
    upkeep_id.add_dependency(&proxy_id);
    upkeep_id.add_dependency(&admin_id);

    spawn_drain_watcher(&server, connections, cfg.server.shutdown_grace);
    tracing::info!(
        proxy = ?cfg.proxy.listen,
        admin = ?cfg.admin.listen,
        upstream = %cfg.proxy.upstream,
        upgrade,
        "writeguard starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    tracing::info!("writeguard stopped");
    std::process::exit(0)
}

/// A TCP listener without pingora's own stream buffers: hyper buffers reads and writes
/// itself, and pingora's default 64 KiB read buffer per connection would double the copying
/// and cost 64 MB per 1,000 idle keep-alive connections.
fn listener(addr: &SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::new(0, 0))
}

/// SIGTERM and SIGINT both stop gracefully (containers and terminals alike); SIGQUIT hands
/// the listeners over to a new instance.
struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: finishing in-flight requests"); ShutdownSignal::GracefulTerminate }
            _ = int.recv() => { tracing::info!("SIGINT: finishing in-flight requests"); ShutdownSignal::GracefulTerminate }
            _ = quit.recv() => { tracing::info!("SIGQUIT: handing listeners to the new instance"); ShutdownSignal::GracefulUpgrade }
        }
    }
}

/// Once pingora enters its grace period (listeners closed, connections told to finish),
/// exit as soon as no connection is open, or when the grace period ends.
fn spawn_drain_watcher(server: &Server, connections: Arc<Connections>, grace: Duration) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::ShutdownGracePeriod) => {
                let deadline = Instant::now() + grace;
                while connections.open() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let left = connections.open();
                if left > 0 {
                    tracing::warn!(left, "grace period over; closing remaining connections");
                } else {
                    tracing::info!("all connections finished; exiting");
                }
                std::process::exit(0);
            }
            Ok(ExecutionPhase::Terminated)
            | Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            _ => {}
        }
    });
}

/// Marks the process ready once every listener accepts connections, then expires
/// engagements whose time is up, every second.
struct Upkeep {
    guard: Arc<Guard>,
    ready: Arc<AtomicBool>,
    addrs: Vec<SocketAddr>,
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let started = Instant::now();
        for addr in &self.addrs {
            let mut probe = *addr;
            if probe.ip().is_unspecified() {
                probe.set_ip(match probe {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            while tokio::net::TcpStream::connect(probe).await.is_err() {
                if started.elapsed() > Duration::from_secs(30) {
                    tracing::error!(%addr, "listener never came up; exiting");
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(addrs = ?self.addrs, "ready: listening");

        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let guard = self.guard.clone();
                    match tokio::task::spawn_blocking(move || guard.expire()).await {
                        Ok(Err(e)) => tracing::error!(error = %e, "cannot save expired engagements; will retry"),
                        Err(e) => tracing::error!(error = %e, "expiry task failed"),
                        Ok(Ok(_)) => {}
                    }
                }
                _ = shutdown.changed() => {
                    self.guard.stop();
                    return;
                }
            }
        }
    }
}
