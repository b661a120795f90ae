//! Inserting the banner script into HTML pages on their way to the browser, streamed through
//! Cloudflare's `lol_html`: the page is never buffered whole.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
};
use http::{Response, StatusCode};
use hyper::body::Frame;
use lol_html::html_content::ContentType;
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{element, OutputSink};

use crate::http::{Body, BoxError};
use crate::upstream::PooledBody;

/// Whether a response is a page we may rewrite: a 2xx HTML body that is not compressed (a
/// compressed one passes untouched), not a range of a page (`206`: its bytes belong at an
/// offset of the whole, so they must stay as they are), and whose origin did not forbid
/// changes (`Cache-Control: no-transform`, RFC 9110 §7.7).
pub fn wants(res: &Response<Body>) -> bool {
    let h = res.headers();
    res.status().is_success()
        && res.status() != StatusCode::PARTIAL_CONTENT
        && !h.get_all(CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
            })
        })
        && matches!(res.body(), Body::Upstream(_))
        && h.get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/html")
            })
        && h.get(CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// Rewrites the page to load `script_src` before `</head>`. The length changes, so
/// `Content-Length` goes and the body is sent chunked; the origin's byte ranges and strong
/// ETag describe the original bytes, so ranges are no longer offered and the ETag is
/// weakened (a later `If-Range` then gets the whole page, never a mix of the two).
pub fn inject(res: Response<Body>, script_src: &str) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    let Body::Upstream(upstream) = body else {
        return Response::from_parts(parts, body);
    };
    let h = &mut parts.headers;
    h.remove(CONTENT_LENGTH);
    h.remove(ACCEPT_RANGES);
    if let Some(etag) = h.get(ETAG).filter(|e| !e.as_bytes().starts_with(b"W/")) {
        match HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat()) {
            Ok(weak) => h.insert(ETAG, weak),
            Err(_) => h.remove(ETAG),
        };
    }
    let tag = format!(r#"<script src="{script_src}" defer></script>"#);
    let out = Sink::default();
    let rewriter = HtmlRewriter::new(
        Settings::new_send().append_element_content_handler(element!("head", move |el| {
            el.append(&tag, ContentType::Html);
            Ok(())
        })),
        out.clone(),
    );
    let body = Injected {
        upstream,
        rewriter: Some(rewriter),
        out,
    };
    Response::from_parts(parts, Body::boxed(body))
}

/// Where the rewriter writes; drained after every chunk.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(
            &mut *self.0.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

impl OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(chunk);
    }
}

struct Injected {
    upstream: PooledBody,
    rewriter: Option<HtmlRewriter<'static, Sink>>,
    out: Sink,
}

impl hyper::body::Body for Injected {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(rewriter) = this.rewriter.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(&mut this.upstream).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            rewriter.write(&data)?;
                            let out = this.out.take();
                            if out.is_empty() {
                                continue;
                            }
                            Frame::data(out)
                        }
                        Err(trailers) => trailers,
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    if let Some(rewriter) = this.rewriter.take() {
                        rewriter.end()?;
                    }
                    let out = this.out.take();
                    return Poll::Ready((!out.is_empty()).then(|| Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rewriter.is_none()
    }
}
