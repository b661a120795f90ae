//! `[stale]` on the native engine: what `proxy::Proxy::pass` does around the hyper path's
//! forwarding, done around an exchange's answer. The decisions are the stale seam's
//! (`Stale::instead_of`, `Stale::keeping`; `Proxy::stored_while_guarded` before forwarding,
//! and `Stale::instead_of` for writeguard's own 502/504 in `reply`'s `fail`); here the bytes
//! move: an app's failed answer is replaced by the stored one, any other is streamed with a
//! copy teed into the store, which keeps it once it has reached the client whole.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::metrics::Outcome;
use crate::stale::Asked;

use super::exchange::Ended;
use super::reply::{stream_body, write_ours};
use super::request::MAX_HEADERS;
use super::{response, Native};

impl Native {
    /// The upstream's answer (`head`, the client's head already in `out`) to the client.
    /// For a read asked of `[stale]`: the app's 500/502/503/504 is replaced by the stored
    /// answer when there is one (`Err`: that answer's end; the upstream connection is then
    /// not reused), and an answer the store wants is copied as it passes. `Ok`: as
    /// [`stream_body`] says.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn deliver<S: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
        &self,
        client: &mut S,
        up: &mut R,
        rbuf: &mut Vec<u8>,
        out: &mut Vec<u8>,
        head: &response::Head,
        asked: Option<Asked>,
        head_request: bool,
        close: bool,
    ) -> Result<Result<u64, u64>, Ended> {
        let mut tee = None;
        if let (Some(stale), Some(asked)) = (self.proxy.stale(), asked) {
            let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
            if let Some(stored) = stale.instead_of(&asked, status, false) {
                out.clear();
                return Err(
                    write_ours(client, stored, close, Outcome::Forwarded, head_request).await,
                );
            }
            if asked.wanted() {
                if let Some(headers) = answer_headers(out) {
                    tee = stale.keeping(asked, status, &headers);
                }
            }
        }
        let streamed = stream_body(client, up, rbuf, out, head, &mut tee).await;
        if let (Ok(_), Some(copy)) = (&streamed, tee) {
            copy.finish();
        }
        Ok(streamed)
    }
}

/// The headers of the answer as the client gets it (`out`: the head the engine wrote, hop-by-
/// hop headers already gone), without the framing the engine chose (`transfer-encoding`,
/// `connection`): what is stored. `None` when a line is not one `http` takes.
fn answer_headers(out: &[u8]) -> Option<HeaderMap> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut lines);
    res.parse(out).ok()?;
    let mut headers = HeaderMap::with_capacity(res.headers.len());
    for line in res.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).ok()?;
        if name == http::header::TRANSFER_ENCODING || name == http::header::CONNECTION {
            continue;
        }
        headers.append(name, HeaderValue::from_bytes(line.value).ok()?);
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_head_is_the_clients_without_the_framing() {
        let out = b"HTTP/1.1 200 OK\r\nX-App: 1\r\nVary: accept\r\ntransfer-encoding: chunked\r\ndate: Mon, 30 Nov 2026 03:00:00 GMT\r\nconnection: close\r\n\r\n";
        let h = answer_headers(out).unwrap();
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-app", "vary", "date"]);
    }
}
