//! Round trip: what `sign` makes with a key verifies with that key and body, and fails with
//! another key, another body, or any single byte of the token changed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use writeguard::upsun::{sign, verify, SignedPayload};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    key: &'a [u8],
    other_key: &'a [u8],
    body: &'a [u8],
    other_body: &'a [u8],
    flip_at: usize,
    flip_with: u8,
}

fuzz_target!(|input: Input<'_>| {
    let token = sign(input.key, input.body);
    let raw = SignedPayload::Raw;
    assert_eq!(
        verify(input.key, Some(token.as_bytes()), input.body, raw),
        Ok(())
    );

    if input.other_body != input.body {
        assert!(verify(input.key, Some(token.as_bytes()), input.other_body, raw).is_err());
    }
    // HMAC pads short keys with zeros and hashes keys longer than a block, so keys that
    // differ only that way are the same key: compare what HMAC actually uses.
    if hmac_key(input.other_key) != hmac_key(input.key) {
        assert!(verify(input.other_key, Some(token.as_bytes()), input.body, raw).is_err());
    }

    let mut changed = token.clone().into_bytes();
    let at = input.flip_at % changed.len();
    changed[at] ^= input.flip_with.max(1);
    assert!(
        verify(input.key, Some(&changed), input.body, raw).is_err(),
        "a token with byte {at} changed still verifies"
    );
});

/// The 64-byte block HMAC-SHA256 keys with (RFC 2104).
fn hmac_key(key: &[u8]) -> [u8; 64] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    block
}
