//! The command line: `run`, `check`, and the operator client (`status`, `engage`,
//! `release`) that talks to a running instance's admin API: the one place outside `admin`
//! that knows its routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{self, Config, ProcessEnv};

#[derive(Parser, Debug)]
#[command(
    name = "writeguard",
    version,
    about = "Keeps writes safe while your app deploys"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Config file
    #[arg(short = 'c', long = "config", env = "WRITEGUARD_CONFIG", default_value = config::DEFAULT_PATH)]
    pub path: PathBuf,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Admin API base URL (default: http://<admin.listen> from the config)
    #[arg(long)]
    pub admin: Option<String>,
    /// Bearer token (default: the config's admin token)
    #[arg(long, env = "WRITEGUARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the proxy and admin listeners
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Take the listening sockets over from a running instance (send it SIGQUIT)
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the config without opening any port
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also print every setting's effective value and where it came from (file,
        /// environment variable, default); secrets are masked
        #[arg(long)]
        explain: bool,
    },
    /// Show the guard state of a running instance
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Engage the guard by hand
    Engage {
        #[command(flatten)]
        admin: AdminArgs,
        /// Why (shown in /status)
        #[arg(long)]
        reason: Option<String>,
        /// How long, e.g. 10m (default: guard.max_engaged)
        #[arg(long)]
        ttl: Option<String>,
        /// Answer only once no guarded write is in flight here (`quiesced`), or once every
        /// replica sharing the state applied the engagement (`all`)
        #[arg(long, value_parser = ["quiesced", "all"])]
        wait: Option<String>,
        /// How long `--wait` may take, e.g. 30s (then it fails; the engagement stays)
        #[arg(long, requires = "wait")]
        timeout: Option<String>,
    },
    /// Release manual engagements
    Release {
        #[command(flatten)]
        admin: AdminArgs,
        /// Release every engagement, Upsun ones included
        #[arg(long)]
        all: bool,
    },
}

/// Runs one command to its exit code.
pub fn dispatch(command: Command) -> ExitCode {
    let (admin, method, path, body) = match command {
        Command::Check { config, explain } => return crate::check::check(&config.path, explain),
        Command::Run { config, upgrade } => return run(&config.path, upgrade),
        Command::Status { admin } => (admin, Method::GET, "/status", None),
        Command::Engage {
            admin,
            reason,
            ttl,
            wait,
            timeout,
        } => {
            let body = serde_json::json!({
                "reason": reason, "ttl": ttl, "wait": wait, "timeout": timeout
            });
            (admin, Method::POST, "/guard", Some(body))
        }
        Command::Release { admin, all } => {
            let path = if all { "/guard?all=true" } else { "/guard" };
            (admin, Method::DELETE, path, None)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds");
    runtime.block_on(operator(admin, method, path, body))
}

/// `writeguard run`: until stopped; exit 1 when it cannot start, 2 on a bad config.
fn run(path: &std::path::Path, upgrade: bool) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if cfg.admin.token.expose() == "change-me" {
        tracing::warn!(
            "admin.token is the example value: set a real one before exposing the admin port"
        );
    }
    tracing::info!("{}", cfg.summary());
    for warning in cfg.warnings() {
        tracing::warn!(key = %warning.key, "{warning}");
    }
    match crate::app::run(cfg, path, upgrade) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the config (see [`crate::check::load`]).
fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    crate::check::load(path).map(|(cfg, _)| cfg)
}

/// Runs one operator command against the admin API and prints its JSON answer.
async fn operator(
    admin: AdminArgs,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> ExitCode {
    let cfg = Config::load(&admin.config.path, &ProcessEnv).ok();
    let base = match (&admin.admin, &cfg) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(cfg)) => format!("http://{}", reachable(cfg.admin.listen[0])),
        (None, None) => {
            eprintln!("writeguard: pass --admin URL (the config could not be read)");
            return ExitCode::from(2);
        }
    };
    let token = admin
        .token
        .or_else(|| cfg.as_ref().map(|c| c.admin.token.expose().to_string()));
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = match req.body(Full::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("writeguard: bad admin URL {base:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let client = Client::builder(TokioExecutor::new()).build_http();
    let res = match client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("writeguard: cannot reach the admin API at {base}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = res.status();
    let bytes = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => println!("{}", String::from_utf8_lossy(&bytes)),
    }
    if status.is_success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("writeguard: admin API answered {status}");
        if status == StatusCode::UNAUTHORIZED {
            eprintln!("(pass --token or set WRITEGUARD_ADMIN_TOKEN)");
        }
        ExitCode::FAILURE
    }
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
