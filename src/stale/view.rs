//! A request head as the store reads it, from either data path: hyper's `http::Request`
//! ([`Parts`]) or the native engine's raw header lines ([`Raw`]), which become a `HeaderMap`
//! only when an answer's `Vary` or the rules need one, so that the common read builds
//! nothing. Both give the same facts: the host (the `Host` header, else the target's
//! authority), the path and query, whether credentials come with it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Uri;

use super::rules;

pub(super) trait View {
    /// The host the key is filed under (`key::primary` checks it); `None`: not stored nor
    /// served.
    fn host(&self) -> Option<&[u8]>;
    /// The path and query.
    fn target(&self) -> &str;
    /// It carries `Cookie` or `Authorization`.
    fn credentials(&self) -> bool;
    /// Its headers as a map; `None` when its lines do not make one.
    fn headers(&mut self) -> Option<&HeaderMap>;
    /// The target and headers, owned, to judge its answer by.
    fn owned(&mut self) -> Option<(Uri, HeaderMap)>;
}

/// hyper's request head.
pub(super) struct Parts<'a> {
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

impl View for Parts<'_> {
    fn host(&self) -> Option<&[u8]> {
        match self.headers.get(header::HOST) {
            Some(h) => Some(h.as_bytes()),
            None => self.uri.authority().map(|a| a.as_str().as_bytes()),
        }
    }

    fn target(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    fn credentials(&self) -> bool {
        rules::has_credentials(self.headers)
    }

    fn headers(&mut self) -> Option<&HeaderMap> {
        Some(self.headers)
    }

    fn owned(&mut self) -> Option<(Uri, HeaderMap)> {
        Some((self.uri.clone(), self.headers.clone()))
    }
}

/// An origin-form request's target and header lines, as the native engine parsed them.
pub(super) struct Raw<'a, I> {
    target: &'a str,
    lines: I,
    host: Option<&'a [u8]>,
    credentials: bool,
    map: Option<HeaderMap>,
}

impl<'a, I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone> Raw<'a, I> {
    /// One pass over the lines: the first `Host`, and whether credentials come along.
    pub(super) fn new(target: &'a str, lines: I) -> Self {
        let mut host = None;
        let mut credentials = false;
        for (name, value) in lines.clone() {
            if name.eq_ignore_ascii_case(b"host") {
                host = host.or(Some(value));
            } else if rules::is_credential(name) {
                credentials = true;
            }
        }
        Raw {
            target,
            lines,
            host,
            credentials,
            map: None,
        }
    }

    /// The lines as a `HeaderMap`, built once.
    fn map(&mut self) -> Option<&HeaderMap> {
        if self.map.is_none() {
            let mut map = HeaderMap::new();
            for (name, value) in self.lines.clone() {
                let name = HeaderName::from_bytes(name).ok()?;
                let value = HeaderValue::from_bytes(value).ok()?;
                map.append(name, value);
            }
            self.map = Some(map);
        }
        self.map.as_ref()
    }
}

impl<'a, I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone> View for Raw<'a, I> {
    fn host(&self) -> Option<&[u8]> {
        self.host
    }

    fn target(&self) -> &str {
        self.target
    }

    fn credentials(&self) -> bool {
        self.credentials
    }

    fn headers(&mut self) -> Option<&HeaderMap> {
        self.map()
    }

    fn owned(&mut self) -> Option<(Uri, HeaderMap)> {
        let uri = Uri::try_from(self.target).ok()?;
        self.map()?;
        Some((uri, self.map.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_views_read_the_same_facts() {
        let lines: &[(&[u8], &[u8])] = &[
            (b"Host", b"Site.Example"),
            (b"Accept-Language", b"fr"),
            (b"COOKIE", b"a=1"),
        ];
        let mut raw = Raw::new("/p?q=1", lines.iter().copied());
        let uri: Uri = "/p?q=1".parse().unwrap();
        let (_, map) = Raw::new("/p?q=1", lines.iter().copied()).owned().unwrap();
        let mut parts = Parts {
            uri: &uri,
            headers: &map,
        };
        assert_eq!(raw.host(), parts.host());
        assert_eq!(raw.target(), parts.target());
        assert!(raw.credentials() && parts.credentials());
        assert_eq!(raw.headers(), parts.headers());
        assert_eq!(raw.headers().unwrap()["accept-language"], "fr");
        let none: &[(&[u8], &[u8])] = &[(b"x", b"1")];
        assert!(!Raw::new("/", none.iter().copied()).credentials());
    }
}
