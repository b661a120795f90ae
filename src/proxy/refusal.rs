//! The answer to a guarded write: `503`, `Retry-After`, an HTML page for browsers and
//! RFC 9457 problem+json for everything else.

use std::cell::RefCell;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};

use crate::http::{full, Body};

/// Whether the client prefers HTML: `text/html` named explicitly, with a quality at least
/// that of JSON. A bare `*/*` (curl, most API clients) gets JSON.
pub(super) fn prefers_html(headers: &HeaderMap) -> bool {
    prefers_html_of(headers.get_all(ACCEPT).iter().map(|v| v.as_bytes()))
}

/// [`prefers_html`] of the `Accept` values as sent (the native engine's raw head).
pub(super) fn prefers_html_of<'a>(accepts: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut html = 0.0f32;
    let mut json = 0.0f32;
    for accept in accepts {
        // As `HeaderValue::to_str`: visible ASCII only.
        let Ok(accept) = std::str::from_utf8(accept) else {
            continue;
        };
        if !accept
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            continue;
        }
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if media.eq_ignore_ascii_case("text/html")
                || media.eq_ignore_ascii_case("application/xhtml+xml")
            {
                html = html.max(q);
            } else if media.eq_ignore_ascii_case("application/json")
                || media.eq_ignore_ascii_case("application/problem+json")
                || media == "*/*"
            {
                json = json.max(q);
            }
        }
    }
    html > 0.0 && html >= json
}

/// What the answer says: when to retry, and why, if known.
pub struct Why<'a> {
    pub retry_after: u64,
    /// Seconds until writes are expected back, when estimated from past deploys.
    pub back_in: Option<u64>,
    pub reason: Option<&'a str>,
    pub since: Option<time::OffsetDateTime>,
    /// A custom page with `{{retry_after}}`, `{{reason}}` and `{{since}}` placeholders.
    pub page: Option<&'a str>,
}

/// What the 503 carries, for either engine to write: the hyper path as a [`Response`]
/// ([`refusal`]), the native engine straight into its buffer (no `HeaderMap` built and
/// torn down for every refused write). Besides these: `Cache-Control: no-store`, and
/// `Connection: close` when the connection closes after it.
pub struct Refused {
    pub retry_after: u64,
    pub content_type: &'static str,
    pub body: Bytes,
}

pub fn refused(html: bool, why: &Why<'_>) -> Refused {
    let (content_type, body) = if html {
        ("text/html; charset=utf-8", Bytes::from(page(why)))
    } else {
        ("application/problem+json", problem_cached(why))
    };
    Refused {
        retry_after: why.retry_after,
        content_type,
        body,
    }
}

pub fn refusal(html: bool, why: &Why<'_>, close: bool) -> Response<Body> {
    let refused = refused(html, why);
    let mut res = Response::new(full(refused.body));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = res.headers_mut();
    h.insert(RETRY_AFTER, HeaderValue::from(refused.retry_after));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static(refused.content_type));
    if close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

const DEFAULT_REASON: &str = "the site is being updated";

/// RFC 9457 problem details. A struct rather than `json!`: no map built and torn down for
/// every refused request (it was a third of a 503's instructions).
#[derive(serde::Serialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    retry_after: u64,
}

thread_local! {
    /// The last problem document this thread wrote, with what it says: during a deploy every
    /// refused API request gets the same one until `retry_after` ticks down.
    static LAST_PROBLEM: RefCell<Option<(Said, Bytes)>> = const { RefCell::new(None) };
}

/// What a problem document says: `retry_after`, `back_in` and the reason.
type Said = (u64, Option<u64>, Option<String>);

fn problem_cached(why: &Why<'_>) -> Bytes {
    LAST_PROBLEM.with_borrow_mut(|last| {
        if let Some(((retry_after, back_in, reason), body)) = last {
            if *retry_after == why.retry_after
                && *back_in == why.back_in
                && reason.as_deref() == why.reason
            {
                return body.clone();
            }
        }
        let body = Bytes::from(problem(why));
        let said = (why.retry_after, why.back_in, why.reason.map(str::to_owned));
        *last = Some((said, body.clone()));
        body
    })
}

fn problem(why: &Why<'_>) -> Vec<u8> {
    let problem = Problem {
        kind: "about:blank",
        title: "Deploy in progress",
        status: 503,
        detail: match why.back_in {
            Some(secs) => format!(
                "The application is being deployed ({}); this request was not applied. Back in about {}; retry in {} s.",
                why.reason.unwrap_or(DEFAULT_REASON),
                about(secs),
                why.retry_after
            ),
            None => format!(
                "The application is being deployed ({}); this request was not applied. Retry in {} s.",
                why.reason.unwrap_or(DEFAULT_REASON),
                why.retry_after
            ),
        },
        retry_after: why.retry_after,
    };
    serde_json::to_vec(&problem).expect("a problem document serializes")
}

