//! `writeguard check` (and the loading `run` shares with it): the config read and validated,
//! the state directory proved writable, every problem printed with its key; warnings printed
//! without refusing the config; with `--explain`, every setting and where it came from.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, ConfigError, ProcessEnv, Sources, StateBackend};

/// Exit code of a config that cannot be used.
const CONFIG_ERROR: u8 = 2;

/// Loads the config and proves the state can be kept where it says, printing every
/// problem to stderr; exit code 2 when it is not usable.
pub fn load(path: &Path) -> Result<(Config, Sources), ExitCode> {
    let (cfg, sources) = Config::load_explained(path, &ProcessEnv).map_err(|e| {
        eprintln!("writeguard: {e}");
        if let ConfigError::Read { .. } = e {
            eprintln!("(pass -c FILE or set WRITEGUARD_CONFIG)");
        }
        ExitCode::from(CONFIG_ERROR)
    })?;
    let problems = crate::store::probe(&cfg.state);
    if problems.is_empty() {
        return Ok((cfg, sources));
    }
    eprintln!(
        "writeguard: config file {} has {} error(s):",
        path.display(),
        problems.len()
    );
    for p in &problems {
        eprintln!("  - {}: {}", p.key, p.message);
    }
    Err(ExitCode::from(CONFIG_ERROR))
}

/// `writeguard check [--explain]`: exit 0 (warnings included) or 2.
pub fn check(path: &Path, explain: bool) -> ExitCode {
    let (cfg, sources) = match load(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
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
    ExitCode::SUCCESS
}
