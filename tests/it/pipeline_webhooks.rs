//! GitHub `deployment_status` and GitLab Deployment Hook webhooks, seen from outside: the
//! answer, `/status`, `/deploys`, the audit, the metrics, and whether a POST through the
//! proxy reaches the app. Bodies are the published example payloads
//! (tests/fixtures/github, tests/fixtures/gitlab) with their state and ids changed.

use serde_json::Value;

use crate::common::{writes_blocked, Instance, Req, Resp, Upstream, Wg};
use writeguard::stdwebhook::{sign as sign_std, Key};

/// GitHub's documented example secret.
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITLAB_TOKEN: &str = "gitlab-token-0123456789";
const GITLAB_SIGNING: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_slice(&text).expect("fixtures are JSON")
}

/// The octokit example with this deployment, status id and state.
fn github_status(deployment: u64, status: u64, state: &str) -> String {
    let mut v = fixture("github/deployment_status.json");
    v["deployment"]["id"] = deployment.into();
    v["deployment_status"]["id"] = status.into();
    v["deployment_status"]["state"] = state.into();
    v.to_string()
}

/// The GitLab documentation's example with this deployment, status and change time.
fn gitlab_deployment(id: u64, status: &str, changed_at: &str) -> String {
    let mut v = fixture("gitlab/deployment.json");
    v["deployment_id"] = id.into();
    v["status"] = status.into();
    v["status_changed_at"] = changed_at.into();
    v.to_string()
}

/// `POST /webhooks/github` of `body`, signed with `secret`, as `event`, delivery `delivery`.
fn github_req(path: &str, secret: &str, event: &str, delivery: &str, body: &str) -> Req {
    let sig = writeguard::github::sign(secret.as_bytes(), body.as_bytes());
    Req::new("POST", path)
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", &sig)
        .body(body.to_owned())
}

async fn github(wg: &Instance, event: &str, delivery: &str, body: &str) -> Resp {
    let req = github_req("/webhooks/github", GITHUB_SECRET, event, delivery, body);
    wg.admin(req).await
}

/// A `deployment_status` of `deployment` (status id `id`, `state`) as delivery `delivery`.
async fn status(wg: &Instance, delivery: &str, deployment: u64, id: u64, state: &str) -> Resp {
    let body = github_status(deployment, id, state);
    github(wg, "deployment_status", delivery, &body).await
}

async fn gitlab(wg: &Instance, token: &str, key: Option<&str>, body: &str) -> Resp {
    let mut req = Req::new("POST", "/webhooks/gitlab")
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Deployment Hook")
        .header("x-gitlab-token", token);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    wg.admin(req.body(body.to_owned())).await
}

async fn with_github(lines: &str) -> (Upstream, Instance) {
    let up = Upstream::start().await;
    let section = format!("[github]\nsecret = {}\n{lines}", Value::from(GITHUB_SECRET));
    let wg = Wg::for_upstream(&up).section(&section).start().await;
    (up, wg)
}

async fn with_gitlab(lines: &str) -> (Upstream, Instance) {
    let up = Upstream::start().await;
    let section = format!("[gitlab]\n{lines}");
    let wg = Wg::for_upstream(&up).section(&section).start().await;
    (up, wg)
}

#[track_caller]
fn assert_ok(res: &Resp, guarded: bool, ignored: bool) {
    assert_eq!(res.status, 200, "{}", res.text());
    let doc = res.json();
    assert_eq!(doc["accepted"], true, "{doc}");
    if doc.get("guarded").is_some() {
        assert_eq!(doc["guarded"], guarded, "{doc}");
    }
    assert_eq!(doc.get("ignored").is_some(), ignored, "{doc}");
}

