//! The custom maintenance page: its placeholders filled and the reason escaped for browsers,
//! problem+json for API clients, and `check` refusing a page that is not there.

use std::path::Path;

use serde_json::Value;

use crate::common::{free_port, run, Req, Upstream, Wg, BROWSER_ACCEPT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_maintenance_page_gets_its_placeholders_filled_and_the_reason_escaped() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let page_path = dir.path().join("maintenance.html");
    let template = "<!doctype html><title>Busy</title>\n<p id=retry>{{retry_after}}</p>\n<p id=why>{{reason}}</p>\n<p id=since>{{since}}</p>\n<p>again: {{retry_after}}</p>\n";
    std::fs::write(&page_path, template).expect("write page");
    let wg = Wg::for_upstream(&up)
        .guard_line(&format!(
            "page = {}",
            Value::from(page_path.to_string_lossy().as_ref())
        ))
        .start()
        .await;

    let reason = r#"a <b> & "c""#;
    assert_eq!(wg.engage(reason, None).await.status, 201);
    let since = wg.status().await["since"]
        .as_str()
        .expect("since while engaged")
        .to_string();

    let res = wg
        .proxy(
            Req::new("POST", "/orders")
                .header("accept", BROWSER_ACCEPT)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("item=1"),
        )
        .await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        res.header("content-type")
    );
    let retry_after = res.header("retry-after").expect("Retry-After").to_string();
    assert_eq!(retry_after, "30");
    let expected = template
        .replace("{{retry_after}}", &retry_after)
        .replace("{{reason}}", "a &lt;b&gt; &amp; &quot;c&quot;")
        .replace("{{since}}", &since);
    assert_eq!(res.text(), expected);
    assert!(!res.text().contains("<b>"), "the reason was not escaped");

    // API clients still get problem+json, not the page.
    let res = wg
        .proxy(Req::new("POST", "/orders").header("accept", "application/json"))
        .await;
    assert_eq!(res.status, 503);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert_eq!(up.hits(), 0, "a guarded write reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_missing_maintenance_page_naming_guard_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-page.html");
    let config = |page: &Path| {
        Wg::new("http://127.0.0.1:8000")
            .guard_line(&format!(
                "page = {}",
                Value::from(page.to_string_lossy().as_ref())
            ))
            .render(free_port(), free_port(), dir.path())
    };
    let path = dir.path().join("writeguard.toml");
    std::fs::write(&path, config(&missing)).expect("write config");
    let out = run(dir.path(), &["check", "-c", &path.to_string_lossy()], &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("guard.page"), "stderr:\n{stderr}");
    assert!(stderr.contains("no-such-page.html"), "stderr:\n{stderr}");

    // Control: the same config with the page present passes.
    std::fs::write(&missing, "<p>{{reason}}</p>").expect("write page");
    let out = run(dir.path(), &["check", "-c", &path.to_string_lossy()], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
