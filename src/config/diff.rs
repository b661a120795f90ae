//! What differs between two configs, for a reload: which sections need a restart, and which
//! `[guard]` keys (and whether the proxy's certificate) a reload changes.

use super::{Config, GuardConfig, ProxyConfig};

impl Config {
    /// The sections other than `[guard]` that differ from `new`: a reload cannot apply them.
    /// The proxy's certificate is reloaded too; turning TLS on or off needs a restart.
    pub fn restart_needed_for(&self, new: &Config) -> Vec<&'static str> {
        let sections = [
            ("proxy", same_but_certificate(&self.proxy, &new.proxy)),
            ("admin", self.admin == new.admin),
            ("upsun", self.upsun == new.upsun),
            ("webhooks", self.webhooks == new.webhooks),
            ("github", self.github == new.github),
            ("gitlab", self.gitlab == new.gitlab),
            ("state", self.state == new.state),
            ("server", self.server == new.server),
            ("public", self.public == new.public),
            ("log", self.log == new.log),
            ("stale", self.stale == new.stale),
        ];
        sections
            .into_iter()
            .filter(|(_, same)| !same)
            .map(|(name, _)| name)
            .collect()
    }
}

/// Whether two `[proxy]` sections differ at most in the certificate files and contents.
fn same_but_certificate(old: &ProxyConfig, new: &ProxyConfig) -> bool {
    old.tls.is_some() == new.tls.is_some()
        && ProxyConfig {
            tls: None,
            ..old.clone()
        } == ProxyConfig {
            tls: None,
            ..new.clone()
        }
}

impl ProxyConfig {
    /// `proxy.tls_cert` when the certificate served changes from `old`'s to `new`'s.
    pub fn certificate_changes_to(&self, new: &ProxyConfig) -> Option<String> {
        match (&self.tls, &new.tls) {
            (Some(old), Some(next)) if old.cert == next.cert && old != next => Some(format!(
                "proxy.tls_cert (contents of {})",
                next.cert.display()
            )),
            (Some(old), Some(next)) if old != next => Some(format!(
                "proxy.tls_cert {} -> {}",
                old.cert.display(),
                next.cert.display()
            )),
            _ => None,
        }
    }
}

impl GuardConfig {
    /// `guard.<key> OLD -> NEW` for every key that differs from `new`.
    pub fn changes_to(&self, new: &GuardConfig) -> Vec<String> {
        let mut out = Vec::new();
        macro_rules! compare {
            ($($field:ident),*) => {$(
                if self.$field != new.$field {
                    out.push(format!(
                        "guard.{} {:?} -> {:?}",
                        stringify!($field),
                        self.$field,
                        new.$field
                    ));
                }
            )*};
        }
        compare!(
            methods,
            allow_paths,
            retry_after,
            max_engaged,
            hold,
            hold_max_requests,
            release_concurrency,
            pass_unknown_methods,
            upgrades
        );
        if self.page != new.page {
            out.push("guard.page (contents)".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::MINIMAL;
    use super::*;

    fn parse(extra: &str) -> Config {
        let env: [(&str, &str); 0] = [];
        Config::parse(&format!("{MINIMAL}\n{extra}"), &env).expect("valid")
    }

    #[test]
    fn only_guard_changes_reload_and_secrets_count() {
        let base = parse("[guard]\nhold = \"5s\"\n");
        assert!(base.restart_needed_for(&base.clone()).is_empty());
        let guard = parse("[guard]\nhold = \"7s\"\n");
        assert!(base.restart_needed_for(&guard).is_empty());
        assert_eq!(base.guard.changes_to(&guard.guard), ["guard.hold 5s -> 7s"]);
        let mut token = base.clone();
        token.admin.token = crate::config::Secret::new("another-token-1234".into());
        assert_eq!(base.restart_needed_for(&token), ["admin"]);
        let key = parse("[guard]\nhold = \"5s\"\n[upsun]\nshared_key = \"k1\"\n");
        assert_eq!(base.restart_needed_for(&key), ["upsun"]);
    }
}
