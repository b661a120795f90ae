//! Configuration: the TOML file format (plus environment overrides) turned into ONE validated
//! [`Config`]. Every problem is collected with the key it concerns; nothing here opens a port.

mod diff;
mod exposure;
mod limits;
mod reader;
mod secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, Uri};

use reader::Reader;
pub use secret::Secret;

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
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
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
    pub state: StateConfig,
    pub server: ServerConfig,
    pub public: PublicConfig,
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

#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub path: PathBuf,
    /// JSON lines, one per engagement change (default: `path` + `.audit.jsonl`).
    pub audit_log: PathBuf,
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
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, env).map_err(|e| match e {
            ParseError::Syntax(message) => ConfigError::Syntax {
                path: path.to_owned(),
                message,
            },
            ParseError::Invalid(issues) => ConfigError::Invalid {
                path: path.to_owned(),
                issues,
            },
        })
    }

    pub fn parse(text: &str, env: &dyn Env) -> Result<Config, ParseError> {
        let mut root: toml::Table =
            toml::from_str(text).map_err(|e| ParseError::Syntax(e.message().to_string()))?;
        let mut issues = Vec::new();

        let proxy = read_proxy(&mut root, env, &mut issues);
        let admin = read_admin(&mut root, env, &mut issues);
        let guard = read_guard(&mut root, &mut issues);
        let upsun = read_upsun(&mut root, env, &mut issues);
        let state = read_state(&mut root, &mut issues);
        let server = read_server(&mut root, &state, &mut issues);
        let public = read_public(&mut root, &mut issues);
        for key in root.keys() {
            issues.push(ConfigIssue::new(key.as_str(), "unknown section or key"));
        }
        let no_addrs: &[SocketAddr] = &[];
        exposure::check(
            &[
                (
                    "proxy.listen",
                    proxy.as_ref().map_or(no_addrs, |p| &p.listen),
                ),
                (
                    "admin.listen",
                    admin.as_ref().map_or(no_addrs, |a| &a.listen),
                ),
            ],
            &[
                ("admin.token", admin.as_ref().map(|a| &a.token)),
                (
                    "upsun.shared_key",
                    upsun.as_ref().and_then(|u| u.shared_key.as_ref()),
                ),
            ],
            &mut issues,
        );

        match (proxy, admin, guard, upsun, state, server) {
            (Some(proxy), Some(admin), Some(guard), Some(upsun), Some(state), Some(server))
                if issues.is_empty() =>
            {
                Ok(Config {
                    proxy,
                    admin,
                    guard,
                    upsun,
                    state,
                    server,
                    public,
                })
            }
            _ => Err(ParseError::Invalid(issues)),
        }
    }

    /// Every configured duration, with its key: what the running code turns into deadlines
    /// (the `deadlines` fuzz target computes them all). The structs are taken apart field by
    /// field, so a new field cannot be added without deciding here whether it is one.
    pub fn durations(&self) -> [(&'static str, Duration); 10] {
        let ProxyConfig {
            listen: _,
            upstream: _,
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
        ]
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
            "proxy {} -> {}, admin {}, guarding {} (allow {} path prefixes), webhooks {}, state {}",
            list(&self.proxy.listen),
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
            self.state.path.display(),
        )
    }
}

#[derive(Debug)]
pub enum ParseError {
    Syntax(String),
    Invalid(Vec<ConfigIssue>),
}

/// Reads `key` (or the variable named by `key_env`) as a secret; an environment override
/// `override_var` wins over both.
fn read_secret(r: &mut Reader<'_>, env: &dyn Env, key: &str, override_var: &str) -> Option<Secret> {
    let inline = r.string(key);
    let env_key = format!("{key}_env");
    let from_env = r.string(&env_key).and_then(|name| {
        let value = env.var(&name);
        if value.is_none() {
            r.issue(
                &env_key,
                format!("environment variable {name} is not set or empty"),
            );
        }
        value
    });
    if inline.is_some() && from_env.is_some() {
        r.issue(key, format!("set either {key} or {env_key}, not both"));
    }
    env.var(override_var)
        .or(from_env)
        .or(inline)
        .map(Secret::new)
}

