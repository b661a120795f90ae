//! `verify` on any `X-JWS-Signature` value and body, with a fixed key. Input: the header
//! value, one `\n`, then the body (no `\n`: the whole input is the header value, body empty).
//! Never panics, and whatever verifies carries the HMAC-SHA256, under that key, of its own
//! header segment, ".", and the body (raw or base64url, per mode): recomputed here
//! independently of the code under test.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use writeguard::upsun::{verify, SignedPayload};

const KEY: &[u8] = b"whatever-you-want";

fuzz_target!(|data: &[u8]| {
    let (signature, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    for mode in [SignedPayload::Raw, SignedPayload::Base64UrlBody] {
        if verify(KEY, Some(signature), body, mode).is_ok() {
            let token = std::str::from_utf8(signature).expect("verified tokens are UTF-8");
            let (header, sig) = token.trim().split_once("..").expect("detached JWS");
            let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
            mac.update(header.as_bytes());
            mac.update(b".");
            match mode {
                SignedPayload::Raw => mac.update(body),
                SignedPayload::Base64UrlBody => mac.update(URL_SAFE_NO_PAD.encode(body).as_bytes()),
            }
            let expected = mac.finalize().into_bytes();
            assert_eq!(
                URL_SAFE_NO_PAD.decode(sig).as_deref(),
                Ok(&expected[..]),
                "verified a signature that is not the key's MAC"
            );
        }
    }
    assert!(verify(KEY, None, body, SignedPayload::Raw).is_err());
});
