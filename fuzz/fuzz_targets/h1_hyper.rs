//! The native HTTP/1.1 engine against hyper, differentially: the same byte stream to the
//! native path's parsers (`h1::differential::native_messages`) and to hyper's HTTP/1.1
//! server (the engine the hyper path runs); every request the native path would forward
//! must be one hyper reads too, in the same order, with the same method, target and body.
//! Where they would differ, the native path must have declined (handed it to hyper).
#![no_main]

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use writeguard::h1::differential;

#[path = "scripted.rs"]
mod scripted;
use scripted::{Scripted, RT};

type Message = (String, String, Vec<u8>);

fn hyper_messages(data: &[u8]) -> Vec<Message> {
    let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
    let record = seen.clone();
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let method = req.method().as_str().to_owned();
            let target = req
                .uri()
                .path_and_query()
                .map_or_else(String::new, |p| p.as_str().to_owned());
            if let Ok(body) = req.into_body().collect().await {
                let body = body.to_bytes().to_vec();
                record.lock().expect("not poisoned").push((method, target, body));
            }
            Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    });
    RT.with(|rt| {
        rt.block_on(async {
            let mut builder = http1::Builder::new();
            // The input ends with EOF: answer what was read rather than take the client for gone.
            builder.header_read_timeout(None).half_close(true);
            let _ = builder
                .serve_connection(TokioIo::new(Scripted::client(data)), service)
                .await;
        })
    });
    let seen = seen.lock().expect("not poisoned").clone();
    seen
}

fuzz_target!(|data: &[u8]| {
    let native = differential::native_messages(data);
    if native.is_empty() {
        return;
    }
    let hyper = hyper_messages(data);
    assert!(
        hyper.len() >= native.len() && hyper[..native.len()] == native[..],
        "native {native:?}\nhyper {hyper:?}"
    );
});
