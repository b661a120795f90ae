//! Unit tests of the config loader: defaults, every error with its key, env overrides.

use super::sections::parse_upstream;
use super::*;

pub(super) const MINIMAL: &str = r#"
[proxy]
listen = "127.0.0.1:8080"
upstream = "http://127.0.0.1:8000"
[admin]
token = "a-long-token"
"#;

fn issues(text: &str) -> Vec<String> {
    match Config::parse(text, &[]) {
        Err(ParseError::Invalid(i)) => i.into_iter().map(|i| i.to_string()).collect(),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = Config::parse(MINIMAL, &[]).expect("valid");
    assert_eq!(c.guard.methods, vec![Method::POST, Method::PATCH]);
    assert_eq!(c.guard.retry_after, Duration::from_secs(30));
    assert_eq!(c.guard.max_engaged, Duration::from_secs(1800));
    assert_eq!(c.admin.listen, vec!["127.0.0.1:9090".parse().unwrap()]);
    assert_eq!(c.state.path, PathBuf::from("var/writeguard.state"));
    assert_eq!(
        c.state.audit_log,
        PathBuf::from("var/writeguard.state.audit.jsonl")
    );
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
    assert!(c.upsun.shared_key.is_none() && !c.upsun.allow_unsigned);
    assert_eq!(c.proxy.underscore_headers, UnderscoreHeaders::Pass);
}

#[test]
fn engine_is_native_by_default_or_hyper() {
    let c = Config::parse(MINIMAL, &[]).expect("valid");
    assert_eq!(c.proxy.engine, Engine::Native);
    let hyper = MINIMAL.replace("[admin]", "engine = \"hyper\"\n[admin]");
    let c = Config::parse(&hyper, &[]).expect("valid");
    assert_eq!(c.proxy.engine, Engine::Hyper);
    let bad = MINIMAL.replace("[admin]", "engine = \"fast\"\n[admin]");
    let got = issues(&bad);
    assert!(got.iter().any(|i| i.starts_with("proxy.engine")), "{got:?}");
}

#[test]
fn underscore_headers_is_pass_or_drop() {
    let drop = MINIMAL.replace("[admin]", "underscore_headers = \"drop\"\n[admin]");
    let c = Config::parse(&drop, &[]).expect("valid");
    assert_eq!(c.proxy.underscore_headers, UnderscoreHeaders::Drop);
    let bad = MINIMAL.replace("[admin]", "underscore_headers = \"strip\"\n[admin]");
    let got = issues(&bad);
    assert!(
        got.iter()
            .any(|i| i.starts_with("proxy.underscore_headers")),
        "{got:?}"
    );
}

#[test]
fn every_error_is_reported_with_its_key() {
    let got = issues(
        r#"
[proxy]
listen = ["nope"]
upstream = "ftp://x"
colour = "blue"
[guard]
retry_after = "soon"
methods = ["GET", "PO ST"]
[admin]
token = "short"
[extra]
"#,
    );
    let keys: Vec<&str> = got.iter().map(|s| s.split(':').next().unwrap()).collect();
    for key in [
        "proxy.listen",
        "proxy.upstream",
        "proxy.colour",
        "guard.retry_after",
        "guard.methods",
        "admin.token",
        "extra",
    ] {
        assert!(keys.contains(&key), "{key} missing from {got:#?}");
    }
}

#[test]
fn env_overrides_win_and_secrets_come_from_named_variables() {
    let env = [
        ("WRITEGUARD_UPSTREAM", "https://app.example:8443"),
        ("WRITEGUARD_LISTEN", "127.0.0.1:1,127.0.0.1:2"),
        ("MY_KEY", "from-the-env"),
    ];
    let text = format!("{MINIMAL}\n[upsun]\nshared_key_env = \"MY_KEY\"\n");
    let c = Config::parse(&text, &env).expect("valid");
    assert_eq!(c.proxy.upstream, "https://app.example:8443");
    assert_eq!(c.proxy.listen.len(), 2);
    assert_eq!(c.upsun.shared_key.unwrap().expose(), "from-the-env");
}

#[test]
fn missing_secret_variable_is_an_error() {
    let text = format!("{MINIMAL}\n[upsun]\nshared_key_env = \"NOT_SET\"\n");
    let got = issues(&text);
    assert!(got.iter().any(|i| i.starts_with("upsun.shared_key_env")));
}

#[test]
fn webhook_secrets_are_a_list_from_the_file_or_the_environment() {
    const A: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const B: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let c = Config::parse(MINIMAL, &[]).expect("valid");
    assert!(c.webhooks.secrets.is_empty());
    assert_eq!(c.webhooks.tolerance, Duration::from_secs(300));
    let one = format!("{MINIMAL}\n[webhooks]\nsecret = \"{A}\"\ntolerance = \"2m\"\n");
    let c = Config::parse(&one, &[]).expect("valid");
    assert_eq!(c.webhooks.secrets.len(), 1);
    assert_eq!(c.webhooks.tolerance, Duration::from_secs(120));
    let two = format!("{MINIMAL}\n[webhooks]\nsecret = [\"{A}\", \"{B}\"]\n");
    assert_eq!(
        Config::parse(&two, &[])
            .expect("valid")
            .webhooks
            .secrets
            .len(),
        2
    );
    let both = format!("{A} {B}");
    let env = [("WRITEGUARD_WEBHOOKS_SECRET", both.as_str())];
    let c = Config::parse(MINIMAL, &env).expect("valid");
    assert_eq!(c.webhooks.secrets.len(), 2);
    let named = format!("{MINIMAL}\n[webhooks]\nsecret_env = \"HOOK\"\n");
    let env = [("HOOK", A)];
    assert_eq!(
        Config::parse(&named, &env)
            .expect("valid")
            .webhooks
            .secrets
            .len(),
        1
    );
    let bad = format!("{MINIMAL}\n[webhooks]\nsecret = \"whsec_not base64!\"\n");
    let got = issues(&bad);
    assert!(
        got.iter()
            .any(|i| i.starts_with("webhooks.secret: secret #1 is not base64")),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|i| i.contains("not base64!")),
        "the secret is not shown"
    );
}