/// `writeguard_<family>_total{source, result}` in `/metrics`.
async fn counted(wg: &Instance, family: &str, source: &str, result: &str) -> f64 {
    let sample = format!("writeguard_{family}_total{{source=\"{source}\",result=\"{result}\"}}");
    let text = wg.admin(Req::get("/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_in_progress_engages_and_success_releases() {
    let (up, wg) = with_github("repository = \"codertocat/hello-world\"").await;
    let res = status(&wg, "d-1", 145988746, 1, "in_progress").await;
    assert_ok(&res, true, false);
    assert!(writes_blocked(&wg, &up).await);
    let status = wg.status().await;
    let e = &status["engagements"][0];
    assert_eq!(e["id"], "github:145988746", "{status}");
    assert_eq!(e["source"], "github", "{status}");
    assert_eq!(e["reason"], "GitHub deployment to production in progress");

    // The published payload as it is: the same deployment's success.
    let published = fixture("github/deployment_status.json").to_string();
    let res = github(&wg, "deployment_status", "d-2", &published).await;
    assert_ok(&res, false, false);
    assert!(!writes_blocked(&wg, &up).await);

    let deploys = wg.admin(Req::get("/deploys")).await.json();
    let d = &deploys[0];
    assert_eq!(d["id"], "github:145988746", "{deploys}");
    assert_eq!(d["result"], "success", "{deploys}");
    let history = wg
        .admin(Req::get("/history").bearer(&wg.cfg.token))
        .await
        .json();
    let sources: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["source"].as_str())
        .collect();
    assert_eq!(sources, ["github", "github"], "{history}");
    assert_eq!(counted(&wg, "deploys", "github", "success").await, 1.0);
    assert_eq!(counted(&wg, "webhooks", "github", "accepted").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_statuses_apply_in_order_and_deliveries_once() {
    let (up, wg) = with_github("").await;
    // A re-run: in_progress (status 6) is delivered before the failure (status 5) it
    // follows. The late failure is older: ignored, the guard stays.
    let res = status(&wg, "d-6", 7, 6, "in_progress").await;
    assert_ok(&res, true, false);
    let res = status(&wg, "d-5", 7, 5, "failure").await;
    assert_ok(&res, true, true);
    assert!(writes_blocked(&wg, &up).await);
    // A redelivery of a delivery already taken: ignored, whatever it says.
    let res = status(&wg, "d-6", 7, 8, "success").await;
    assert_ok(&res, true, true);
    assert!(res.json()["ignored"]
        .as_str()
        .unwrap()
        .contains("already delivered"));
    assert!(wg.guarded().await);
    // The newest status ends it; a later start of the same deployment never re-engages.
    let res = status(&wg, "d-8", 7, 8, "success").await;
    assert_ok(&res, false, false);
    let res = status(&wg, "d-9", 7, 9, "in_progress").await;
    assert_ok(&res, false, true);
    assert!(!writes_blocked(&wg, &up).await);
    // A duplicate end (another delivery) is acknowledged and counted once.
    let res = status(&wg, "d-10", 7, 10, "inactive").await;
    assert_ok(&res, false, true);
    assert_eq!(counted(&wg, "deploys", "github", "success").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_bad_signatures_and_bodies_change_nothing() {
    let (_up, wg) = with_github("").await;
    let body = github_status(1, 1, "in_progress");
    let wrong = github_req(
        "/webhooks/github",
        "another secret",
        "deployment_status",
        "x1",
        &body,
    );
    assert_eq!(wg.admin(wrong).await.status, 401);
    let missing = Req::new("POST", "/webhooks/github")
        .header("x-github-event", "deployment_status")
        .body(body.clone());
    let res = wg.admin(missing).await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(res.text().contains("X-Hub-Signature-256"), "{}", res.text());
    // Signed, then changed on the way: refused.
    let tampered = github_req(
        "/webhooks/github",
        GITHUB_SECRET,
        "deployment_status",
        "x2",
        &body,
    )
    .body(body.replace("in_progress", "in_progresS"));
    assert_eq!(wg.admin(tampered).await.status, 401);
    assert!(!wg.guarded().await);
    assert_eq!(
        counted(&wg, "webhooks", "github", "bad_signature").await,
        3.0
    );

    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 << 20));
    let res = github(&wg, "deployment_status", "x3", &big).await;
    assert_eq!(res.status, 413, "{}", res.text());
    let res = github(&wg, "deployment_status", "x4", "{\"deployment\":{}}").await;
    assert_eq!(res.status, 400, "{}", res.text());
    // A ping (sent when the webhook is created) and other events: acknowledged, ignored.
    let ping = r#"{"zen":"Design for failure.","hook_id":1}"#;
    assert_ok(&github(&wg, "ping", "x5", ping).await, false, true);
    assert_ok(&github(&wg, "push", "x6", &body).await, false, true);
    // A state that waits: ignored without guard_queued.
    let res = status(&wg, "x7", 2, 1, "queued").await;
    assert_ok(&res, false, true);
    assert!(!wg.guarded().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_scope_queued_and_form_encoded_payloads() {
    let (up, wg) = with_github(
        "repository = \"Codertocat/Hello-World\"\nenvironments = [\"production\"]\nguard_queued = true",
    )
    .await;
    let mut other_repo: Value = serde_json::from_str(&github_status(1, 1, "in_progress")).unwrap();
    other_repo["repository"]["full_name"] = "someone/else".into();
    let res = github(&wg, "deployment_status", "s1", &other_repo.to_string()).await;
    assert_ok(&res, false, true);
    let mut staging: Value = serde_json::from_str(&github_status(1, 1, "in_progress")).unwrap();
    staging["deployment_status"]["environment"] = "staging".into();
    let res = github(&wg, "deployment_status", "s2", &staging.to_string()).await;
    assert_ok(&res, false, true);
    assert!(!writes_blocked(&wg, &up).await);

    // GitHub's default content type: payload=<JSON>, signed as sent.
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &github_status(3, 1, "queued"))
        .finish();
    let sig = writeguard::github::sign(GITHUB_SECRET.as_bytes(), form.as_bytes());
    let req = Req::new("POST", "/webhooks/github")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "deployment_status")
        .header("x-github-delivery", "s3")
        .header("x-hub-signature-256", &sig)
        .body(form);
    assert_ok(&wg.admin(req).await, true, false);
    assert!(writes_blocked(&wg, &up).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_without_a_secret_is_refused_and_the_public_prefix_takes_it_with_one() {
    let up = Upstream::start().await;
    let plain = Wg::for_upstream(&up).start().await;
    let body = github_status(1, 1, "in_progress");
    let res = github(&plain, "deployment_status", "p0", &body).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let public = github_req(
        "/.well-known/writeguard/github",
        GITHUB_SECRET,
        "deployment_status",
        "p1",
        &body,
    );
    assert_eq!(plain.proxy(public).await.status, 404);
    assert!(!plain.guarded().await);

    let (up, wg) = with_github("").await;
    let public = github_req(
        "/.well-known/writeguard/github",
        GITHUB_SECRET,
        "deployment_status",
        "p1",
        &body,
    );
    assert_ok(&wg.proxy(public).await, true, false);
    assert!(writes_blocked(&wg, &up).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_running_engages_and_success_releases() {
    let (up, wg) = with_gitlab(&format!(
        "token = \"{GITLAB_TOKEN}\"\nproject = \"root/test-deployment-webhooks\"\nenvironments = [\"staging\"]"
    ))
    .await;
    let running = gitlab_deployment(15, "running", "2021-04-28 21:48:00 +0200");
    assert_ok(
        &gitlab(&wg, GITLAB_TOKEN, Some("k1"), &running).await,
        true,
        false,
    );
    assert!(writes_blocked(&wg, &up).await);
    let status = wg.status().await;
    let e = &status["engagements"][0];
    assert_eq!(e["id"], "gitlab:15", "{status}");
    assert_eq!(e["source"], "gitlab", "{status}");

    // The documented payload as it is: the same deployment's success.
    let documented = fixture("gitlab/deployment.json").to_string();
    assert_ok(
        &gitlab(&wg, GITLAB_TOKEN, Some("k2"), &documented).await,
        false,
        false,
    );
    assert!(!writes_blocked(&wg, &up).await);
    let deploys = wg.admin(Req::get("/deploys")).await.json();
    assert_eq!(deploys[0]["id"], "gitlab:15", "{deploys}");
    assert_eq!(deploys[0]["result"], "success", "{deploys}");
    assert_eq!(counted(&wg, "deploys", "gitlab", "success").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_order_duplicates_scope_and_bad_input() {
    let (up, wg) = with_gitlab(&format!(
        "token = \"{GITLAB_TOKEN}\"\nproject = \"root/test-deployment-webhooks\""
    ))
    .await;
    let running = gitlab_deployment(20, "running", "2021-04-28 21:50:00 +0200");
    // A wrong or missing token: 401, nothing changes.
    let res = gitlab(&wg, "gitlab-token-wrong", None, &running).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let res = wg
        .admin(Req::new("POST", "/webhooks/gitlab").body(running.clone()))
        .await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(!wg.guarded().await);

    assert_ok(
        &gitlab(&wg, GITLAB_TOKEN, Some("k1"), &running).await,
        true,
        false,
    );
    // A failure that happened before the running status (in another time zone), delivered
    // after it: older, ignored.
    let earlier = gitlab_deployment(20, "failed", "2021-04-28 19:49:00 +0000");
    assert_ok(
        &gitlab(&wg, GITLAB_TOKEN, Some("k2"), &earlier).await,
        true,
        true,
    );
    // A retry of a delivery already taken (same Idempotency-Key): ignored.
    let later = gitlab_deployment(20, "canceled", "2021-04-28 21:55:00 +0200");
    let res = gitlab(&wg, GITLAB_TOKEN, Some("k1"), &later).await;
    assert_ok(&res, true, true);
    assert!(writes_blocked(&wg, &up).await);

    // Another project, another kind of event, a bad timestamp, a big body: nothing changes.
    let mut other: Value = serde_json::from_str(&later).unwrap();
    other["project"]["path_with_namespace"] = "someone/else".into();
    assert_ok(
        &gitlab(&wg, GITLAB_TOKEN, None, &other.to_string()).await,
        true,
        true,
    );
    let push = r#"{"object_kind":"push","ref":"refs/heads/main"}"#;
    assert_ok(&gitlab(&wg, GITLAB_TOKEN, None, push).await, true, true);
    let rfc3339 = gitlab_deployment(20, "success", "2021-04-28T21:55:00+02:00");
    let res = gitlab(&wg, GITLAB_TOKEN, None, &rfc3339).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.text().contains("status_changed_at"), "{}", res.text());
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 << 20));
    assert_eq!(gitlab(&wg, GITLAB_TOKEN, None, &big).await.status, 413);
    assert!(writes_blocked(&wg, &up).await);

    // The newer end releases.
    assert_ok(
        &gitlab(&wg, GITLAB_TOKEN, Some("k3"), &later).await,
        false,
        false,
    );
    assert!(!writes_blocked(&wg, &up).await);
    assert_eq!(counted(&wg, "deploys", "gitlab", "cancelled").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_signing_token_follows_standard_webhooks() {
    let (up, wg) = with_gitlab(&format!("signing_secret = \"{GITLAB_SIGNING}\"")).await;
    let key = Key::parse(GITLAB_SIGNING).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signed = |id: &str, ts: i64, body: &str, signature: Option<String>| {
        let sig = signature.unwrap_or_else(|| sign_std(&key, id, ts, body.as_bytes()));
        Req::new("POST", "/webhooks/gitlab")
            .header("webhook-id", id)
            .header("webhook-timestamp", &ts.to_string())
            .header("webhook-signature", &sig)
            .body(body.to_owned())
    };
    let running = gitlab_deployment(30, "running", "2021-04-28 21:50:00 +0200");
    // No signature, a wrong one, one outside the tolerance: 401.
    let res = wg
        .admin(Req::new("POST", "/webhooks/gitlab").body(running.clone()))
        .await;
    assert_eq!(res.status, 401, "{}", res.text());
    let wrong = signed("m1", now, &running, Some("v1,AAAA".into()));
    assert_eq!(wg.admin(wrong).await.status, 401);
    let stale = signed("m1", now - 301, &running, None);
    assert_eq!(wg.admin(stale).await.status, 401);
    assert!(!wg.guarded().await);

    assert_ok(
        &wg.admin(signed("m1", now, &running, None)).await,
        true,
        false,
    );
    assert!(writes_blocked(&wg, &up).await);
    // The same message again (a replay within the tolerance): ignored.
    let success = gitlab_deployment(30, "success", "2021-04-28 21:52:00 +0200");
    let replay = signed("m1", now, &success, None);
    assert_ok(&wg.admin(replay).await, true, true);
    assert_ok(
        &wg.admin(signed("m2", now, &success, None)).await,
        false,
        false,
    );
    assert!(!writes_blocked(&wg, &up).await);
}
