//! The failures the data path answers itself (bad framing, a request it will not forward, a
//! client body that broke off, an upstream that did not answer), and the ONE place that says
//! which status each one gets. The guard's own `503` is a decision, not a failure: the proxy
//! writes it (`proxy::refusal`).

use http::{Response, StatusCode};

use super::respond::text;
use super::Body;
use crate::framing::Violation;
use crate::upstream::{ClientBodyError, UpstreamError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request stream could be read two ways (or its head is too large).
    Framing(Violation),
    UriTooLong,
    /// A reverse proxy is nobody's tunnel to elsewhere.
    ConnectNotProxied,
    ClientBodyTimeout,
    ClientBodyBroken,
    UpstreamConnectTimeout,
    UpstreamUnreachable,
    UpstreamNoAnswer,
    UpstreamTimeout,
}

impl Failure {
    /// What a client sees for an upstream send that failed: its own body's fault, or the
    /// upstream's.
    pub fn of_upstream(e: &UpstreamError) -> Failure {
        match e.client_body() {
            Some(ClientBodyError::Timeout) => return Failure::ClientBodyTimeout,
            Some(ClientBodyError::Broken(_)) => return Failure::ClientBodyBroken,
            None => {}
        }
        match e {
            UpstreamError::ConnectTimeout => Failure::UpstreamConnectTimeout,
            UpstreamError::Connect(_) => Failure::UpstreamUnreachable,
            UpstreamError::Http(_) | UpstreamError::Protocol(_) => Failure::UpstreamNoAnswer,
            UpstreamError::Timeout => Failure::UpstreamTimeout,
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Failure::Framing(Violation::HeadTooLarge) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Failure::Framing(_) | Failure::ClientBodyBroken => StatusCode::BAD_REQUEST,
            Failure::UriTooLong => StatusCode::URI_TOO_LONG,
            Failure::ConnectNotProxied => StatusCode::METHOD_NOT_ALLOWED,
            Failure::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Failure::UpstreamConnectTimeout
            | Failure::UpstreamUnreachable
            | Failure::UpstreamNoAnswer => StatusCode::BAD_GATEWAY,
            Failure::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Why, after the status line's text.
    fn detail(self) -> Option<&'static str> {
        Some(match self {
            Failure::Framing(Violation::HeadTooLarge) | Failure::UriTooLong => return None,
            Failure::Framing(v) => v.detail(),
            Failure::ConnectNotProxied => "CONNECT is not proxied",
            Failure::ClientBodyTimeout => "the request body did not arrive in time",
            Failure::ClientBodyBroken => "the request body broke off",
            Failure::UpstreamConnectTimeout => {
                "the application did not accept the connection in time"
            }
            Failure::UpstreamUnreachable => "the application is not reachable",
            Failure::UpstreamNoAnswer => "the application did not answer",
            Failure::UpstreamTimeout => "the application did not answer in time",
        })
    }

    /// Whether the connection must close after the answer: the rest of the client's bytes
    /// cannot be trusted (bad framing, a body cut off) or not read.
    fn closes(self) -> bool {
        matches!(
            self,
            Failure::Framing(_)
                | Failure::UriTooLong
                | Failure::ClientBodyTimeout
                | Failure::ClientBodyBroken
        )
    }

    /// `text/plain`: `"<code> <reason>[: <detail>]\n"`.
    pub fn response(self) -> Response<Body> {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("");
        let body = match self.detail() {
            Some(detail) => format!("{} {reason}: {detail}\n", status.as_u16()),
            None => format!("{} {reason}\n", status.as_u16()),
        };
        text(status, body, self.closes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map, pinned: a change here changes what clients see.
    #[test]
    fn each_failure_has_its_status_and_says_so_first() {
        let cases = [
            (Failure::Framing(Violation::HeadTooLarge), 431, true),
            (Failure::UriTooLong, 414, true),
            (Failure::ConnectNotProxied, 405, false),
            (Failure::ClientBodyTimeout, 408, true),
            (Failure::ClientBodyBroken, 400, true),
            (Failure::UpstreamConnectTimeout, 502, false),
            (Failure::UpstreamUnreachable, 502, false),
            (Failure::UpstreamNoAnswer, 502, false),
            (Failure::UpstreamTimeout, 504, false),
        ];
        let framing = Violation::ALL
            .into_iter()
            .filter(|v| *v != Violation::HeadTooLarge)
            .map(|v| (Failure::Framing(v), 400, true));
        for (failure, status, closes) in cases.into_iter().chain(framing) {
            let res = failure.response();
            assert_eq!(res.status().as_u16(), status, "{failure:?}");
            assert_eq!(
                res.headers().get(http::header::CONNECTION).is_some(),
                closes,
                "{failure:?}"
            );
        }
        assert_eq!(
            Failure::of_upstream(&UpstreamError::Timeout),
            Failure::UpstreamTimeout
        );
        assert_eq!(
            Failure::of_upstream(&UpstreamError::ConnectTimeout),
            Failure::UpstreamConnectTimeout
        );
    }

    #[tokio::test]
    async fn bodies_start_with_the_status_line_text() {
        use http_body_util::BodyExt;
        let body = |f: Failure| async move {
            let bytes = f.response().into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        assert_eq!(
            body(Failure::Framing(Violation::BareLf)).await,
            "400 Bad Request: a line ends with LF alone (CRLF required)\n"
        );
        assert_eq!(body(Failure::UriTooLong).await, "414 URI Too Long\n");
        assert_eq!(
            body(Failure::Framing(Violation::HeadTooLarge)).await,
            "431 Request Header Fields Too Large\n"
        );
        assert_eq!(
            body(Failure::UpstreamTimeout).await,
            "504 Gateway Timeout: the application did not answer in time\n"
        );
    }
}