#[test]
fn github_and_gitlab_sections_are_read_and_checked() {
    let c = Config::parse(MINIMAL, &[]).expect("valid");
    assert!(c.github.secret.is_none() && !c.gitlab.enabled());
    let text = format!(
        "{MINIMAL}\n[github]\nsecret = \"gh-secret\"\nrepository = \"acme/shop\"\n\
         environments = [\"production\"]\nguard_queued = true\n\
         [gitlab]\ntoken_env = \"GL\"\nsigning_secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n\
         project = \"group/sub/shop\"\n"
    );
    let env = [("GL", "gl-token"), ("WRITEGUARD_GITHUB_SECRET", "from-env")];
    let c = Config::parse(&text, &env).expect("valid");
    assert_eq!(
        c.github.secret.as_ref().map(Secret::expose),
        Some("from-env")
    );
    assert_eq!(c.github.repository.as_deref(), Some("acme/shop"));
    assert_eq!(c.github.environments, ["production"]);
    assert!(c.github.guard_queued);
    assert_eq!(
        c.gitlab.token.as_ref().map(Secret::expose),
        Some("gl-token")
    );
    assert!(c.gitlab.signing_secret.is_some() && c.gitlab.enabled());
    assert_eq!(c.gitlab.project.as_deref(), Some("group/sub/shop"));

    let bad = format!(
        "{MINIMAL}\n[github]\nsecret = \"\"\nrepository = \"shop\"\nguard_queud = true\n\
         [gitlab]\nsigning_secret = \"whsec_not base64!\"\nproject = \"/shop\"\n"
    );
    let got = issues(&bad);
    for key in [
        "github.secret: must not be empty",
        "github.repository: must be",
        "github.guard_queud",
        "gitlab.signing_secret: is not base64",
        "gitlab.project: must be",
    ] {
        assert!(got.iter().any(|i| i.starts_with(key)), "{key}: {got:?}");
    }
    assert!(!got.iter().any(|i| i.contains("not base64!")), "{got:?}");

    // Off loopback, a short GitHub secret or GitLab token is refused.
    let exposed = format!(
        "{}\n[github]\nsecret = \"short\"\n[gitlab]\ntoken = \"short\"\n",
        MINIMAL
            .replace("127.0.0.1:8080", "0.0.0.0:8080")
            .replace("a-long-token", "a-long-enough-admin-token")
    );
    let got = issues(&exposed);
    assert!(
        got.iter().any(|i| i.starts_with("github.secret")),
        "{got:?}"
    );
    assert!(got.iter().any(|i| i.starts_with("gitlab.token")), "{got:?}");
}

