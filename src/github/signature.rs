//! `X-Hub-Signature-256: sha256=<hex>`: the HMAC-SHA256 of the raw body, keyed with the
//! webhook's secret. The header's shape is checked before the body is read; the digest is
//! compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A well-formed signature, waiting for the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no X-Hub-Signature-256 header (is a secret set on the GitHub webhook?)")]
    Missing,
    #[error("X-Hub-Signature-256 is not \"sha256=\" and 64 hex digits")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body and github.secret")]
    Mismatch,
}

impl Signature {
    pub fn parse(header: Option<&[u8]>) -> Result<Signature, SignatureError> {
        let value = header.ok_or(SignatureError::Missing)?;
        let hex_digest = value
            .strip_prefix(b"sha256=")
            .ok_or(SignatureError::Malformed)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| SignatureError::Malformed)?;
        Ok(Signature(digest))
    }

    pub fn verify(&self, secret: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(body);
        mac.verify_slice(&self.0)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// The header value GitHub sends for `body` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example ("Validating webhook deliveries").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_documented_vector() {
        assert_eq!(sign(SECRET, BODY), SIGNATURE);
        let s = Signature::parse(Some(SIGNATURE.as_bytes())).unwrap();
        assert_eq!(s.verify(SECRET, BODY), Ok(()));
        assert_eq!(
            s.verify(SECRET, b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            s.verify(b"another secret", BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused_before_the_body() {
        assert_eq!(Signature::parse(None), Err(SignatureError::Missing));
        let digest = &SIGNATURE["sha256=".len()..];
        for bad in [
            String::new(),
            "sha256=".to_owned(),
            digest.to_owned(),
            format!("sha1={digest}"),
            format!("sha256={}", &digest[..63]),
            format!("sha256={digest}0"),
            format!("sha256={}g", &digest[..63]),
            format!("SHA256={digest}"),
        ] {
            assert_eq!(
                Signature::parse(Some(bad.as_bytes())),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        // Hex digits in either case are the same digest.
        let upper = format!("sha256={}", digest.to_uppercase());
        let s = Signature::parse(Some(upper.as_bytes())).unwrap();
        assert_eq!(s.verify(SECRET, BODY), Ok(()));
    }
}
