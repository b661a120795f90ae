//! Signed Upsun webhooks on the admin listener, with the shared samples, seen from outside:
//! the webhook's answer, `/status`, and whether a POST through the proxy reaches the app.

use bytes::Bytes;
use serde_json::Value;

use crate::common;
use crate::common::{
    activity, sample, sample_json, writes_blocked, Instance, Req, Resp, Upstream, Wg, COMPLETE,
    IN_PROGRESS, SAMPLE_ID,
};

const FAILED: &str = "environment.redeploy_complete_failure";
const PENDING: &str = "environment.variable.create_pending";

/// 200 `{"accepted": true, "guarded": <guarded>}`, with `ignored` present iff `ignored`.
#[track_caller]
fn assert_accepted(res: &Resp, guarded: bool, ignored: bool) {
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        res.header("content-type")
    );
    let doc = res.json();
    assert_eq!(doc["accepted"], true, "{doc}");
    assert_eq!(doc["guarded"], guarded, "{doc}");
    if ignored {
        assert!(
            doc["ignored"].as_str().is_some_and(|s| !s.is_empty()),
            "expected an `ignored` reason: {doc}"
        );
    } else {
        assert!(doc.get("ignored").is_none(), "unexpected `ignored`: {doc}");
    }
}

/// An error answer: `status` with a JSON `{"error": "..."}`.
#[track_caller]
fn assert_error(res: &Resp, status: u16) {
    assert_eq!(res.status.as_u16(), status, "{}", res.text());
    let doc = res.json();
    assert!(
        doc["error"].as_str().is_some_and(|s| !s.is_empty()),
        "errors are JSON {{\"error\": ...}}: {doc}"
    );
}