#[test]
fn every_duration_has_an_upper_bound() {
    let huge = "9223372036854775807s";
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:1\"\nupstream = \"http://a\"\n\
         connect_timeout = \"{huge}\"\nupstream_retry = \"{huge}\"\n\
         header_timeout = \"{huge}\"\nbody_idle_timeout = \"{huge}\"\n\
         body_timeout = \"{huge}\"\nupstream_timeout = \"{huge}\"\n\
         [admin]\ntoken = \"a-long-token\"\n\
         [guard]\nretry_after = \"{huge}\"\nmax_engaged = \"10000y\"\nhold = \"{huge}\"\n\
         [server]\nshutdown_grace = \"{huge}\"\n\
         [stale]\ngrace = \"{huge}\"\n"
    );
    let got = issues(&text);
    let every = Config::parse(MINIMAL, &[]).expect("valid").durations();
    for (key, _) in every {
        assert!(
            got.iter().any(|i| i.starts_with(&format!("{key}: "))),
            "{key} missing from {got:#?}"
        );
    }
    let at_max =
        format!("{MINIMAL}[guard]\nmax_engaged = \"7d\"\nhold = \"1h\"\nretry_after = \"1d\"\n");
    let c = Config::parse(&at_max, &[]).expect("the maxima are valid");
    assert_eq!(c.guard.max_engaged, Duration::from_secs(7 * 86_400));
}

#[test]
fn an_allow_path_covering_everything_is_refused() {
    for p in ["/", "//", "///"] {
        let text = format!("{MINIMAL}[guard]\nallow_paths = [\"/login\", {p:?}]\n");
        let got = issues(&text);
        assert!(
            got.iter()
                .any(|i| i.starts_with("guard.allow_paths") && i.contains("every path")),
            "{p}: {got:#?}"
        );
    }
    let text = format!("{MINIMAL}[guard]\nallow_paths = [\"/login/\"]\n");
    let c = Config::parse(&text, &[]).expect("valid");
    assert_eq!(c.guard.allow_paths, vec!["/login".to_string()]);
}

#[test]
fn the_upgrade_socket_and_pid_file_default_beside_the_state_file() {
    let c = Config::parse(MINIMAL, &[]).expect("valid");
    assert_eq!(
        c.server.upgrade_sock,
        PathBuf::from("var/writeguard.upgrade.sock")
    );
    assert_eq!(c.server.pid_file, PathBuf::from("var/writeguard.pid"));
    let text = format!("{MINIMAL}[state]\npath = \"/srv/wg/state.json\"\n");
    let c = Config::parse(&text, &[]).expect("valid");
    assert_eq!(
        c.server.upgrade_sock,
        PathBuf::from("/srv/wg/writeguard.upgrade.sock")
    );
    assert_eq!(c.server.pid_file, PathBuf::from("/srv/wg/writeguard.pid"));
    let text = format!("{MINIMAL}[state]\npath = \"state.json\"\n");
    let c = Config::parse(&text, &[]).expect("valid");
    assert_eq!(
        c.server.upgrade_sock,
        PathBuf::from("writeguard.upgrade.sock")
    );
    let long = "d".repeat(100);
    let text = format!("{MINIMAL}[state]\npath = \"/{long}/state.json\"\n");
    assert!(issues(&text)
        .iter()
        .any(|i| i.starts_with("server.upgrade_sock")));
}

