//! The `webhook-id`, `webhook-timestamp` and `webhook-signature` headers: HMAC-SHA256 with
//! the base64-decoded secret over `{id}.{timestamp}.{body}`, sent as space-separated
//! `v1,<base64>` entries (one per secret while they rotate). Verified in constant time;
//! a timestamp outside the tolerance is refused, so a captured delivery replays only within
//! it (and the endpoint remembers the ids it took for longer than that).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A decoded secret. Never printed.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("is not base64 after \"whsec_\"")]
    NotBase64,
    #[error("is empty")]
    Empty,
}

impl Key {
    /// `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    pub fn parse(secret: &str) -> Result<Key, KeyError> {
        let raw = secret.strip_prefix("whsec_").unwrap_or(secret);
        let bytes = STANDARD.decode(raw).map_err(|_| KeyError::NotBase64)?;
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Key(bytes))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// The `webhook-signature` value for a message (one `v1,` entry).
pub fn sign(key: &Key, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = key.mac(id, &timestamp.to_string(), body).finalize();
    format!("v1,{}", STANDARD.encode(tag.into_bytes()))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing or unreadable header {0}")]
    Missing(&'static str),
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is {0} s away from now, past the tolerance")]
    OutsideTolerance(i64),
    #[error("no v1 signature in webhook-signature")]
    NoV1,
    #[error("no signature matches")]
    NoMatch,
}

/// The headers of a delivery, checked for shape (before its body is read).
#[derive(Debug, Clone)]
pub struct Signed {
    pub id: String,
    timestamp: String,
    /// The decoded `v1` tags.
    tags: Vec<Vec<u8>>,
}

impl Signed {
    /// Reads the three headers and checks the timestamp against `now` (unix seconds): all
    /// of it can be refused before the body is read.
    pub fn parse(
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        now: i64,
        tolerance: Duration,
    ) -> Result<Signed, SignatureError> {
        let id = id
            .filter(|s| !s.is_empty())
            .ok_or(SignatureError::Missing("webhook-id"))?;
        let timestamp_text = timestamp.ok_or(SignatureError::Missing("webhook-timestamp"))?;
        let signature = signature.ok_or(SignatureError::Missing("webhook-signature"))?;
        let timestamp: i64 = timestamp_text
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        let skew = now.saturating_sub(timestamp);
        let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
        if skew.saturating_abs() > tolerance {
            return Err(SignatureError::OutsideTolerance(skew));
        }
        // Only `v1` entries count; an empty or undecodable tag matches nothing.
        let tags: Vec<Vec<u8>> = signature
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, tag)| STANDARD.decode(tag).ok())
            .filter(|tag| !tag.is_empty())
            .collect();
        if tags.is_empty() {
            return Err(SignatureError::NoV1);
        }
        Ok(Signed {
            id: id.to_owned(),
            timestamp: timestamp_text.to_owned(),
            tags,
        })
    }

    /// Whether one of the tags is the HMAC of `body` under one of `keys` (constant time per
    /// comparison: `Mac::verify_slice`, which also refuses a tag of another length).
    pub fn verify(&self, keys: &[Key], body: &[u8]) -> Result<(), SignatureError> {
        let matches = keys.iter().any(|key| {
            self.tags.iter().any(|tag| {
                key.mac(&self.id, &self.timestamp, body)
                    .verify_slice(tag)
                    .is_ok()
            })
        });
        if matches {
            Ok(())
        } else {
            Err(SignatureError::NoMatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const EXPECTED: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
    const TOL: Duration = Duration::from_secs(300);

    fn check(signature: &str, now: i64) -> Result<(), SignatureError> {
        let key = Key::parse(SECRET).unwrap();
        Signed::parse(Some(ID), Some(&TS.to_string()), Some(signature), now, TOL)?
            .verify(&[key], BODY)
    }

    #[test]
    fn the_reference_vector_signs_and_verifies() {
        let key = Key::parse(SECRET).unwrap();
        assert_eq!(sign(&key, ID, TS, BODY), EXPECTED);
        assert_eq!(check(EXPECTED, TS), Ok(()));
    }

    #[test]
    fn a_changed_body_or_other_key_does_not_verify() {
        let s = Signed::parse(Some(ID), Some(&TS.to_string()), Some(EXPECTED), TS, TOL).unwrap();
        let key = Key::parse(SECRET).unwrap();
        assert_eq!(
            s.verify(std::slice::from_ref(&key), b"{}"),
            Err(SignatureError::NoMatch)
        );
        let other = Key::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            s.verify(std::slice::from_ref(&other), BODY),
            Err(SignatureError::NoMatch)
        );
        // Rotation: either key verifies.
        assert_eq!(s.verify(&[other, key], BODY), Ok(()));
    }

    #[test]
    fn empty_truncated_and_unknown_versions_are_refused() {
        assert_eq!(check("v1,", TS), Err(SignatureError::NoV1));
        assert_eq!(check("v1a", TS), Err(SignatureError::NoV1));
        assert_eq!(
            check("v1a,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=", TS),
            Err(SignatureError::NoV1)
        );
        assert_eq!(check("", TS), Err(SignatureError::NoV1));
        // Truncated: a prefix of the right tag (still valid base64) matches nothing.
        assert_eq!(
            check("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3", TS),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check("v1,tZ1I4/hDygAJgO5T", TS),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn any_of_several_entries_verifies() {
        let several = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,xyz {EXPECTED}");
        assert_eq!(check(&several, TS), Ok(()));
        let none = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,";
        assert_eq!(check(none, TS), Err(SignatureError::NoMatch));
    }

    #[test]
    fn a_timestamp_past_the_tolerance_is_refused() {
        assert_eq!(check(EXPECTED, TS + 300), Ok(()));
        assert_eq!(check(EXPECTED, TS - 300), Ok(()));
        assert_eq!(
            check(EXPECTED, TS + 301),
            Err(SignatureError::OutsideTolerance(301))
        );
        assert_eq!(
            check(EXPECTED, TS - 301),
            Err(SignatureError::OutsideTolerance(-301))
        );
        let bad = Signed::parse(Some(ID), Some("soon"), Some(EXPECTED), TS, TOL);
        assert_eq!(bad.unwrap_err(), SignatureError::BadTimestamp);
    }

    #[test]
    fn missing_headers_and_bad_secrets_are_named() {
        let ts = TS.to_string();
        let r = Signed::parse(None, Some(&ts), Some(EXPECTED), TS, TOL);
        assert_eq!(r.unwrap_err(), SignatureError::Missing("webhook-id"));
        let r = Signed::parse(Some(ID), None, Some(EXPECTED), TS, TOL);
        assert_eq!(r.unwrap_err(), SignatureError::Missing("webhook-timestamp"));
        let r = Signed::parse(Some(ID), Some(&ts), None, TS, TOL);
        assert_eq!(r.unwrap_err(), SignatureError::Missing("webhook-signature"));
        assert_eq!(Key::parse("whsec_!!").unwrap_err(), KeyError::NotBase64);
        assert_eq!(Key::parse("whsec_").unwrap_err(), KeyError::Empty);
        assert!(!format!("{:?}", Key::parse(SECRET).unwrap()).contains("C2FV"));
    }
}
