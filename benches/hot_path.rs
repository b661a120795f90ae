//! Criterion benches of the functions on the request and webhook paths:
//! the guard decision (per request) and webhook verification + parsing (per delivery).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::Method;
use writeguard::config::{Config, ProcessEnv};
use writeguard::guard::{Guard, Replica};
use writeguard::store::FileStore;
use writeguard::upsun::{sign, verify, Activity, SignedPayload};

fn config(dir: &std::path::Path) -> Config {
    let text = format!(
        r#"
[proxy]
listen = "127.0.0.1:1"
upstream = "http://127.0.0.1:2"
[admin]
token = "bench-token-123"
[guard]
allow_paths = ["/login", "/hooks/stripe", "/healthz"]
[state]
path = "{}"
"#,
        dir.join("state").display()
    );
    Config::parse(&text, &ProcessEnv).expect("bench config is valid")
}

fn guard_decision(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let guard = {
        let cfg = config(dir.path());
        Guard::open(
            &cfg,
            Box::new(FileStore::new(&cfg.state)),
            Replica::this_process("bench".into(), String::new()),
        )
    };
    // What a browser's request usually carries, for the method-override lookups.
    let mut headers = http::HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example"),
        ("accept", "text/html"),
        ("user-agent", "bench"),
        ("cookie", "s=1"),
    ] {
        headers.insert(k, http::HeaderValue::from_static(v));
    }
    // Every request is classified (what it gets while engaged), engaged or not; the ones the
    // guard watches then read the snapshot's span (`guarded()`).
    let mut g = c.benchmark_group("guard_decision");
    let cases: [(&str, Method, &str); 4] = [
        ("GET", Method::GET, "/products/42?x=1"),
        ("POST", Method::POST, "/cart/items"),
        ("POST allow_paths", Method::POST, "/hooks/stripe/events"),
        ("PUT", Method::PUT, "/cart/items/3"),
    ];
    for (name, method, path) in &cases {
        g.bench_function(format!("classify/{name}"), |b| {
            b.iter(|| guard.classify(black_box(method), black_box(path), black_box(&headers)))
        });
    }
    g.bench_function("released/guarded()", |b| {
        b.iter(|| black_box(guard.snapshot().guarded()))
    });
    guard.engage("bench".into(), None).expect("state saves");
    g.bench_function("engaged/guarded()", |b| {
        b.iter(|| black_box(guard.snapshot().guarded()))
    });
    g.finish();
}

/// An activity shaped like Upsun's, padded to a realistic size (real bodies are 2-20 KB).
fn activity_body(size: usize) -> Vec<u8> {
    let log = "Building application 'app' (runtime type: php:8.3)\n".repeat(size / 52);
    serde_json::to_vec(&serde_json::json!({
        "id": "a1kz6ffxui7em",
        "type": "environment.push",
        "state": "in_progress",
        "result": null,
        "project": "abcdefgh1234567",
        "environments": ["main"],
        "timings": [],
        "attributes": [],
        "created_at": "2025-03-04T10:00:05.821145+00:00",
        "log": log,
        "payload": {"environment": {"id": "main", "attributes": []}},
    }))
    .expect("serializes")
}

fn webhook(c: &mut Criterion) {
    let key = b"whatever-you-want";
    let mut g = c.benchmark_group("webhook_verify_parse");
    for size in [2_000, 20_000] {
        let body = activity_body(size);
        let sig = sign(key, &body);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                verify(
                    key,
                    Some(sig.as_bytes()),
                    black_box(&body),
                    SignedPayload::Raw,
                )
                .expect("valid signature");
                Activity::parse(black_box(&body)).expect("valid activity")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, guard_decision, webhook);
criterion_main!(benches);
