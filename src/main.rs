//! Thin entry point: parse the command line, dispatch (which starts the log once the config
//! says how it looks).

use std::process::ExitCode;

use clap::Parser;
use writeguard::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::dispatch(cli.command)
}