#[test]
fn example_or_short_secrets_are_refused_on_a_non_loopback_listener() {
    let weak = "[proxy]\nlisten = \"127.0.0.1:8080\"\nupstream = \"http://a\"\n\
                [admin]\ntoken = \"change-me\"\n[upsun]\nshared_key = \"short-key\"\n";
    Config::parse(weak, &[]).expect("fine on loopback");
    for env in [
        [("WRITEGUARD_LISTEN", "0.0.0.0:8080")],
        [("WRITEGUARD_ADMIN_LISTEN", "[::]:9090")],
    ] {
        let got = issues_with(weak, &env);
        assert!(got
            .iter()
            .any(|i| i.starts_with("admin.token: is the example value")));
        assert!(got
            .iter()
            .any(|i| i.starts_with("upsun.shared_key: is shorter")));
    }
    let env = [
        ("WRITEGUARD_LISTEN", "0.0.0.0:8080"),
        ("WRITEGUARD_ADMIN_TOKEN", "0123456789abcdef"),
        ("WRITEGUARD_UPSUN_SHARED_KEY", "fedcba9876543210"),
    ];
    Config::parse(weak, &env).expect("16-byte secrets from the environment");
}

fn issues_with(text: &str, env: &dyn Env) -> Vec<String> {
    match Config::parse(text, env) {
        Err(ParseError::Invalid(i)) => i.into_iter().map(|i| i.to_string()).collect(),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn upstream_with_a_path_is_refused() {
    assert!(parse_upstream("http://a/b").is_err());
    assert!(parse_upstream("http://a/").is_ok());
    assert!(parse_upstream("https://a:8443").is_ok());
}

/// A self-signed certificate for localhost and its key, as PEM files in `dir`.
fn pem_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

fn with_proxy(lines: &str) -> String {
    MINIMAL.replace("[admin]", &format!("{lines}\n[admin]"))
}

fn tls_lines(cert: &Path, key: &Path) -> String {
    format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    )
}

#[test]
fn tls_files_are_read_checked_and_kept_out_of_debug() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = pem_pair(dir.path(), "a");
    let c = Config::parse(&with_proxy(&tls_lines(&cert, &key)), &[]).expect("valid");
    let tls = c.proxy.tls.as_ref().expect("TLS on");
    assert_eq!((&tls.cert, &tls.key), (&cert, &key));
    let key_pem = std::fs::read_to_string(&key).expect("key");
    let body = key_pem.lines().nth(1).expect("a base64 line");
    assert!(!format!("{c:?}").contains(body), "the key shows in Debug");
    assert!(Config::parse(MINIMAL, &[])
        .expect("valid")
        .proxy
        .tls
        .is_none());
}

#[test]
fn tls_problems_are_config_errors_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = pem_pair(dir.path(), "a");
    let (_, other_key) = pem_pair(dir.path(), "b");
    let missing = dir.path().join("missing.crt");
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let cases: [(String, &str); 6] = [
        (tls_lines(&missing, &key), "proxy.tls_cert: cannot read"),
        (tls_lines(&garbage, &key), "proxy.tls_cert:"),
        (tls_lines(&cert, &missing), "proxy.tls_key: cannot read"),
        (tls_lines(&cert, &cert), "proxy.tls_key:"),
        (
            tls_lines(&cert, &other_key),
            "does not go with the certificate",
        ),
        (
            format!("tls_cert = {:?}", cert.display().to_string()),
            "proxy.tls_key: is required",
        ),
    ];
    for (lines, expected) in cases {
        let got = issues(&with_proxy(&lines));
        assert!(
            got.iter().any(|i| i.contains(expected)),
            "{expected:?} not in {got:?}"
        );
    }
}