fn listen_addrs(r: &mut Reader<'_>, key: &str, raw: Vec<String>) -> Vec<SocketAddr> {
    if raw.is_empty() {
        r.issue(key, "needs at least one address");
    }
    raw.iter()
        .filter_map(|a| match a.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                r.issue(
                    key,
                    format!("{a:?} is not an address like \"127.0.0.1:8080\""),
                );
                None
            }
        })
        .collect()
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',').map(|p| p.trim().to_string()).collect()
}

fn read_proxy(
    root: &mut toml::Table,
    env: &dyn Env,
    issues: &mut Vec<ConfigIssue>,
) -> Option<ProxyConfig> {
    let mut r = Reader::section(root, "proxy", issues);
    let listen = r.strings("listen", true);
    let listen = env
        .var("WRITEGUARD_LISTEN")
        .map(|v| comma_list(&v))
        .or(listen);
    let listen = match listen {
        Some(raw) => listen_addrs(&mut r, "listen", raw),
        None => {
            r.issue("listen", "is required");
            Vec::new()
        }
    };
    let upstream = env.var("WRITEGUARD_UPSTREAM").or(r.string("upstream"));
    let upstream = match upstream {
        None => {
            r.issue("upstream", "is required, e.g. \"http://127.0.0.1:8000\"");
            None
        }
        Some(raw) => match parse_upstream(&raw) {
            Ok(uri) => Some(uri),
            Err(msg) => {
                r.issue("upstream", msg);
                None
            }
        },
    };
    let connect_timeout = r.duration(
        "connect_timeout",
        Duration::from_secs(5),
        limits::CONNECT_TIMEOUT,
    );
    let upstream_retry = r.duration(
        "upstream_retry",
        Duration::from_secs(5),
        limits::UPSTREAM_RETRY,
    );
    let header_timeout = r.duration(
        "header_timeout",
        Duration::from_secs(30),
        limits::HEADER_TIMEOUT,
    );
    let drain_limit = r.integer("drain_limit", 0, 1 << 30).unwrap_or(256 * 1024) as u64;
    let h2c = r.bool("h2c").unwrap_or(false);
    let body_idle_timeout = r.duration(
        "body_idle_timeout",
        Duration::from_secs(30),
        limits::BODY_IDLE_TIMEOUT,
    );
    let body_timeout = r.duration(
        "body_timeout",
        Duration::from_secs(300),
        limits::BODY_TIMEOUT,
    );
    let upstream_timeout = r.duration(
        "upstream_timeout",
        Duration::from_secs(60),
        limits::UPSTREAM_TIMEOUT,
    );
    let max_header_size = r
        // hyper's read buffer cannot be smaller than 8 KiB (with h2c the limit is the buffer).
        .integer("max_header_size", 8192, 1 << 20)
        .unwrap_or(64 * 1024) as usize;
    let max_uri_length = r.integer("max_uri_length", 64, 1 << 20).unwrap_or(8 * 1024) as usize;
    let underscore_headers = match r.string("underscore_headers").as_deref() {
        None | Some("pass") => UnderscoreHeaders::Pass,
        Some("drop") => UnderscoreHeaders::Drop,
        Some(other) => {
            r.issue(
                "underscore_headers",
                format!("{other:?} is not one of \"pass\", \"drop\""),
            );
            UnderscoreHeaders::Pass
        }
    };
    r.finish();
    Some(ProxyConfig {
        listen,
        upstream: upstream?,
        connect_timeout,
        upstream_retry,
        header_timeout,
        drain_limit,
        h2c,
        body_idle_timeout,
        body_timeout,
        upstream_timeout,
        max_header_size,
        max_uri_length,
        underscore_headers,
    })
}

fn parse_upstream(raw: &str) -> Result<Uri, String> {
    let uri: Uri = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a URL like \"http://127.0.0.1:8000\""))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{raw:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{raw:?} must not carry a path or query: requests keep their own"
        ));
    }
    Ok(uri)
}

