//! Durations as operators write them (`30s`, `10m`, `1h 30m`), and the one message every
//! surface shows when a value is not one: the operator CLI's flags and the admin API's
//! fields, never the parser's own wording.

use std::time::Duration;

/// How a duration is written, for messages and help texts.
pub const FORMAT: &str = "like 30s, 10m, 1h 30m";

/// A value that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{raw:?} is not a duration {FORMAT}")]
pub struct NotADuration {
    raw: String,
}

/// Parses `raw` (surrounding whitespace ignored).
pub fn parse(raw: &str) -> Result<Duration, NotADuration> {
    humantime::parse_duration(raw.trim()).map_err(|_| NotADuration {
        raw: raw.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_written_forms_and_says_what_is_expected_otherwise() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 1h 30m "), Ok(Duration::from_secs(5400)));
        for bad in ["soon", "30", "", "10 minutes please"] {
            let message = parse(bad).unwrap_err().to_string();
            assert_eq!(
                message,
                format!("{bad:?} is not a duration like 30s, 10m, 1h 30m")
            );
        }
    }
}