#[test]
fn the_redirect_listener_needs_tls_and_its_own_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = pem_pair(dir.path(), "a");
    let got = issues(&with_proxy("redirect_listen = [\"127.0.0.1:8081\"]"));
    assert!(
        got.iter()
            .any(|i| i.starts_with("proxy.redirect_listen") && i.contains("tls_cert")),
        "{got:?}"
    );
    let tls = tls_lines(&cert, &key);
    let got = issues(&with_proxy(&format!(
        "{tls}\nredirect_listen = \"127.0.0.1:8080\""
    )));
    assert!(
        got.iter().any(|i| i.contains("also in proxy.listen")),
        "{got:?}"
    );
    let c = Config::parse(
        &with_proxy(&format!("{tls}\nredirect_listen = \"127.0.0.1:8081\"")),
        &[],
    )
    .expect("valid");
    assert_eq!(
        c.proxy.redirect_listen,
        vec!["127.0.0.1:8081".parse().unwrap()]
    );
    assert_eq!(c.proxy.redirect_port, 8080, "the proxy's port by default");
    assert!(c.all_listeners().any(|a| a.port() == 8081));
}

#[test]
fn upstream_host_is_a_host_with_an_optional_port() {
    let c =
        Config::parse(&with_proxy("upstream_host = \"app.example.net:8443\""), &[]).expect("valid");
    assert_eq!(
        c.proxy.upstream_host.expect("set").as_str(),
        "app.example.net:8443"
    );
    for bad in [
        "",
        "user@app.example.net",
        "app example",
        "http://app.example.net",
    ] {
        let got = issues(&with_proxy(&format!("upstream_host = {bad:?}")));
        assert!(
            got.iter().any(|i| i.starts_with("proxy.upstream_host")),
            "{bad:?}: {got:?}"
        );
    }
}

#[test]
fn a_new_certificate_reloads_and_turning_tls_on_needs_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = pem_pair(dir.path(), "a");
    let (cert2, key2) = pem_pair(dir.path(), "b");
    let first = Config::parse(&with_proxy(&tls_lines(&cert, &key)), &[]).expect("valid");
    let renewed = Config::parse(&with_proxy(&tls_lines(&cert2, &key2)), &[]).expect("valid");
    assert!(first.restart_needed_for(&renewed).is_empty());
    assert!(first.proxy.certificate_changes_to(&renewed.proxy).is_some());
    assert!(first.proxy.certificate_changes_to(&first.proxy).is_none());
    let plain = Config::parse(MINIMAL, &[]).expect("valid");
    assert_eq!(plain.restart_needed_for(&first), ["proxy"]);
}

#[test]
fn log_is_text_without_access_lines_by_default() {
    let c = Config::parse(MINIMAL, &[]).expect("valid");
    assert_eq!(c.log, LogConfig::default());
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(!c.log.access);
    assert!(c.admin.metrics_token.is_none());
}

