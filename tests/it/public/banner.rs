//! The banner: `/.well-known/writeguard/banner.js` is served as JavaScript, and with
//! `inject_banner` its script tag goes into HTML pages before `</head>` while every other
//! answer passes byte-identical.

use std::net::SocketAddr;

use crate::common::client::{RawConn, RawResp};
use crate::common::{Req, Upstream, Wg, BROWSER_ACCEPT};

use super::public;

const SCRIPT_TAG: &str = r#"<script src="/.well-known/writeguard/banner.js" defer></script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_script_is_served_as_javascript() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let res = wg.proxy(Req::get(&public("/banner.js"))).await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/javascript")),
        "{:?}",
        res.header("content-type")
    );
    assert!(!res.body.is_empty());
    let js = res.text();
    // It talks to its own routes, relative to where it was loaded from.
    assert!(js.contains("/events") && js.contains("/status"), "{js}");
    assert_eq!(up.hits(), 0);
}

const PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Shop</title></head>\n<body><form method=\"post\"><button>Save</button></form></body></html>\n";
/// `<!doctype html><html><head><title>z</title></head><body>compressed</body></html>`,
/// gzip-compressed (`gzip.compress(page, mtime=0)`).
const GZ_PAGE: [u8; 80] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xb3, 0x51, 0x4c, 0xc9, 0x4f, 0x2e,
    0xa9, 0x2c, 0x48, 0x55, 0xc8, 0x28, 0xc9, 0xcd, 0xb1, 0xb3, 0x81, 0x92, 0xa9, 0x89, 0x29, 0x76,
    0x36, 0x25, 0x99, 0x25, 0x39, 0xa9, 0x76, 0x55, 0x36, 0xfa, 0x10, 0x86, 0x8d, 0x3e, 0x44, 0x38,
    0x29, 0x3f, 0xa5, 0xd2, 0x2e, 0x39, 0x3f, 0xb7, 0xa0, 0x28, 0xb5, 0xb8, 0x38, 0x35, 0xc5, 0x46,
    0x1f, 0x2c, 0x00, 0x94, 0x05, 0x69, 0x05, 0x00, 0x1c, 0x99, 0x8c, 0xba, 0x50, 0x00, 0x00, 0x00,
];

/// Registers the pages of the injection tests on `up`.
fn can_pages(up: &Upstream) {
    let html = &[("content-type", "text/html; charset=utf-8")][..];
    up.canned("page", 200, html, &[PAGE.as_bytes()]);
    // Split inside `</head>`: the rewriter must handle a tag across reads.
    let cut = PAGE.find("</head>").expect("the page has a head") + 4;
    up.canned(
        "page-chunked",
        200,
        html,
        &[&PAGE.as_bytes()[..cut], &PAGE.as_bytes()[cut..]],
    );
    up.canned(
        "gzip",
        200,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("content-encoding", "gzip"),
            ("vary", "Accept-Encoding"),
        ],
        &[&GZ_PAGE],
    );
    up.canned(
        "json",
        200,
        &[("content-type", "application/json")],
        &[br#"{"html":"<html><head></head><body></body></html>"}"#],
    );
    up.canned(
        "plain",
        200,
        &[("content-type", "text/plain")],
        &[b"<html><head></head></html>"],
    );
    // A range of a bigger page: its bytes belong at an offset of the whole, so they must not
    // change.
    let range = format!("bytes 0-{}/{}", PAGE.len() - 1, PAGE.len() + 1000);
    up.canned(
        "partial",
        206,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("content-range", &range),
        ],
        &[PAGE.as_bytes()],
    );
    // The origin forbids transformations (RFC 9110 §7.7: a proxy MUST NOT change the
    // content then).
    up.canned(
        "no-transform",
        200,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "public, max-age=60, no-transform"),
        ],
        &[PAGE.as_bytes()],
    );
    // Validators and ranges that describe the original bytes.
    up.canned(
        "validators",
        200,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
        ],
        &[PAGE.as_bytes()],
    );
    up.canned("missing", 404, html, &[PAGE.as_bytes()]);
    up.canned("error", 500, html, &[PAGE.as_bytes()]);
}

