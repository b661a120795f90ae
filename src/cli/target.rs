//! Which admin API an operator command talks to and with which token: the flags first
//! (`--admin`, `--token` or `WRITEGUARD_ADMIN_TOKEN`), then the config file's `[admin]`
//! section for what they leave out (the rest of the file may be wrong: a `reload` after a
//! bad edit still finds the instance). Every way this can go wrong says which flag, variable or key to fix.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;

use crate::config::{Config, ConfigError, ProcessEnv};

use super::args::{Auth, Connect, TOKEN_ENV};
use super::exit::Failure;

/// Shortest token a running instance can have (`admin.token`'s own rule).
const MIN_TOKEN: usize = 8;

/// A running instance's admin API.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` and any path prefix, without a trailing `/`.
    pub base: String,
    /// `host:port` to connect to.
    pub authority: String,
    pub token: Option<String>,
    /// For the connection and the whole answer.
    pub timeout: Duration,
}

impl Target {
    /// The admin API named by `connect`, with `auth`'s token when `needs_token`.
    pub fn resolve(
        connect: &Connect,
        auth: Option<&Auth>,
        needs_token: bool,
    ) -> Result<Target, Failure> {
        let token = auth.and_then(|a| a.token.clone()).filter(|_| needs_token);
        if let Some(token) = &token {
            if token.len() < MIN_TOKEN {
                return Err(Failure::Usage(format!(
                    "{} is too short ({} characters): an admin token has at least {MIN_TOKEN} (16 when the admin port is not on loopback); use the admin.token of the instance you talk to",
                    token_source(token),
                    token.len()
                )));
            }
        }
        let given = connect.admin.as_deref().map(admin_url).transpose()?;
        // Read only for what the flags leave out, and at most once.
        let mut config = None;
        let load = || Config::load_admin(&connect.config.path, &ProcessEnv);
        let (base, authority) = match given {
            Some(url) => url,
            None => match config.get_or_insert_with(load) {
                Ok(admin) => {
                    let addr = reachable(admin.listen[0]);
                    (format!("http://{addr}"), addr.to_string())
                }
                Err(e) => {
                    return Err(Failure::Usage(format!(
                        "cannot tell where the admin API is: {}\n(pass --admin http://HOST:PORT, or the instance's config with -c FILE or WRITEGUARD_CONFIG)",
                        config_problem(e)
                    )))
                }
            },
        };
        let token = match token {
            Some(token) => Some(token),
            None if needs_token => match config.get_or_insert_with(load) {
                Ok(admin) => Some(admin.token.expose().to_owned()),
                Err(e) => {
                    return Err(Failure::Usage(format!(
                        "no admin token: pass --token or set {TOKEN_ENV} (the config could not be read: {})",
                        config_problem(e)
                    )))
                }
            },
            None => None,
        };
        Ok(Target {
            base,
            authority,
            token,
            timeout: connect.timeout,
        })
    }
}

/// Where the token came from, for messages (never its value).
fn token_source(token: &str) -> &'static str {
    if std::env::var(TOKEN_ENV).is_ok_and(|v| v == token) {
        TOKEN_ENV
    } else {
        "--token"
    }
}

/// Why the config could not be used, naming `WRITEGUARD_ADMIN_TOKEN` where it overrides
/// the file's `admin.token`.
fn config_problem(e: &ConfigError) -> String {
    let ConfigError::Invalid { path, issues } = e else {
        return e.to_string();
    };
    let from_env = std::env::var_os(TOKEN_ENV).is_some_and(|v| !v.is_empty());
    let lines: Vec<String> = issues
        .iter()
        .map(|issue| {
            if issue.key == "admin.token" && from_env {
                format!(
                    "  - {TOKEN_ENV} (it overrides admin.token): {}",
                    issue.message
                )
            } else {
                format!("  - {issue}")
            }
        })
        .collect();
    format!(
        "config file {} has {} error(s):\n{}",
        path.display(),
        issues.len(),
        lines.join("\n")
    )
}

/// `--admin`, checked: `(base, host:port)`.
fn admin_url(raw: &str) -> Result<(String, String), Failure> {
    let bad = |why: &str| {
        Failure::Usage(format!(
            "--admin {raw:?} {why}: expected http://HOST:PORT, like http://127.0.0.1:9090"
        ))
    };
    let uri: Uri = raw.parse().map_err(|_| bad("is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("uses https, but the admin API speaks plain HTTP")),
        Some(_) => return Err(bad("is not an http:// URL")),
        None => return Err(bad("has no http://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("has no host"));
    };
    if authority.as_str().contains('@') || uri.query().is_some() {
        return Err(bad("has more than a host, port and path"));
    }
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    Ok((
        raw.trim_end_matches('/').to_owned(),
        format!("{host}:{port}"),
    ))
}

/// An address a client can dial for a listener bound to it (0.0.0.0 becomes 127.0.0.1).
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_are_http_host_port() {
        let (base, authority) = admin_url("http://127.0.0.1:9090/").unwrap();
        assert_eq!(
            (base.as_str(), authority.as_str()),
            ("http://127.0.0.1:9090", "127.0.0.1:9090")
        );
        let (_, authority) = admin_url("http://[::1]:9090").unwrap();
        assert_eq!(authority, "[::1]:9090");
        let (_, authority) = admin_url("http://localhost").unwrap();
        assert_eq!(authority, "localhost:80");
        for bad in [
            "127.0.0.1:9090",
            "localhost:9090",
            "https://h:1",
            "ftp://h:1",
            "http://",
            "not a url",
            "http://u:p@h:1",
        ] {
            let Err(Failure::Usage(m)) = admin_url(bad) else {
                panic!("{bad} accepted");
            };
            assert!(m.contains("expected http://HOST:PORT"), "{m}");
        }
    }
}
