//! Reading a whole request body (a webhook, an operator's request) under a size cap and a
//! deadline.

use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::Request;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// Largest body the admin API and the webhooks take.
pub const MAX_BODY: usize = 1024 * 1024;

/// How long a whole body may take to arrive.
const BODY_WITHIN: Duration = Duration::from_secs(30);

/// Why a body could not be read; each boundary says which status that is.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("body took too long to arrive")]
    TooSlow,
    #[error("cannot read body: {0}")]
    Broken(String),
}

/// Reads a whole request body, refusing more than [`MAX_BODY`] bytes (at once when the
/// declared length says so) or a body that takes longer than 30 s.
pub async fn read_body(req: Request<Incoming>) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = Limited::new(req.into_body(), MAX_BODY).collect();
    match tokio::time::timeout(BODY_WITHIN, read).await {
        Err(_) => Err(BodyError::TooSlow),
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Broken(e.to_string())),
    }
}
