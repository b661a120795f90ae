//! The one place that wires everything into pingora's `Server`: both listeners, the guard's
//! maintenance task, signals (SIGHUP reloads `[guard]`), readiness, graceful shutdown and
//! zero-downtime upgrades.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
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
use crate::config::{Config, ConfigError, GuardConfig, ProcessEnv};
use crate::guard::Guard;
use crate::listener::{Connections, HttpApp, HttpOptions};
use crate::proxy::Proxy;

/// How long our listeners may take to come up before start-up fails. A bind takes
/// microseconds; pingora itself retries a taken address for 30 s before it panics in a task
/// and leaves the process running without that listener.
const LISTENERS_WITHIN: Duration = Duration::from_secs(5);

/// Runs writeguard until SIGTERM/SIGINT (graceful stop) or SIGQUIT (hand the listeners to
/// a new instance started with `run --upgrade`); SIGHUP re-reads `config_path` for the
/// `[guard]` settings. Returns only on a start-up error.
pub fn run(cfg: Config, config_path: &Path, upgrade: bool) -> anyhow::Result<()> {
    if !upgrade {
        for addr in cfg.proxy.listen.iter().chain(&cfg.admin.listen) {
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        }
    }
    exit_when_a_listener_fails();
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
        linger: cfg.server.shutdown_grace.min(Duration::from_secs(1)),
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
            config_path: config_path.to_owned(),
            config: std::sync::Mutex::new(cfg.clone()),
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

/// pingora builds each listener in a task of its own and, when the address stays taken,
/// panics there after 30 s of retries while the process keeps running without it. Such a
/// panic ends the process instead, with the error that names the address.
fn exit_when_a_listener_fails() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Failed to build listeners") {
            tracing::error!("cannot listen: {message}; exiting");
            std::process::exit(1);
        }
        default(info);
    }));
}

/// Marks the process ready once every listener is OURS and accepts connections, then
/// expires engagements whose time is up, every second, and reloads `[guard]` on SIGHUP.
struct Upkeep {
    guard: Arc<Guard>,
    ready: Arc<AtomicBool>,
    addrs: Vec<SocketAddr>,
    config_path: PathBuf,
    /// The config in effect (the last one loaded successfully).
    config: std::sync::Mutex<Config>,
}

impl Upkeep {
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
            while !(listening::owned(addr) && tokio::net::TcpStream::connect(probe).await.is_ok()) {
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

    /// Re-reads the config file and applies its `[guard]` section; anything else that
    /// changed needs a restart, and then nothing is applied.
    fn reload(&self) {
        let path = &self.config_path;
        let next = match Config::load(path, &ProcessEnv) {
            Ok(next) => next,
            Err(ConfigError::Invalid { issues, .. }) => {
                for issue in &issues {
                    tracing::error!(key = %issue.key, "reload refused: {issue}");
                }
                tracing::error!(path = %path.display(), errors = issues.len(), "SIGHUP: config is invalid; the previous config stays in effect");
                return;
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "SIGHUP: {e}; the previous config stays in effect");
                return;
            }
        };
        let mut current = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let restart = needs_restart(&current, &next);
        if !restart.is_empty() {
            for section in &restart {
                tracing::error!(key = %section, "reload refused: [{section}] changed; only [guard] is reloaded, this change needs a restart");
            }
            tracing::error!(path = %path.display(), "SIGHUP: the previous config stays in effect");
            return;
        }
        let changed = guard_changes(&current.guard, &next.guard);
        self.guard.reload(&next.guard);
        if changed.is_empty() {
            tracing::info!(path = %path.display(), "SIGHUP: config reloaded, nothing changed");
        } else {
            tracing::info!(path = %path.display(), changed = %changed.join(", "), "SIGHUP: config reloaded");
        }
        *current = next;
    }
}

/// The sections other than `[guard]` that differ: a reload cannot apply them.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut out = Vec::new();
    if !same(&old.proxy, &new.proxy) {
        out.push("proxy");
    }
    // Secrets print redacted: compare them by value.
    if !same(&old.admin, &new.admin) || old.admin.token.expose() != new.admin.token.expose() {
        out.push("admin");
    }
    let key = |c: &Config| c.upsun.shared_key.as_ref().map(|k| k.expose().to_owned());
    if !same(&old.upsun, &new.upsun) || key(old) != key(new) {
        out.push("upsun");
    }
    if !same(&old.state, &new.state) {
        out.push("state");
    }
    if !same(&old.server, &new.server) {
        out.push("server");
    }
    if !same(&old.public, &new.public) {
        out.push("public");
    }
    out
}

/// `guard.<key>` for every reloadable key that differs.
fn guard_changes(old: &GuardConfig, new: &GuardConfig) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! compare {
        ($($field:ident),*) => {$(
            if format!("{:?}", old.$field) != format!("{:?}", new.$field) {
                out.push(format!("guard.{} {:?} -> {:?}", stringify!($field), old.$field, new.$field));
            }
        )*};
    }
    compare!(
        methods,
        allow_paths,
        retry_after,
        max_engaged,
        hold,
        hold_max_requests,
        release_concurrency,
        pass_unknown_methods,
        upgrades
    );
    if old.page != new.page {
        out.push("guard.page (contents)".into());
    }
    out
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
        self.wait_for_listeners().await;
        self.ready.store(true, Ordering::Release);
        tracing::info!(addrs = ?self.addrs, "ready: listening");

        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup => {
                    tracing::info!(path = %self.config_path.display(), "SIGHUP: reloading the [guard] settings");
                    self.reload();
                }
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

/// Whether this process itself holds a listening socket on an address: Linux `/proc` (the
/// socket table, then our own file descriptors). pingora's service API has no hook that says
/// a listener was built.
mod listening {
    use std::net::SocketAddr;

    pub fn owned(addr: &SocketAddr) -> bool {
        let (table, local) = match addr {
            SocketAddr::V4(a) => (
                "/proc/self/net/tcp",
                format!(
                    "{:08X}:{:04X}",
                    u32::from_ne_bytes(a.ip().octets()),
                    a.port()
                ),
            ),
            SocketAddr::V6(a) => {
                let o = a.ip().octets();
                let words: String = o
                    .chunks(4)
                    .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                    .collect();
                ("/proc/self/net/tcp6", format!("{words}:{:04X}", a.port()))
            }
        };
        let Ok(text) = std::fs::read_to_string(table) else {
            return true; // no procfs: the connect probe decides alone
        };
        let sockets: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            // State 0A is LISTEN.
            .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
            .map(|f| format!("socket:[{}]", f[9]))
            .collect();
        if sockets.is_empty() {
            return false;
        }
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
            return true;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tells_our_listener_from_someone_elses() {
            let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            assert!(owned(&ours.local_addr().unwrap()));
            let v6 = std::net::TcpListener::bind("[::1]:0");
            if let Ok(v6) = v6 {
                assert!(owned(&v6.local_addr().unwrap()));
            }
            let addr = ours.local_addr().unwrap();
            drop(ours);
            assert!(!owned(&addr));
        }
    }
}
