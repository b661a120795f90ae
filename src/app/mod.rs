//! The one place that wires everything into pingora's `Server`: the listeners (proxy, admin,
//! HTTPS redirect), the guard's maintenance task, signals (SIGHUP reloads `[guard]` and the
//! proxy's certificate, as does the admin API's `POST /reload`), readiness, graceful shutdown
//! and zero-downtime upgrades.

mod drain;
mod handoff;
mod nofile;
mod panic;
mod pidfile;
mod signals;
mod upkeep;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{Admin, Monitoring};
use crate::config::{Config, Engine, StateBackend};
use crate::guard::{Backend, Guard, Replica};
use crate::h1::Native;
use crate::listener::{Headroom, HttpApp, HttpOptions, Observer, OpenConnections, Tls};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::redirect::Redirect;
use crate::reload::Reloader;
use crate::stale::Stale;
use crate::store::{FileStore, RedisStore};
use crate::webhook::Webhook;
use pidfile::PidFile;
use upkeep::Upkeep;

/// Runs writeguard until SIGTERM/SIGINT (graceful stop) or SIGQUIT (hand the listeners to
/// a new instance started with `run --upgrade`); SIGHUP re-reads `config_path` for the
/// `[guard]` settings and the proxy's certificate. Returns only on a start-up error.
pub fn run(cfg: Config, config_path: &Path, upgrade: bool) -> anyhow::Result<()> {
    if !upgrade {
        for addr in cfg.all_listeners() {
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        }
    }
    handoff::prepare_dir(&cfg.server.upgrade_sock)?;
    PidFile::prepare(&cfg.server.pid_file)?;
    panic::exit_when_a_listener_fails();
    let ready = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(OpenConnections::default());
    // Before any runtime or listener exists: held writes each keep a descriptor.
    let headroom = Arc::new(Headroom::new(connections.clone(), nofile::raise()));
    nofile::warn_if_short(headroom.limit(), &cfg.guard, headroom.reserve());

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
    // Under `--upgrade` this waits for the old instance to hand its listeners over: the
    // state is read after that, and changes the old one still takes while it drains are
    // adopted by the upkeep's refresh. Meanwhile pingora's hand-over socket (mode 0666) is
    // made owner-only. The pid file names this process from then on.
    let owner_only = upgrade.then(|| {
        handoff::OwnerOnly::watch(cfg.server.upgrade_sock.clone(), cfg.server.pid_file.clone())
    });
    server.bootstrap();
    drop(owner_only);
    let pid_file = Arc::new(PidFile::write(&cfg.server.pid_file));
    let guard = Arc::new(open_guard(&cfg)?);

    let http = HttpOptions {
        header_timeout: cfg.proxy.header_timeout,
        max_header_size: cfg.proxy.max_header_size,
        h2c: cfg.proxy.h2c,
        linger: cfg.server.shutdown_grace.min(Duration::from_secs(1)),
    };
    // One webhook endpoint for both routes: the bound on bodies being read is global.
    // The metrics' handles, created once for the process.
    let metrics = Metrics::new();
    let webhook = Webhook::new(&cfg, metrics.clone());
    let stale = Stale::new(&cfg.stale, metrics.clone());
    let proxy = Arc::new(Proxy::new(
        &cfg,
        guard.clone(),
        webhook.clone(),
        headroom.clone(),
        metrics.clone(),
        stale.clone(),
    ));
    let observe = |port| Observer::new(metrics.clone(), cfg.log.access, port);
    let tls = match &cfg.proxy.tls {
        Some(t) => Some(Arc::new(Tls::new(t.certified.clone(), cfg.proxy.h2c)?)),
        None => None,
    };
    let proxy_observer = observe("proxy");
    let mut proxy_app = HttpApp::new(
        proxy.clone(),
        &http,
        connections.clone(),
        proxy_observer.clone(),
    );
    if let Some(tls) = &tls {
        proxy_app = proxy_app.with_tls(tls.clone());
    }
    let proxy_id = match cfg.proxy.engine {
        Engine::Hyper => {
            let mut service = Service::new("proxy".into(), proxy_app);
            service.threads = Some(cfg.server.threads);
            for addr in &cfg.proxy.listen {
                service.add_listener(listener(addr));
            }
            server.add_service(service)
        }
        Engine::Native => {
            let native = Native::new(
                &cfg,
                proxy,
                Arc::new(proxy_app),
                proxy_observer,
                metrics.clone(),
                http.linger,
            );
            let mut service = Service::new("proxy".into(), native);
            service.threads = Some(cfg.server.threads);
            for addr in &cfg.proxy.listen {
                service.add_listener(listener(addr));
            }
            server.add_service(service)
        }
    };
    let monitoring = Monitoring {
        metrics: metrics.clone(),
        connections: connections.clone(),
        stale,
    };
    let reloader = Arc::new(Reloader::new(&cfg, config_path, guard.clone(), tls.clone()));
    let admin = Arc::new(Admin::new(
        &cfg,
        guard.clone(),
        ready.clone(),
        webhook,
        monitoring,
        reloader.clone(),
    ));
    // `proxy.h2c` is the proxy port's: the admin port speaks HTTP/1.1 only.
    let admin_http = HttpOptions { h2c: false, ..http };
    let mut admin_service = Service::new(
        "admin".into(),
        HttpApp::new(admin, &admin_http, connections.clone(), observe("admin")),
    );
    admin_service.threads = Some(1);
    for addr in &cfg.admin.listen {
        admin_service.add_listener(listener(addr));
    }
    let admin_id = server.add_service(admin_service);
    let redirect_id = (!cfg.proxy.redirect_listen.is_empty()).then(|| {
        let redirect = Arc::new(Redirect::new(cfg.proxy.redirect_port));
        let mut service = Service::new(
            "redirect".into(),
            HttpApp::new(
                redirect,
                &admin_http,
                connections.clone(),
                observe("redirect"),
            ),
        );
        service.threads = Some(1);
        for addr in &cfg.proxy.redirect_listen {
            service.add_listener(listener(addr));
        }
        server.add_service(service)
    });
    let upkeep = background_service(
        "upkeep",
        Upkeep::new(guard, ready, headroom, metrics, &cfg, reloader),
    );
    let upkeep_id = server.add_service(upkeep);
    upkeep_id.add_dependency(&proxy_id);
    upkeep_id.add_dependency(&admin_id);
    if let Some(redirect_id) = &redirect_id {
        upkeep_id.add_dependency(redirect_id);
    }

    drain::spawn_drain_watcher(
        &server,
        connections,
        cfg.server.shutdown_grace,
        pid_file.clone(),
    );
    tracing::info!(
        proxy = ?cfg.proxy.listen,
        admin = ?cfg.admin.listen,
        redirect = ?cfg.proxy.redirect_listen,
        tls = cfg.proxy.tls.is_some(),
        upstream = %cfg.proxy.upstream,
        upgrade,
        "writeguard starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(signals::Signals),
    });
    pid_file.remove();
    tracing::info!("writeguard stopped");
    std::process::exit(0)
}

