//! Typed extraction of one TOML table that records every problem instead of stopping at
//! the first, so `writeguard check` can print them all with the key each concerns, and
//! where each value came from, for `check --explain`.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::explain::{Source, Sources};
use super::suggest::closest;
use super::{ConfigIssue, Env};

/// What reading a whole file gathers besides the config: every problem, every value's
/// source, and the directory relative paths are resolved against.
pub(super) struct Reading {
    pub(super) issues: Vec<ConfigIssue>,
    pub(super) sources: Sources,
    /// The config file's directory; `None` (no file): paths stay as written.
    base: Option<PathBuf>,
    /// The sections asked for, to suggest one for an unknown name.
    pub(super) sections: Vec<&'static str>,
}

impl Reading {
    pub(super) fn new(base: Option<&Path>) -> Self {
        Reading {
            issues: Vec::new(),
            sources: Sources::default(),
            base: base.map(Path::to_owned),
            sections: Vec::new(),
        }
    }

    /// `raw` as a path, relative to the config file's directory when it is relative.
    pub(super) fn resolve(&self, raw: &str) -> PathBuf {
        match &self.base {
            Some(base) if Path::new(raw).is_relative() => base.join(raw),
            _ => PathBuf::from(raw),
        }
    }
}

/// Reads the keys of one `[section]`; whatever is left when [`Reader::finish`] runs is an
/// unknown key.
pub(super) struct Reader<'a> {
    section: &'static str,
    table: Table,
    /// Every key asked for, to suggest one for an unknown key.
    known: Vec<String>,
    pub(super) reading: &'a mut Reading,
}

impl<'a> Reader<'a> {
    /// Takes `[section]` out of `root`; a missing section reads as empty.
    pub(super) fn section(
        root: &mut Table,
        section: &'static str,
        reading: &'a mut Reading,
    ) -> Self {
        reading.sections.push(section);
        let issues = &mut reading.issues;
        let table = match root.remove(section) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(other) => {
                issues.push(ConfigIssue::new(
                    section,
                    format!("must be a table, found {}", other.type_str()),
                ));
                Table::new()
            }
        };
        Reader {
            section,
            table,
            known: Vec::new(),
            reading,
        }
    }

    pub(super) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.section)
    }

    pub(super) fn issue(&mut self, key: &str, message: impl Into<String>) {
        let key = self.key(key);
        self.reading.issues.push(ConfigIssue::new(key, message));
    }

    pub(super) fn take(&mut self, key: &str) -> Option<Value> {
        self.known.push(key.to_owned());
        let value = self.table.remove(key)?;
        let key = self.key(key);
        self.reading.sources.set(key, Source::File);
        Some(value)
    }

    /// The environment variable `var`, which overrides `key` when set.
    pub(super) fn overridden(&mut self, key: &str, env: &dyn Env, var: &str) -> Option<String> {
        let value = env.var(var)?;
        self.came_from(key, Source::Env(var.to_owned()));
        Some(value)
    }

    /// Records where the effective value of `key` came from.
    pub(super) fn came_from(&mut self, key: &str, source: Source) {
        let key = self.key(key);
        self.reading.sources.set(key, source);
    }

    /// A path, resolved against the config file's directory; `None` when absent, empty (an
    /// issue) or not a string.
    pub(super) fn path(&mut self, key: &str) -> Option<PathBuf> {
        let raw = self.string(key)?;
        if raw.is_empty() {
            self.issue(key, "must not be empty");
            return None;
        }
        Some(self.reading.resolve(&raw))
    }

    pub(super) fn wrong_type(&mut self, key: &str, expected: &str, found: &Value) {
        let found = found.type_str();
        self.issue(key, format!("must be {expected}, found {found}"));
    }

    pub(super) fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(key, "a string", &other);
                None
            }
        }
    }

    pub(super) fn bool(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            Value::Boolean(b) => Some(b),
            other => {
                self.wrong_type(key, "true or false", &other);
                None
            }
        }
    }

    pub(super) fn integer(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        match self.take(key)? {
            Value::Integer(i) if (min..=max).contains(&i) => Some(i),
            Value::Integer(i) => {
                self.issue(key, format!("must be between {min} and {max}, found {i}"));
                None
            }
            other => {
                self.wrong_type(key, "an integer", &other);
                None
            }
        }
    }

    /// A duration written like `"30s"`, `"10m"` or `"1h 30m"`, within `range`; `default`
    /// when the key is absent. An unreadable or out-of-range value is an issue (and reads as
    /// `default`, though the config is refused anyway). The upper bound is what keeps every
    /// deadline the running code computes from it far from `Instant` overflow.
    pub(super) fn duration(
        &mut self,
        key: &str,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Duration {
        let Some(raw) = self.string(key) else {
            return default;
        };
        match crate::duration::parse(&raw) {
            Ok(d) if range.contains(&d) => d,
            Ok(_) => {
                let (min, max) = (
                    humantime::format_duration(*range.start()),
                    humantime::format_duration(*range.end()),
                );
                self.issue(key, format!("{raw:?} is out of range: from {min} to {max}"));
                default
            }
            Err(e) => {
                self.issue(key, e.to_string());
                default
            }
        }
    }

    /// A list of strings; with `single_ok`, a lone string is read as a list of one.
    pub(super) fn strings(&mut self, key: &str, single_ok: bool) -> Option<Vec<String>> {
        match self.take(key)? {
            Value::String(s) if single_ok => Some(vec![s]),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s),
                        other => {
                            let found = other.type_str();
                            self.issue(key, format!("item {i} must be a string, found {found}"));
                        }
                    }
                }
                Some(out)
            }
            other => {
                let expected = if single_ok {
                    "a string or an array of strings"
                } else {
                    "an array of strings"
                };
                self.wrong_type(key, expected, &other);
                None
            }
        }
    }

    /// Records every key nobody asked for, with the known key it is likely a typo of.
    pub(super) fn finish(self) {
        for key in self.table.keys() {
            let message = match closest(key, self.known.iter().map(String::as_str)) {
                Some(known) => format!("unknown key; did you mean `{known}`?"),
                None => "unknown key".to_owned(),
            };
            self.reading
                .issues
                .push(ConfigIssue::new(format!("{}.{key}", self.section), message));
        }
    }
}
