//! The fluent builder of a writeguard configuration: every setting a test may change, with
//! defaults that suit tests (a 0 s hold, one thread), rendered to TOML on given ports and
//! paths.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

use super::{Instance, Redis, Upstream, SHARED_KEY, TOKEN};

/// `proxy.engine` from `WG_TEST_ENGINE` (`hyper` or `native`), so that every suite can run
/// against either HTTP/1.1 engine (`WG_TEST_ENGINE=native cargo test --test it -- desync`);
/// a test that sets `engine` itself keeps its own.
fn engine_line(proxy_extra: &str) -> String {
    match std::env::var("WG_TEST_ENGINE") {
        Ok(engine) if !proxy_extra.contains("engine") => {
            format!("engine = {}\n", Value::from(engine))
        }
        _ => String::new(),
    }
}

/// How to configure a writeguard instance; `start` renders it to TOML in a fresh temp dir.
#[derive(Debug, Clone)]
pub struct Wg {
    pub upstream: String,
    pub token: String,
    pub methods: Option<Vec<String>>,
    pub allow_paths: Vec<String>,
    pub retry_after: String,
    pub max_engaged: String,
    pub shared_key: Option<String>,
    pub allow_unsigned: bool,
    pub project: Option<String>,
    pub environments: Vec<String>,
    pub guard_pending: bool,
    pub shutdown_grace: String,
    /// `guard.hold`: "0s" by default here, so tests of the immediate 503 need not wait.
    pub hold: String,
    /// Extra TOML lines for `[guard]` and `[proxy]`.
    pub guard_extra: String,
    pub proxy_extra: String,
    /// TOML lines for `[public]` (the section is left out when empty: the defaults).
    pub public_extra: String,
    /// Extra TOML lines for `[state]` (its `path` is always set: the state file, or with
    /// Redis the boot cache).
    pub state_extra: String,
    /// Lines of `[admin]` and of `[log]`.
    pub admin_extra: String,
    pub log_extra: String,
    /// TOML lines for `[webhooks]` (left out when empty).
    pub webhooks_extra: String,
    /// Whole sections (`[github]`, `[gitlab]`...) appended as they are.
    pub sections: String,
}

impl Wg {
    pub fn new(upstream: impl Into<String>) -> Self {
        Wg {
            upstream: upstream.into(),
            token: TOKEN.into(),
            methods: None,
            allow_paths: Vec::new(),
            retry_after: "30s".into(),
            max_engaged: "30m".into(),
            shared_key: Some(SHARED_KEY.into()),
            allow_unsigned: false,
            project: None,
            environments: Vec::new(),
            guard_pending: false,
            shutdown_grace: "5s".into(),
            hold: "0s".into(),
            guard_extra: String::new(),
            proxy_extra: String::new(),
            public_extra: String::new(),
            state_extra: String::new(),
            admin_extra: String::new(),
            log_extra: String::new(),
            webhooks_extra: String::new(),
            sections: String::new(),
        }
    }

    pub fn hold(mut self, d: &str) -> Self {
        self.hold = d.into();
        self
    }

    /// Adds `line` (TOML) to the `[guard]` section.
    pub fn guard_line(mut self, line: &str) -> Self {
        self.guard_extra += line;
        self.guard_extra += "\n";
        self
    }

    /// Adds `line` (TOML) to the `[proxy]` section.
    pub fn proxy_line(mut self, line: &str) -> Self {
        self.proxy_extra += line;
        self.proxy_extra += "\n";
        self
    }

    /// Adds `line` (TOML) to the `[public]` section.
    pub fn public_line(mut self, line: &str) -> Self {
        self.public_extra += line;
        self.public_extra += "\n";
        self
    }

    /// Adds `line` (TOML) to the `[state]` section.
    /// One more line in `[admin]`.
    pub fn admin_line(mut self, line: &str) -> Self {
        self.admin_extra += line;
        self.admin_extra += "\n";
        self
    }

    /// One more line in `[log]`.
    pub fn log_line(mut self, line: &str) -> Self {
        self.log_extra += line;
        self.log_extra += "\n";
        self
    }

    /// One more line in `[webhooks]`.
    pub fn webhooks_line(mut self, line: &str) -> Self {
        self.webhooks_extra += line;
        self.webhooks_extra += "\n";
        self
    }

    /// A whole section (header and lines), appended to the config as it is.
    pub fn section(mut self, toml: &str) -> Self {
        self.sections += toml;
        self.sections += "\n";
        self
    }

