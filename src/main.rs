//! Thin entry point: parse the command line, start telemetry, dispatch.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use writeguard::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WRITEGUARD_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,writeguard::access=off")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(writeguard::QuietHandoverWait)
        .init();
    cli::dispatch(cli.command)
}
