//! The commands that work on a config file here rather than on a running instance: `run`
//! and `check`.

use std::path::Path;

use crate::config::{Config, ConfigError, ProcessEnv, StateBackend};

use super::exit::Failure;

/// `writeguard run`: until stopped; fails when it cannot start, or on a bad config.
pub fn run(path: &Path, upgrade: bool) -> Result<(), Failure> {
    let loaded = Config::load(path, &ProcessEnv);
    let log = match &loaded {
        Ok(cfg) => cfg.log.clone(),
        Err(_) => crate::logging::from_env(),
    };
    crate::logging::init(&log);
    let cfg = checked(path, loaded)?;
    if cfg.admin.token.expose() == "change-me" {
        tracing::warn!(
            "admin.token is the example value: set a real one before exposing the admin port"
        );
    }
    tracing::info!("{}", cfg.summary());
    crate::app::run(cfg, path, upgrade).map_err(|e| {
        tracing::error!("{e:#}");
        Failure::Logged
    })
}

/// `writeguard check`: one summary line, or every problem.
pub fn check(path: &Path) -> Result<(), Failure> {
    let cfg = load_config(path)?;
    println!("config OK: {}", cfg.summary());
    if let StateBackend::Redis(redis) = &cfg.state.backend {
        // Not an error: a replica starts while Redis is down (in fail-safe).
        match crate::store::ping(redis) {
            Ok(()) => println!("redis: reachable"),
            Err(e) => println!(
                "warning: {e}; writeguard would start in fail-safe (state.on_store_loss) until it answers"
            ),
        }
    }
    Ok(())
}

/// Loads the config and proves the state can be kept where it says; every problem when it
/// is not usable.
fn load_config(path: &Path) -> Result<Config, Failure> {
    checked(path, Config::load(path, &ProcessEnv))
}

/// [`load_config`] of a config already loaded.
fn checked(path: &Path, loaded: Result<Config, ConfigError>) -> Result<Config, Failure> {
    let cfg = loaded.map_err(|e| {
        let hint = match e {
            ConfigError::Read { .. } => "\n(pass -c FILE or set WRITEGUARD_CONFIG)",
            _ => "",
        };
        Failure::Usage(format!("{e}{hint}"))
    })?;
    let problems = crate::store::probe(&cfg.state);
    if problems.is_empty() {
        return Ok(cfg);
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("  - {}: {}", p.key, p.message))
        .collect();
    Err(Failure::Usage(format!(
        "config file {} has {} error(s):\n{}",
        path.display(),
        problems.len(),
        lines.join("\n")
    )))
}
