//! What differs between two configs, for a reload: which sections need a restart, and which
//! `[guard]` keys a reload changes.

use super::{Config, GuardConfig};

impl Config {
    /// The sections other than `[guard]` that differ from `new`: a reload cannot apply them.
    pub fn restart_needed_for(&self, new: &Config) -> Vec<&'static str> {
        let sections = [
            ("proxy", self.proxy == new.proxy),
            ("admin", self.admin == new.admin),
            ("upsun", self.upsun == new.upsun),
            ("state", self.state == new.state),
            ("server", self.server == new.server),
            ("public", self.public == new.public),
            ("log", self.log == new.log),
        ];
        sections
            .into_iter()
            .filter(|(_, same)| !same)
            .map(|(name, _)| name)
            .collect()
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
