//! The command line as users run it: `check` on good and broken configs, and the operator
//! client (`engage`, `status`, `release`) against a running instance.

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::common;
use crate::common::{run, Instance, Req, Upstream, Wg, TOKEN};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            stdout(out),
            stderr(out)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_a_good_config_with_one_summary_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The proxy address is taken while `check` runs: it must not try to open it.
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr");
    let text = Wg::new("http://127.0.0.1:8000").render(busy_addr, common::free_port(), dir.path());
    let path = dir.path().join("good.toml");
    std::fs::write(&path, text).expect("write config");

    let path_arg = path.to_string_lossy().into_owned();
    let out = run(dir.path(), &["check", "-c", &path_arg], &[]).await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one summary line, got:\n{text}");
    assert!(lines[0].contains(&busy_addr.to_string()), "{}", lines[0]);
    // It may create the state directory (to prove it can write there), never the state.
    let state_dir = dir.path().join("state");
    assert!(
        !state_dir.join("writeguard.state").exists()
            && std::fs::read_dir(&state_dir).map_or(true, |mut d| d.next().is_none()),
        "check wrote state"
    );

    // `--config` and WRITEGUARD_CONFIG work the same way.
    let out = run(dir.path(), &["check", "--config", &path_arg], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let out = run(dir.path(), &["check"], &[("WRITEGUARD_CONFIG", &path_arg)]).await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    drop(busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_the_shipped_example_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(root, &["check", "-c", "config/writeguard.toml"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert_eq!(stdout(&out).trim().lines().count(), 1, "{}", stdout(&out));
    // And it is the default path.
    let out = run(root, &["check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_error_with_its_key_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = r#"
[proxy]
listen = ["not-an-address"]
upstream = "ftp://example.com"
colour = "blue"

[admin]
listen = "127.0.0.1:9090"
token = "short"

[guard]
methods = ["GET", "PO ST"]
retry_after = "soon"
max_engaged = "0s"
allow_paths = ["login"]

[upsun]
allow_unsigned = "yes"

[extra]
key = 1
"#;
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, broken).expect("write config");
    let out = run(dir.path(), &["check", "-c", &path.to_string_lossy()], &[]).await;
    assert_eq!(out.status.code(), Some(2), "stdout:\n{}", stdout(&out));
    let report = format!("{}{}", stdout(&out), stderr(&out));
    for key in [
        "proxy.listen",
        "proxy.upstream",
        "proxy.colour",
        "admin.token",
        "guard.methods",
        "guard.retry_after",
        "guard.max_engaged",
        "guard.allow_paths",
        "upsun.allow_unsigned",
        "extra",
    ] {
        assert!(report.contains(key), "{key} missing from:\n{report}");
    }
    // The bad values are named too, so the user can find them.
    for value in ["not-an-address", "ftp://example.com", "soon", "PO ST"] {
        assert!(report.contains(value), "{value} missing from:\n{report}");
    }

    // Not TOML at all, and a missing file: exit 2 as well.
    let path = dir.path().join("syntax.toml");
    std::fs::write(&path, "[proxy\nlisten = ").expect("write config");
    let out = run(dir.path(), &["check", "-c", &path.to_string_lossy()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).is_empty());
    let out = run(dir.path(), &["check", "-c", "does/not/exist.toml"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does/not/exist.toml"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_applies_the_environment_overrides() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = Wg::new("http://127.0.0.1:8000").render(
        common::free_port(),
        common::free_port(),
        dir.path(),
    );
    let path = dir.path().join("good.toml");
    std::fs::write(&path, text).expect("write config");
    let path = path.to_string_lossy().into_owned();
    let out = run(
        dir.path(),
        &["check", "-c", &path],
        &[("WRITEGUARD_UPSTREAM", "gopher://nope")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("proxy.upstream"), "{}", stderr(&out));
    let out = run(
        dir.path(),
        &["check", "-c", &path],
        &[("WRITEGUARD_ADMIN_TOKEN", "tiny")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("admin.token"), "{}", stderr(&out));
}

/// An instance for the operator client to drive, and an empty directory to run it in (no
/// config there: what it needs comes from flags, `-c` or the env).
async fn operated() -> (Upstream, Instance, tempfile::TempDir) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    (up, wg, tempfile::tempdir().expect("temp dir"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cli_engages_shows_and_releases() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let admin = wg.admin_url();

    let out = run(
        cwd,
        &[
            "engage",
            "--reason",
            "db migration",
            "--ttl",
            "10m",
            "--admin",
            &admin,
            "--token",
            TOKEN,
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "engage failed:\n{}", stderr(&out));
    let created = stdout_json(&out);
    assert_eq!(created["reason"], "db migration");
    assert_eq!(created["source"], "manual");

    let doc = wg.status().await;
    assert_eq!(doc["guarded"], true);
    assert_eq!(doc["engagements"][0], created);
    assert_eq!(wg.post("/orders").await.status, 503);

    let out = run(cwd, &["status", "--admin", &admin], &[]).await;
    assert!(out.status.success(), "status failed:\n{}", stderr(&out));
    let shown = stdout_json(&out);
    assert_eq!(shown["guarded"], true);
    assert_eq!(shown["engagements"][0]["reason"], "db migration");

    let out = run(cwd, &["release", "--admin", &admin, "--token", TOKEN], &[]).await;
    assert!(out.status.success(), "release failed:\n{}", stderr(&out));
    assert_eq!(stdout_json(&out)["guarded"], false);
    assert_eq!(wg.status().await["guarded"], false);
    assert_eq!(wg.post("/orders").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cli_refuses_a_wrong_token_and_changes_nothing() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let admin = wg.admin_url();

    let out = run(
        cwd,
        &[
            "engage",
            "--reason",
            "x",
            "--admin",
            &admin,
            "--token",
            "wrong-token-0000",
        ],
        &[],
    )
    .await;
    assert!(
        !out.status.success(),
        "a wrong token engaged:\n{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    // Without any token at all.
    let out = run(cwd, &["engage", "--admin", &admin], &[]).await;
    assert!(!out.status.success());
    assert_eq!(wg.status().await["guarded"], false);

    assert_eq!(wg.engage("real", None).await.status, 201);
    let out = run(
        cwd,
        &[
            "release",
            "--all",
            "--admin",
            &admin,
            "--token",
            "wrong-token-0000",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(wg.status().await["guarded"], true);

    // An admin API nobody listens on is a failure too, not a hang.
    let nowhere = format!("http://{}", common::free_port());
    let out = run(cwd, &["status", "--admin", &nowhere], &[]).await;
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cli_takes_its_defaults_from_the_config_and_env() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let config = wg.config_path().to_string_lossy().into_owned();

    // Admin URL and token from `-c`.
    let out = run(cwd, &["engage", "-c", &config, "--ttl", "5m"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(wg.status().await["guarded"], true);
    let out = run(cwd, &["status"], &[("WRITEGUARD_CONFIG", &config)]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["guarded"], true);

    // Token from WRITEGUARD_ADMIN_TOKEN.
    let admin = wg.admin_url();
    let out = run(
        cwd,
        &["release", "--admin", &admin],
        &[("WRITEGUARD_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(wg.status().await["guarded"], false);

    // `release --all` also drops Upsun engagements.
    let res = wg
        .webhook_signed(common::sample("environment.push_in_progress"))
        .await;
    assert_eq!(res.json()["guarded"], true);
    let out = run(cwd, &["release", "-c", &config], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "still engaged: {}",
        stderr(&out)
    );
    assert_eq!(wg.status().await["guarded"], true);
    let out = run(cwd, &["release", "--all", "-c", &config], &[]).await;
    assert!(out.status.success());
    assert_eq!(wg.status().await["guarded"], false);
    assert_eq!(wg.admin(Req::get("/healthz")).await.status, 200);
}