fn read_admin(
    root: &mut toml::Table,
    env: &dyn Env,
    issues: &mut Vec<ConfigIssue>,
) -> Option<AdminConfig> {
    let mut r = Reader::section(root, "admin", issues);
    let listen = env
        .var("WRITEGUARD_ADMIN_LISTEN")
        .map(|v| comma_list(&v))
        .or(r.strings("listen", true))
        .unwrap_or_else(|| vec!["127.0.0.1:9090".into()]);
    let listen = listen_addrs(&mut r, "listen", listen);
    let token = read_secret(&mut r, env, "token", "WRITEGUARD_ADMIN_TOKEN");
    let token = match token {
        Some(t) if t.expose().len() >= 8 => Some(t),
        Some(_) => {
            r.issue("token", "must be at least 8 characters");
            None
        }
        None => {
            r.issue(
                "token",
                "is required (or token_env, or WRITEGUARD_ADMIN_TOKEN): operator endpoints are never open",
            );
            None
        }
    };
    r.finish();
    Some(AdminConfig {
        listen,
        token: token?,
    })
}

fn read_guard(root: &mut toml::Table, issues: &mut Vec<ConfigIssue>) -> Option<GuardConfig> {
    let mut r = Reader::section(root, "guard", issues);
    let methods = r
        .strings("methods", false)
        .unwrap_or_else(|| vec!["POST".into(), "PATCH".into()]);
    let mut parsed = Vec::new();
    for m in &methods {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) if method != Method::GET && method != Method::HEAD => parsed.push(method),
            Ok(_) => r.issue(
                "methods",
                format!("{m:?} is a read; reads are never guarded"),
            ),
            Err(_) => r.issue("methods", format!("{m:?} is not an HTTP method")),
        }
    }
    let retry_after = r.duration("retry_after", Duration::from_secs(30), limits::RETRY_AFTER);
    let max_engaged = r.duration(
        "max_engaged",
        Duration::from_secs(30 * 60),
        limits::MAX_ENGAGED,
    );
    let hold = r.duration("hold", Duration::from_secs(10), limits::HOLD);
    let hold_max_requests = r
        .integer("hold_max_requests", 0, 1_000_000)
        .unwrap_or(10_000) as usize;
    let release_concurrency = r.integer("release_concurrency", 1, 100_000).unwrap_or(64) as usize;
    let page = r
        .string("page")
        .and_then(|path| match std::fs::read_to_string(&path) {
            Ok(text) => Some(std::sync::Arc::from(text)),
            Err(e) => {
                r.issue("page", format!("cannot read {path:?}: {e}"));
                None
            }
        });
    let pass_unknown_methods = r.bool("pass_unknown_methods").unwrap_or(false);
    let upgrades = match r.string("upgrades").as_deref() {
        None | Some("refuse") => Upgrades::Refuse,
        Some("pass") => Upgrades::Pass,
        Some(other) => {
            r.issue(
                "upgrades",
                format!("{other:?} is not one of \"refuse\", \"pass\""),
            );
            Upgrades::Refuse
        }
    };
    let allow_paths = r.strings("allow_paths", false).unwrap_or_default();
    for p in &allow_paths {
        if !p.starts_with('/') {
            r.issue("allow_paths", format!("{p:?} must start with '/'"));
        } else if p.trim_end_matches('/').is_empty() {
            // It would be trimmed to "", a prefix of every path: the guard would pass every
            // write while claiming to be engaged.
            r.issue(
                "allow_paths",
                format!("{p:?} covers every path, which turns the guard off; list the prefixes to leave unguarded"),
            );
        }
    }
    r.finish();
    Some(GuardConfig {
        methods: parsed,
        retry_after,
        max_engaged,
        allow_paths: allow_paths
            .into_iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .collect(),
        hold,
        hold_max_requests,
        release_concurrency,
        page,
        pass_unknown_methods,
        upgrades,
    })
}

