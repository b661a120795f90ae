//! Settings that work but are likely not what was meant: `check` prints them, `run` logs
//! them, and neither refuses the config for them.

use std::time::Duration;

use super::{Config, ConfigIssue};

/// Past this, many clients have given up on an answer (API clients often wait 30 to 60 s).
const HOLD_CLIENTS_WAIT: Duration = Duration::from_secs(60);

impl Config {
    /// Every warning about this config, with the key it concerns.
    pub fn warnings(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if self.guard.hold > HOLD_CLIENTS_WAIT {
            out.push(ConfigIssue::new(
                "guard.hold",
                format!(
                    "{} is longer than many clients wait for an answer (often 30 to 60 s): \
                     they give up with a timeout instead of getting the 503 and its Retry-After",
                    humantime::format_duration(self.guard.hold)
                ),
            ));
        }
        out
    }
}
