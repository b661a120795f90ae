//! `writeguard check` as an operator meets it: each diagnostic's exact message and exit code,
//! warnings that do not refuse the config, `--explain`, and relative paths resolved against
//! the config file's directory whatever the working directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{free_port, run, TOKEN};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A valid config on free loopback ports, with `extra` appended (its own sections).
fn config(proxy: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    format!(
        "[proxy]\nlisten = \"{proxy}\"\nupstream = \"http://127.0.0.1:1\"\n\
         [admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n{extra}"
    )
}

/// Writes `text` as `name` in `dir` and runs `check -c <absolute path> args...` from `cwd`.
async fn check(
    cwd: &Path,
    dir: &Path,
    name: &str,
    text: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (PathBuf, Output) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    let path_arg = path.to_string_lossy().into_owned();
    let mut all = vec!["check", "-c", &path_arg];
    all.extend_from_slice(args);
    let out = run(cwd, &all, env).await;
    (path, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_mistake_exactly_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (proxy, admin) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("blocker"),
        "a file where a directory should be",
    )
    .unwrap();
    let cases: Vec<(String, String)> = vec![
        (
            "[proxy]\nlisten = \"127.0.0.1:8080\"\nupstream = = 1\n".into(),
            "is not valid TOML: line 3, column 12: invalid string; expected `\"`, `'`".into(),
        ),
        (
            config(proxy, admin, "").replace("[admin]", "connect_timout = \"5s\"\n[admin]"),
            "has 1 error(s):\n  - proxy.connect_timout: unknown key; did you mean `connect_timeout`?".into(),
        ),
        (
            config(proxy, admin, "[gaurd]\nhold = \"5s\"\n"),
            "has 1 error(s):\n  - gaurd: unknown section or key; did you mean `[guard]`?".into(),
        ),
        (
            config(proxy, admin, "[guard]\nmethods = [\"POST\", \"DELET\"]\n"),
            "has 1 error(s):\n  - guard.methods: \"DELET\" is not a known HTTP method; did you mean \"DELETE\"?".into(),
        ),
        (
            config(proxy, admin, "").replace(&format!("listen = \"{admin}\""), &format!("listen = \"0.0.0.0:{}\"", proxy.port())),
            format!("has 1 error(s):\n  - admin.listen: 0.0.0.0:{0} overlaps proxy.listen {proxy}: the admin API needs an address of its own", proxy.port()),
        ),
        (
            config(proxy, admin, "").replace("http://127.0.0.1:1", &format!("http://localhost:{}", admin.port())),
            format!("has 1 error(s):\n  - proxy.upstream: http://localhost:{}/ is writeguard's own admin.listen {admin}: every request would come back to writeguard", admin.port()),
        ),
        (
            config(proxy, admin, "[state]\npath = \"blocker/wg.state\"\naudit_log = \"/dev/null/../audit\"\n"),
            format!(
                "has 2 error(s):\n  - state.path: cannot create directory {0}/blocker: File exists (os error 17)\n  \
                 - state.audit_log: cannot create directory /dev/null/..: Not a directory (os error 20)",
                dir.path().display()
            ),
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let (path, out) = check(
            dir.path(),
            dir.path(),
            &format!("case{i}.toml"),
            text,
            &[],
            &[],
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "case {i}: stdout:\n{}",
            stdout(&out)
        );
        assert_eq!(
            stderr(&out),
            format!("writeguard: config file {} {expected}\n", path.display()),
            "case {i}"
        );
        assert_eq!(stdout(&out), "", "case {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_a_minute_is_a_warning_and_check_still_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config(free_port(), free_port(), "[guard]\nhold = \"2m\"\n");
    let (_, out) = check(dir.path(), dir.path(), "wg.toml", &text, &[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("config OK: "), "{text}");
    assert_eq!(
        lines[1],
        "warning: guard.hold: 2m is longer than many clients wait for an answer (often 30 to 60 s): \
         they give up with a timeout instead of getting the 503 and its Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_each_value_and_its_source_with_secrets_masked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (proxy, admin) = (free_port(), free_port());
    let overridden = free_port();
    let text = config(
        proxy,
        admin,
        "[guard]\nhold = \"3s\"\n[upsun]\nshared_key_env = \"WG_TEST_KEY\"\n",
    );
    let env = [
        ("WRITEGUARD_LISTEN", overridden.to_string()),
        ("WG_TEST_KEY", "a-shared-key-from-the-env".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_, out) = check(
        dir.path(),
        dir.path(),
        "wg.toml",
        &text,
        &["--explain"],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let text = stdout(&out);
    let setting = |key: &str| -> (String, String) {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing from:\n{text}"));
        let (lhs, source) = line.split_once("  # ").expect("a source");
        (lhs.trim_end().to_string(), source.to_string())
    };
    assert_eq!(
        setting("proxy.listen"),
        (
            format!("proxy.listen = [\"{overridden}\"]"),
            "env WRITEGUARD_LISTEN".into()
        )
    );
    assert_eq!(
        setting("admin.listen"),
        (format!("admin.listen = [\"{admin}\"]"), "file".into())
    );
    assert_eq!(
        setting("admin.token"),
        ("admin.token = \"***\"".into(), "file".into())
    );
    assert_eq!(
        setting("upsun.shared_key"),
        (
            "upsun.shared_key = \"***\"".into(),
            "env WG_TEST_KEY".into()
        )
    );
    assert_eq!(
        setting("guard.hold"),
        ("guard.hold = \"3s\"".into(), "file".into())
    );
    assert_eq!(
        setting("guard.retry_after"),
        ("guard.retry_after = \"30s\"".into(), "default".into())
    );
    for secret in [TOKEN, "a-shared-key-from-the-env"] {
        assert!(!text.contains(secret), "a secret is shown:\n{text}");
    }
    // Every line after the summary is a setting.
    assert!(
        text.lines()
            .skip(1)
            .all(|l| l.contains(" = ") && l.contains("  # ")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_are_relative_to_the_config_file_not_the_working_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("another cwd");
    let conf_dir = dir.path().join("etc");
    std::fs::create_dir(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("page.html"), "<p>back soon</p>").unwrap();
    let text = config(
        free_port(),
        free_port(),
        "[guard]\npage = \"page.html\"\n[state]\npath = \"state/wg.state\"\n\
         [server]\npid_file = \"run/wg.pid\"\n",
    );
    let (_, out) = check(
        elsewhere.path(),
        &conf_dir,
        "wg.toml",
        &text,
        &["--explain"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let text = stdout(&out);
    let etc = conf_dir.display();
    for line in [
        format!("guard.page = \"{etc}/page.html\""),
        format!("state.path = \"{etc}/state/wg.state\""),
        format!("state.audit_log = \"{etc}/state/wg.state.audit.jsonl\""),
        format!("server.upgrade_sock = \"{etc}/state/writeguard.upgrade.sock\""),
        format!("server.pid_file = \"{etc}/run/wg.pid\""),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "{line} missing from:\n{text}"
        );
    }
    // The state directory was proved writable where the config says, not in the cwd.
    assert!(conf_dir.join("state").is_dir());
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);

    // A relative -c works the same: from the config's parent, `-c etc/wg.toml`.
    let out = run(
        dir.path(),
        &["check", "-c", "etc/wg.toml", "--explain"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("state.path = \"{etc}/state/wg.state\"")),
        "{}",
        stdout(&out)
    );
}