fn read_upsun(
    root: &mut toml::Table,
    env: &dyn Env,
    issues: &mut Vec<ConfigIssue>,
) -> Option<UpsunConfig> {
    let mut r = Reader::section(root, "upsun", issues);
    let shared_key = read_secret(&mut r, env, "shared_key", "WRITEGUARD_UPSUN_SHARED_KEY");
    if shared_key.as_ref().is_some_and(|k| k.expose().is_empty()) {
        r.issue("shared_key", "must not be empty");
    }
    let allow_unsigned = r.bool("allow_unsigned").unwrap_or(false);
    let project = r.string("project");
    let environments = r.strings("environments", false).unwrap_or_default();
    let guard_pending = r.bool("guard_pending").unwrap_or(false);
    r.finish();
    Some(UpsunConfig {
        shared_key,
        allow_unsigned,
        project,
        environments,
        guard_pending,
    })
}

fn read_state(root: &mut toml::Table, issues: &mut Vec<ConfigIssue>) -> Option<StateConfig> {
    let mut r = Reader::section(root, "state", issues);
    let path = r
        .string("path")
        .unwrap_or_else(|| "var/writeguard.state".into());
    if path.is_empty() {
        r.issue("path", "must not be empty");
    }
    let audit_log = r
        .string("audit_log")
        .unwrap_or_else(|| format!("{path}.audit.jsonl"));
    if audit_log.is_empty() {
        r.issue("audit_log", "must not be empty");
    } else if audit_log == path {
        r.issue("audit_log", "must not be the state file itself");
    }
    r.finish();
    Some(StateConfig {
        path: path.into(),
        audit_log: audit_log.into(),
    })
}

fn read_public(root: &mut toml::Table, issues: &mut Vec<ConfigIssue>) -> PublicConfig {
    let mut r = Reader::section(root, "public", issues);
    let prefix = r
        .string("prefix")
        .unwrap_or_else(|| "/.well-known/writeguard".into());
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
        r.issue(
            "prefix",
            format!("{prefix:?} must start with '/' and not end with one"),
        );
    }
    let cors_origins = r
        .strings("cors_origins", true)
        .unwrap_or_else(|| vec!["*".into()]);
    let inject_banner = r.bool("inject_banner").unwrap_or(false);
    r.finish();
    PublicConfig {
        prefix,
        cors_origins,
        inject_banner,
    }
}

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL); pingora
/// panics on a longer one in the middle of a hand-over.
const MAX_SOCKET_PATH: usize = 107;

