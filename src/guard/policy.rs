//! Which requests the guard stops: a pure, synchronous decision, cheap enough for every
//! request (no allocation).

use http::Method;

use crate::config::GuardConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward,
    Block,
}

#[derive(Debug, Clone)]
pub struct Policy {
    methods: Vec<Method>,
    allow_paths: Vec<String>,
}

impl Policy {
    pub fn new(cfg: &GuardConfig) -> Self {
        Policy {
            methods: cfg.methods.clone(),
            allow_paths: cfg.allow_paths.clone(),
        }
    }

    /// `guarded`: whether an engagement is active now.
    pub fn decide(&self, guarded: bool, method: &Method, path: &str) -> Decision {
        if guarded && self.is_guarded_method(method) && !self.is_allowed_path(path) {
            Decision::Block
        } else {
            Decision::Forward
        }
    }

    /// Method names are case-sensitive in HTTP, but applications and frameworks often are
    /// not: `post` is guarded like `POST`.
    pub fn is_guarded_method(&self, method: &Method) -> bool {
        let name = method.as_str();
        self.methods
            .iter()
            .any(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// Segment-wise prefix match against `allow_paths`. A path that could be read two ways
    /// (dot segments, encoded dots or slashes, empty segments, `;` parameters, backslashes)
    /// never matches: the request stays guarded.
    fn is_allowed_path(&self, path: &str) -> bool {
        if self.allow_paths.is_empty() || is_ambiguous(path) {
            return false;
        }
        self.allow_paths.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

fn is_ambiguous(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || path.contains("//") || path.contains(['\\', ';']) {
        return true;
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return true;
    }
    b.windows(3).any(|w| {
        w[0] == b'%' && {
            let code = [w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()];
            matches!(&code, b"2E" | b"2F" | b"5C" | b"3B" | b"25")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(allow: &[&str]) -> Policy {
        Policy::new(&GuardConfig {
            methods: vec![Method::POST, Method::PATCH],
            retry_after: Duration::from_secs(30),
            max_engaged: Duration::from_secs(60),
            allow_paths: allow.iter().map(|s| s.to_string()).collect(),
            hold: Duration::ZERO,
            hold_max_requests: 0,
            release_concurrency: 1,
            page: None,
        })
    }

    fn m(s: &str) -> Method {
        Method::from_bytes(s.as_bytes()).unwrap()
    }

    #[test]
    fn only_guarded_methods_while_guarded() {
        let p = policy(&[]);
        assert_eq!(p.decide(true, &Method::POST, "/x"), Decision::Block);
        assert_eq!(p.decide(true, &m("post"), "/x"), Decision::Block);
        assert_eq!(p.decide(true, &Method::PATCH, "/x"), Decision::Block);
        assert_eq!(p.decide(true, &Method::GET, "/x"), Decision::Forward);
        assert_eq!(p.decide(true, &Method::PUT, "/x"), Decision::Forward);
        assert_eq!(p.decide(false, &Method::POST, "/x"), Decision::Forward);
    }

    #[test]
    fn allow_paths_match_whole_segments() {
        let p = policy(&["/login", "/hooks/stripe"]);
        assert_eq!(p.decide(true, &Method::POST, "/login"), Decision::Forward);
        assert_eq!(
            p.decide(true, &Method::POST, "/login/sso"),
            Decision::Forward
        );
        assert_eq!(
            p.decide(true, &Method::POST, "/hooks/stripe"),
            Decision::Forward
        );
        assert_eq!(p.decide(true, &Method::POST, "/loginx"), Decision::Block);
        assert_eq!(p.decide(true, &Method::POST, "/hooks"), Decision::Block);
    }

    #[test]
    fn path_tricks_stay_guarded() {
        let p = policy(&["/login"]);
        for path in [
            "/login/../orders",
            "/login/%2e%2e/orders",
            "/login/%2E%2E/orders",
            "//login",
            "/login%2forders",
            "/login;x=1",
            "/login/.",
            "/login\\..\\orders",
            "/login/%252e%252e/orders",
        ] {
            assert_eq!(
                p.decide(true, &Method::POST, path),
                Decision::Block,
                "{path}"
            );
        }
    }
}
