//! A guarded write held by the native engine ([`Native::hold`]): `Proxy::hold`, the hold
//! policy both engines share, says whether it waits and for what; this file only carries
//! out its answer. What it must not do: decide anything itself.
//!
//! While held, the body stays unread (TCP back-pressure keeps it in the client) and the
//! request keeps no pool buffer: its rewritten head and the bytes read past its head wait
//! in allocations of their own size, and the wait itself (`Proxy::hold`'s future, about
//! half a KB) is boxed, so the connection's own future, idle or not, is not sized by it
//! (benches/README.md, "Hold"). Released in its turn, it is forwarded once by the same
//! [`Native::exchange_until`] as any request, its turn and its in-flight count kept until
//! that exchange ends; refused, it gets the guard's 503 after its body is drained, as
//! `Take::Refuse` does.

use std::os::fd::RawFd;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::metrics::Outcome;
use crate::proxy::Hold;

use super::buffers;
use super::exchange::{Ask, Ended};
use super::inbound::Inbound;
use super::request::Framing;
use super::Native;

/// What a held write's exchange or 503 needs of its request.
pub struct Held {
    pub framing: Framing,
    /// For the 503: whether the client prefers HTML (`Admit::Hold`).
    pub html: bool,
    pub head_request: bool,
    pub idempotent: bool,
    /// The client asked to close, or the server is stopping.
    pub close: bool,
}

impl Native {
    /// Holds a guarded write (`Take::Hold`; `up_head`: its head, rewritten for the app;
    /// `fd`: the client's socket, to notice it leaving), then forwards it once or answers
    /// the 503, as `Proxy::hold` says.
    pub async fn hold<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        inb: &mut Inbound,
        up_head: &mut Vec<u8>,
        fd: Option<RawFd>,
        held: Held,
        stopping: impl Fn() -> bool,
    ) -> Ended {
        // Exact-size copies for the wait; the pool buffers go back for others to use.
        inb.shrink();
        let pooled = std::mem::take(up_head);
        *up_head = pooled.to_vec();
        buffers::give(pooled);
        // The wait is what a held write carries: boxed, so neither this future nor the
        // connection's (inline in it, idle or not) is sized by it.
        let decided = Box::pin(self.proxy.hold(fd)).await;
        inb.regrow();
        match decided {
            Hold::Go { turn, write, until } => {
                let ask = Ask {
                    head: up_head,
                    framing: held.framing,
                    head_request: held.head_request,
                    idempotent: held.idempotent,
                    close: held.close,
                    stale: None,
                };
                // Boxed only once released: a held request's future stays small.
                let exchange =
                    self.exchange_until(client, inb, ask, Some(until.into_std()), stopping);
                let mut ended = Box::pin(exchange).await;
                // Both until the last byte both ways, as any forwarded write's count.
                drop((turn, write));
                if ended.outcome == Outcome::Forwarded {
                    ended.outcome = Outcome::HeldForwarded;
                }
                ended
            }
            Hold::Refuse { outcome, close } => {
                let refused = self.refuse(
                    client,
                    inb,
                    held.framing,
                    held.html,
                    held.close || close,
                    held.head_request,
                );
                let mut ended = Box::pin(refused).await;
                ended.outcome = outcome;
                ended
            }
        }
    }
}
