//! Addresses that cannot work together: the admin API on a proxy listener's address, and an
//! upstream that is writeguard's own listener (every request would come back to it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::Uri;

use super::ConfigIssue;

/// Whether a listener on the wildcard `wild` takes connections to `other`.
fn covers(wild: IpAddr, other: IpAddr) -> bool {
    wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4())
}

/// Whether listeners on `a` and `b` would claim the same connections: the same port, and
/// the same address or a wildcard covering the other (`[::]` is dual-stack on Linux).
fn overlap(a: &SocketAddr, b: &SocketAddr) -> bool {
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port() && (x == y || covers(x, y) || covers(y, x))
}

/// The addresses a connection to `upstream` may reach, when they can be told without DNS.
fn upstream_addrs(upstream: &Uri) -> Vec<SocketAddr> {
    let Some(host) = upstream.host() else {
        return Vec::new();
    };
    let port = upstream
        .port_u16()
        .unwrap_or(if upstream.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let ips: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .into_iter()
            .collect()
    };
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// Whether a connection to `target` reaches a listener on `listener` of this host.
fn reaches(target: &SocketAddr, listener: &SocketAddr) -> bool {
    let (t, l) = (target.ip().to_canonical(), listener.ip().to_canonical());
    let local = t.is_loopback() || t.is_unspecified();
    target.port() == listener.port() && (t == l || (local && covers(l, t)) || t.is_unspecified())
}

pub(super) fn check(
    proxy: &[SocketAddr],
    admin: &[SocketAddr],
    upstream: Option<&Uri>,
    issues: &mut Vec<ConfigIssue>,
) {
    for a in admin {
        if let Some(p) = proxy.iter().find(|p| overlap(a, p)) {
            issues.push(ConfigIssue::new(
                "admin.listen",
                format!("{a} overlaps proxy.listen {p}: the admin API needs an address of its own"),
            ));
        }
    }
    let Some(upstream) = upstream else { return };
    let own = proxy
        .iter()
        .map(|a| ("proxy.listen", a))
        .chain(admin.iter().map(|a| ("admin.listen", a)));
    for (key, listener) in own {
        if upstream_addrs(upstream)
            .iter()
            .any(|t| reaches(t, listener))
        {
            issues.push(ConfigIssue::new(
                "proxy.upstream",
                format!(
                    "{upstream} is writeguard's own {key} {listener}: every request would come back to writeguard"
                ),
            ));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(proxy: &[&str], admin: &[&str], upstream: &str) -> Vec<String> {
        let parse =
            |v: &[&str]| -> Vec<SocketAddr> { v.iter().map(|a| a.parse().unwrap()).collect() };
        let mut out = Vec::new();
        check(
            &parse(proxy),
            &parse(admin),
            Some(&upstream.parse().unwrap()),
            &mut out,
        );
        out.into_iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn the_admin_api_may_not_share_a_proxy_address() {
        let app = "http://127.0.0.1:8000";
        assert!(issues(&["127.0.0.1:8080"], &["127.0.0.1:9090"], app).is_empty());
        assert!(issues(&["127.0.0.1:8080"], &["127.0.0.2:8080"], app).is_empty());
        assert!(issues(&["0.0.0.0:8080"], &["[::1]:8080"], app).is_empty());
        for (proxy, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "0.0.0.0:8080"),
            ("[::]:8080", "127.0.0.1:8080"),
        ] {
            assert_eq!(
                issues(&[proxy], &[admin], app),
                [format!("admin.listen: {admin} overlaps proxy.listen {proxy}: the admin API needs an address of its own")],
            );
        }
    }

    #[test]
    fn an_upstream_may_not_be_writeguard_itself() {
        let own = |upstream| issues(&["0.0.0.0:8080"], &["127.0.0.1:9090"], upstream);
        assert!(own("http://127.0.0.1:8000").is_empty());
        assert!(own("http://app.internal:8080").is_empty(), "no DNS lookups");
        assert_eq!(
            own("http://localhost:8080"),
            ["proxy.upstream: http://localhost:8080/ is writeguard's own proxy.listen 0.0.0.0:8080: every request would come back to writeguard"]
        );
        assert!(own("http://[::1]:9090").is_empty(), "admin is on IPv4 only");
        assert!(own("http://[::1]:8080").is_empty(), "0.0.0.0 is IPv4 only");
        let own6 = issues(&["[::]:8080"], &["127.0.0.1:9090"], "http://[::1]:8080");
        assert_eq!(own6.len(), 1);
        assert_eq!(
            own("http://127.0.0.1:9090")[0].split(": ").nth(1),
            Some("http://127.0.0.1:9090/ is writeguard's own admin.listen 127.0.0.1:9090")
        );
        let own = issues(&["127.0.0.1:80"], &["127.0.0.1:9090"], "http://127.0.0.1");
        assert_eq!(own.len(), 1, "the default port");
    }
}
