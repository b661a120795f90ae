//! The commands that work on a config file here rather than on a running instance: `run`
//! and `check`, and the loading they share: the config read and validated, the state
//! directory proved writable, every problem printed with its key; warnings printed without
//! refusing the config; with `check --explain`, every setting and where it came from.

use std::path::Path;

use crate::config::{Config, ConfigError, ProcessEnv, Sources, StateBackend};

use super::exit::Failure;

/// `writeguard run`: until stopped; fails when it cannot start, or on a bad config. The log
/// starts once the config says how it looks.
pub fn run(path: &Path, upgrade: bool) -> Result<(), Failure> {
    let loaded = Config::load_explained(path, &ProcessEnv);
    let log = match &loaded {
        Ok((cfg, _)) => cfg.log.clone(),
        Err(_) => crate::logging::from_env(),
    };
    crate::logging::init(&log);
    let (cfg, _) = checked(path, loaded)?;
    if cfg.admin.token.expose() == "change-me" {
        tracing::warn!(
            "admin.token is the example value: set a real one before exposing the admin port"
        );
    }
    tracing::info!("{}", cfg.summary());
    for warning in cfg.warnings() {
        tracing::warn!(key = %warning.key, "{warning}");
    }
    crate::app::run(cfg, path, upgrade).map_err(|e| {
        tracing::error!("{e:#}");
        Failure::Logged
    })
}

/// `writeguard check [--explain]`: one summary line (and every setting with its source),
/// the warnings, whether Redis answers; or every problem.
pub fn check(path: &Path, explain: bool) -> Result<(), Failure> {
    let (cfg, sources) = checked(path, Config::load_explained(path, &ProcessEnv))?;
    println!("config OK: {}", cfg.summary());
    if explain {
        let settings = cfg.explain(&sources);
        let lines: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
        let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        for (line, setting) in lines.iter().zip(&settings) {
            println!("{line:<width$}  # {}", setting.source);
        }
    }
    for warning in cfg.warnings() {
        println!("warning: {warning}");
    }
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

/// A loaded config, once the state can be kept where it says; every problem when it is not
/// usable.
fn checked(
    path: &Path,
    loaded: Result<(Config, Sources), ConfigError>,
) -> Result<(Config, Sources), Failure> {
    let (cfg, sources) = loaded.map_err(|e| {
        let hint = match e {
            ConfigError::Read { .. } => "\n(pass -c FILE or set WRITEGUARD_CONFIG)",
            _ => "",
        };
        Failure::Usage(format!("{e}{hint}"))
    })?;
    let problems = crate::store::probe(&cfg.state);
    if problems.is_empty() {
        return Ok((cfg, sources));
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