fn read_server(
    root: &mut toml::Table,
    state: &Option<StateConfig>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<ServerConfig> {
    let mut r = Reader::section(root, "server", issues);
    let threads = r.integer("threads", 1, 256).unwrap_or(1) as usize;
    let shutdown_grace = r.duration(
        "shutdown_grace",
        Duration::from_secs(10),
        limits::SHUTDOWN_GRACE,
    );
    // Beside the state file by default, never in a shared directory like /tmp: whoever can
    // create the socket there first receives the listening sockets at the next SIGQUIT.
    let state_dir = state
        .as_ref()
        .and_then(|s| s.path.parent())
        .unwrap_or(Path::new(""));
    let upgrade_sock = r
        .string("upgrade_sock")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir.join("writeguard.upgrade.sock"));
    let pid_file = r
        .string("pid_file")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir.join("writeguard.pid"));
    let sock_len = upgrade_sock.as_os_str().len();
    if sock_len == 0 {
        r.issue("upgrade_sock", "must not be empty");
    } else if sock_len > MAX_SOCKET_PATH {
        r.issue(
            "upgrade_sock",
            format!(
                "{} is {sock_len} bytes, longer than a Unix socket path may be ({MAX_SOCKET_PATH}); \
                 set server.upgrade_sock (by default it is beside state.path)",
                upgrade_sock.display()
            ),
        );
    }
    if pid_file.as_os_str().is_empty() {
        r.issue("pid_file", "must not be empty");
    }
    r.finish();
    Some(ServerConfig {
        threads,
        shutdown_grace,
        upgrade_sock,
        pid_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str = r#"
[proxy]
listen = "127.0.0.1:8080"
upstream = "http://127.0.0.1:8000"
[admin]
token = "a-long-token"
"#;

    fn issues(text: &str) -> Vec<String> {
        match Config::parse(text, &[]) {
            Err(ParseError::Invalid(i)) => i.into_iter().map(|i| i.to_string()).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = Config::parse(MINIMAL, &[]).expect("valid");
        assert_eq!(c.guard.methods, vec![Method::POST, Method::PATCH]);
        assert_eq!(c.guard.retry_after, Duration::from_secs(30));
        assert_eq!(c.guard.max_engaged, Duration::from_secs(1800));
        assert_eq!(c.admin.listen, vec!["127.0.0.1:9090".parse().unwrap()]);
        assert_eq!(c.state.path, PathBuf::from("var/writeguard.state"));
        assert_eq!(
            c.state.audit_log,
            PathBuf::from("var/writeguard.state.audit.jsonl")
        );
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
        assert!(c.upsun.shared_key.is_none() && !c.upsun.allow_unsigned);
        assert_eq!(c.proxy.underscore_headers, UnderscoreHeaders::Pass);
    }

    #[test]
    fn underscore_headers_is_pass_or_drop() {
        let drop = MINIMAL.replace("[admin]", "underscore_headers = \"drop\"\n[admin]");
        let c = Config::parse(&drop, &[]).expect("valid");
        assert_eq!(c.proxy.underscore_headers, UnderscoreHeaders::Drop);
        let bad = MINIMAL.replace("[admin]", "underscore_headers = \"strip\"\n[admin]");
        let got = issues(&bad);
        assert!(
            got.iter()
                .any(|i| i.starts_with("proxy.underscore_headers")),
            "{got:?}"
        );
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let got = issues(
            r#"
[proxy]
listen = ["nope"]
upstream = "ftp://x"
colour = "blue"
[guard]
retry_after = "soon"
methods = ["GET", "PO ST"]
[admin]
token = "short"
[extra]
"#,
        );
        let keys: Vec<&str> = got.iter().map(|s| s.split(':').next().unwrap()).collect();
        for key in [
            "proxy.listen",
            "proxy.upstream",
            "proxy.colour",
            "guard.retry_after",
            "guard.methods",
            "admin.token",
            "extra",
        ] {
            assert!(keys.contains(&key), "{key} missing from {got:#?}");
        }
    }

    #[test]
    fn env_overrides_win_and_secrets_come_from_named_variables() {
        let env = [
            ("WRITEGUARD_UPSTREAM", "https://app.example:8443"),
            ("WRITEGUARD_LISTEN", "127.0.0.1:1,127.0.0.1:2"),
            ("MY_KEY", "from-the-env"),
        ];
        let text = format!("{MINIMAL}\n[upsun]\nshared_key_env = \"MY_KEY\"\n");
        let c = Config::parse(&text, &env).expect("valid");
        assert_eq!(c.proxy.upstream, "https://app.example:8443");
        assert_eq!(c.proxy.listen.len(), 2);
        assert_eq!(c.upsun.shared_key.unwrap().expose(), "from-the-env");
    }

    #[test]
    fn missing_secret_variable_is_an_error() {
        let text = format!("{MINIMAL}\n[upsun]\nshared_key_env = \"NOT_SET\"\n");
        let got = issues(&text);
        assert!(got.iter().any(|i| i.starts_with("upsun.shared_key_env")));
    }

    #[test]
    fn every_duration_has_an_upper_bound() {
        let huge = "9223372036854775807s";
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:1\"\nupstream = \"http://a\"\n\
             connect_timeout = \"{huge}\"\nupstream_retry = \"{huge}\"\n\
             header_timeout = \"{huge}\"\nbody_idle_timeout = \"{huge}\"\n\
             body_timeout = \"{huge}\"\nupstream_timeout = \"{huge}\"\n\
             [admin]\ntoken = \"a-long-token\"\n\
             [guard]\nretry_after = \"{huge}\"\nmax_engaged = \"10000y\"\nhold = \"{huge}\"\n\
             [server]\nshutdown_grace = \"{huge}\"\n"
        );
        let got = issues(&text);
        let every = Config::parse(MINIMAL, &[]).expect("valid").durations();
        for (key, _) in every {
            assert!(
                got.iter().any(|i| i.starts_with(&format!("{key}: "))),
                "{key} missing from {got:#?}"
            );
        }
        let at_max = format!(
            "{MINIMAL}[guard]\nmax_engaged = \"7d\"\nhold = \"1h\"\nretry_after = \"1d\"\n"
        );
        let c = Config::parse(&at_max, &[]).expect("the maxima are valid");
        assert_eq!(c.guard.max_engaged, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn an_allow_path_covering_everything_is_refused() {
        for p in ["/", "//", "///"] {
            let text = format!("{MINIMAL}[guard]\nallow_paths = [\"/login\", {p:?}]\n");
            let got = issues(&text);
            assert!(
                got.iter()
                    .any(|i| i.starts_with("guard.allow_paths") && i.contains("every path")),
                "{p}: {got:#?}"
            );
        }
        let text = format!("{MINIMAL}[guard]\nallow_paths = [\"/login/\"]\n");
        let c = Config::parse(&text, &[]).expect("valid");
        assert_eq!(c.guard.allow_paths, vec!["/login".to_string()]);
    }

    #[test]
    fn the_upgrade_socket_and_pid_file_default_beside_the_state_file() {
        let c = Config::parse(MINIMAL, &[]).expect("valid");
        assert_eq!(
            c.server.upgrade_sock,
            PathBuf::from("var/writeguard.upgrade.sock")
        );
        assert_eq!(c.server.pid_file, PathBuf::from("var/writeguard.pid"));
        let text = format!("{MINIMAL}[state]\npath = \"/srv/wg/state.json\"\n");
        let c = Config::parse(&text, &[]).expect("valid");
        assert_eq!(
            c.server.upgrade_sock,
            PathBuf::from("/srv/wg/writeguard.upgrade.sock")
        );
        assert_eq!(c.server.pid_file, PathBuf::from("/srv/wg/writeguard.pid"));
        let text = format!("{MINIMAL}[state]\npath = \"state.json\"\n");
        let c = Config::parse(&text, &[]).expect("valid");
        assert_eq!(
            c.server.upgrade_sock,
            PathBuf::from("writeguard.upgrade.sock")
        );
        let long = "d".repeat(100);
        let text = format!("{MINIMAL}[state]\npath = \"/{long}/state.json\"\n");
        assert!(issues(&text)
            .iter()
            .any(|i| i.starts_with("server.upgrade_sock")));
    }

    #[test]
    fn example_or_short_secrets_are_refused_on_a_non_loopback_listener() {
        let weak = "[proxy]\nlisten = \"127.0.0.1:8080\"\nupstream = \"http://a\"\n\
                    [admin]\ntoken = \"change-me\"\n[upsun]\nshared_key = \"short-key\"\n";
        Config::parse(weak, &[]).expect("fine on loopback");
        for env in [
            [("WRITEGUARD_LISTEN", "0.0.0.0:8080")],
            [("WRITEGUARD_ADMIN_LISTEN", "[::]:9090")],
        ] {
            let got = issues_with(weak, &env);
            assert!(got
                .iter()
                .any(|i| i.starts_with("admin.token: is the example value")));
            assert!(got
                .iter()
                .any(|i| i.starts_with("upsun.shared_key: is shorter")));
        }
        let env = [
            ("WRITEGUARD_LISTEN", "0.0.0.0:8080"),
            ("WRITEGUARD_ADMIN_TOKEN", "0123456789abcdef"),
            ("WRITEGUARD_UPSUN_SHARED_KEY", "fedcba9876543210"),
        ];
        Config::parse(weak, &env).expect("16-byte secrets from the environment");
    }

    fn issues_with(text: &str, env: &dyn Env) -> Vec<String> {
        match Config::parse(text, env) {
            Err(ParseError::Invalid(i)) => i.into_iter().map(|i| i.to_string()).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn upstream_with_a_path_is_refused() {
        assert!(parse_upstream("http://a/b").is_err());
        assert!(parse_upstream("http://a/").is_ok());
        assert!(parse_upstream("https://a:8443").is_ok());
    }
}
