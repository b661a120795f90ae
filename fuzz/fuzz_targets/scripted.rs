//! The peer both HTTP/1.1 differential targets put hyper in front of: a connection whose
//! reads are the fuzz input (in 4 KiB pieces) then the end of the stream, and whose writes
//! are dropped; and the one runtime per thread hyper runs on. Included by each target with
//! `#[path]` (cargo-fuzz targets are separate binaries).

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Scripted {
    data: Vec<u8>,
    /// Reads wait for the first write (an upstream answers once asked: a client takes bytes
    /// before its request for an error).
    wait_for_write: bool,
    reader: Option<Waker>,
}

// Each target (a binary of its own) uses one of the two.
#[allow(dead_code)]
impl Scripted {
    /// A client: the input is there from the start.
    pub fn client(data: &[u8]) -> Self {
        Scripted {
            data: data.to_vec(),
            wait_for_write: false,
            reader: None,
        }
    }

    /// An upstream: the input comes once something was written to it.
    pub fn upstream(data: &[u8]) -> Self {
        Scripted {
            wait_for_write: true,
            ..Scripted::client(data)
        }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.wait_for_write {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = self.data.len().min(buf.remaining()).min(4096);
        buf.put_slice(&self.data[..n]);
        self.data.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.wait_for_write = false;
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    pub static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
}
