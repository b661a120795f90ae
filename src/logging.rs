//! The log: `tracing` events on stderr, as text lines or one flat JSON object per line
//! (`[log] format`), filtered by `WRITEGUARD_LOG` (default `info`); the access lines (target
//! `writeguard::access`) are on exactly when `[log] access` is. pingora's error line for each
//! second a new instance waits for a hand-over is dropped ([`QuietHandoverWait`]).

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
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
            .finish()
            .with(QuietHandoverWait)
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(QuietHandoverWait)
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

/// What pingora logs at error level for each second a new instance waits in vain.
const PINGORA_WAITING: &str = "No incoming socket transfer";

/// A tracing layer that drops pingora's error line for each second a new instance waits
/// for the hand-over (the hand-over says it at info level instead). Every other event
/// passes, pingora's "Giving up reading socket" and "Bootstrap failed" among them.
pub struct QuietHandoverWait;

impl<S: Subscriber> Layer<S> for QuietHandoverWait {
    fn event_enabled(&self, event: &Event<'_>, _: LayerContext<'_, S>) -> bool {
        if *event.metadata().level() != Level::ERROR {
            return true;
        }
        let mut waiting = Waiting(false);
        event.record(&mut waiting);
        !waiting.0
    }
}

/// Whether an event's message is pingora's "waiting in vain" line.
struct Waiting(bool);

impl Visit for Waiting {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.starts_with(PINGORA_WAITING);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}").starts_with(PINGORA_WAITING);
        }
    }
}
