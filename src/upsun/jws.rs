//! `X-JWS-Signature` verification: JWS compact serialization, detached and unencoded
//! payload (RFC 7515 + RFC 7797), HS256 over `header-segment "." raw-body`, keyed with the
//! integration's shared key as UTF-8 bytes (Upsun's webhook docs: <https://docs.upsun.com/integrations/activity/webhooks.html>).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the MAC covers. Upsun's prose signs the raw body; some of its samples sign the
/// base64url of the body instead, offered only as an explicit opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedPayload {
    Raw,
    Base64UrlBody,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("missing X-JWS-Signature header")]
    Missing,
    #[error("signature is not a detached JWS (header..signature)")]
    Shape,
    #[error("JWS header is not base64url JSON")]
    Header,
    #[error("JWS header must be {{\"alg\":\"HS256\",\"b64\":false,\"crit\":[\"b64\"]}}")]
    Algorithm,
    #[error("signature is not 32 bytes (HMAC-SHA256)")]
    Length,
    #[error("signature does not match")]
    Mismatch,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    b64: Option<bool>,
    #[serde(default)]
    crit: Vec<String>,
}

/// A signature header whose shape is right: what can be checked before the body arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detached<'a> {
    /// The protected header segment exactly as received: the MAC covers it.
    header_b64: &'a str,
    sig: [u8; 32],
}

impl<'a> Detached<'a> {
    /// Checks the header value's shape without the body: three segments with an empty
    /// middle, a protected header `{"alg":"HS256","b64":false,"crit":["b64"]}` and a
    /// 32-byte signature. Cheap, so a request can be refused before its body is read.
    pub fn parse(signature: Option<&'a [u8]>) -> Result<Detached<'a>, JwsError> {
        let signature = signature.ok_or(JwsError::Missing)?;
        let signature = std::str::from_utf8(signature).map_err(|_| JwsError::Shape)?;
        let mut parts = signature.trim().split('.');
        let (Some(header_b64), Some(""), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Shape);
        };
        let header = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| JwsError::Header)?;
        let header: Header = serde_json::from_slice(&header).map_err(|_| JwsError::Header)?;
        if header.alg != "HS256"
            || header.b64 != Some(false)
            || !header.crit.iter().any(|c| c == "b64")
        {
            return Err(JwsError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| JwsError::Shape)?;
        let sig: [u8; 32] = sig.try_into().map_err(|_| JwsError::Length)?;
        Ok(Detached { header_b64, sig })
    }

    /// Whether the signature covers `body` under `key`; constant-time.
    pub fn verify(&self, key: &[u8], body: &[u8], payload: SignedPayload) -> Result<(), JwsError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
        mac.update(self.header_b64.as_bytes());
        mac.update(b".");
        match payload {
            SignedPayload::Raw => mac.update(body),
            SignedPayload::Base64UrlBody => mac.update(URL_SAFE_NO_PAD.encode(body).as_bytes()),
        }
        // `verify_slice` compares in constant time.
        mac.verify_slice(&self.sig).map_err(|_| JwsError::Mismatch)
    }
}

/// Checks `signature` (the header value) against `body` with `key`; constant-time.
pub fn verify(
    key: &[u8],
    signature: Option<&[u8]>,
    body: &[u8],
    payload: SignedPayload,
) -> Result<(), JwsError> {
    Detached::parse(signature)?.verify(key, body, payload)
}

