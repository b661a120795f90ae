//! The audit log: one JSON line per engagement change, appended (`O_APPEND`) and fsynced as
//! part of the change it records, and read back from its tail for `GET /history`.
//!
//! It never holds the file in memory: appends write only the new lines, and reading walks
//! back from the end in fixed-size chunks until it has enough records.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::guard::{AuditRecord, StoreError};

#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

/// Lines written but not yet part of an acknowledged change: [`Appended::undo`] takes them
/// back when the state file cannot be written.
pub struct Appended {
    file: File,
    len_before: u64,
}

impl Appended {
    /// Truncates the log to where it was before the append. Truncating frees space, so it
    /// works on a full disk too.
    pub fn undo(self, path: &Path) {
        let undone = self
            .file
            .set_len(self.len_before)
            .and_then(|()| self.file.sync_all());
        if let Err(e) = undone {
            tracing::error!(path = %path.display(), error = %e, "cannot take back audit lines of a change that failed; the log records a change that did not happen");
        }
    }
}

/// Longest line `tail` assembles; a longer one is not ours and is skipped.
const MAX_LINE: usize = 64 * 1024;
const CHUNK: u64 = 64 * 1024;

impl AuditLog {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditLog { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` in one write and fsyncs. On error the log is as it was (a partial
    /// write is truncated away).
    pub fn append(&self, records: &[AuditRecord]) -> Result<Appended, StoreError> {
        let err = |source| StoreError::Audit {
            path: self.path.clone(),
            source,
        };
        let mut lines = Vec::new();
        for r in records {
            serde_json::to_writer(&mut lines, r).expect("audit records always serialize");
            lines.push(b'\n');
        }
        let created = !self.path.exists();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(err)?;
        let len_before = file.metadata().map_err(err)?.len();
        let appended = Appended { file, len_before };
        let written = (|| {
            let mut f = &appended.file;
            f.write_all(&lines)?;
            f.sync_all()?;
            if created {
                // The new file's directory entry must be durable too.
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    File::open(dir)?.sync_all()?;
                }
            }
            Ok(())
        })();
        match written {
            Ok(()) => Ok(appended),
            Err(e) => {
                appended.undo(&self.path);
                Err(err(e))
            }
        }
    }

    /// The last `limit` well-formed records, newest first. Malformed lines are skipped.
    pub fn tail(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let err = |source| StoreError::AuditRead {
            path: self.path.clone(),
            source,
        };
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut pos = file.metadata().map_err(err)?.len();
        let mut out = Vec::new();
        // The end of the line being assembled (bytes after the newline last seen).
        let mut carry: Vec<u8> = Vec::new();
        let mut overlong = false;
        let mut buf = Vec::new();
        while pos > 0 && out.len() < limit {
            let n = CHUNK.min(pos);
            pos -= n;
            buf.resize(n as usize, 0);
            file.seek(SeekFrom::Start(pos)).map_err(err)?;
            file.read_exact(&mut buf).map_err(err)?;
            let mut end = buf.len();
            while let Some(nl) = buf[..end].iter().rposition(|&b| b == b'\n') {
                if !overlong {
                    let mut line = buf[nl + 1..end].to_vec();
                    line.extend_from_slice(&carry);
                    push_parsed(&mut out, &line);
                }
                carry.clear();
                overlong = false;
                end = nl;
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if !overlong {
                if carry.len() + end > MAX_LINE {
                    overlong = true;
                    carry.clear();
                } else {
                    let mut line = buf[..end].to_vec();
                    line.extend_from_slice(&carry);
                    carry = line;
                }
            }
        }
        if pos == 0 && !overlong && out.len() < limit {
            push_parsed(&mut out, &carry);
        }
        Ok(out)
    }
}

fn push_parsed(out: &mut Vec<AuditRecord>, line: &[u8]) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match serde_json::from_slice(line) {
        Ok(record) => out.push(record),
        Err(e) => tracing::warn!(error = %e, "audit log: skipping a malformed line"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            when: OffsetDateTime::from_unix_timestamp(1_700_000_000 + i as i64).unwrap(),
            source: "api".into(),
            actor: "operator".into(),
            action: "engage".into(),
            reason: format!("r{i} {}", "x".repeat(i % 300)),
            engagement: format!("manual-{i}"),
            activity: None,
            engaged: true,
        }
    }

    #[test]
    fn tail_is_newest_first_bounded_and_skips_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("a/audit.jsonl"));
        assert!(log.tail(10).unwrap().is_empty());
        for i in 0..2000 {
            log.append(&[record(i)]).unwrap();
            if i == 1000 {
                let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
                f.write_all(b"{not json\n\n").unwrap();
                f.write_all(&vec![b'y'; 200_000]).unwrap();
                f.write_all(b"\n").unwrap();
            }
        }
        let got = log.tail(5).unwrap();
        let ids: Vec<&str> = got.iter().map(|r| r.engagement.as_str()).collect();
        assert_eq!(
            ids,
            [
                "manual-1999",
                "manual-1998",
                "manual-1997",
                "manual-1996",
                "manual-1995"
            ]
        );
        let all = log.tail(5000).unwrap();
        assert_eq!(all.len(), 2000);
        assert_eq!(all[999], record(1000));
        assert_eq!(all[1999], record(0));
    }

    #[test]
    fn undo_takes_the_lines_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("audit.jsonl"));
        log.append(&[record(1)]).unwrap();
        let before = std::fs::read(log.path()).unwrap();
        log.append(&[record(2), record(3)])
            .unwrap()
            .undo(log.path());
        assert_eq!(std::fs::read(log.path()).unwrap(), before);
    }
}