fn since_text(why: &Why<'_>) -> String {
    why.since
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn page(why: &Why<'_>) -> String {
    let reason = escape(why.reason.unwrap_or(DEFAULT_REASON));
    if let Some(custom) = why.page {
        return custom
            .replace("{{retry_after}}", &why.retry_after.to_string())
            .replace("{{reason}}", &reason)
            .replace("{{since}}", &escape(&since_text(why)));
    }
    let when = match why.back_in {
        Some(secs) => format!(
            "It should be back in about <strong>{}</strong>: then go back, and submit the form again.",
            about(secs)
        ),
        None => format!(
            "Please try again in about <strong>{} seconds</strong>: go back, and submit the form again.",
            why.retry_after
        ),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Not saved: deploy in progress</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}}
h1{{font-size:1.5rem}} a{{color:#0b57d0}} .why{{color:#444}}
</style>
</head>
<body>
<main>
<h1>Your change was not saved</h1>
<p>The site is being updated right now, so it is not accepting changes for a moment.
Nothing you sent was applied.</p>
<p class="why">Why: {reason}.</p>
<p>{when}</p>
<p><a href="javascript:history.back()">Go back</a></p>
</main>
</body>
</html>
"#
    )
}

/// A wait for people: `45 s` below two minutes, `3 min` (rounded) from there.
fn about(secs: u64) -> String {
    if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs.saturating_add(30) / 60)
    }
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation() {
        assert!(prefers_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!prefers_html(&accept("*/*")));
        assert!(!prefers_html(&HeaderMap::new()));
        assert!(!prefers_html(&accept("application/json")));
        assert!(!prefers_html(&accept("text/html;q=0.5, application/json")));
        assert!(prefers_html(&accept("text/html, application/json")));
    }

    fn why(page: Option<&str>) -> Why<'_> {
        Why {
            retry_after: 12,
            back_in: None,
            reason: Some("Upsun <push> in progress"),
            since: None,
            page,
        }
    }

    #[test]
    fn pages_escape_the_reason_and_fill_placeholders() {
        let default = page(&why(None));
        assert!(default.contains("not saved") && default.contains("12 seconds"));
        assert!(default.contains("Upsun &lt;push&gt; in progress"));
        let custom = page(&why(Some(
            "<p>{{reason}} / {{retry_after}} / {{since}}</p>",
        )));
        assert_eq!(custom, "<p>Upsun &lt;push&gt; in progress / 12 / </p>");
    }

    #[test]
    fn problem_document_has_the_rfc9457_members() {
        let v: serde_json::Value = serde_json::from_slice(&problem(&why(None))).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["status"], 503);
        assert_eq!(v["retry_after"], 12);
        assert!(v["title"].is_string() && v["detail"].is_string());
    }

    #[test]
    fn the_cached_problem_follows_retry_after_and_reason() {
        let mut w = why(None);
        let first = problem_cached(&w);
        assert_eq!(problem_cached(&w), first);
        w.retry_after = 11;
        let later: serde_json::Value = serde_json::from_slice(&problem_cached(&w)).unwrap();
        assert_eq!(later["retry_after"], 11);
        w.reason = Some("another reason");
        let other: serde_json::Value = serde_json::from_slice(&problem_cached(&w)).unwrap();
        assert!(other["detail"].as_str().unwrap().contains("another reason"));
        assert_eq!(problem_cached(&w), problem(&w));
    }

    #[test]
    fn with_an_estimate_page_and_problem_say_when_writes_are_back() {
        let mut w = why(None);
        w.back_in = Some(14);
        let html = page(&w);
        assert!(
            html.contains("back in about <strong>14 s</strong>"),
            "{html}"
        );
        assert!(!html.contains("12 seconds"), "{html}");
        let v: serde_json::Value = serde_json::from_slice(&problem_cached(&w)).unwrap();
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains("Back in about 14 s; retry in 12 s."),
            "{detail}"
        );
        assert_eq!(v["retry_after"], 12);
        // Minutes when larger.
        w.back_in = Some(290);
        assert!(page(&w).contains("back in about <strong>5 min</strong>"));
        let v: serde_json::Value = serde_json::from_slice(&problem_cached(&w)).unwrap();
        assert!(v["detail"]
            .as_str()
            .unwrap()
            .contains("Back in about 5 min;"));
        // Without one, as before.
        w.back_in = None;
        let v: serde_json::Value = serde_json::from_slice(&problem_cached(&w)).unwrap();
        assert!(v["detail"].as_str().unwrap().ends_with("Retry in 12 s."));
    }

    #[test]
    fn waits_read_in_seconds_then_minutes() {
        assert_eq!(about(1), "1 s");
        assert_eq!(about(119), "119 s");
        assert_eq!(about(120), "2 min");
        assert_eq!(about(149), "2 min");
        assert_eq!(about(150), "3 min");
        assert_eq!(about(u64::MAX), format!("{} min", u64::MAX / 60));
    }
}
