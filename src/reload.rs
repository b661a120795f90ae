//! The config in effect and its reload from the file, the one path for SIGHUP and the admin
//! API's `POST /reload`: the whole file is validated, then its `[guard]` section and the
//! proxy's certificate applied (the certificate files are read again: a renewed certificate
//! under the same name is picked up), or nothing is (an invalid file, or a change to a section
//! that needs a restart) and the outcome says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{Config, ConfigError, ProcessEnv};
use crate::guard::Guard;
use crate::listener::Tls;

/// What one reload did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Whether the file was applied (with nothing `changed`, it was the same).
    pub reloaded: bool,
    /// `guard.<key> OLD -> NEW` for each setting that changed.
    pub changed: Vec<String>,
    /// Why the file was refused: each problem with its key.
    pub errors: Vec<String>,
}

/// Re-reads the config file and applies its `[guard]` section to the guard and its
/// certificate to the proxy listener's TLS.
pub struct Reloader {
    path: PathBuf,
    guard: Arc<Guard>,
    /// The proxy listener's TLS, whose certificate a reload replaces.
    tls: Option<Arc<Tls>>,
    /// The config in effect (the last one loaded successfully).
    current: Mutex<Config>,
}

impl Reloader {
    pub fn new(cfg: &Config, path: &Path, guard: Arc<Guard>, tls: Option<Arc<Tls>>) -> Self {
        Reloader {
            path: path.to_owned(),
            guard,
            tls,
            current: Mutex::new(cfg.clone()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads now, logging the outcome under `trigger` (`SIGHUP`, `POST /reload`). Reads
    /// files: call it where blocking is allowed. Reloads never overlap.
    pub fn reload(&self, trigger: &str) -> Outcome {
        let path = self.path.display();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let refused = |errors: Vec<String>| Outcome {
            reloaded: false,
            changed: Vec::new(),
            errors,
        };
        let next = match Config::load(&self.path, &ProcessEnv) {
            Ok(next) => next,
            Err(ConfigError::Invalid { issues, .. }) => {
                for issue in &issues {
                    tracing::error!(key = %issue.key, "reload refused: {issue}");
                }
                tracing::error!(%path, errors = issues.len(), "{trigger}: config is invalid; the previous config stays in effect");
                return refused(issues.iter().map(ToString::to_string).collect());
            }
            Err(e) => {
                tracing::error!(%path, "{trigger}: {e}; the previous config stays in effect");
                return refused(vec![e.to_string()]);
            }
        };
        let restart = current.restart_needed_for(&next);
        if !restart.is_empty() {
            let errors: Vec<String> = restart
                .iter()
                .map(|section| format!("[{section}] changed: only [guard] and the proxy's certificate are reloaded, this change needs a restart"))
                .collect();
            for (section, error) in restart.iter().zip(&errors) {
                tracing::error!(key = %section, "reload refused: {error}");
            }
            tracing::error!(%path, "{trigger}: the previous config stays in effect");
            return refused(errors);
        }
        let mut changed = current.guard.changes_to(&next.guard);
        self.guard.reload(&next.guard);
        if let (Some(tls), Some(next_tls)) = (&self.tls, &next.proxy.tls) {
            tls.replace(next_tls.certified.clone());
        }
        changed.extend(current.proxy.certificate_changes_to(&next.proxy));
        if changed.is_empty() {
            tracing::info!(%path, "{trigger}: config reloaded, nothing changed");
        } else {
            tracing::info!(%path, changed = %changed.join(", "), "{trigger}: config reloaded");
        }
        *current = next;
        Outcome {
            reloaded: true,
            changed,
            errors: Vec::new(),
        }
    }
}
