//! The chunked transfer coding as the native engine writes it: [`encode`] re-frames data as
//! one chunk per piece. Reading is the framing checker's own machine
//! (`crate::framing::chunked::Decoder`).

/// Appends `data` to `out` as one chunk (nothing for empty data: that would end the body).
pub fn encode(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let mut n = data.len();
    let mut i = digits.len();
    while n > 0 || i == digits.len() {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, no trailers.
pub const END: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_one_chunk_per_piece() {
        let mut out = Vec::new();
        encode(&mut out, b"");
        encode(&mut out, &[b'a'; 26]);
        out.extend_from_slice(END);
        assert_eq!(
            out,
            [&b"1a\r\n"[..], &[b'a'; 26], b"\r\n0\r\n\r\n"].concat()
        );
    }
}
