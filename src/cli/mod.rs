//! The command line: `run` and `check` on a config file, and the operator client (`status`,
//! `engage`, `release`, `history`, `deploys`, `reload`, `healthcheck`) that talks to a
//! running instance's admin API: the one place outside `admin` that knows its routes; and
//! `deploy`, the signed deploy webhook a CI job sends.
//!
//! Read bottom-up: `args` (the flags), `exit` (failures and their exit codes), `target`
//! (which admin API, which token), `client` (one bounded request), `human` (answers for
//! people), `operator`, `deploy` and `local` (the commands).

mod args;
mod client;
mod deploy;
mod exit;
mod human;
mod local;
mod operator;
mod target;

use std::process::ExitCode;

pub use args::{Cli, Command};

/// Runs one command to its exit code (see [`exit::Failure`]).
pub fn dispatch(command: Command) -> ExitCode {
    // `run` starts its log once the config says how it looks.
    if !matches!(command, Command::Run { .. }) {
        crate::logging::init(&crate::logging::from_env());
    }
    let done = match command {
        Command::Run { config, upgrade } => local::run(&config.path, upgrade),
        Command::Check { config, explain } => local::check(&config.path, explain),
        Command::Deploy { .. } => deploy::run(command),
        operator => operator::run(operator),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}