#[test]
fn log_format_and_access_are_read_and_env_wins() {
    let text = format!("{MINIMAL}[log]\nformat = \"json\"\naccess = true\n");
    let c = Config::parse(&text, &[]).expect("valid");
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.log.access);
    let env = [
        ("WRITEGUARD_LOG_FORMAT", "text"),
        ("WRITEGUARD_LOG_ACCESS", "false"),
    ];
    let c = Config::parse(&text, &env).expect("valid");
    assert_eq!(c.log, LogConfig::default());
    let c = Config::parse(MINIMAL, &[("WRITEGUARD_LOG_FORMAT", "json")]).expect("valid");
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn log_mistakes_are_named() {
    let got = issues(&format!(
        "{MINIMAL}[log]\nformat = \"xml\"\naccess = \"yes\"\ncolour = 1\n"
    ));
    for key in ["log.format", "log.access", "log.colour"] {
        assert!(got.iter().any(|i| i.starts_with(key)), "{key}: {got:?}");
    }
    let got = match Config::parse(MINIMAL, &[("WRITEGUARD_LOG_ACCESS", "maybe")]) {
        Err(ParseError::Invalid(i)) => i,
        other => panic!("expected invalid, got {other:?}"),
    };
    assert!(got.iter().any(|i| i.key == "log.access"), "{got:?}");
}

#[test]
fn metrics_token_is_a_secret_with_an_env_override() {
    let text = MINIMAL.replace("[admin]", "[admin]\nmetrics_token = \"scrape-me-please\"");
    let c = Config::parse(&text, &[]).expect("valid");
    assert!(c
        .admin
        .metrics_token
        .as_ref()
        .unwrap()
        .matches(b"scrape-me-please"));
    let c = Config::parse(&text, &[("WRITEGUARD_METRICS_TOKEN", "from-the-env")]).expect("valid");
    assert!(c.admin.metrics_token.unwrap().matches(b"from-the-env"));
    let short = MINIMAL.replace("[admin]", "[admin]\nmetrics_token = \"short\"");
    let got = issues(&short);
    assert!(
        got.iter().any(|i| i.starts_with("admin.metrics_token")),
        "{got:?}"
    );
}

#[test]
fn a_syntax_error_says_where_it_is() {
    let text = "[proxy]\nlisten = \"127.0.0.1:8080\"\nupstream = = \"x\"\n";
    let Err(ParseError::Syntax(e)) = Config::parse(text, &[]) else {
        panic!("expected a syntax error");
    };
    assert_eq!((e.line, e.column), (3, 12), "{e}");
    assert_eq!(e.to_string(), format!("line 3, column 12: {}", e.message));
    // Columns count characters, not bytes.
    let text = "# é\n[proxy]\nlisten = [\"é\" \"x\"]\n";
    let Err(ParseError::Syntax(e)) = Config::parse(text, &[]) else {
        panic!("expected a syntax error");
    };
    assert_eq!((e.line, e.column), (3, 15), "{e}");
}

#[test]
fn an_unknown_key_or_section_names_the_one_it_is_a_typo_of() {
    let text = MINIMAL.replace("[admin]", "connect_timout = \"5s\"\ncolour = 1\n[admin]")
        + "[gaurd]\n[state]\naudit_logs = \"x\"\n";
    assert_eq!(
        issues(&text),
        [
            "proxy.colour: unknown key",
            "proxy.connect_timout: unknown key; did you mean `connect_timeout`?",
            "state.audit_logs: unknown key; did you mean `audit_log`?",
            "gaurd: unknown section or key; did you mean `[guard]`?",
        ]
    );
}

#[test]
fn a_method_typo_is_refused_with_the_method_it_is_close_to() {
    let text = format!("{MINIMAL}[guard]\nmethods = [\"POST\", \"delet\", \"PROPPATCH\"]\n");
    assert_eq!(
        issues(&text),
        ["guard.methods: \"delet\" is not a known HTTP method; did you mean \"DELETE\"?"]
    );
    let text = format!("{MINIMAL}[guard]\nmethods = [\"POST\", \"FROBNICATE\"]\n");
    let c = Config::parse(&text, &[]).expect("a distant name is an extension method");
    assert_eq!(c.guard.methods[1].as_str(), "FROBNICATE");
}

