//! The native HTTP/1.1 engine's reading of upstream answers against hyper's client,
//! differentially: the same bytes as an upstream's answer to a GET (or a HEAD, by the first
//! input byte) to the native path's parsers (`h1::differential::native_answer`) and to
//! hyper's HTTP/1.1 client (the engine the hyper path runs). Every answer the native path
//! would pass on must be one hyper reads too, with the same status and body. Where they
//! would differ, the native path must have refused it (502).
#![no_main]

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use writeguard::h1::differential;

#[path = "scripted.rs"]
mod scripted;
use scripted::{Scripted, RT};

/// What hyper's client reads from `data` as the answer: status and whole body, or `None`
/// when it refuses the answer or its body.
fn hyper_answer(data: &[u8], head_request: bool) -> Option<(u16, Vec<u8>)> {
    RT.with(|rt| {
        rt.block_on(async {
            let io = TokioIo::new(Scripted::upstream(data));
            let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(io).await.ok()?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let method = if head_request { "HEAD" } else { "GET" };
            let req = Request::builder()
                .method(method)
                .uri("/")
                .header("host", "app")
                .body(Empty::new())
                .ok()?;
            let res = sender.send_request(req).await.ok()?;
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.ok()?.to_bytes().to_vec();
            driver.abort();
            Some((status, body))
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, answer)) = data.split_first() else {
        return;
    };
    let head_request = first & 1 == 1;
    let Some(native) = differential::native_answer(answer, head_request) else {
        return;
    };
    let hyper = hyper_answer(answer, head_request);
    assert_eq!(
        hyper.as_ref(),
        Some(&native),
        "native {native:?}\nhyper {hyper:?}"
    );
});
