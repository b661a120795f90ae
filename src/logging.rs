//! The log: `tracing` events on stderr, as text lines or one flat JSON object per line
//! (`[log] format`), filtered by `WRITEGUARD_LOG` (default `info`); the access lines (target
//! `writeguard::access`) are on exactly when `[log] access` is.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the process's subscriber; once, before anything worth logging happens.
pub fn init(log: &LogConfig) {
    let base = std::env::var("WRITEGUARD_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    let access = if log.access {
        "writeguard::access=info"
    } else {
        "writeguard::access=off"
    };
    let filter = EnvFilter::try_new(format!("{base},{access}")).unwrap_or_else(|e| {
        eprintln!("writeguard: WRITEGUARD_LOG={base:?} is not a filter ({e}); using info");
        EnvFilter::new(format!("info,{access}"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The log settings before a config is read (commands other than `run`, or a config that
/// cannot be read): text unless `WRITEGUARD_LOG_FORMAT=json`.
pub fn from_env() -> LogConfig {
    let json = std::env::var("WRITEGUARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    LogConfig {
        format: if json {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        access: false,
    }
}
