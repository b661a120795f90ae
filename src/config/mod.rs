//! Configuration: the TOML file format (plus environment overrides) turned into ONE validated
//! [`Config`]. Every problem is collected with the key it concerns; nothing here opens a port.

mod addresses;
mod diff;
mod explain;
mod exposure;
mod limits;
mod methods;
mod pipelines;
mod reader;
mod secret;
mod sections;
mod size;
mod stale;
mod state;
mod suggest;
mod tls;
mod warnings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, Uri};

pub use explain::{Setting, Source, Sources};
use pipelines::{read_github, read_gitlab};
pub use pipelines::{GithubConfig, GitlabConfig};
use reader::Reading;
pub use secret::Secret;
use sections::{
    read_admin, read_guard, read_log, read_proxy, read_public, read_server, read_upsun,
    read_webhooks,
};
use stale::read_stale;
pub use stale::{ServeWhen, StaleConfig};
use state::read_state;
pub use tls::TlsConfig;

/// Where environment variables come from: the process, or a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// One thing wrong with a config, and the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl ConfigIssue {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {error}")]
    Syntax { path: PathBuf, error: SyntaxError },
    #[error("config file {path} has {} error(s):\n{}", issues.len(), issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        issues: Vec<ConfigIssue>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub guard: GuardConfig,
    pub upsun: UpsunConfig,
    pub webhooks: WebhooksConfig,
    pub github: GithubConfig,
    pub gitlab: GitlabConfig,
    pub state: StateConfig,
    pub server: ServerConfig,
    pub public: PublicConfig,
    pub log: LogConfig,
    pub stale: StaleConfig,
}

/// What the log looks like (`[log]`): read once at start (a reload cannot change it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// One access line per request (target `writeguard::access`).
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            access: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One flat JSON object per line.
    Json,
}

/// The public status surface on the proxy port.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicConfig {
    /// Reserved path prefix answered by writeguard itself, never forwarded.
    pub prefix: String,
    /// `Access-Control-Allow-Origin` values; `*` allows any origin.
    pub cors_origins: Vec<String>,
    /// Insert the banner script into HTML pages passing through.
    pub inject_banner: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    pub upstream: Uri,
    /// The `Host` (and, for an https upstream, the TLS server name) sent to the upstream
    /// instead of the client's (which goes in `X-Forwarded-Host`).
    pub upstream_host: Option<http::uri::Authority>,
    /// HTTPS on every `listen` address: the certificate served (reloaded on SIGHUP).
    pub tls: Option<TlsConfig>,
    /// Plain HTTP listeners that answer every request with a 308 to HTTPS.
    pub redirect_listen: Vec<SocketAddr>,
    /// The port in those redirects' `Location` (443 is left out).
    pub redirect_port: u16,
    pub connect_timeout: Duration,
    /// How long an idempotent request rides through a refused or reset upstream connection
    /// (retried with backoff) before it is answered 502.
    pub upstream_retry: Duration,
    /// Whole-header deadline for a client request.
    pub header_timeout: Duration,
    /// Bodies of requests answered early up to this size are read and dropped so the
    /// connection stays usable; larger ones close the connection.
    pub drain_limit: u64,
    /// Also accept HTTP/2 over cleartext (prior knowledge) on the proxy listener.
    pub h2c: bool,
    /// How long a request body may go without a byte arriving.
    pub body_idle_timeout: Duration,
    /// Deadline for a whole request body, from its request's head.
    pub body_timeout: Duration,
    /// How long the upstream may take to start its response (then 504).
    pub upstream_timeout: Duration,
    /// Largest request head (request line and headers); larger ones get 431.
    pub max_header_size: usize,
    /// Longest request target; longer ones get 414.
    pub max_uri_length: usize,
    /// What to do with header names containing `_` (other than the spellings of framing
    /// headers, which are always refused).
    pub underscore_headers: UnderscoreHeaders,
    /// Which HTTP/1.1 implementation serves the proxy port.
    pub engine: Engine,
}

/// The proxy port's HTTP/1.1 engine (`proxy.engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// hyper's server and client for every request (the engine before `Native`; kept
    /// selectable for at least one release).
    Hyper,
    /// writeguard's own httparse-based path for plain HTTP/1.1 requests it forwards (the
    /// default); every other request (held, public routes, upgrades, h2c, anything unusual)
    /// still goes to the hyper path on the same connection.
    Native,
}