#[test]
fn the_admin_api_on_a_proxy_address_or_an_upstream_looping_back_is_refused() {
    let text = MINIMAL.replace("[admin]", "[admin]\nlisten = \"127.0.0.1:8080\"");
    assert_eq!(
        issues(&text),
        ["admin.listen: 127.0.0.1:8080 overlaps proxy.listen 127.0.0.1:8080: the admin API needs an address of its own"]
    );
    let env = [("WRITEGUARD_UPSTREAM", "http://127.0.0.1:8080")];
    assert_eq!(
        issues_with(MINIMAL, &env),
        ["proxy.upstream: http://127.0.0.1:8080/ is writeguard's own proxy.listen 127.0.0.1:8080: every request would come back to writeguard"]
    );
}

#[test]
fn a_hold_past_a_minute_is_a_warning_not_an_error() {
    assert_eq!(Config::parse(MINIMAL, &[]).unwrap().warnings(), []);
    let text = format!("{MINIMAL}[guard]\nhold = \"60s\"\n");
    assert_eq!(Config::parse(&text, &[]).unwrap().warnings(), []);
    let text = format!("{MINIMAL}[guard]\nhold = \"90s\"\n");
    let warnings = Config::parse(&text, &[]).expect("valid").warnings();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].key, "guard.hold");
    assert!(
        warnings[0]
            .message
            .starts_with("1m 30s is longer than many clients wait"),
        "{warnings:?}"
    );
}

fn explained(text: &str, env: &dyn Env) -> Vec<(String, String)> {
    let (c, sources) = Config::parse_in(text, env, Some(Path::new("/etc/wg"))).expect("valid");
    c.explain(&sources)
        .into_iter()
        .map(|s| (s.to_string(), s.source.to_string()))
        .collect()
}

