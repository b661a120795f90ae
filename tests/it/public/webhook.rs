//! Signed Upsun webhooks on the public port (`/.well-known/writeguard/api/`): they engage
//! and release like the admin route, refuse a bad signature, and are closed when there is no
//! shared key.

use bytes::Bytes;

use crate::common::{
    sample, sign, Instance, Req, Resp, Upstream, Wg, COMPLETE, IN_PROGRESS, SAMPLE_ID,
};

use super::{assert_json_200, public, public_status};

/// A signed Upsun webhook posted to `/.well-known/writeguard/api/` on the proxy port.
async fn public_webhook(wg: &Instance, body: &[u8], signature: Option<&str>) -> Resp {
    let mut req = Req::new("POST", &public("/api/"))
        .header("content-type", "application/json")
        .body(Bytes::copy_from_slice(body));
    if let Some(sig) = signature {
        req = req.header("x-jws-signature", sig);
    }
    wg.proxy(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_on_the_public_port_engage_and_release_like_the_admin_route() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    // Unsigned and badly signed: 401, nothing changes.
    let body = sample(IN_PROGRESS);
    let res = public_webhook(&wg, &body, None).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let wrong = writeguard::upsun::sign(b"not-the-shared-key", &body);
    let res = public_webhook(&wg, &body, Some(&wrong)).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let mut tampered = body.clone();
    let at = tampered.len() - 2;
    tampered[at] ^= 0x01;
    let res = public_webhook(&wg, &tampered, Some(&sign(&body))).await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(!wg.guarded().await, "a refused webhook engaged the guard");

    let res = public_webhook(&wg, &body, Some(&sign(&body))).await;
    let doc = assert_json_200(&res);
    assert_eq!(doc["accepted"], true, "{doc}");
    assert_eq!(doc["guarded"], true, "{doc}");
    let status = wg.status().await;
    assert_eq!(status["guarded"], true);
    assert_eq!(status["engagements"][0]["id"], SAMPLE_ID, "{status}");
    assert_eq!(wg.post("/orders").await.status, 503);
    assert_eq!(public_status(&wg).await["guarded"], true);

    // A badly signed "complete" does not release.
    let done = sample(COMPLETE);
    let res = public_webhook(&wg, &done, None).await;
    assert_eq!(res.status, 401);
    assert!(wg.guarded().await);

    let res = public_webhook(&wg, &done, Some(&sign(&done))).await;
    let doc = assert_json_200(&res);
    assert_eq!(doc["guarded"], false, "{doc}");
    assert!(!wg.guarded().await);
    assert_eq!(
        up.hits(),
        0,
        "a webhook or a guarded POST reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_key_the_public_port_takes_no_webhook_even_if_unsigned_is_allowed() {
    let up = Upstream::start().await;
    // `allow_unsigned` opens the admin route, never the public one.
    let wg = Wg::for_upstream(&up)
        .shared_key(None)
        .allow_unsigned(true)
        .start()
        .await;
    let body = sample(IN_PROGRESS);
    for signature in [None, Some(sign(&body))] {
        let res = public_webhook(&wg, &body, signature.as_deref()).await;
        assert_eq!(res.status, 404, "{}", res.text());
        assert!(!wg.guarded().await, "the public port took a webhook");
    }
    let res = wg
        .proxy(
            Req::new("POST", &public("/api"))
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
    assert_eq!(res.status, 404, "{}", res.text());
    assert!(!wg.guarded().await);
    let deploys = wg.admin(Req::get("/deploys")).await;
    assert_eq!(
        deploys.json(),
        serde_json::json!([]),
        "a refused webhook was recorded"
    );
    assert_eq!(up.hits(), 0);

    // Control: the admin route does take it here (allow_unsigned).
    let res = wg.webhook(body, None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(wg.guarded().await);
}
