//! Why an operator request failed, and the one map from that to its status.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::guard::StoreError;
use crate::http::read::BodyError;
use crate::http::respond::json_error;
use crate::http::Body;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{0}")]
    BadRequest(String),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("{0}")]
    WaitTimedOut(String),
    #[error("guard state could not be saved, nothing changed: {0}")]
    Store(#[from] StoreError),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Body(BodyError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Body(_) | AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::WaitTimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// `{"error": ...}` with the status; a missing token also gets `WWW-Authenticate`, a
    /// change that could not be stored `Retry-After` (the store usually answers again soon).
    pub fn into_response(self) -> Response<Body> {
        let mut res = json_error(self.status(), &self.to_string());
        match self {
            AdminError::Unauthorized => {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AdminError::Store(_) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map, pinned.
    #[test]
    fn each_error_has_its_status() {
        let cases = [
            (AdminError::Unauthorized, 401),
            (AdminError::Body(BodyError::TooLarge), 413),
            (AdminError::Body(BodyError::TooSlow), 400),
            (AdminError::BadRequest("x".into()), 400),
            (AdminError::NotFound, 404),
            (AdminError::MethodNotAllowed, 405),
            (AdminError::WaitTimedOut("x".into()), 504),
            (
                AdminError::Store(StoreError::Audit {
                    path: "a".into(),
                    source: std::io::Error::other("x"),
                }),
                503,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
        let res = AdminError::Unauthorized.into_response();
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