/// Header names with `_`: CGI, FastCGI, WSGI and Rack read `X_Foo` and `X-Foo` as the same
/// variable, so a client can send a second spelling of a header a proxy in front checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// Forwarded as sent.
    Pass,
    /// Removed before forwarding.
    Drop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: Vec<SocketAddr>,
    pub token: Secret,
    /// Bearer token `GET /metrics` asks for; none: open (like `/healthz`).
    pub metrics_token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    pub methods: Vec<Method>,
    pub retry_after: Duration,
    pub max_engaged: Duration,
    pub allow_paths: Vec<String>,
    /// How long a guarded write may wait for the guard to be released (zero: answer at once).
    pub hold: Duration,
    /// Held writes beyond this are answered 503 at once.
    pub hold_max_requests: usize,
    /// Released held writes in flight to the upstream at once.
    pub release_concurrency: usize,
    /// A custom maintenance page (its contents), with `{{retry_after}}`, `{{reason}}` and
    /// `{{since}}` placeholders.
    pub page: Option<std::sync::Arc<str>>,
    /// Forward methods RFC 9110 does not define (`PROPPATCH`, `LOCK`, ...) while guarded.
    pub pass_unknown_methods: bool,
    /// New tunnels (WebSocket, h2c upgrades, CONNECT) while guarded.
    pub upgrades: Upgrades,
}

/// What the guard does with a new tunnel while engaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrades {
    /// 503, like a guarded write: a tunnel carries writes the guard cannot see.
    Refuse,
    Pass,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpsunConfig {
    pub shared_key: Option<Secret>,
    pub allow_unsigned: bool,
    pub project: Option<String>,
    pub environments: Vec<String>,
    /// Guard on `pending` too (off by default: activities may queue for a long time).
    pub guard_pending: bool,
}

/// `[webhooks]`: the signed deploy webhook (Standard Webhooks) any pipeline can send.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhooksConfig {
    /// `whsec_<base64>` secrets, any of which verifies (several while one is rotated).
    /// Empty: `POST /webhooks/deploy` is refused.
    pub secrets: Vec<Secret>,
    /// How far a `webhook-timestamp` may be from now.
    pub tolerance: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// The state file; with Redis, the boot cache (the last state this replica saw).
    pub path: PathBuf,
    /// JSON lines, one per engagement change (default: `path` + `.audit.jsonl`); the file
    /// backend's (with Redis, the audit trail is a stream in Redis).
    pub audit_log: PathBuf,
    /// Where the guard state is kept: one file, or Redis shared by every replica.
    pub backend: StateBackend,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StateBackend {
    File,
    Redis(RedisConfig),
}

/// One guard state for every replica with the same `site`, in Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `redis+unix://`; may hold a password, so a [`Secret`].
    pub url: Secret,
    /// The key namespace: replicas with the same site share one guard.
    pub site: String,
    /// With no confirmed read of Redis for this long, a replica acts on `on_store_loss`.
    pub stale_after: Duration,
    pub on_store_loss: OnStoreLoss,
    /// This replica's id in `/status` (default: `<hostname>-<pid>`).
    pub replica: Option<String>,
}

/// What a replica does with writes while it cannot read the shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreLoss {
    /// Guard them itself (fail closed): a deploy may be starting that it cannot learn of.
    GuardWrites,
    /// Keep treating them as the last state it read (fail open while not engaged).
    LastKnown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Worker threads of the proxy listener.
    pub threads: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Unix socket over which a new instance (`run --upgrade`) takes the listeners
    /// (default: beside the state file).
    pub upgrade_sock: PathBuf,
    /// pingora's pid file (default: beside the state file).
    pub pid_file: PathBuf,
}

pub const DEFAULT_PATH: &str = "config/writeguard.toml";

