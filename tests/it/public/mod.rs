//! What people see, over real sockets: the public status surface on the proxy port (status,
//! live events, banner script, Upsun status-holder routes, CORS), the banner injected into
//! HTML pages, the custom maintenance page, and the admin port's deploys and dashboard.

mod banner;
mod cors;
mod dashboard;
mod events;
mod maintenance;
mod status;
mod webhook;

use serde_json::Value;

use crate::common::{Instance, Req, Resp};

const PREFIX: &str = "/.well-known/writeguard";

fn public(path: &str) -> String {
    format!("{PREFIX}{path}")
}

/// A CORS preflight from `origin` for `GET {prefix}/api/p/main`.
fn preflight(origin: &str) -> Req {
    Req::new("OPTIONS", &public("/api/p/main"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
}

#[track_caller]
fn assert_json_200(res: &Resp) -> Value {
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "content-type {:?}",
        res.header("content-type")
    );
    res.json()
}

/// `GET {prefix}/status` through the proxy, checked for its shape: exactly `guarded`,
/// `since`, `retry_after` and `eta`, uncached.
async fn public_status(wg: &Instance) -> Value {
    let res = wg.proxy(Req::get(&public("/status"))).await;
    let doc = assert_json_200(&res);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let mut keys: Vec<&str> = doc
        .as_object()
        .expect("status is a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["eta", "guarded", "retry_after", "since"], "{doc}");
    assert!(doc["guarded"].is_boolean(), "{doc}");
    assert!(doc["retry_after"].is_u64(), "{doc}");
    assert!(doc["eta"].is_null() || doc["eta"].is_string(), "{doc}");
    doc
}