/// Signs `body` the way Upsun does; used by tests, the fuzz seeds and the benches.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    const HEADER: &str = "eyJhbGciOiJIUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19";
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(HEADER.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "{HEADER}..{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"whatever-you-want";
    const BODY: &[u8] = br#"{"id":"7txhbujm4umsy","state":"in_progress"}"#;
    const RAW_SIG: &str = "eyJhbGciOiJIUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19..wFAEmEnQLtU8OfYuw9cc0n3-D06Lb-F4pvP4YuGP0P8";
    const B64_SIG: &str = "eyJhbGciOiJIUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19..mgbGUsKCwb0daKpAes_UYM7ocw6FIwU_VdrbQWuIUWc";

    #[test]
    fn upsun_test_vectors() {
        assert_eq!(BODY.len(), 44);
        assert_eq!(sign(KEY, BODY), RAW_SIG);
        assert_eq!(
            verify(KEY, Some(RAW_SIG.as_bytes()), BODY, SignedPayload::Raw),
            Ok(())
        );
        assert_eq!(
            verify(
                KEY,
                Some(B64_SIG.as_bytes()),
                BODY,
                SignedPayload::Base64UrlBody
            ),
            Ok(())
        );
        assert_eq!(
            verify(KEY, Some(B64_SIG.as_bytes()), BODY, SignedPayload::Raw),
            Err(JwsError::Mismatch)
        );
    }

    #[test]
    fn tampering_is_refused() {
        let raw = SignedPayload::Raw;
        assert_eq!(verify(KEY, None, BODY, raw), Err(JwsError::Missing));
        assert_eq!(
            verify(b"other-key", Some(RAW_SIG.as_bytes()), BODY, raw),
            Err(JwsError::Mismatch)
        );
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        assert_eq!(
            verify(KEY, Some(RAW_SIG.as_bytes()), &body, raw),
            Err(JwsError::Mismatch)
        );
        // Attached payload (non-empty middle) and extra segments.
        let attached = RAW_SIG.replace("..", ".eyJ9.");
        assert_eq!(
            verify(KEY, Some(attached.as_bytes()), BODY, raw),
            Err(JwsError::Shape)
        );
        assert_eq!(
            verify(KEY, Some(b"a..b.c"), BODY, raw),
            Err(JwsError::Shape)
        );
        // alg none, and a header without b64=false.
        let none = format!(
            "{}..",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","b64":false,"crit":["b64"]}"#)
        );
        assert_eq!(
            verify(KEY, Some(none.as_bytes()), BODY, raw),
            Err(JwsError::Algorithm)
        );
        let plain = format!(
            "{}..{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
            RAW_SIG.rsplit('.').next().unwrap()
        );
        assert_eq!(
            verify(KEY, Some(plain.as_bytes()), BODY, raw),
            Err(JwsError::Algorithm)
        );
        // Truncated signature.
        assert!(verify(
            KEY,
            Some(&RAW_SIG.as_bytes()[..RAW_SIG.len() - 4]),
            BODY,
            raw
        )
        .is_err());
    }

    #[test]
    fn the_shape_is_checked_without_the_body() {
        let header = RAW_SIG.split("..").next().unwrap();
        let with = |sig: &[u8]| format!("{header}..{}", URL_SAFE_NO_PAD.encode(sig));
        assert!(Detached::parse(Some(RAW_SIG.as_bytes())).is_ok());
        assert_eq!(Detached::parse(None), Err(JwsError::Missing));
        for (sig, error) in [
            ("garbage".to_string(), JwsError::Shape),
            ("a.b.c".to_string(), JwsError::Shape),
            (format!("{header}.e30.{}", "A".repeat(43)), JwsError::Shape),
            ("!!..x".to_string(), JwsError::Header),
            (format!("{header}.."), JwsError::Length),
            (with(&[0; 31]), JwsError::Length),
            (with(&[0; 33]), JwsError::Length),
        ] {
            assert_eq!(Detached::parse(Some(sig.as_bytes())), Err(error), "{sig}");
        }
        // Well-shaped but wrong: only the body can tell.
        let zeros = with(&[0; 32]);
        let shaped = Detached::parse(Some(zeros.as_bytes())).unwrap();
        assert_eq!(
            shaped.verify(KEY, BODY, SignedPayload::Raw),
            Err(JwsError::Mismatch)
        );
    }
}