/// GETs `path` on one keep-alive connection, then a second request on the same one (so a
/// wrong length would show up as a broken next response).
async fn get_twice(addr: SocketAddr, path: &str, accept_encoding: Option<&str>) -> RawResp {
    let mut conn = RawConn::connect(addr).await;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {BROWSER_ACCEPT}\r\n");
    if let Some(enc) = accept_encoding {
        head += &format!("Accept-Encoding: {enc}\r\n");
    }
    head += "\r\n";
    conn.write(head.as_bytes()).await;
    let res = conn.read_response(false).await;
    conn.write(format!("GET /after HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await;
    let next = conn.read_response(false).await;
    assert_eq!(next.status, 200, "the connection broke after {path}");
    assert_eq!(
        next.header("x-upstream"),
        Some("recorder"),
        "after {path}: {next:?}"
    );
    res
}

/// The answer is exactly what the upstream sent: same bytes, same length header.
#[track_caller]
fn assert_untouched(res: &RawResp, body: &[u8], what: &str) {
    assert!(
        res.body == body,
        "{what}: the body was changed:\n{:?}",
        res.text()
    );
    assert_eq!(
        res.header("content-length"),
        Some(body.len().to_string().as_str()),
        "{what}: content-length changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_banner_adds_the_script_before_head_end_and_leaves_everything_else_alone() {
    let up = Upstream::start().await;
    can_pages(&up);
    let wg = Wg::for_upstream(&up)
        .public_line("inject_banner = true")
        .start()
        .await;
    let expected = PAGE.replace("</head>", &format!("{SCRIPT_TAG}</head>"));

    for name in ["page", "page-chunked"] {
        let res = get_twice(wg.proxy, &format!("/__canned/{name}"), None).await;
        assert_eq!(res.status, 200, "{name}");
        assert_eq!(
            res.text(),
            expected,
            "{name}: the page read completely is not the rewritten page"
        );
        if let Some(len) = res.header("content-length") {
            assert_eq!(
                len,
                expected.len().to_string(),
                "{name}: wrong content-length"
            );
        }
        assert_eq!(
            res.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{name}"
        );
    }
    // The hyper client agrees on the framing too.
    let res = wg.proxy(Req::get("/__canned/page")).await;
    assert_eq!(res.text(), expected);

    // Compressed pages pass untouched (not broken).
    let res = get_twice(wg.proxy, "/__canned/gzip", Some("gzip")).await;
    assert_eq!(res.status, 200);
    assert_untouched(&res, &GZ_PAGE, "gzip");
    assert_eq!(res.header("content-encoding"), Some("gzip"));

    // Not HTML, or not a success: untouched.
    let json = br#"{"html":"<html><head></head><body></body></html>"}"#;
    let res = get_twice(wg.proxy, "/__canned/json", None).await;
    assert_untouched(&res, json, "json");
    let res = get_twice(wg.proxy, "/__canned/plain", None).await;
    assert_untouched(&res, b"<html><head></head></html>", "text/plain");
    let res = get_twice(wg.proxy, "/__canned/no-transform", None).await;
    assert_untouched(&res, PAGE.as_bytes(), "cache-control: no-transform");
    // A rewritten page is not the representation the origin's strong ETag and byte ranges
    // describe: a later `If-Range` or range request must not mix the two.
    let res = get_twice(wg.proxy, "/__canned/validators", None).await;
    assert_eq!(res.text(), expected, "validators");
    assert!(
        res.header("etag").is_none_or(|e| e.starts_with("W/")),
        "a rewritten page kept the strong ETag {:?}",
        res.header("etag")
    );
    assert!(
        res.header("accept-ranges").is_none_or(|v| v == "none"),
        "a rewritten page still offers byte ranges: {:?}",
        res.header("accept-ranges")
    );
    for (name, status) in [("partial", 206), ("missing", 404), ("error", 500)] {
        let res = get_twice(wg.proxy, &format!("/__canned/{name}"), None).await;
        assert_eq!(res.status, status, "{name}");
        assert_untouched(&res, PAGE.as_bytes(), name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_inject_banner_html_passes_byte_identical() {
    let up = Upstream::start().await;
    can_pages(&up);
    let wg = Wg::for_upstream(&up)
        .public_line("inject_banner = false")
        .start()
        .await;
    let res = get_twice(wg.proxy, "/__canned/page", None).await;
    assert_eq!(res.status, 200);
    assert_untouched(&res, PAGE.as_bytes(), "page");
    let res = get_twice(wg.proxy, "/__canned/page-chunked", None).await;
    assert!(res.body == PAGE.as_bytes(), "{:?}", res.text());

    // The default is off as well.
    let up2 = Upstream::start().await;
    can_pages(&up2);
    let wg2 = Wg::for_upstream(&up2).start().await;
    let res = get_twice(wg2.proxy, "/__canned/page", None).await;
    assert_untouched(&res, PAGE.as_bytes(), "page (default config)");
}
