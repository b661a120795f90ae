//! What a stored answer is filed under. The primary key is the request's host, path and
//! query (GET and HEAD share it: only GET answers are stored, and a HEAD is answered from
//! them). An answer with `Vary` is filed under the primary key plus the request's values of
//! the headers it names, and the primary key then holds those names (RFC 9111 §4.1).

use http::header::{self, HeaderMap, HeaderName};

/// Writes `host path?query` into `key` (emptied first), the host lower-cased; `false` when
/// the host is not visible ASCII (as `HeaderValue::to_str` reads it): such a request, like
/// one without a host, is never stored nor served.
pub(super) fn primary(key: &mut String, host: &[u8], target: &str) -> bool {
    key.clear();
    key.reserve(host.len() + 1 + target.len());
    for &b in host {
        if b != b'\t' && !(0x20..0x7f).contains(&b) {
            return false;
        }
        key.push(char::from(b.to_ascii_lowercase()));
    }
    key.push(' ');
    key.push_str(target);
    true
}

/// The primary key plus, for each name `Vary` lists, the request's values of that header
/// (all of them, in order; absent and empty differ).
pub(super) fn variant(primary: &str, vary: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 32 * vary.len());
    key.push_str(primary);
    for name in vary {
        key.push('\n');
        key.push_str(name.as_str());
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            // Absent: no ':' at all, so it differs from an empty value.
            continue;
        }
        key.push(':');
        for (i, value) in values.enumerate() {
            if i > 0 {
                key.push(',');
            }
            // A header value holds no newline; bytes past ASCII are kept, escaped.
            for &b in value.as_bytes() {
                match b {
                    b'\\' => key.push_str("\\\\"),
                    0x20..=0x7e | b'\t' => key.push(b as char),
                    _ => key.push_str(&format!("\\x{b:02x}")),
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
        let mut key = String::from("left over");
        assert!(primary(&mut key, b"Example.COM", "/a?b=1"));
        assert_eq!(key, "example.com /a?b=1");
        assert!(!primary(&mut key, b"caf\xc3\xa9", "/"));
        assert!(!primary(&mut key, b"a\x7fb", "/"));
    }

    #[test]
    fn variants_differ_by_the_vary_values_absent_and_empty_included() {
        let vary = vary_names(&headers(&[("vary", "Accept-Encoding, accept-language")])).unwrap();
        let gzip = variant("k", &vary, &headers(&[("accept-encoding", "gzip")]));
        let br = variant("k", &vary, &headers(&[("accept-encoding", "br")]));
        let none = variant("k", &vary, &HeaderMap::new());
        let empty = variant("k", &vary, &headers(&[("accept-encoding", "")]));
        let french = variant("k", &vary, &headers(&[("accept-language", "fr")]));
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
