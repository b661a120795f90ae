//! Thin entry point: parse the command line, start telemetry, dispatch.

use std::process::ExitCode;

use clap::Parser;
use http::Method;
use tracing_subscriber::EnvFilter;
use writeguard::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WRITEGUARD_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,writeguard::access=off")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let (admin, method, path, body) = match cli.command {
        Command::Check { config } => return cli::check(&config.path),
        Command::Run { config, upgrade } => {
            let cfg = match cli::load_config(&config.path) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            if cfg.admin.token.expose() == "change-me" {
                tracing::warn!("admin.token is the example value: set a real one before exposing the admin port");
            }
            tracing::info!("{}", cfg.summary());
            return match writeguard::app::run(cfg, &config.path, upgrade) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Status { admin } => (admin, Method::GET, "/status".to_string(), None),
        Command::Engage { admin, reason, ttl } => {
            let body = serde_json::json!({ "reason": reason, "ttl": ttl });
            (admin, Method::POST, "/guard".to_string(), Some(body))
        }
        Command::Release { admin, all } => {
            let path = if all { "/guard?all=true" } else { "/guard" };
            (admin, Method::DELETE, path.to_string(), None)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds");
    runtime.block_on(cli::operator(admin, method, path, body))
}
