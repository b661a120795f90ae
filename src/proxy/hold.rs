//! Holding a guarded write while the deploy finishes: it waits, unread (TCP back-pressure
//! keeps its body in the client), until the guard is released or its hold budget is spent.
//! A client that goes away while held is never forwarded.

use std::os::fd::RawFd;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};

use crate::guard::Guard;

/// How often a held request checks that its client is still there.
const CLIENT_CHECK: Duration = Duration::from_millis(500);

pub enum Held {
    /// Go ahead. The permit (if any) counts against `release_concurrency` until dropped.
    Released(Option<OwnedSemaphorePermit>),
    TimedOut,
    ClientGone,
}

/// Waits, in arrival order, for the release of the guard, the hold's `deadline`, or the
/// client leaving, whichever comes first.
pub async fn until_release(guard: &Guard, client: Option<RawFd>, deadline: Instant) -> Held {
    let mut check = interval_at(Instant::now() + CLIENT_CHECK, CLIENT_CHECK);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The episode first, then the guard: a release publishes the snapshot before it
        // opens the episode, so either the episode we took will be opened, or we see the
        // release here. (The other way round, a release in between would leave us queued
        // on the next, closed episode until our deadline.)
        let episode = guard.gate().current();
        if !guard.snapshot().guarded() {
            return Held::Released(None);
        }
        // Queue once per episode, keeping our place across the client checks.
        let acquire = episode.acquire_owned();
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                permit = &mut acquire => match permit {
                    Ok(permit) if !guard.snapshot().guarded() => return Held::Released(Some(permit)),
                    // Released, then engaged again before our turn: wait for the next release.
                    _ => break,
                },
                _ = sleep_until(deadline) => return Held::TimedOut,
                _ = check.tick() => {
                    if client.is_some_and(client_gone) {
                        return Held::ClientGone;
                    }
                }
            }
        }
    }
}

/// Whether the client closed its side of the connection (or it broke). hyper does not read
/// the socket while a request is pending, so ask the kernel: `POLLRDHUP` is set once the
/// client's FIN has arrived, even with unread body bytes still queued before it.
pub fn client_gone(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `fd` is the socket of the connection serving this request. hyper owns that
    // connection and drops this request's future before the socket, so the fd is open
    // whenever this runs. poll() writes only into `pfd` and, with a zero timeout, never
    // blocks.
    #[allow(unsafe_code)]
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    ready > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
