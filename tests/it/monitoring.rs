//! Monitoring: `GET /metrics` (parsed strictly; its counters move as requests, 503s, holds
//! and webhooks happen; its own token), the JSON log (every line an object), and the access
//! line: exactly one per request of every kind.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::client::RawConn;
use crate::common::{activity, free_port, sample, Instance, Req, Upstream, Wg};

/// A strict reader of the Prometheus/OpenMetrics text format: every sample belongs to a
/// family declared by `# TYPE` before it, labels are `name="value"` pairs, values are
/// numbers, and the exposition ends with `# EOF`. Returns `name{labels}` -> value, labels as
/// written.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut families: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "text after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect("a family name"));
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("a type");
                    assert!(
                        ["counter", "gauge", "histogram", "info", "unknown"].contains(&t),
                        "{line}"
                    );
                    assert!(families.insert(name.into(), t.into()).is_none(), "{line}");
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("labels of {line:?}"));
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
            }
        }
        let family = families
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("{name} has no # TYPE before it"));
        assert!(
            name == family
                || ["_total", "_bucket", "_count", "_sum", "_info", "_created"]
                    .iter()
                    .any(|s| name == format!("{family}{s}")),
            "{name} is not of family {family}"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{line}"
        );
    }
    assert!(eof, "no # EOF");
    samples
}

async fn scrape(wg: &Instance) -> HashMap<String, f64> {
    let res = wg.admin(Req::get("/metrics")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/openmetrics-text")));
    parse_exposition(&res.text())
}

fn requests(m: &HashMap<String, f64>, outcome: &str) -> f64 {
    m[&format!("writeguard_requests_total{{outcome=\"{outcome}\"}}")]
}

/// Polls `/metrics` until `check` holds (the counters move when an answer's body ends).
async fn scrape_until(
    wg: &Instance,
    check: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(wg).await;
        if check(&m) || Instant::now() > until {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_parse_and_move_with_requests_holds_and_webhooks() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).hold("2s").start().await;
    let m = scrape(&wg).await;
    for family in [
        "writeguard_request_duration_seconds_count",
        "writeguard_upstream_duration_seconds_count",
        "writeguard_guarded",
        "writeguard_engagements",
        "writeguard_held_requests",
        "writeguard_in_flight_writes",
        "writeguard_connections",
        "writeguard_engaged_seconds_total",
        "writeguard_store_ok",
    ] {
        assert!(m.contains_key(family), "{family} missing: {m:?}");
    }
    assert_eq!(m["writeguard_guarded"], 0.0);
    assert_eq!(m["writeguard_store_ok"], 1.0);
    assert!(m
        .keys()
        .any(|k| k.starts_with("writeguard_build_info{version=")));
    for outcome in [
        "forwarded",
        "refused",
        "held_forwarded",
        "held_refused",
        "public",
        "invalid",
        "upstream_error",
    ] {
        assert_eq!(requests(&m, outcome), 0.0, "{outcome}");
    }

    assert_eq!(wg.proxy(Req::get("/page")).await.status, 200);
    assert_eq!(
        wg.proxy(Req::get("/.well-known/writeguard/status"))
            .await
            .status,
        200
    );
    let m = scrape_until(&wg, |m| requests(m, "public") == 1.0).await;
    assert_eq!(requests(&m, "forwarded"), 1.0);
    assert_eq!(requests(&m, "public"), 1.0);
    assert_eq!(m["writeguard_upstream_duration_seconds_count"], 1.0);
    assert_eq!(m["writeguard_request_duration_seconds_count"], 2.0);
    assert!(m["writeguard_connections"] >= 1.0);

    // A webhook with a bad signature, then one that engages.
    let bad = wg
        .webhook(sample("environment.push_in_progress"), Some("x.y.z"))
        .await;
    assert_eq!(bad.status, 401);
    let res = wg
        .webhook_signed(activity("act-1", "environment.push", "in_progress"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let m = scrape(&wg).await;
    assert_eq!(
        m["writeguard_webhooks_total{source=\"upsun\",result=\"bad_signature\"}"],
        1.0
    );
    assert_eq!(
        m["writeguard_webhooks_total{source=\"upsun\",result=\"accepted\"}"],
        1.0
    );
    assert_eq!(m["writeguard_guarded"], 1.0);
    assert_eq!(m["writeguard_engagements"], 1.0);

    // Held until the hold runs out: 503.
    let started = Instant::now();
    assert_eq!(wg.post("/held-out").await.status, 503);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // Held, then released by the deploy's end: forwarded.
    let post = {
        let req = Req::new("POST", "/held-in");
        let addr = wg.proxy;
        tokio::spawn(async move { req.send(addr).await })
    };
    let m = scrape_until(&wg, |m| m["writeguard_held_requests"] == 1.0).await;
    assert_eq!(m["writeguard_held_requests"], 1.0);
    let mut done = sample("environment.push_complete_success");
    {
        let mut v: Value = serde_json::from_slice(&done).unwrap();
        v["id"] = "act-1".into();
        done = serde_json::to_vec(&v).unwrap();
    }
    assert_eq!(wg.webhook_signed(done).await.status, 200);
    assert_eq!(post.await.unwrap().status, 200);
    let m = scrape_until(&wg, |m| requests(m, "held_forwarded") == 1.0).await;
    assert_eq!(requests(&m, "held_refused"), 1.0);
    assert_eq!(requests(&m, "held_forwarded"), 1.0);
    assert_eq!(m["writeguard_guarded"], 0.0);
    assert_eq!(m["writeguard_held_requests"], 0.0);
    assert_eq!(
        m["writeguard_deploys_total{source=\"upsun\",result=\"success\"}"],
        1.0
    );
    assert!(m["writeguard_engaged_seconds_total"] >= 1.5, "{m:?}");
}

#[tokio::test]
async fn the_metrics_token_is_asked_for_once_set() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .admin_line("metrics_token = \"scrape-token-1234\"")
        .start()
        .await;
    assert_eq!(wg.admin(Req::get("/metrics")).await.status, 401);
    let admin_token = wg.cfg.token.clone();
    assert_eq!(
        wg.admin(Req::get("/metrics").bearer(&admin_token))
            .await
            .status,
        401
    );
    let res = wg
        .admin(Req::get("/metrics").bearer("scrape-token-1234"))
        .await;
    assert_eq!(res.status, 200);
    parse_exposition(&res.text());
    assert_eq!(wg.admin(Req::new("POST", "/metrics")).await.status, 405);
}

/// Every log line, parsed; panics on one that is not a JSON object with the four keys.
fn json_lines(wg: &Instance) -> Vec<Value> {
    wg.logs()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            for key in ["timestamp", "level", "target", "message"] {
                assert!(v.get(key).is_some(), "{key} missing in {l}");
            }
            v
        })
        .collect()
}

