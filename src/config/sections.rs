//! The readers of each config section: TOML values (and their environment overrides) to
//! typed settings, every problem recorded with its key.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use http::{Method, Uri};
use tokio_rustls::rustls::pki_types::ServerName;

use super::explain::Source;
use super::methods;
use super::reader::{Reader, Reading};
use super::tls;
use super::*;

/// Reads `key` (or the variable named by `key_env`) as a secret; an environment override
/// `override_var` wins over both.
pub(super) fn read_secret(
    r: &mut Reader<'_>,
    env: &dyn Env,
    key: &str,
    override_var: &str,
) -> Option<Secret> {
    let inline = r.string(key);
    let env_key = format!("{key}_env");
    let from_env = r.string(&env_key).and_then(|name| {
        let value = env.var(&name);
        match value {
            None => r.issue(
                &env_key,
                format!("environment variable {name} is not set or empty"),
            ),
            Some(_) => r.came_from(key, Source::Env(name)),
        }
        value
    });
    if inline.is_some() && from_env.is_some() {
        r.issue(key, format!("set either {key} or {env_key}, not both"));
    }
    r.overridden(key, env, override_var)
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

pub(super) fn read_proxy(
    root: &mut toml::Table,
    env: &dyn Env,
    reading: &mut Reading,
) -> Option<ProxyConfig> {
    let mut r = Reader::section(root, "proxy", reading);
    let listen = r.strings("listen", true);
    let listen = r
        .overridden("listen", env, "WRITEGUARD_LISTEN")
        .map(|v| comma_list(&v))
        .or(listen);
    let listen = match listen {
        Some(raw) => listen_addrs(&mut r, "listen", raw),
        None => {
            r.issue("listen", "is required");
            Vec::new()
        }
    };
    let upstream = r.string("upstream");
    let upstream = r
        .overridden("upstream", env, "WRITEGUARD_UPSTREAM")
        .or(upstream);
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
    let engine = match r.string("engine").as_deref() {
        Some("hyper") => Engine::Hyper,
        None | Some("native") => Engine::Native,
        Some(other) => {
            r.issue(
                "engine",
                format!("{other:?} is not one of \"hyper\", \"native\""),
            );
            Engine::Native
        }
    };
    let upstream_host = r
        .string("upstream_host")
        .and_then(|raw| match parse_upstream_host(&raw) {
            Ok(host) => Some(host),
            Err(msg) => {
                r.issue("upstream_host", msg);
                None
            }
        });
    let tls = read_tls(&mut r);
    // Asked for but broken: already an issue of its own.
    let tls_off = matches!(tls, Ok(None));
    let tls = tls.ok().flatten();
    let redirect_listen = r
        .strings("redirect_listen", true)
        .filter(|raw| !raw.is_empty())
        .map(|raw| listen_addrs(&mut r, "redirect_listen", raw))
        .unwrap_or_default();
    let redirect_port = r
        .integer("redirect_port", 1, 65535)
        .map(|p| p as u16)
        .unwrap_or_else(|| listen.first().map_or(443, SocketAddr::port));
    if !redirect_listen.is_empty() && tls_off {
        r.issue(
            "redirect_listen",
            "redirects to HTTPS, which needs proxy.tls_cert and proxy.tls_key",
        );
    }
    for addr in redirect_listen.iter().filter(|a| listen.contains(a)) {
        r.issue(
            "redirect_listen",
            format!("{addr} is also in proxy.listen; one port cannot serve both"),
        );
    }
    r.finish();
    Some(ProxyConfig {
        listen,
        upstream: upstream?,
        upstream_host,
        tls,
        redirect_listen,
        redirect_port,
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
        engine,
    })
}

pub(super) fn parse_upstream(raw: &str) -> Result<Uri, String> {
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

/// `upstream_host`: a host name, with a port if need be; what the upstream gets as `Host`
/// (and, for an https upstream, as the TLS server name).
pub(super) fn parse_upstream_host(raw: &str) -> Result<Authority, String> {
    let example = "like \"myapp.example.net\" or \"myapp.example.net:8443\"";
    let server_name = |host: &str| {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(bare.to_owned()).is_ok()
    };
    match raw.parse::<Authority>() {
        Ok(host) if !raw.contains('@') && !host.host().is_empty() && server_name(host.host()) => {
            Ok(host)
        }
        _ => Err(format!("{raw:?} is not a host name {example}")),
    }
}

/// `tls_cert` and `tls_key`, both or neither; the files must read and go together. `Err`:
/// asked for, and the problem is recorded.
fn read_tls(r: &mut Reader<'_>) -> Result<Option<TlsConfig>, ()> {
    match (r.path("tls_cert"), r.path("tls_key")) {
        (None, None) => Ok(None),
        (Some(_), None) => {
            r.issue("tls_key", "is required with proxy.tls_cert");
            Err(())
        }
        (None, Some(_)) => {
            r.issue("tls_cert", "is required with proxy.tls_key");
            Err(())
        }
        (Some(cert), Some(key)) => match tls::load(&cert, &key) {
            Ok(tls) => Ok(Some(tls)),
            Err((key, message)) => {
                r.issue(key.name(), message);
                Err(())
            }
        },
    }
}

pub(super) fn read_admin(
    root: &mut toml::Table,
    env: &dyn Env,
    reading: &mut Reading,
) -> Option<AdminConfig> {
    let mut r = Reader::section(root, "admin", reading);
    let listen = r.strings("listen", true);
    let listen = r
        .overridden("listen", env, "WRITEGUARD_ADMIN_LISTEN")
        .map(|v| comma_list(&v))
        .or(listen)
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
    let metrics_token = read_secret(&mut r, env, "metrics_token", "WRITEGUARD_METRICS_TOKEN");
    if metrics_token.as_ref().is_some_and(|t| t.expose().len() < 8) {
        r.issue("metrics_token", "must be at least 8 characters");
    }
    r.finish();
    Some(AdminConfig {
        listen,
        token: token?,
        metrics_token,
    })
}

pub(super) fn read_guard(root: &mut toml::Table, reading: &mut Reading) -> Option<GuardConfig> {
    let mut r = Reader::section(root, "guard", reading);
    let methods = r
        .strings("methods", false)
        .unwrap_or_else(|| vec!["POST".into(), "PATCH".into()]);
    let mut parsed = Vec::new();
    for m in &methods {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) if method == Method::GET || method == Method::HEAD => r.issue(
                "methods",
                format!("{m:?} is a read; reads are never guarded"),
            ),
            Ok(method) => match methods::typo_of(method.as_str()) {
                Some(known) => r.issue(
                    "methods",
                    format!("{m:?} is not a known HTTP method; did you mean {known:?}?"),
                ),
                None => parsed.push(method),
            },
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
    let page_path = r.path("page");
    let page = page_path
        .as_ref()
        .and_then(|path| match std::fs::read_to_string(path) {
            Ok(text) => Some(std::sync::Arc::from(text)),
            Err(e) => {
                r.issue("page", format!("cannot read {}: {e}", path.display()));
                None
            }
        });
    r.reading.sources.page = page_path;
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

pub(super) fn read_upsun(
    root: &mut toml::Table,
    env: &dyn Env,
    reading: &mut Reading,
) -> Option<UpsunConfig> {
    let mut r = Reader::section(root, "upsun", reading);
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

/// `[webhooks]`: `secret` (one or a list; or `secret_env`, a variable holding them
/// space-separated, as does `WRITEGUARD_WEBHOOKS_SECRET`) and `tolerance`.
pub(super) fn read_webhooks(
    root: &mut toml::Table,
    env: &dyn Env,
    reading: &mut Reading,
) -> WebhooksConfig {
    let mut r = Reader::section(root, "webhooks", reading);
    let inline = r.strings("secret", true);
    let from_env = r.string("secret_env").and_then(|name| {
        let value = env.var(&name);
        match value {
            None => r.issue(
                "secret_env",
                format!("environment variable {name} is not set or empty"),
            ),
            Some(_) => r.came_from("secret", Source::Env(name)),
        }
        value
    });
    if inline.is_some() && from_env.is_some() {
        r.issue("secret", "set either secret or secret_env, not both");
    }
    let split = |v: String| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let raw = r
        .overridden("secret", env, "WRITEGUARD_WEBHOOKS_SECRET")
        .map(split)
        .or(from_env.map(split))
        .or(inline)
        .unwrap_or_default();
    for (i, secret) in raw.iter().enumerate() {
        if let Err(e) = crate::stdwebhook::Key::parse(secret) {
            r.issue(
                "secret",
                format!("secret #{} {e} (expected \"whsec_<base64>\")", i + 1),
            );
        }
    }
    let tolerance = r.duration(
        "tolerance",
        Duration::from_secs(300),
        Duration::from_secs(1)..=Duration::from_secs(24 * 3600),
    );
    r.finish();
    WebhooksConfig {
        secrets: raw.into_iter().map(Secret::new).collect(),
        tolerance,
    }
}

pub(super) fn read_public(root: &mut toml::Table, reading: &mut Reading) -> PublicConfig {
    let mut r = Reader::section(root, "public", reading);
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

/// `[log]`: `format` ("text" or "json"; env `WRITEGUARD_LOG_FORMAT` wins) and `access`
/// (env `WRITEGUARD_LOG_ACCESS`: true or false).
pub(super) fn read_log(root: &mut toml::Table, env: &dyn Env, reading: &mut Reading) -> LogConfig {
    let mut r = Reader::section(root, "log", reading);
    let mut log = LogConfig::default();
    let format = r.string("format");
    match r
        .overridden("format", env, "WRITEGUARD_LOG_FORMAT")
        .or(format)
        .as_deref()
    {
        None | Some("text") => {}
        Some("json") => log.format = LogFormat::Json,
        Some(other) => r.issue("format", format!("{other:?} must be \"text\" or \"json\"")),
    }
    let access = r.bool("access");
    match r
        .overridden("access", env, "WRITEGUARD_LOG_ACCESS")
        .as_deref()
    {
        None => log.access = access.unwrap_or(false),
        Some("true" | "1") => log.access = true,
        Some("false" | "0") => log.access = false,
        Some(other) => r.issue(
            "access",
            format!("WRITEGUARD_LOG_ACCESS={other:?} must be true or false"),
        ),
    }
    r.finish();
    log
}

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL); pingora
/// panics on a longer one in the middle of a hand-over.
const MAX_SOCKET_PATH: usize = 107;

pub(super) fn read_server(
    root: &mut toml::Table,
    state: &Option<StateConfig>,
    reading: &mut Reading,
) -> Option<ServerConfig> {
    let mut r = Reader::section(root, "server", reading);
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
        .path("upgrade_sock")
        .unwrap_or_else(|| state_dir.join("writeguard.upgrade.sock"));
    let pid_file = r
        .path("pid_file")
        .unwrap_or_else(|| state_dir.join("writeguard.pid"));
    let sock_len = upgrade_sock.as_os_str().len();
    if sock_len > MAX_SOCKET_PATH {
        r.issue(
            "upgrade_sock",
            format!(
                "{} is {sock_len} bytes, longer than a Unix socket path may be ({MAX_SOCKET_PATH}); \
                 set server.upgrade_sock (by default it is beside state.path)",
                upgrade_sock.display()
            ),
        );
    }
    r.finish();
    Some(ServerConfig {
        threads,
        shutdown_grace,
        upgrade_sock,
        pid_file,
    })
}
