//! What a stored answer is filed under. The primary key is the request's host, path and
//! query (GET and HEAD share it: only GET answers are stored, and a HEAD is answered from
//! them). An answer with `Vary` is filed under the primary key plus the request's values of
//! the headers it names, and the primary key then holds those names (RFC 9111 §4.1).

use http::header::{self, HeaderMap, HeaderName};

/// A key: bytes, not a `String`, so that one is written from a request's raw lines without
/// checking them for UTF-8 again.
pub(super) type Key = Vec<u8>;

/// Writes `host path?query` into `key` (emptied first), the host lower-cased; `false` when
/// the host is not ASCII (what `HeaderValue::to_str` refuses of a header value, which holds
/// no control byte but tab, whether `http` or httparse read it): such a request, like one
/// without a host, is never stored nor served. Every read with `[stale]` on comes here, so
/// the host is checked and lower-cased eight bytes at a time.
pub(super) fn primary(key: &mut Key, host: &[u8], target: &str) -> bool {
    key.clear();
    key.reserve(host.len() + 1 + target.len());
    let mut words = host.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("chunks of eight"));
        let Some(lower) = lower_ascii(word) else {
            return false;
        };
        key.extend_from_slice(&lower.to_le_bytes());
    }
    let rest = words.remainder();
    if let Some(start) = host.len().checked_sub(8).filter(|_| !rest.is_empty()) {
        // The last eight bytes, overlapping the word before, written over its end.
        let last = u64::from_le_bytes(host[start..].try_into().expect("eight bytes"));
        let Some(lower) = lower_ascii(last) else {
            return false;
        };
        key.truncate(start);
        key.extend_from_slice(&lower.to_le_bytes());
    } else if !rest.is_empty() {
        // A short host: one word, padded with NULs (which stay as they are).
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        let Some(lower) = lower_ascii(u64::from_le_bytes(last)) else {
            return false;
        };
        key.extend_from_slice(&lower.to_le_bytes()[..rest.len()]);
    }
    key.push(b' ');
    key.extend_from_slice(target.as_bytes());
    true
}

/// Eight bytes with their ASCII capitals lower-cased; `None` if one is not ASCII.
fn lower_ascii(word: u64) -> Option<u64> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if word & HIGH != 0 {
        return None;
    }
    // Every byte is below 0x80, so no sum below carries into the next byte: a byte's high
    // bit says whether it is at least 'A' (0x41), then at least past 'Z' (0x5b).
    let from_a = word + 0x3f3f_3f3f_3f3f_3f3f;
    let past_z = word + 0x2525_2525_2525_2525;
    let capital = from_a & !past_z & HIGH;
    Some(word | (capital >> 2))
}

/// The primary key plus, for each name `Vary` lists, the request's values of that header
/// (all of them, in order; absent and empty differ).
pub(super) fn variant(primary: &[u8], vary: &[HeaderName], headers: &HeaderMap) -> Key {
    let mut key = Vec::with_capacity(primary.len() + 32 * vary.len());
    key.extend_from_slice(primary);
    for name in vary {
        key.push(b'\n');
        key.extend_from_slice(name.as_str().as_bytes());
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            // Absent: no ':' at all, so it differs from an empty value.
            continue;
        }
        key.push(b':');
        for (i, value) in values.enumerate() {
            if i > 0 {
                key.push(b',');
            }
            // A header value holds no newline; bytes past ASCII are kept, escaped.
            for &b in value.as_bytes() {
                match b {
                    b'\\' => key.extend_from_slice(b"\\\\"),
                    0x20..=0x7e | b'\t' => key.push(b),
                    _ => key.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                }
            }
        }
    }
    key
}

/// The header names a `Vary` field lists, lower-cased and deduplicated; `None` for
/// `Vary: *` or a name that is not one (such an answer is never stored).
pub(super) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.to_str().ok()?;
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(token.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_primary_key_is_host_path_and_query() {
        let mut key = b"left over".to_vec();
        assert!(primary(&mut key, b"Example.COM", "/a?b=1"));
        assert_eq!(key, b"example.com /a?b=1");
        assert!(!primary(&mut key, b"caf\xc3\xa9", "/"));
        assert!(!primary(&mut key, b"long-host-name.\xc3\xa9xample", "/"));
        // Every byte, in every place of hosts of every length up to two words and more.
        for len in 1..=17 {
            for b in 0u8..=255 {
                for at in 0..len {
                    let mut host = b"abcdefghijklmnopq"[..len].to_vec();
                    host[at] = b;
                    let ok = primary(&mut key, &host, "/");
                    assert_eq!(ok, b.is_ascii(), "{b:#x} at {at} of {len}");
                    if ok {
                        host.make_ascii_lowercase();
                        host.extend_from_slice(b" /");
                        assert_eq!(key, host, "{b:#x} at {at} of {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn variants_differ_by_the_vary_values_absent_and_empty_included() {
        let vary = vary_names(&headers(&[("vary", "Accept-Encoding, accept-language")])).unwrap();
        let gzip = variant(b"k", &vary, &headers(&[("accept-encoding", "gzip")]));
        let br = variant(b"k", &vary, &headers(&[("accept-encoding", "br")]));
        let none = variant(b"k", &vary, &HeaderMap::new());
        let empty = variant(b"k", &vary, &headers(&[("accept-encoding", "")]));
        let french = variant(b"k", &vary, &headers(&[("accept-language", "fr")]));
        let all = [&gzip, &br, &none, &empty, &french];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(vary_names(&headers(&[("vary", "*")])), None);
        assert_eq!(
            vary_names(&headers(&[("vary", "b, a"), ("vary", "A")])).unwrap(),
            ["a", "b"]
        );
    }
}
