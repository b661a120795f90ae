//! The operator commands as scripts and people meet them: `--timeout` against an admin port
//! that never answers, each exit code (0 ok, 1 refused or failed, 2 usage or config, 3
//! unreachable or too slow) with a message that says what to do, JSON off a terminal and
//! `--human`, `release` while other engagements remain, `history`, `deploys`, `reload` and
//! `healthcheck`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::common::{self, run, Instance, Req, Upstream, Wg, TOKEN};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            stdout(out),
            stderr(out)
        )
    })
}

/// Asserts the exit code, showing both streams when it differs.
fn exits(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// A loopback listener that accepts every connection and never answers, until dropped.
struct Silent {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Silent { addr, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loopback HTTP server that answers every request with `status` and `body`, until the
/// test process ends.
fn answering(status: &str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn): Result<TcpStream, _> = conn else {
                continue;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(body.as_bytes());
        }
    });
    format!("http://{addr}")
}

async fn operated() -> (Upstream, Instance, tempfile::TempDir) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    (up, wg, tempfile::tempdir().expect("temp dir"))
}

/// `args` followed by `--admin URL --token TOKEN`.
fn with_admin<'a>(args: &[&'a str], admin: &'a str) -> Vec<&'a str> {
    [args, &["--admin", admin, "--token", TOKEN]].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_command_gives_up_on_a_silent_admin_port_with_exit_3() {
    let silent = Silent::start();
    let url = silent.url();
    let cwd = tempfile::tempdir().expect("temp dir");
    let commands: [&[&str]; 8] = [
        &["status"],
        &["engage"],
        &["release"],
        &["history"],
        &["deploys"],
        &["reload"],
        &["healthcheck"],
        // The wait and 5s more for its answer.
        &["engage", "--wait", "quiesced"],
    ];
    let mut runs = Vec::new();
    for args in commands {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["--admin", &url, "--timeout", "1s"].map(String::from));
        if args[0] != "healthcheck" {
            args.extend(["--token".to_owned(), TOKEN.to_owned()]);
        }
        let cwd = cwd.path().to_owned();
        runs.push(tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            (args.join(" "), run(&cwd, &args, &[]).await)
        }));
    }
    // The default timeout is 10s.
    let default = {
        let (cwd, url) = (cwd.path().to_owned(), url.clone());
        tokio::spawn(async move { run(&cwd, &["status", "--admin", &url], &[]).await })
    };
    for done in runs {
        let (what, out) = done.await.expect("task");
        assert_eq!(out.status.code(), Some(3), "{what}: {}", stderr(&out));
        let expected = if what.contains("--wait") {
            "within 6s"
        } else {
            "within 1s"
        };
        assert!(
            stderr(&out).contains(&format!(
                "no answer from the admin API at {url} {expected} (--timeout)"
            )),
            "{what}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{what}: {}", stdout(&out));
    }
    let out = default.await.expect("task");
    exits(&out, 3);
    assert!(stderr(&out).contains("within 10s"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_listening_is_exit_3_and_asks_whether_writeguard_runs_there() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let nowhere = format!("http://{}", common::free_port());
    for args in [
        with_admin(&["status"], &nowhere),
        with_admin(&["engage"], &nowhere),
        vec!["healthcheck", "--admin", &nowhere],
    ] {
        let out = run(cwd.path(), &args, &[]).await;
        exits(&out, 3);
        assert!(
            stderr(&out).contains(&format!(
                "connection refused): is writeguard running at {nowhere}?"
            )),
            "{}",
            stderr(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_and_configs_are_exit_2_and_say_what_to_fix() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let admin = wg.admin_url();
    let config = wg.config_path().to_string_lossy().into_owned();

    // A bad --admin shows the expected form.
    for bad in ["127.0.0.1:9090", "https://127.0.0.1:9090", "not a url"] {
        let out = run(cwd, &["status", "--admin", bad], &[]).await;
        exits(&out, 2);
        assert!(
            stderr(&out).contains("expected http://HOST:PORT, like http://127.0.0.1:9090"),
            "{bad}: {}",
            stderr(&out)
        );
    }

    // Durations in our words, never the parser's.
    for args in [
        &["status", "--timeout", "soon"][..],
        &["engage", "--ttl", "ten"],
        &["engage", "--wait", "all", "--timeout", "5"],
    ] {
        let out = run(cwd, &with_admin(args, &admin), &[]).await;
        exits(&out, 2);
        let raw = args.last().expect("a value");
        assert!(
            stderr(&out).contains(&format!(
                "\"{raw}\" is not a duration like 30s, 10m, 1h 30m"
            )),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // The admin API says the same.
    let res = wg
        .admin(
            Req::new("POST", "/guard")
                .bearer(TOKEN)
                .json(&serde_json::json!({"ttl": "soon"})),
        )
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(
        res.json()["error"],
        "ttl \"soon\" is not a duration like 30s, 10m, 1h 30m"
    );

    // A too-short WRITEGUARD_ADMIN_TOKEN is named, whether or not the command sends it.
    for args in [
        &["engage", "-c", &config][..],
        &["status", "-c", &config],
        &["engage", "--admin", &admin],
    ] {
        let out = run(cwd, args, &[("WRITEGUARD_ADMIN_TOKEN", "tiny")]).await;
        exits(&out, 2);
        assert!(
            stderr(&out).contains("WRITEGUARD_ADMIN_TOKEN") && !stderr(&out).contains("tiny"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // No config to take the admin URL from.
    let out = run(cwd, &["status"], &[]).await;
    exits(&out, 2);
    assert!(
        stderr(&out).contains("pass --admin http://HOST:PORT"),
        "{}",
        stderr(&out)
    );
    // No token from anywhere.
    let out = run(cwd, &["engage", "--admin", &admin], &[]).await;
    exits(&out, 2);
    assert!(
        stderr(&out).contains("no admin token: pass --token or set WRITEGUARD_ADMIN_TOKEN"),
        "{}",
        stderr(&out)
    );
    // Flags clap refuses.
    for args in [
        &["history", "--limit", "0"][..],
        &["status", "--json", "--human"],
        &["engage", "--wait", "soon"],
    ] {
        exits(&run(cwd, &with_admin(args, &admin), &[]).await, 2);
    }
    assert_eq!(wg.status().await["guarded"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_is_exit_1_with_its_message() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let admin = wg.admin_url();

    let out = run(
        cwd,
        &["engage", "--admin", &admin, "--token", "wrong-token-0000"],
        &[],
    )
    .await;
    exits(&out, 1);
    assert!(
        stderr(&out).contains("401 Unauthorized: missing or wrong bearer token")
            && stderr(&out).contains("--token or WRITEGUARD_ADMIN_TOKEN"),
        "{}",
        stderr(&out)
    );
    // For scripts, the error's JSON is on stdout too.
    assert_eq!(json_out(&out)["error"], "missing or wrong bearer token");

    // A ttl above guard.max_engaged: the API's own words.
    let out = run(cwd, &with_admin(&["engage", "--ttl", "100d"], &admin), &[]).await;
    exits(&out, 1);
    assert!(
        stderr(&out).contains("400 Bad Request: ttl must be between"),
        "{}",
        stderr(&out)
    );
    assert_eq!(wg.status().await["guarded"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_exits_1_with_a_hint_while_other_engagements_remain() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let admin = wg.admin_url();
    assert_eq!(wg.engage("by hand", Some("10m")).await.status, 201);
    let res = wg
        .webhook_signed(common::sample("environment.push_in_progress"))
        .await;
    assert_eq!(res.status, 200);

    let out = run(cwd, &with_admin(&["release"], &admin), &[]).await;
    exits(&out, 1);
    let status = json_out(&out);
    assert_eq!(status["guarded"], true);
    assert_eq!(status["engagements"].as_array().map(Vec::len), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("still engaged by 1 other engagement(s): upsun (")
            && err.contains("`writeguard release --all` releases those too"),
        "{err}"
    );

    let out = run(
        cwd,
        &with_admin(&["release", "--all", "--human"], &admin),
        &[],
    )
    .await;
    exits(&out, 0);
    assert!(
        stdout(&out).starts_with("not guarded: writes pass through"),
        "{}",
        stdout(&out)
    );
    assert_eq!(wg.status().await["guarded"], false);
    // Nothing left to release: still 0.
    exits(&run(cwd, &with_admin(&["release"], &admin), &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_json_off_a_terminal_and_for_people_with_human() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let admin = wg.admin_url();

    let out = run(
        cwd,
        &with_admin(
            &[
                "engage",
                "--reason",
                "db migration",
                "--ttl",
                "10m",
                "--human",
            ],
            &admin,
        ),
        &[],
    )
    .await;
    exits(&out, 0);
    let shown = stdout(&out);
    assert!(
        shown.starts_with("engaged: db migration (manual, id ")
            && shown.contains(", expires in 9m"),
        "{shown}"
    );

    let out = run(cwd, &["status", "--admin", &admin, "--human"], &[]).await;
    exits(&out, 0);
    let shown = stdout(&out);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].starts_with("GUARDED since "), "{shown}");
    assert!(
        lines[0].contains("writes are answered 503, Retry-After"),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("ID ") && lines[1].contains("SOURCE  REASON"),
        "{shown}"
    );
    assert!(
        lines[2].contains("  manual  db migration  ") && lines[2].contains("expires in 9m"),
        "{shown}"
    );
    assert_eq!(lines[3], "held writes: 0, writes in flight: 0", "{shown}");
    // One replica (the file backend): no replica table.
    assert_eq!(lines.len(), 4, "{shown}");

    // Piped: JSON, as `--json` gives it.
    let piped = json_out(&run(cwd, &["status", "--admin", &admin], &[]).await);
    let json = json_out(&run(cwd, &["status", "--admin", &admin, "--json"], &[]).await);
    assert_eq!(piped["guarded"], true);
    assert_eq!(piped["engagements"], json["engagements"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_deploys_show_the_audit_log_and_the_deploys_seen() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let admin = wg.admin_url();
    assert_eq!(wg.engage("first", None).await.status, 201);
    assert_eq!(wg.release(false).await.status, 200);

    let out = run(cwd, &with_admin(&["history", "--limit", "1"], &admin), &[]).await;
    exits(&out, 0);
    let records = json_out(&out);
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{records}");
    assert_eq!(records[0]["action"], "release");
    let out = run(cwd, &with_admin(&["history", "--human"], &admin), &[]).await;
    exits(&out, 0);
    let shown = stdout(&out);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[0].starts_with("WHEN (UTC)") && lines[0].contains("ACTION"),
        "{shown}"
    );
    assert!(
        lines[1].contains("release  api") && lines[1].ends_with("not guarded"),
        "{shown}"
    );
    assert!(
        lines[2].contains("engage   api     operator  first") && lines[2].ends_with("guarded"),
        "{shown}"
    );
    // The audit log needs the token.
    exits(
        &run(
            cwd,
            &["history", "--admin", &admin, "--token", "wrong-token-0000"],
            &[],
        )
        .await,
        1,
    );

    let out = run(cwd, &["deploys", "--admin", &admin, "--human"], &[]).await;
    exits(&out, 0);
    assert_eq!(stdout(&out).trim(), "no deploys seen");
    let res = wg
        .webhook_signed(common::sample("environment.push_in_progress"))
        .await;
    assert_eq!(res.status, 200);
    let out = run(cwd, &["deploys", "--admin", &admin], &[]).await;
    exits(&out, 0);
    let deploys = json_out(&out);
    assert_eq!(deploys[0]["type"], "environment.push", "{deploys}");
    let out = run(cwd, &["deploys", "--admin", &admin, "--human"], &[]).await;
    let shown = stdout(&out);
    assert!(
        shown.starts_with("STARTED (UTC)")
            && shown.contains("environment.push")
            && shown.contains("running"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_the_file_and_says_what_changed_or_why_it_was_refused() {
    let up = Upstream::start().await;
    let cfg = Wg::for_upstream(&up).methods(&["POST"]);
    let wg = cfg.clone().start().await;
    let cwd = tempfile::tempdir().expect("temp dir");
    let cwd = cwd.path();
    let config = wg.config_path().to_string_lossy().into_owned();
    let rewrite = |cfg: &Wg| {
        std::fs::write(wg.config_path(), cfg.render(wg.proxy, wg.admin, wg.dir()))
            .expect("rewrite config")
    };

    let out = run(cwd, &["reload", "-c", &config, "--human"], &[]).await;
    exits(&out, 0);
    assert_eq!(stdout(&out).trim(), "config reloaded: nothing changed");

    rewrite(&cfg.clone().methods(&["POST", "PUT"]));
    let out = run(cwd, &["reload", "-c", &config], &[]).await;
    exits(&out, 0);
    let outcome = json_out(&out);
    assert_eq!(outcome["reloaded"], true);
    assert_eq!(outcome["errors"], serde_json::json!([]));
    let changed = outcome["changed"].to_string();
    assert!(
        changed.contains("guard.methods") && changed.contains("PUT"),
        "{outcome}"
    );
    assert!(
        wg.logs().contains("POST /reload: config reloaded"),
        "{}",
        wg.logs()
    );
    assert_eq!(wg.engage("check", None).await.status, 201);
    assert_eq!(
        wg.proxy(wg.proxy_req("PUT", "/x")).await.status,
        503,
        "PUT is guarded now"
    );

    // Refused: an invalid key, and a section that needs a restart. Nothing is applied.
    rewrite(
        &cfg.clone()
            .guard_line("colour = \"blue\"")
            .proxy_line("upstream_retry = \"1s\""),
    );
    let out = run(cwd, &["reload", "-c", &config, "--human"], &[]).await;
    exits(&out, 1);
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("reload refused, the previous config stays in effect:"),
        "{err}"
    );
    assert!(err.contains("guard.colour"), "{err}");
    rewrite(
        &cfg.clone()
            .methods(&["POST", "PUT"])
            .proxy_line("upstream_retry = \"1s\""),
    );
    let out = run(cwd, &["reload", "-c", &config, "--json"], &[]).await;
    exits(&out, 1);
    let outcome = json_out(&out);
    assert_eq!(outcome["reloaded"], false);
    assert!(
        outcome["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("[proxy] changed")),
        "{outcome}"
    );
    assert_eq!(
        wg.proxy(wg.proxy_req("PUT", "/x")).await.status,
        503,
        "the previous config stays"
    );

    // The route needs the token; SIGHUP keeps working (tests/it/reload.rs).
    let res = wg.admin(Req::new("POST", "/reload")).await;
    assert_eq!(res.status, 401);
    let res = wg.admin(Req::get("/reload")).await;
    assert_eq!(res.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_is_0_when_ready_1_when_not_and_needs_no_token() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let out = run(cwd, &["healthcheck", "--admin", &wg.admin_url()], &[]).await;
    exits(&out, 0);
    assert_eq!(stdout(&out).trim(), "ready");
    let config = wg.config_path().to_string_lossy().into_owned();
    exits(&run(cwd, &["healthcheck", "-c", &config], &[]).await, 0);

    let starting = answering("503 Service Unavailable", "starting\n");
    let out = run(cwd, &["healthcheck", "--admin", &starting], &[]).await;
    exits(&out, 1);
    assert!(
        stderr(&out).contains("not ready: /readyz at") && stderr(&out).contains("503"),
        "{}",
        stderr(&out)
    );
    let nowhere = format!("http://{}", common::free_port());
    exits(
        &run(cwd, &["healthcheck", "--admin", &nowhere], &[]).await,
        3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engage_waits_for_quiet_within_its_timeout() {
    let (_up, wg, cwd) = operated().await;
    let cwd = cwd.path();
    let admin = wg.admin_url();
    let out = run(
        cwd,
        &with_admin(
            &[
                "engage",
                "--reason",
                "migrations",
                "--wait",
                "quiesced",
                "--timeout",
                "5s",
            ],
            &admin,
        ),
        &[],
    )
    .await;
    exits(&out, 0);
    assert_eq!(json_out(&out)["reason"], "migrations");
    assert_eq!(wg.status().await["guarded"], true);
}
