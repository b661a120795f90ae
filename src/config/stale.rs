//! `[stale]`: serving stored pages while the app fails (off by default). Read once at start;
//! a reload that changes it asks for a restart.

use std::time::Duration;

use super::limits;
use super::reader::{Reader, Reading};

#[derive(Debug, Clone, PartialEq)]
pub struct StaleConfig {
    /// Off: answers pass through untouched and nothing is stored.
    pub enabled: bool,
    /// Memory budget of the stored answers (bodies, heads and keys).
    pub max_bytes: u64,
    /// Larger answers are never stored.
    pub max_object: u64,
    /// How long past its freshness an answer may still be served when the app fails.
    pub grace: Duration,
    pub serve_when: ServeWhen,
}

/// When a stored answer is served instead of the app's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeWhen {
    /// Only when the app fails (refused, reset, timed out, or a 500/502/503/504).
    UpstreamError,
    /// Also, without asking the app, while the guard is engaged.
    UpstreamErrorOrGuarded,
}

impl Default for StaleConfig {
    fn default() -> Self {
        StaleConfig {
            enabled: false,
            max_bytes: 64 << 20,
            max_object: 1 << 20,
            grace: Duration::from_secs(3600),
            serve_when: ServeWhen::UpstreamError,
        }
    }
}

/// Smallest budget: one default-sized answer.
const MIN_BYTES: u64 = 1 << 20;
/// Largest budget: moka weighs in u64, but a proxy holding more than this in pages is a cache.
const MAX_BYTES: u64 = 64 << 30;
/// moka weighs each entry in u32.
const MAX_OBJECT: u64 = 1 << 30;

pub(super) fn read_stale(root: &mut toml::Table, reading: &mut Reading) -> StaleConfig {
    let d = StaleConfig::default();
    let mut r = Reader::section(root, "stale", reading);
    let enabled = r.bool("enabled").unwrap_or(d.enabled);
    let max_bytes = r.size("max_bytes", d.max_bytes, MIN_BYTES, MAX_BYTES);
    let max_object = r.size("max_object", d.max_object, 1, MAX_OBJECT);
    if max_object > max_bytes {
        r.issue("max_object", "must not be larger than max_bytes");
    }
    let grace = r.duration("grace", d.grace, limits::STALE_GRACE);
    let serve_when = match r.string("serve_when").as_deref() {
        None | Some("upstream-error") => ServeWhen::UpstreamError,
        Some("upstream-error-or-guarded") => ServeWhen::UpstreamErrorOrGuarded,
        Some(other) => {
            r.issue(
                "serve_when",
                format!(
                    "{other:?} is not one of \"upstream-error\", \"upstream-error-or-guarded\""
                ),
            );
            d.serve_when
        }
    };
    r.finish();
    StaleConfig {
        enabled,
        max_bytes,
        max_object,
        grace,
        serve_when,
    }
}
