//! The native HTTP/1.1 engine against the framing checker, differentially: the same byte
//! stream to both; every request the engine would act on (httparse head, its framing, the
//! chunked decoder with its input split where the first byte says) must end at the byte
//! where the checker says it ends, and the checker must not have stopped before. Where
//! they would differ, the engine must have declined (handed the request to hyper).
#![no_main]

use libfuzzer_sys::fuzz_target;
use writeguard::h1::differential;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    if let Err(e) = differential::agree(stream, usize::from(split), 8192) {
        panic!("{e}");
    }
});
