//! TLS on the proxy listener with a certificate made at test time: HTTPS answers (and the
//! guard's 503), the framing check on the decrypted bytes, HTTP/2 through ALPN, the
//! certificate reloaded on SIGHUP (and kept when the new one is broken), the HTTPS redirect
//! listener, and `upstream_host` (the Host and the SNI the upstream gets).

use std::time::Duration;

use crate::common::tls::{request, Ca, Leaf};
use crate::common::{eventually, free_port, Instance, Req, Upstream, Wg};

fn with_tls(up: &Upstream, leaf: &Leaf) -> Wg {
    Wg::for_upstream(up).proxy_line(&leaf.config())
}

/// Sends SIGHUP and waits until the log holds one more line containing `marker`.
async fn sighup(wg: &Instance, marker: &str) {
    let before = wg.logs().matches(marker).count();
    wg.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            wg.logs().matches(marker).count() > before
        })
        .await,
        "no {marker:?} in the log after SIGHUP:\n{}",
        wg.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_gets_the_upstream_answer_and_a_guarded_post_gets_503() {
    let up = Upstream::start().await;
    let ca = Ca::new();
    let leaf = ca.issue("first");
    let wg = with_tls(&up, &leaf).start().await;

    let got = ca
        .send(
            wg.proxy,
            &["http/1.1"],
            request("GET", "localhost", "/hello?x=1", ""),
        )
        .await;
    assert_eq!(got.resp.status, 200, "{}", got.resp.text());
    assert_eq!(got.resp.json()["uri"], "/hello?x=1");
    assert_eq!(got.cert, leaf.der, "the configured certificate is served");
    assert_eq!(got.alpn.as_deref(), Some("http/1.1"));
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("host"), Some("localhost"));

    crate::common::engaged(&wg).await;
    let hits = up.hits();
    let got = ca
        .send(
            wg.proxy,
            &["http/1.1"],
            request("POST", "localhost", "/cart", "x=1"),
        )
        .await;
    assert_eq!(got.resp.status, 503, "{}", got.resp.text());
    assert!(got.resp.header("retry-after").is_some());
    assert_eq!(up.hits(), hits, "a guarded POST reached the upstream");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = Req::get("/hello")
        .timeout(Duration::from_secs(5))
        .try_send(wg.proxy)
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_framing_check_reads_the_decrypted_bytes() {
    let up = Upstream::start().await;
    let ca = Ca::new();
    let wg = with_tls(&up, &ca.issue("first")).start().await;
    let answer = ca
        .raw(
            wg.proxy,
            b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("both Content-Length and Transfer-Encoding"),
        "{answer}"
    );
    assert_eq!(up.hits(), 0, "a refused request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offers_h2_only_when_h2c_is_on() {
    let up = Upstream::start().await;
    let ca = Ca::new();
    let leaf = ca.issue("first");
    let both = &["h2", "http/1.1"];

    let wg = with_tls(&up, &leaf).proxy_line("h2c = true").start().await;
    let got = ca
        .send(wg.proxy, both, request("GET", "localhost", "/two", ""))
        .await;
    assert_eq!(got.alpn.as_deref(), Some("h2"));
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(got.resp.status, 200, "{}", got.resp.text());
    let seen = up.last();
    assert_eq!(seen.header("host"), Some("localhost"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    crate::common::engaged(&wg).await;
    let got = ca
        .send(wg.proxy, both, request("POST", "localhost", "/two", "x=1"))
        .await;
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(got.resp.status, 503);
    drop(wg);

    let wg = with_tls(&up, &leaf).start().await;
    let got = ca
        .send(wg.proxy, both, request("GET", "localhost", "/one", ""))
        .await;
    assert_eq!(got.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(got.version, http::Version::HTTP_11);
    assert_eq!(got.resp.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_renewed_certificate_and_keeps_it_when_the_next_is_broken() {
    let up = Upstream::start().await;
    let ca = Ca::new();
    let first = ca.issue("first");
    let wg = with_tls(&up, &first).start().await;
    let served = || async {
        ca.send(
            wg.proxy,
            &["http/1.1"],
            request("GET", "localhost", "/", ""),
        )
        .await
        .cert
    };
    assert_eq!(served().await, first.der);

    // Renewed in place, as certbot and friends do.
    let second = ca.issue("second");
    std::fs::copy(&second.cert, &first.cert).expect("copy certificate");
    std::fs::copy(&second.key, &first.key).expect("copy key");
    sighup(&wg, "SIGHUP: config reloaded").await;
    assert!(
        wg.logs().contains("proxy.tls_cert"),
        "the reload line does not say the certificate changed:\n{}",
        wg.logs()
    );
    assert_eq!(
        served().await,
        second.der,
        "the renewed certificate is served"
    );

    // A broken certificate: refused, with the key named, and the served one stays.
    std::fs::write(&first.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").expect("break");
    sighup(&wg, "the previous config stays in effect").await;
    let log = wg.logs();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("proxy.tls_cert")),
        "no error naming proxy.tls_cert:\n{log}"
    );
    assert_eq!(
        served().await,
        second.der,
        "the last good certificate stays"
    );

    // A key that is not the certificate's: refused too.
    let third = ca.issue("third");
    std::fs::copy(&third.cert, &first.cert).expect("copy certificate");
    sighup(&wg, "the previous config stays in effect").await;
    assert!(wg.logs().contains("proxy.tls_key"), "{}", wg.logs());
    assert_eq!(served().await, second.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_listener_answers_308_to_https_and_forwards_nothing() {
    let up = Upstream::start().await;
    let ca = Ca::new();
    let redirect = free_port();
    let wg = with_tls(&up, &ca.issue("first"))
        .proxy_line(&format!("redirect_listen = [\"{redirect}\"]"))
        .start()
        .await;

    let res = Req::get("/cart?id=7")
        .header("host", "shop.example:80")
        .send(redirect)
        .await;
    assert_eq!(res.status, 308, "{}", res.text());
    let location = format!("https://shop.example:{}/cart?id=7", wg.proxy.port());
    assert_eq!(res.header("location"), Some(location.as_str()));

    // Even a write while guarded: no guard here, and nothing reaches the upstream.
    crate::common::engaged(&wg).await;
    let res = Req::new("POST", "/api/orders")
        .header("host", "shop.example")
        .body("x=1")
        .send(redirect)
        .await;
    assert_eq!(res.status, 308, "{}", res.text());
    assert_eq!(up.hits(), 0, "the redirect listener forwarded a request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_port_443_is_left_out_of_the_location() {
    let up = Upstream::start().await;
    let ca = Ca::new();
    let redirect = free_port();
    let _wg = with_tls(&up, &ca.issue("first"))
        .proxy_line(&format!("redirect_listen = \"{redirect}\""))
        .proxy_line("redirect_port = 443")
        .start()
        .await;
    let res = Req::get("/")
        .header("host", "shop.example")
        .send(redirect)
        .await;
    assert_eq!(res.status, 308);
    assert_eq!(res.header("location"), Some("https://shop.example/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_is_the_host_the_upstream_sees() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("upstream_host = \"myapp.platform.example\"")
        .start()
        .await;
    let res = wg
        .proxy(Req::get("/page").header("host", "shop.example"))
        .await;
    assert_eq!(res.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("host"), Some("myapp.platform.example"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
}

/// A TLS "upstream" that only reads each ClientHello's server name (SNI), then hangs up.
async fn sni_recorder() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Receiver<Option<String>>,
) {
    use tokio_rustls::rustls::server::Acceptor;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let start = tokio_rustls::LazyConfigAcceptor::new(Acceptor::default(), tcp).await;
            if let Ok(start) = start {
                let name = start.client_hello().server_name().map(str::to_owned);
                let _ = tx.send(name).await;
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_is_the_server_name_of_an_https_upstream() {
    let (addr, mut names) = sni_recorder().await;
    let wg = Wg::new(format!("https://{addr}"))
        .proxy_line("upstream_host = \"myapp.platform.example\"")
        .proxy_line("upstream_retry = \"0s\"")
        .start()
        .await;
    let res = wg.proxy(Req::get("/").header("host", "shop.example")).await;
    assert_eq!(res.status, 502, "the recorder never completes a handshake");
    let name = tokio::time::timeout(Duration::from_secs(5), names.recv())
        .await
        .expect("a ClientHello within 5 s")
        .expect("the recorder runs");
    assert_eq!(name.as_deref(), Some("myapp.platform.example"));
}