fn access_lines(wg: &Instance) -> Vec<Value> {
    json_lines(wg)
        .into_iter()
        .filter(|v| v["target"] == "writeguard::access")
        .collect()
}

/// Waits (bounded) until `n` access lines match `pred`; returns how many did.
async fn access_count(wg: &Instance, n: usize, pred: impl Fn(&Value) -> bool) -> usize {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let got = access_lines(wg).iter().filter(|v| pred(v)).count();
        if got >= n || Instant::now() > until {
            // Late duplicates would show up now.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return access_lines(wg).iter().filter(|v| pred(v)).count();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn with_json_access(wg: Wg) -> Wg {
    wg.log_line("format = \"json\"").log_line("access = true")
}

#[tokio::test]
async fn json_logs_and_one_access_line_for_every_kind_of_request() {
    let up = Upstream::start().await;
    let wg = with_json_access(
        Wg::for_upstream(&up)
            .hold("2s")
            .proxy_line("max_header_size = 16384"),
    )
    .start()
    .await;
    let path_is = |p: &'static str| move |v: &Value| v["path"] == p;

    // Forwarded, the query string left out.
    assert_eq!(
        wg.proxy(Req::get("/k-forwarded?secret=1")).await.status,
        200
    );
    assert_eq!(access_count(&wg, 1, path_is("/k-forwarded")).await, 1);
    let line = access_lines(&wg)
        .into_iter()
        .find(|v| v["path"] == "/k-forwarded")
        .unwrap();
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 200);
    assert_eq!(line["outcome"], "forwarded");
    assert_eq!(line["level"], "INFO");
    assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(line["elapsed_us"].as_u64().is_some());
    assert!(line["bytes_in"].as_u64() == Some(0));
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    assert!(!wg.logs().contains("secret=1"));

    // A public route.
    assert_eq!(
        wg.proxy(Req::get("/.well-known/writeguard/status"))
            .await
            .status,
        200
    );
    let public =
        |v: &Value| v["path"] == "/.well-known/writeguard/status" && v["outcome"] == "public";
    assert_eq!(access_count(&wg, 1, public).await, 1);

    // 414, 405.
    let long = format!("/k-long-{}", "a".repeat(9000));
    assert_eq!(wg.proxy(Req::get(&long)).await.status, 414);
    let too_long = |v: &Value| {
        v["status"] == 414 && v["outcome"] == "invalid" && v["path"].as_str().unwrap().len() == 1024
    };
    assert_eq!(access_count(&wg, 1, too_long).await, 1);
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await;
    assert_eq!(conn.read_response(true).await.status, 405);
    let connect = |v: &Value| v["status"] == 405 && v["method"] == "CONNECT";
    assert_eq!(access_count(&wg, 1, connect).await, 1);

    // Framing refusals: 400 (two Content-Length), 431 (a head too large).
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(
        b"POST /k-smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    )
    .await;
    assert_eq!(conn.read_response(false).await.status, 400);
    let framing = |v: &Value| v["status"] == 400 && v["outcome"] == "invalid";
    assert_eq!(access_count(&wg, 1, framing).await, 1);
    let mut conn = RawConn::connect(wg.proxy).await;
    let big = format!(
        "GET /k-big HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    conn.write(big.as_bytes()).await;
    assert_eq!(conn.read_response(false).await.status, 431);
    let head = |v: &Value| v["status"] == 431 && v["outcome"] == "invalid";
    assert_eq!(access_count(&wg, 1, head).await, 1);

    // Held, then answered: refused when the hold runs out, forwarded on the release.
    crate::common::engaged(&wg).await;
    assert_eq!(wg.post("/k-held-out").await.status, 503);
    let held_out = |v: &Value| v["path"] == "/k-held-out" && v["outcome"] == "held_refused";
    assert_eq!(access_count(&wg, 1, held_out).await, 1);
    let post = {
        let req = Req::new("POST", "/k-held-in").body("four");
        let addr = wg.proxy;
        tokio::spawn(async move { req.send(addr).await })
    };
    let until = Instant::now() + Duration::from_secs(5);
    while wg.status().await["held"] != 1 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::common::released(&wg).await;
    assert_eq!(post.await.unwrap().status, 200);
    let held_in = |v: &Value| v["path"] == "/k-held-in" && v["outcome"] == "held_forwarded";
    assert_eq!(access_count(&wg, 1, held_in).await, 1);
    let line = access_lines(&wg)
        .into_iter()
        .find(|v| v["path"] == "/k-held-in")
        .unwrap();
    assert_eq!(line["bytes_in"], 4);

    // Admin requests get their line too, with their port.
    let admin = |v: &Value| v["port"] == "admin" && v["path"] == "/status";
    assert!(access_count(&wg, 1, admin).await >= 1);

    // The webhook's span: a bad signature is logged inside it, with the port.
    assert_eq!(
        wg.webhook(sample("environment.push_in_progress"), Some("x.y.z"))
            .await
            .status,
        401
    );
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let found = json_lines(&wg).into_iter().any(|v| {
            v["target"] != "writeguard::access"
                && v["span"]["name"] == "webhook"
                && v["span"]["port"] == "admin"
                && v["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("bad signature")
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < until,
            "no webhook span line:\n{}",
            wg.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn refusals_and_upstream_errors_get_their_line_and_count() {
    let dead = free_port();
    let wg = with_json_access(Wg::new(format!("http://{dead}")).hold("0s"))
        .start()
        .await;
    assert_eq!(wg.post("/k-upstream").await.status, 502);
    let upstream = |v: &Value| v["path"] == "/k-upstream" && v["outcome"] == "upstream_error";
    assert_eq!(access_count(&wg, 1, upstream).await, 1);
    crate::common::engaged(&wg).await;
    assert_eq!(wg.post("/k-refused").await.status, 503);
    let refused = |v: &Value| v["path"] == "/k-refused" && v["outcome"] == "refused";
    assert_eq!(access_count(&wg, 1, refused).await, 1);
    let m = scrape(&wg).await;
    assert_eq!(requests(&m, "upstream_error"), 1.0);
    assert_eq!(requests(&m, "refused"), 1.0);
    assert_eq!(requests(&m, "forwarded"), 0.0);
}

#[tokio::test]
async fn access_lines_are_off_by_default() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    assert_eq!(wg.proxy(Req::get("/k-quiet")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!wg.logs().contains("/k-quiet"), "{}", wg.logs());
}

#[tokio::test]
async fn the_dashboard_and_alerts_use_only_exposed_names() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let exposed = wg.admin(Req::get("/metrics")).await.text();
    for doc in ["docs/grafana-dashboard.json", "docs/alerts.yaml"] {
        let text =
            std::fs::read_to_string(format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        if doc.ends_with(".json") {
            serde_json::from_str::<Value>(&text).expect("the dashboard is JSON");
        }
        let mut rest = text.as_str();
        let mut seen = 0;
        while let Some(at) = rest.find("writeguard_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            if name.ends_with('_') {
                continue;
            }
            assert!(
                exposed.contains(&name),
                "{doc} uses {name}, which /metrics does not expose"
            );
            seen += 1;
        }
        assert!(seen > 3, "{doc}");
    }
}