async fn started() -> (Upstream, Instance) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    (up, wg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_progress_guards_and_complete_releases() {
    let (up, wg) = started().await;
    assert!(!writes_blocked(&wg, &up).await);

    let res = wg.webhook_signed(sample(IN_PROGRESS)).await;
    assert_accepted(&res, true, false);
    assert!(writes_blocked(&wg, &up).await);
    let status = wg.status().await;
    let engagements = status["engagements"].as_array().expect("engagements");
    assert_eq!(engagements.len(), 1, "{status}");
    assert_eq!(engagements[0]["id"], SAMPLE_ID);
    assert_eq!(engagements[0]["source"], "upsun");
    assert!(status["since"].is_string());

    let res = wg.webhook_signed(sample(COMPLETE)).await;
    assert_accepted(&res, false, false);
    assert!(!writes_blocked(&wg, &up).await);
    let status = wg.status().await;
    assert_eq!(status["engagements"], Value::Array(vec![]));
    assert!(status["since"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_failed_activities_release_too() {
    let (up, wg) = started().await;

    assert_accepted(
        &wg.webhook_signed(activity(
            "cancel0000001",
            "environment.merge",
            "in_progress",
        ))
        .await,
        true,
        false,
    );
    assert!(writes_blocked(&wg, &up).await);
    assert_accepted(
        &wg.webhook_signed(activity("cancel0000001", "environment.merge", "cancelled"))
            .await,
        false,
        false,
    );
    assert!(!writes_blocked(&wg, &up).await);

    // The redeploy sample completes with result=failure: it still ends the activity.
    let mut start = sample_json(FAILED);
    start["state"] = "in_progress".into();
    start["result"] = Value::Null;
    let start = serde_json::to_vec(&start).expect("serialize");
    assert_accepted(&wg.webhook_signed(start).await, true, false);
    assert!(writes_blocked(&wg, &up).await);
    assert_accepted(&wg.webhook_signed(sample(FAILED)).await, false, false);
    assert!(!writes_blocked(&wg, &up).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_holds_while_any_activity_runs() {
    let (up, wg) = started().await;
    assert_accepted(&wg.webhook_signed(sample(IN_PROGRESS)).await, true, false);
    assert_accepted(
        &wg.webhook_signed(activity(
            "second0000001",
            "environment.redeploy",
            "in_progress",
        ))
        .await,
        true,
        false,
    );
    assert_eq!(
        wg.status().await["engagements"].as_array().map(Vec::len),
        Some(2)
    );
    assert_accepted(&wg.webhook_signed(sample(COMPLETE)).await, true, false);
    assert!(writes_blocked(&wg, &up).await);
    assert_accepted(
        &wg.webhook_signed(activity(
            "second0000001",
            "environment.redeploy",
            "complete",
        ))
        .await,
        false,
        false,
    );
    assert!(!writes_blocked(&wg, &up).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_signatures_are_401_and_change_nothing() {
    let (up, wg) = started().await;
    let body = Bytes::from(sample(IN_PROGRESS));
    let good = writeguard::upsun::sign(common::SHARED_KEY.as_bytes(), &body);
    let wrong_key = writeguard::upsun::sign(b"not-the-key", &body);
    let other_body = writeguard::upsun::sign(common::SHARED_KEY.as_bytes(), b"{}");
    let (header, sig) = good.split_once("..").expect("detached JWS");
    let none_alg = format!("eyJhbGciOiJub25lIn0..{sig}"); // {"alg":"none"}
    let attached = format!("{header}.e30.{sig}");

    let forgeries: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some(wrong_key),
        Some(other_body),
        Some(none_alg),
        Some(attached),
        Some(format!("{header}..")),
        Some("garbage".into()),
    ];
    for sig in &forgeries {
        let res = wg.webhook(body.clone(), sig.as_deref()).await;
        assert_error(&res, 401);
        assert!(!writes_blocked(&wg, &up).await, "forged {sig:?} engaged");
    }
    // A tampered body under a once-valid signature.
    let mut tampered = body.to_vec();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    assert_error(&wg.webhook(tampered, Some(&good)).await, 401);
    assert!(!writes_blocked(&wg, &up).await);

    // Once guarded, a forged `complete` does not release.
    assert_accepted(&wg.webhook(body.clone(), Some(&good)).await, true, false);
    let done = Bytes::from(sample(COMPLETE));
    let forged_done = writeguard::upsun::sign(b"not-the-key", &done);
    assert_error(&wg.webhook(done.clone(), Some(&forged_done)).await, 401);
    assert_error(&wg.webhook(done.clone(), None).await, 401);
    assert!(writes_blocked(&wg, &up).await, "a forged complete released");
    assert_eq!(wg.status().await["engagements"][0]["id"], SAMPLE_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_activities_are_400_and_change_nothing() {
    let (up, wg) = started().await;
    let mut without = Vec::new();
    for field in ["id", "type", "state"] {
        let mut v = sample_json(IN_PROGRESS);
        v.as_object_mut().expect("object").remove(field);
        without.push(serde_json::to_vec(&v).expect("serialize"));
        let mut v = sample_json(IN_PROGRESS);
        v[field] = Value::Null;
        without.push(serde_json::to_vec(&v).expect("serialize"));
    }
    let bad: Vec<Vec<u8>> = [
        b"".to_vec(),
        b"not json at all".to_vec(),
        b"{\"id\": \"wgpush0000001\", \"type\": \"environment.push\", \"state\": \"in_progress\""
            .to_vec(),
        b"[]".to_vec(),
        b"\"in_progress\"".to_vec(),
    ]
    .into_iter()
    .chain(without)
    .collect();

    for body in &bad {
        let res = wg.webhook_signed(body.clone()).await;
        assert_error(&res, 400);
        assert!(!writes_blocked(&wg, &up).await);
    }
    // While guarded, malformed deliveries do not release either.
    assert_accepted(&wg.webhook_signed(sample(IN_PROGRESS)).await, true, false);
    let mut done = sample_json(COMPLETE);
    done.as_object_mut().expect("object").remove("id");
    assert_error(
        &wg.webhook_signed(serde_json::to_vec(&done).expect("json"))
            .await,
        400,
    );
    assert_error(
        &wg.webhook_signed(&b"{\"state\":\"complete\""[..]).await,
        400,
    );
    assert!(writes_blocked(&wg, &up).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_one_mebibyte_are_413_and_change_nothing() {
    let (up, wg) = started().await;
    // A valid, correctly signed in_progress activity padded past 1 MiB.
    let mut v = sample_json(IN_PROGRESS);
    v["padding"] = "x".repeat(1024 * 1024).into();
    let big = Bytes::from(serde_json::to_vec(&v).expect("serialize"));
    assert!(big.len() > 1024 * 1024);
    let sig = writeguard::upsun::sign(common::SHARED_KEY.as_bytes(), &big);

    // Announced with a content-length.
    let res = wg.webhook(big.clone(), Some(&sig)).await;
    assert_error(&res, 413);
    assert!(!writes_blocked(&wg, &up).await);

    // Chunked, no length announced.
    let pieces = (0..big.len())
        .step_by(100 * 1024)
        .map(|i| big.slice(i..(i + 100 * 1024).min(big.len())))
        .collect();
    let res = wg
        .admin(
            Req::new("POST", "/webhooks/upsun")
                .header("x-jws-signature", &sig)
                .chunked(pieces),
        )
        .await;
    assert_error(&res, 413);
    assert!(!writes_blocked(&wg, &up).await);

    // Real bodies (2-20 KB, some large payloads) are fine.
    let mut v = sample_json(IN_PROGRESS);
    v["payload"]["environment"]["padding"] = "y".repeat(64 * 1024).into();
    let res = wg
        .webhook_signed(serde_json::to_vec(&v).expect("serialize"))
        .await;
    assert_accepted(&res, true, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_are_harmless() {
    let (up, wg) = started().await;
    assert_accepted(&wg.webhook_signed(sample(IN_PROGRESS)).await, true, false);
    let first = wg.status().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let res = wg.webhook_signed(sample(IN_PROGRESS)).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.json()["guarded"], true);
    }
    let again = wg.status().await;
    assert_eq!(again["engagements"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        again["engagements"][0]["since"], first["engagements"][0]["since"],
        "a duplicate restarted the engagement"
    );
    assert_eq!(
        again["engagements"][0]["expires_at"],
        first["engagements"][0]["expires_at"]
    );

    for _ in 0..2 {
        let res = wg.webhook_signed(sample(COMPLETE)).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.json()["guarded"], false);
    }
    assert!(!writes_blocked(&wg, &up).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_deliveries_never_move_an_activity_backwards() {
    let (up, wg) = started().await;
    // `complete` arrives before `in_progress` for the same id.
    assert_accepted(&wg.webhook_signed(sample(COMPLETE)).await, false, false);
    assert_accepted(&wg.webhook_signed(sample(IN_PROGRESS)).await, false, true);
    assert!(!writes_blocked(&wg, &up).await);
    assert_eq!(wg.status().await["engagements"], Value::Array(vec![]));

    // A late `pending` after `in_progress` does not undo the engagement.
    let id = "late000000001";
    assert_accepted(
        &wg.webhook_signed(activity(id, "environment.push", "in_progress"))
            .await,
        true,
        false,
    );
    let res = wg
        .webhook_signed(activity(id, "environment.push", "pending"))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["guarded"], true);
    assert!(writes_blocked(&wg, &up).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_projects_environments_types_and_states_are_acknowledged_and_ignored() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .project(common::SAMPLE_PROJECT)
        .environments(&["main"])
        .start()
        .await;

    let mut other_project = sample_json(IN_PROGRESS);
    other_project["project"] = "zzzzzzzzzzzzz".into();
    let mut other_env = sample_json(IN_PROGRESS);
    other_env["environments"] = serde_json::json!(["staging"]);
    let mut no_project = sample_json(IN_PROGRESS);
    no_project
        .as_object_mut()
        .expect("object")
        .remove("project");
    let mut ignored: Vec<Vec<u8>> = [other_project, other_env, no_project]
        .iter()
        .map(|v| serde_json::to_vec(v).expect("serialize"))
        .collect();
    for state in ["staged", "scheduled", "pending", "some_future_state"] {
        ignored.push(activity("never00000001", "environment.push", state));
    }
    ignored.push(sample(PENDING));
    for kind in [
        "environment.cron",
        "environment.backup",
        "project.update",
        "integration.webhook",
    ] {
        ignored.push(activity("nonredeploy001", kind, "in_progress"));
    }
    for body in ignored {
        let res = wg.webhook_signed(body.clone()).await;
        assert_accepted(&res, false, true);
        assert!(
            !writes_blocked(&wg, &up).await,
            "{} engaged the guard",
            String::from_utf8_lossy(&body[..200.min(body.len())])
        );
    }
    // A `staged` activity that later really deploys does guard.
    assert_accepted(
        &wg.webhook_signed(activity("never00000001", "environment.push", "in_progress"))
            .await,
        true,
        false,
    );
    // And the in-scope sample still works.
    assert_accepted(&wg.webhook_signed(sample(IN_PROGRESS)).await, true, false);
    assert_eq!(
        wg.status().await["engagements"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_guards_only_when_configured() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).guard_pending(true).start().await;
    assert_accepted(&wg.webhook_signed(sample(PENDING)).await, true, false);
    assert!(writes_blocked(&wg, &up).await);
    // staged/scheduled still never guard.
    for state in ["staged", "scheduled"] {
        assert_accepted(
            &wg.webhook_signed(activity("staged0000001", "environment.push", state))
                .await,
            true,
            true,
        );
    }
    assert_eq!(
        wg.status().await["engagements"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_key_webhooks_are_refused_unless_allow_unsigned() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).shared_key(None).start().await;
    let body = sample(IN_PROGRESS);
    assert_error(&wg.webhook(body.clone(), None).await, 401);
    let any_sig = writeguard::upsun::sign(b"anything", &body);
    assert_error(&wg.webhook(body.clone(), Some(&any_sig)).await, 401);
    assert!(!writes_blocked(&wg, &up).await);
    drop(wg);

    let wg = Wg::for_upstream(&up)
        .shared_key(None)
        .allow_unsigned(true)
        .start()
        .await;
    assert_accepted(&wg.webhook(body, None).await, true, false);
    assert!(writes_blocked(&wg, &up).await);
    assert_accepted(&wg.webhook(sample(COMPLETE), None).await, false, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_route_only_takes_post() {
    let (_up, wg) = started().await;
    let res = wg.admin(Req::get("/webhooks/upsun")).await;
    assert_error(&res, 405);
    let res = wg
        .admin(Req::new("PUT", "/webhooks/upsun").body("{}"))
        .await;
    assert_error(&res, 405);
    assert!(!wg.guarded().await);
}