    pub fn state_line(mut self, line: &str) -> Self {
        self.state_extra += line;
        self.state_extra += "\n";
        self
    }

    /// The guard state in `redis` under `site` (replicas with the same site share one
    /// guard), fail-safe after 1 s without a confirmed read of it.
    pub fn redis(self, redis: &Redis, site: &str) -> Self {
        let q = |s: &str| Value::from(s).to_string();
        self.state_line("backend = \"redis\"")
            .state_line(&format!("redis_url = {}", q(&redis.url())))
            .state_line(&format!("site = {}", q(site)))
            .state_line("stale_after = \"1s\"")
    }

    /// In front of a recording upstream.
    pub fn for_upstream(up: &Upstream) -> Self {
        Wg::new(up.url())
    }

    pub fn methods(mut self, methods: &[&str]) -> Self {
        self.methods = Some(methods.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn allow_paths(mut self, paths: &[&str]) -> Self {
        self.allow_paths = paths.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn retry_after(mut self, d: &str) -> Self {
        self.retry_after = d.into();
        self
    }

    pub fn max_engaged(mut self, d: &str) -> Self {
        self.max_engaged = d.into();
        self
    }

    pub fn shared_key(mut self, key: Option<&str>) -> Self {
        self.shared_key = key.map(str::to_string);
        self
    }

    pub fn allow_unsigned(mut self, yes: bool) -> Self {
        self.allow_unsigned = yes;
        self
    }

    pub fn project(mut self, project: &str) -> Self {
        self.project = Some(project.into());
        self
    }

    pub fn environments(mut self, envs: &[&str]) -> Self {
        self.environments = envs.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn guard_pending(mut self, yes: bool) -> Self {
        self.guard_pending = yes;
        self
    }

    pub fn shutdown_grace(mut self, d: &str) -> Self {
        self.shutdown_grace = d.into();
        self
    }

    /// The TOML for this instance, listening on `proxy`/`admin`, with everything it writes
    /// under `dir`.
    pub fn render(&self, proxy: SocketAddr, admin: SocketAddr, dir: &Path) -> String {
        let q = |s: &str| Value::from(s).to_string();
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        };
        let mut t = String::new();
        t += &format!(
            "[proxy]\nlisten = {}\nupstream = {}\nconnect_timeout = \"2s\"\n{}{}\n",
            q(&proxy.to_string()),
            q(&self.upstream),
            engine_line(&self.proxy_extra),
            self.proxy_extra
        );
        t += &format!(
            "[admin]\nlisten = {}\ntoken = {}\n{}\n",
            q(&admin.to_string()),
            q(&self.token),
            self.admin_extra
        );
        if !self.log_extra.is_empty() {
            t += &format!("[log]\n{}\n", self.log_extra);
        }
        t += "[guard]\n";
        if let Some(m) = &self.methods {
            t += &format!("methods = {}\n", list(m));
        }
        t += &format!(
            "retry_after = {}\nmax_engaged = {}\nallow_paths = {}\nhold = {}\n{}\n",
            q(&self.retry_after),
            q(&self.max_engaged),
            list(&self.allow_paths),
            q(&self.hold),
            self.guard_extra
        );
        t += "[upsun]\n";
        if let Some(k) = &self.shared_key {
            t += &format!("shared_key = {}\n", q(k));
        }
        t += &format!("allow_unsigned = {}\n", self.allow_unsigned);
        if let Some(p) = &self.project {
            t += &format!("project = {}\n", q(p));
        }
        if !self.environments.is_empty() {
            t += &format!("environments = {}\n", list(&self.environments));
        }
        t += &format!("guard_pending = {}\n\n", self.guard_pending);
        if !self.webhooks_extra.is_empty() {
            t += &format!("[webhooks]\n{}\n", self.webhooks_extra);
        }
        if !self.public_extra.is_empty() {
            t += &format!("[public]\n{}\n", self.public_extra);
        }
        t += &format!(
            "[state]\npath = {}\n{}\n",
            q(&dir.join("state").join("writeguard.state").to_string_lossy()),
            self.state_extra
        );
        t += &format!(
            "[server]\nthreads = 1\nshutdown_grace = {}\nupgrade_sock = {}\npid_file = {}\n",
            q(&self.shutdown_grace),
            q(&dir.join("upgrade.sock").to_string_lossy()),
            q(&dir.join("writeguard.pid").to_string_lossy())
        );
        t += &self.sections;
        t
    }

    /// Starts the real binary and waits (bounded) until `/readyz` answers 200.
    pub async fn start(self) -> Instance {
        Instance::start(self).await
    }
}