/// The guard on the configured backend, as this member of the processes sharing it.
fn open_guard(cfg: &Config) -> anyhow::Result<Guard> {
    let pid = std::process::id();
    let (backend, id): (Box<dyn Backend>, String) = match &cfg.state.backend {
        StateBackend::File => (
            Box::new(FileStore::new(&cfg.state)),
            format!("{}-{pid}", hostname()),
        ),
        StateBackend::Redis(redis) => {
            let id = redis
                .replica
                .clone()
                .unwrap_or_else(|| format!("{}-{pid}", hostname()));
            let store = RedisStore::new(&cfg.state, redis, &id)?;
            (Box::new(store), id)
        }
    };
    let me = Replica {
        id,
        address: cfg
            .proxy
            .listen
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
        pid,
        version: 0,
        failsafe: false,
        seen: time::OffsetDateTime::now_utc(),
    };
    Ok(Guard::open(cfg, backend, me))
}

/// This machine's name (a pod's name under Kubernetes).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "writeguard".into())
}

/// A TCP listener without pingora's own stream buffers: hyper buffers reads and writes
/// itself, and pingora's default 64 KiB read buffer per connection would double the copying
/// and cost 64 MB per 1,000 idle keep-alive connections.
fn listener(addr: &SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::new(0, 0))
}
