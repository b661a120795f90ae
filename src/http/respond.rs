//! The response builders: every answer writeguard writes itself is made here.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::{full, Body};

/// A JSON document that is never cached.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("our documents always serialize");
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `{"error": message}`.
pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// A short plain-text answer; `close` adds `Connection: close`.
pub fn text(status: StatusCode, body: impl Into<bytes::Bytes>, close: bool) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// A static asset of ours (a page, a script) with its type and cache policy.
pub fn asset(
    body: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
) -> Response<Body> {
    let mut res = Response::new(full(body));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    res
}