impl Config {
    /// Reads and validates the file at `path`, applying `WRITEGUARD_*` overrides from `env`.
    /// Relative paths in it are relative to its directory.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        Config::load_explained(path, env).map(|(config, _)| config)
    }

    /// [`Config::load`], with where each setting came from (for `check --explain`).
    pub fn load_explained(path: &Path, env: &dyn Env) -> Result<(Config, Sources), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // Absolute, so that a path in it means the same from any working directory.
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let base = file.parent().unwrap_or(Path::new("/"));
        Config::parse_in(&text, env, Some(base)).map_err(|e| match e {
            ParseError::Syntax(error) => ConfigError::Syntax {
                path: path.to_owned(),
                error,
            },
            ParseError::Invalid(issues) => ConfigError::Invalid {
                path: path.to_owned(),
                issues,
            },
        })
    }

    /// Only the `[admin]` section of the file at `path`, with its `WRITEGUARD_*` overrides:
    /// what the operator commands need to reach a running instance, even while another
    /// section is wrong (`writeguard reload` after a bad edit must still find the instance).
    pub fn load_admin(path: &Path, env: &dyn Env) -> Result<AdminConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut root: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            error: SyntaxError::new(&text, &e),
        })?;
        let mut reading = Reading::new(path.parent());
        let admin = read_admin(&mut root, env, &mut reading);
        match admin {
            Some(admin) if reading.issues.is_empty() => Ok(admin),
            _ => Err(ConfigError::Invalid {
                path: path.to_owned(),
                issues: reading.issues,
            }),
        }
    }

    /// Validates a config that is not in a file: relative paths stay as written (relative to
    /// the working directory).
    pub fn parse(text: &str, env: &dyn Env) -> Result<Config, ParseError> {
        Config::parse_in(text, env, None).map(|(config, _)| config)
    }

    fn parse_in(
        text: &str,
        env: &dyn Env,
        base: Option<&Path>,
    ) -> Result<(Config, Sources), ParseError> {
        let mut root: toml::Table =
            toml::from_str(text).map_err(|e| ParseError::Syntax(SyntaxError::new(text, &e)))?;
        let mut reading = Reading::new(base);
        let r = &mut reading;

        let proxy = read_proxy(&mut root, env, r);
        let admin = read_admin(&mut root, env, r);
        let guard = read_guard(&mut root, r);
        let upsun = read_upsun(&mut root, env, r);
        let webhooks = read_webhooks(&mut root, env, r);
        let github = read_github(&mut root, env, r);
        let gitlab = read_gitlab(&mut root, env, r);
        let state = read_state(&mut root, env, upsun.as_ref(), r);
        let server = read_server(&mut root, &state, r);
        let public = read_public(&mut root, r);
        let log = read_log(&mut root, env, r);
        let stale = read_stale(&mut root, r);
        let Reading {
            mut issues,
            sources,
            sections,
            ..
        } = reading;
        for key in root.keys() {
            let message = match suggest::closest(key, sections.iter().copied()) {
                Some(known) => format!("unknown section or key; did you mean `[{known}]`?"),
                None => "unknown section or key".to_owned(),
            };
            issues.push(ConfigIssue::new(key.as_str(), message));
        }
        let no_addrs: &[SocketAddr] = &[];
        let proxy_listen = proxy.as_ref().map_or(no_addrs, |p| &p.listen);
        let admin_listen = admin.as_ref().map_or(no_addrs, |a| &a.listen);
        addresses::check(
            proxy_listen,
            admin_listen,
            proxy.as_ref().map(|p| &p.upstream),
            &mut issues,
        );
        exposure::check(
            &[
                ("proxy.listen", proxy_listen),
                ("admin.listen", admin_listen),
            ],
            &[
                ("admin.token", admin.as_ref().map(|a| &a.token)),
                (
                    "admin.metrics_token",
                    admin.as_ref().and_then(|a| a.metrics_token.as_ref()),
                ),
                (
                    "upsun.shared_key",
                    upsun.as_ref().and_then(|u| u.shared_key.as_ref()),
                ),
                ("github.secret", github.secret.as_ref()),
                ("gitlab.token", gitlab.token.as_ref()),
            ],
            &mut issues,
        );

        match (proxy, admin, guard, upsun, state, server) {
            (Some(proxy), Some(admin), Some(guard), Some(upsun), Some(state), Some(server))
                if issues.is_empty() =>
            {
                let config = Config {
                    proxy,
                    admin,
                    guard,
                    upsun,
                    webhooks,
                    github,
                    gitlab,
                    state,
                    server,
                    public,
                    log,
                    stale,
                };
                Ok((config, sources))
            }
            _ => Err(ParseError::Invalid(issues)),
        }
    }

    /// Every configured duration, with its key: what the running code turns into deadlines
    /// (the `deadlines` fuzz target computes them all). The structs are taken apart field by
    /// field, so a new field cannot be added without deciding here whether it is one.
    pub fn durations(&self) -> [(&'static str, Duration); 11] {
        let ProxyConfig {
            listen: _,
            upstream: _,
            upstream_host: _,
            tls: _,
            redirect_listen: _,
            redirect_port: _,
            connect_timeout,
            upstream_retry,
            header_timeout,
            drain_limit: _,
            h2c: _,
            body_idle_timeout,
            body_timeout,
            upstream_timeout,
            max_header_size: _,
            max_uri_length: _,
            underscore_headers: _,
            engine: _,
        } = self.proxy;
        let GuardConfig {
            methods: _,
            retry_after,
            max_engaged,
            allow_paths: _,
            hold,
            hold_max_requests: _,
            release_concurrency: _,
            page: _,
            pass_unknown_methods: _,
            upgrades: _,
        } = self.guard;
        let ServerConfig {
            threads: _,
            shutdown_grace,
            upgrade_sock: _,
            pid_file: _,
        } = self.server;
        let StaleConfig {
            enabled: _,
            max_bytes: _,
            max_object: _,
            grace,
            serve_when: _,
        } = self.stale;
        [
            ("proxy.connect_timeout", connect_timeout),
            ("proxy.upstream_retry", upstream_retry),
            ("proxy.header_timeout", header_timeout),
            ("proxy.body_idle_timeout", body_idle_timeout),
            ("proxy.body_timeout", body_timeout),
            ("proxy.upstream_timeout", upstream_timeout),
            ("guard.retry_after", retry_after),
            ("guard.max_engaged", max_engaged),
            ("guard.hold", hold),
            ("server.shutdown_grace", shutdown_grace),
            ("stale.grace", grace),
        ]
    }

    /// Every address writeguard listens on: the proxy's, the admin API's, the redirect's.
    pub fn all_listeners(&self) -> impl Iterator<Item = &SocketAddr> {
        self.proxy
            .listen
            .iter()
            .chain(&self.admin.listen)
            .chain(&self.proxy.redirect_listen)
    }

    /// One line saying what this config will do, for `check` and the start-up log.
    pub fn summary(&self) -> String {
        let list = |v: &[SocketAddr]| {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "proxy {}{} -> {}, admin {}, guarding {} (allow {} path prefixes), webhooks {}{}, state {}",
            list(&self.proxy.listen),
            match (&self.proxy.tls, self.proxy.redirect_listen.is_empty()) {
                (None, _) => String::new(),
                (Some(_), true) => " (HTTPS)".to_owned(),
                (Some(_), false) => format!(
                    " (HTTPS; redirect from {})",
                    list(&self.proxy.redirect_listen)
                ),
            },
            self.proxy.upstream,
            list(&self.admin.listen),
            self.guard
                .methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(","),
            self.guard.allow_paths.len(),
            match (&self.upsun.shared_key, self.upsun.allow_unsigned) {
                (Some(_), _) => "signed",
                (None, true) => "UNSIGNED (allow_unsigned = true)",
                (None, false) => "refused (no upsun.shared_key)",
            },
            {
                let deploy: Vec<&str> = [
                    (!self.webhooks.secrets.is_empty(), "standard"),
                    (self.github.secret.is_some(), "github"),
                    (self.gitlab.enabled(), "gitlab"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                if deploy.is_empty() {
                    String::new()
                } else {
                    format!(" (deploy: {})", deploy.join(", "))
                }
            },
            match &self.state.backend {
                StateBackend::File => self.state.path.display().to_string(),
                StateBackend::Redis(r) => format!(
                    "redis (site {}, boot cache {})",
                    r.site,
                    self.state.path.display()
                ),
            },
        )
    }
}

#[derive(Debug)]
pub enum ParseError {
    Syntax(SyntaxError),
    Invalid(Vec<ConfigIssue>),
}

/// Where the TOML stops making sense: line and column (from 1) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl SyntaxError {
    fn new(text: &str, e: &toml::de::Error) -> Self {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        // A span may point inside a multi-byte character: back up to its start.
        let at = (0..=at)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let before = &text[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        SyntaxError {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            // toml's "invalid string\nexpected ..." on one line.
            message: e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

#[cfg(test)]
mod tests;
