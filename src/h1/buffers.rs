//! The native engine's I/O buffers, taken from a per-thread pool when a request starts and
//! given back when its exchange ends: an idle keep-alive connection holds none (its wait for
//! the next request reads into a few hundred bytes of its own).

use std::cell::RefCell;

/// Capacity of each buffer: a request or response head, or a slice of a body, fits.
pub const SIZE: usize = 16 * 1024;
/// Spare buffers kept per worker thread.
const KEEP: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for [`SIZE`] bytes.
pub fn take() -> Vec<u8> {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// Returns a buffer to the pool (one grown past twice [`SIZE`], or smaller than it: an
/// exact-size copy made for a held request, is dropped instead).
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() < SIZE || buf.capacity() > SIZE * 2 {
        return;
    }
    buf.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEEP {
            spare.push(buf);
        }
    });
}
