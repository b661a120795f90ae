//! Byte sizes as operators write them: a whole number of bytes (`1048576`) or a string with
//! a binary unit (`"512KiB"`, `"64MiB"`, `"1GiB"`; `B`, `KiB`, `MiB`, `GiB`, spaces allowed
//! before the unit). Decimal units (`MB`) are refused rather than guessed: `64MB` and
//! `64MiB` differ by 5 %, and the budget is what an operator sizes a box by.

use toml::Value;

use super::reader::Reader;

/// How a size is written, for messages.
pub(super) const FORMAT: &str = "like \"64MiB\", \"512KiB\" or a number of bytes";

/// Parses `raw` (surrounding whitespace ignored).
pub(super) fn parse(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let digits = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

impl Reader<'_> {
    /// A byte size within `min..=max`; `default` when the key is absent (or wrong: the config
    /// is refused anyway).
    pub(super) fn size(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        let parsed = match self.take(key) {
            None => return default,
            Some(Value::Integer(i)) => u64::try_from(i).ok(),
            Some(Value::String(s)) => parse(&s),
            Some(other) => {
                self.wrong_type(key, "a size", &other);
                return default;
            }
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => n,
            Some(n) => {
                self.issue(
                    key,
                    format!("{n} bytes is out of range: from {min} to {max} bytes"),
                );
                default
            }
            None => {
                self.issue(key, format!("is not a size {FORMAT}"));
                default
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_binary_units_and_refuses_the_rest() {
        assert_eq!(parse("64MiB"), Some(64 << 20));
        assert_eq!(parse(" 512 KiB "), Some(512 << 10));
        assert_eq!(parse("1GiB"), Some(1 << 30));
        assert_eq!(parse("100"), Some(100));
        assert_eq!(parse("100B"), Some(100));
        for bad in [
            "64MB",
            "64mb",
            "MiB",
            "",
            "-1KiB",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
