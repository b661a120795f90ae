//! Secrets that are good enough on loopback but not on a network. The quick start runs the
//! example config on 127.0.0.1 with its example secrets; once any listener (after the
//! `WRITEGUARD_*LISTEN` overrides) is reachable from elsewhere, the example values, and any
//! secret too short to resist guessing, are refused: they would let anyone release the guard
//! (admin token) or engage it (a webhook signed with the shared key).

use std::net::SocketAddr;

use super::{ConfigIssue, Secret};

/// The values shipped in `config/writeguard.toml`.
const EXAMPLE_SECRETS: [&str; 2] = ["change-me", "change-me-too"];

/// Shortest secret accepted on a non-loopback listener.
pub(super) const MIN_EXPOSED_SECRET: usize = 16;

/// Whether a client on another host may reach `addr` (unspecified addresses included).
pub(super) fn is_exposed(addr: &SocketAddr) -> bool {
    !addr.ip().to_canonical().is_loopback()
}

/// One issue per weak secret in `secrets` (key, value) when a listener in `listeners`
/// (key, address) is not loopback.
pub(super) fn check(
    listeners: &[(&str, &[SocketAddr])],
    secrets: &[(&str, Option<&Secret>)],
    issues: &mut Vec<ConfigIssue>,
) {
    let exposed = listeners
        .iter()
        .find_map(|(key, addrs)| addrs.iter().find(|a| is_exposed(a)).map(|a| (key, a)));
    let Some((listen_key, addr)) = exposed else {
        return;
    };
    for (key, secret) in secrets {
        let Some(secret) = secret else { continue };
        let value = secret.expose();
        let what = if EXAMPLE_SECRETS.contains(&value) {
            "is the example value from config/writeguard.toml"
        } else if value.len() < MIN_EXPOSED_SECRET {
            "is shorter than 16 bytes"
        } else {
            continue;
        };
        issues.push(ConfigIssue::new(
            *key,
            format!(
                "{what}, and {listen_key} {addr} is not a loopback address: set a random secret \
                 of at least {MIN_EXPOSED_SECRET} bytes (e.g. `openssl rand -base64 32`)"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_means_nothing_is_exposed() {
        for a in [
            "127.0.0.1:1",
            "127.1.2.3:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(!is_exposed(&a.parse().unwrap()), "{a}");
        }
        for a in ["0.0.0.0:1", "[::]:1", "10.0.0.1:1", "[::ffff:10.0.0.1]:1"] {
            assert!(is_exposed(&a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn weak_secrets_are_refused_only_when_exposed() {
        let weak = Secret::new("change-me".into());
        let short = Secret::new("fifteen-bytes!!".into());
        let good = Secret::new("sixteen-bytes!!!".into());
        let secrets = [
            ("admin.token", Some(&weak)),
            ("upsun.shared_key", Some(&short)),
            ("x.good", Some(&good)),
            ("x.none", None),
        ];
        let local = ["127.0.0.1:1".parse().unwrap()];
        let open = ["0.0.0.0:1".parse().unwrap()];
        let mut issues = Vec::new();
        check(
            &[("proxy.listen", &local), ("admin.listen", &local)],
            &secrets,
            &mut issues,
        );
        assert!(issues.is_empty(), "{issues:?}");
        check(
            &[("proxy.listen", &local), ("admin.listen", &open)],
            &secrets,
            &mut issues,
        );
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["admin.token", "upsun.shared_key"]);
        assert!(issues[0].message.contains("admin.listen 0.0.0.0:1"));
        assert!(
            !issues[1].message.contains("fifteen"),
            "never print a secret"
        );
    }
}