fn line<'a>(all: &'a [(String, String)], key: &str) -> (&'a str, &'a str) {
    let (setting, source) = all
        .iter()
        .find(|(s, _)| s.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} missing from {all:#?}"));
    (setting, source)
}

#[test]
fn explain_shows_every_value_with_its_source_and_masks_secrets() {
    let text = format!(
        "{MINIMAL}[guard]\nhold = \"2s\"\n[upsun]\nshared_key_env = \"MY_KEY\"\n\
         [state]\nbackend = \"redis\"\nredis_url = \"redis://:hunter2@r/0\"\n"
    );
    let env = [
        ("WRITEGUARD_LISTEN", "127.0.0.1:1"),
        ("MY_KEY", "the-shared-key"),
        ("WRITEGUARD_REDIS_URL", "redis://:swordfish@r/0"),
    ];
    let all = explained(&text, &env);
    assert_eq!(
        line(&all, "proxy.listen"),
        ("proxy.listen = [\"127.0.0.1:1\"]", "env WRITEGUARD_LISTEN")
    );
    assert_eq!(line(&all, "proxy.upstream").1, "file");
    assert_eq!(line(&all, "guard.hold"), ("guard.hold = \"2s\"", "file"));
    assert_eq!(
        line(&all, "guard.retry_after"),
        ("guard.retry_after = \"30s\"", "default")
    );
    assert_eq!(line(&all, "admin.token"), ("admin.token = \"***\"", "file"));
    assert_eq!(
        line(&all, "upsun.shared_key"),
        ("upsun.shared_key = \"***\"", "env MY_KEY")
    );
    assert_eq!(
        line(&all, "state.redis_url"),
        ("state.redis_url = \"***\"", "env WRITEGUARD_REDIS_URL")
    );
    assert_eq!(
        line(&all, "state.path"),
        ("state.path = \"/etc/wg/var/writeguard.state\"", "default")
    );
    let shown = format!("{all:?}");
    for secret in ["a-long-token", "the-shared-key", "hunter2", "swordfish"] {
        assert!(!shown.contains(secret), "{secret} shown");
    }
    // Every setting of the file backend once, in the order of the config table.
    let all = explained(MINIMAL, &[]);
    let keys: Vec<&str> = all
        .iter()
        .map(|(s, _)| s.split(" = ").next().unwrap())
        .collect();
    assert_eq!(keys.len(), 64, "{keys:?}");
    assert!(keys.contains(&"state.audit_log") && !keys.contains(&"state.redis_url"));
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let text = format!(
        "{MINIMAL}[guard]\npage = \"page.html\"\n[state]\npath = \"state/wg.state\"\n\
         audit_log = \"/var/log/wg.jsonl\"\n[server]\nupgrade_sock = \"run/up.sock\"\npid_file = \"wg.pid\"\n"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("page.html"), "<p>wait</p>").expect("page");
    let (c, sources) = Config::parse_in(&text, &[], Some(dir.path())).expect("valid");
    assert_eq!(c.state.path, dir.path().join("state/wg.state"));
    assert_eq!(c.state.audit_log, PathBuf::from("/var/log/wg.jsonl"));
    assert_eq!(c.server.upgrade_sock, dir.path().join("run/up.sock"));
    assert_eq!(c.server.pid_file, dir.path().join("wg.pid"));
    assert_eq!(c.guard.page.as_deref(), Some("<p>wait</p>"));
    let page = c
        .explain(&sources)
        .into_iter()
        .find(|s| s.key == "guard.page")
        .unwrap();
    assert_eq!(page.value, format!("{:?}", dir.path().join("page.html")));
    // The defaults too: the state beside the config, the socket beside the state.
    let (c, _) = Config::parse_in(MINIMAL, &[], Some(Path::new("/etc/wg"))).expect("valid");
    assert_eq!(c.state.path, PathBuf::from("/etc/wg/var/writeguard.state"));
    assert_eq!(
        c.server.pid_file,
        PathBuf::from("/etc/wg/var/writeguard.pid")
    );
    // An empty path is an error, not the config's directory.
    let text = format!("{MINIMAL}[state]\npath = \"\"\n");
    assert!(matches!(
        Config::parse_in(&text, &[], Some(Path::new("/etc/wg"))),
        Err(ParseError::Invalid(i)) if i[0].to_string() == "state.path: must not be empty"
    ));
}

#[test]
fn stale_is_off_by_default_and_reads_sizes_and_its_mode() {
    let c = Config::parse(MINIMAL, &[]).expect("valid");
    assert_eq!(c.stale, StaleConfig::default());
    assert!(!c.stale.enabled);
    let text = format!(
        "{MINIMAL}[stale]\nenabled = true\nmax_bytes = \"8MiB\"\nmax_object = 65536\n\
         grace = \"10m\"\nserve_when = \"upstream-error-or-guarded\"\n"
    );
    let c = Config::parse(&text, &[]).expect("valid");
    assert_eq!(
        c.stale,
        StaleConfig {
            enabled: true,
            max_bytes: 8 << 20,
            max_object: 65536,
            grace: Duration::from_secs(600),
            serve_when: ServeWhen::UpstreamErrorOrGuarded,
        }
    );
}

#[test]
fn stale_refuses_wrong_sizes_and_modes_with_their_keys() {
    let text = format!(
        "{MINIMAL}[stale]\nmax_bytes = \"64MB\"\nmax_object = \"2GiB\"\n\
         serve_when = \"always\"\ngrace = \"8d\"\ncache = true\n"
    );
    let got = issues(&text);
    for key in [
        "stale.max_bytes: is not a size",
        "stale.max_object: 2147483648 bytes is out of range",
        "stale.serve_when: \"always\" is not one of",
        "stale.grace: \"8d\" is out of range",
        "stale.cache: unknown key",
    ] {
        assert!(
            got.iter().any(|i| i.starts_with(key)),
            "{key} missing from {got:#?}"
        );
    }
    let text = format!("{MINIMAL}[stale]\nmax_bytes = \"1MiB\"\nmax_object = \"2MiB\"\n");
    assert_eq!(
        issues(&text),
        ["stale.max_object: must not be larger than max_bytes"]
    );
}
