//! `check --explain`: the effective value of every setting and where it came from (the file,
//! an environment variable, or the default), secrets masked.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Where a setting's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File,
    /// The named environment variable (an override, or the variable a `*_env` key names).
    Env(String),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File => f.write_str("file"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// The source of every key that did not get its default, recorded while reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    by_key: HashMap<String, Source>,
    /// The page's file: the config keeps only its contents.
    pub(super) page: Option<PathBuf>,
}

impl Sources {
    pub(super) fn set(&mut self, key: String, source: Source) {
        self.by_key.insert(key, source);
    }

    pub fn of(&self, key: &str) -> Source {
        self.by_key.get(key).cloned().unwrap_or(Source::Default)
    }
}

/// One setting; shown as `key = value`, its source beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    /// TOML-like; `"***"` for a secret.
    pub value: String,
    pub source: Source,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.key, self.value)
    }
}

const MASKED: &str = "\"***\"";

fn string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn strings<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| string(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

fn addrs(items: &[SocketAddr]) -> String {
    strings(&items.iter().map(|a| a.to_string()).collect::<Vec<_>>())
}

fn duration(d: Duration) -> String {
    string(&humantime::format_duration(d).to_string())
}

fn path(p: &Path) -> String {
    string(&p.to_string_lossy())
}

fn optional(v: Option<String>) -> String {
    v.unwrap_or_else(|| "(none)".into())
}

impl Config {
    /// Every setting's effective value and source. The structs are taken apart field by
    /// field, so a new field cannot be added without showing it here.
    pub fn explain(&self, sources: &Sources) -> Vec<Setting> {
        let ProxyConfig {
            listen,
            upstream,
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
            upstream_host,
            tls,
            redirect_listen,
            redirect_port,
        } = &self.proxy;
        let AdminConfig {
            listen: admin_listen,
            token: _,
            metrics_token,
        } = &self.admin;
        let GuardConfig {
            methods,
            retry_after,
            max_engaged,
            allow_paths,
            hold,
            hold_max_requests,
            release_concurrency,
            page,
            pass_unknown_methods,
            upgrades,
        } = &self.guard;
        let UpsunConfig {
            shared_key,
            allow_unsigned,
            project,
            environments,
            guard_pending,
        } = &self.upsun;
        let WebhooksConfig { secrets, tolerance } = &self.webhooks;
        let GithubConfig {
            secret: github_secret,
            repository,
            environments: github_environments,
            guard_queued,
        } = &self.github;
        let GitlabConfig {
            token: gitlab_token,
            signing_secret,
            project: gitlab_project,
            environments: gitlab_environments,
        } = &self.gitlab;
        let masked = |s: &Option<Secret>| optional(s.as_ref().map(|_| MASKED.into()));
        let StateConfig {
            path: state_path,
            audit_log,
            backend,
        } = &self.state;
        let ServerConfig {
            threads,
            shutdown_grace,
            upgrade_sock,
            pid_file,
        } = &self.server;
        let PublicConfig {
            prefix,
            cors_origins,
            inject_banner,
        } = &self.public;
        let LogConfig { format, access } = &self.log;

        let methods: Vec<&str> = methods.iter().map(Method::as_str).collect();
        let page = page
            .as_ref()
            .map(|_| sources.page.as_deref().map_or_else(|| "(set)".into(), path));
        let mut out: Vec<(&'static str, String)> = vec![
            ("proxy.listen", addrs(listen)),
            ("proxy.upstream", string(&upstream.to_string())),
            (
                "proxy.upstream_host",
                optional(upstream_host.as_ref().map(|h| string(h.as_str()))),
            ),
            (
                "proxy.tls_cert",
                optional(tls.as_ref().map(|t| path(&t.cert))),
            ),
            (
                "proxy.tls_key",
                optional(tls.as_ref().map(|t| path(&t.key))),
            ),
            ("proxy.redirect_listen", addrs(redirect_listen)),
            ("proxy.redirect_port", redirect_port.to_string()),
            ("proxy.connect_timeout", duration(*connect_timeout)),
            ("proxy.upstream_retry", duration(*upstream_retry)),
            ("proxy.header_timeout", duration(*header_timeout)),
            ("proxy.body_idle_timeout", duration(*body_idle_timeout)),
            ("proxy.body_timeout", duration(*body_timeout)),
            ("proxy.upstream_timeout", duration(*upstream_timeout)),
            ("proxy.max_header_size", max_header_size.to_string()),
            ("proxy.max_uri_length", max_uri_length.to_string()),
            ("proxy.drain_limit", drain_limit.to_string()),
            ("proxy.h2c", h2c.to_string()),
            (
                "proxy.underscore_headers",
                string(match underscore_headers {
                    UnderscoreHeaders::Pass => "pass",
                    UnderscoreHeaders::Drop => "drop",
                }),
            ),
            (
                "proxy.engine",
                string(match engine {
                    Engine::Hyper => "hyper",
                    Engine::Native => "native",
                }),
            ),
            ("admin.listen", addrs(admin_listen)),
            ("admin.token", MASKED.into()),
            (
                "admin.metrics_token",
                optional(metrics_token.as_ref().map(|_| MASKED.into())),
            ),
            ("guard.methods", strings(&methods)),
            ("guard.retry_after", duration(*retry_after)),
            ("guard.max_engaged", duration(*max_engaged)),
            ("guard.hold", duration(*hold)),
            ("guard.hold_max_requests", hold_max_requests.to_string()),
            ("guard.release_concurrency", release_concurrency.to_string()),
            ("guard.page", optional(page)),
            ("guard.allow_paths", strings(allow_paths)),
            (
                "guard.pass_unknown_methods",
                pass_unknown_methods.to_string(),
            ),
            (
                "guard.upgrades",
                string(match upgrades {
                    Upgrades::Refuse => "refuse",
                    Upgrades::Pass => "pass",
                }),
            ),
            (
                "upsun.shared_key",
                optional(shared_key.as_ref().map(|_| MASKED.into())),
            ),
            ("upsun.allow_unsigned", allow_unsigned.to_string()),
            ("upsun.project", optional(project.as_deref().map(string))),
            ("upsun.environments", strings(environments)),
            ("upsun.guard_pending", guard_pending.to_string()),
            (
                "webhooks.secret",
                match secrets.len() {
                    0 => "none".to_owned(),
                    n => format!("{n} × {MASKED}"),
                },
            ),
            ("webhooks.tolerance", duration(*tolerance)),
            ("github.secret", masked(github_secret)),
            (
                "github.repository",
                optional(repository.as_deref().map(string)),
            ),
            ("github.environments", strings(github_environments)),
            ("github.guard_queued", guard_queued.to_string()),
            ("gitlab.token", masked(gitlab_token)),
            ("gitlab.signing_secret", masked(signing_secret)),
            (
                "gitlab.project",
                optional(gitlab_project.as_deref().map(string)),
            ),
            ("gitlab.environments", strings(gitlab_environments)),
            ("public.prefix", string(prefix)),
            ("public.cors_origins", strings(cors_origins)),
            ("public.inject_banner", inject_banner.to_string()),
            (
                "state.backend",
                string(match backend {
                    StateBackend::File => "file",
                    StateBackend::Redis(_) => "redis",
                }),
            ),
            ("state.path", path(state_path)),
        ];
        match backend {
            StateBackend::File => out.push(("state.audit_log", path(audit_log))),
            StateBackend::Redis(RedisConfig {
                url: _,
                site,
                stale_after,
                on_store_loss,
                replica,
            }) => out.extend([
                // It may hold a password.
                ("state.redis_url", MASKED.into()),
                ("state.site", string(site)),
                ("state.stale_after", duration(*stale_after)),
                (
                    "state.on_store_loss",
                    string(match on_store_loss {
                        OnStoreLoss::GuardWrites => "guard-writes",
                        OnStoreLoss::LastKnown => "last-known",
                    }),
                ),
                ("state.replica", optional(replica.as_deref().map(string))),
            ]),
        }
        out.extend([
            ("server.threads", threads.to_string()),
            ("server.shutdown_grace", duration(*shutdown_grace)),
            ("server.upgrade_sock", path(upgrade_sock)),
            ("server.pid_file", path(pid_file)),
            (
                "log.format",
                string(match format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }),
            ),
            ("log.access", access.to_string()),
        ]);
        let StaleConfig {
            enabled,
            max_bytes,
            max_object,
            grace,
            serve_when,
        } = &self.stale;
        out.extend([
            ("stale.enabled", enabled.to_string()),
            ("stale.max_bytes", max_bytes.to_string()),
            ("stale.max_object", max_object.to_string()),
            ("stale.grace", duration(*grace)),
            (
                "stale.serve_when",
                string(match serve_when {
                    ServeWhen::UpstreamError => "upstream-error",
                    ServeWhen::UpstreamErrorOrGuarded => "upstream-error-or-guarded",
                }),
            ),
        ]);
        out.into_iter()
            .map(|(key, value)| Setting {
                key,
                value,
                source: sources.of(key),
            })
            .collect()
    }
}
