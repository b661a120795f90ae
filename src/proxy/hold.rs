//! Holding a guarded write while the deploy finishes: it waits, unread (TCP back-pressure
//! keeps its body in the client), until the guard is released and its turn comes, its hold
//! budget is spent, or the server stops. A client that goes away while held is never
//! forwarded.
//!
//! The hold policy (holding off or full, short of file descriptors, stopping, the client
//! gone, the budget spent) is [`Proxy::hold`], the one place both engines ask: the hyper
//! path (`Proxy::hold_or_refuse`) and the native one (`h1::held`) only carry out its answer,
//! so they cannot drift apart. It needs no request: the request waits in the engine that
//! read its head.

use std::os::fd::RawFd;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::deadline;
use crate::guard::{Guard, Place};
use crate::metrics::Outcome;
use crate::traffic::InFlight;

use super::Proxy;

/// What [`Proxy::hold`] decided for a guarded write.
pub enum Hold {
    /// Forward it, once. `turn` (None when nobody was queued ahead) holds one of the
    /// `release_concurrency` permits and `write` counts the write in flight: both until the
    /// forward ends. A request none of which reached the app is tried again until `until`,
    /// the end of its hold budget.
    Go {
        turn: Option<Place>,
        write: InFlight,
        until: Instant,
    },
    /// The guard's 503, after the body is drained. `outcome`: `Refused` (never held:
    /// holding off or full, short of file descriptors, stopping) or `HeldRefused`; `close`:
    /// with `Connection: close` whatever the body (the server stops, or descriptors are
    /// short).
    Refuse { outcome: Outcome, close: bool },
}

impl Proxy {
    /// A guarded write (`fd`: its client's socket, to notice the client leaving): held until
    /// the release and its turn, or refused when holding is off, full, short of file
    /// descriptors, outlasted by the deploy, or the server stops. Both engines' one answer.
    pub async fn hold(&self, fd: Option<RawFd>) -> Hold {
        let refused = |close| Hold::Refuse {
            outcome: Outcome::Refused,
            close,
        };
        let held_refused = |close| Hold::Refuse {
            outcome: Outcome::HeldRefused,
            close,
        };
        // Read per request: a reload (SIGHUP) may change them.
        let (hold_for, max_held) = {
            let settings = &self.guard.snapshot().settings;
            (settings.hold, settings.hold_max_requests)
        };
        if hold_for.is_zero() {
            return refused(false);
        }
        if self.guard.stopping() {
            return refused(true);
        }
        if self.headroom.tight() {
            // Each held write keeps its connection's descriptor: keep enough for reads.
            return refused(true);
        }
        let traffic = self.guard.traffic();
        let Some(held) = traffic.count_held(max_held) else {
            tracing::warn!(max = max_held, "hold is full: answering 503 at once");
            return refused(false);
        };
        let until = deadline::after_tokio(Instant::now(), hold_for);
        let outcome = until_turn(&self.guard, fd, until).await;
        drop(held);
        match outcome {
            Held::Go { turn, write } => {
                // The guarantee: a client that gave up is never forwarded behind its back.
                if fd.is_some_and(client_gone) {
                    return held_refused(false);
                }
                // Shutting down: answered now, or it might be cut off half-sent.
                if self.guard.stopping() {
                    return held_refused(true);
                }
                Hold::Go { turn, write, until }
            }
            Held::Stopping => held_refused(true),
            Held::TimedOut | Held::ClientGone => held_refused(false),
        }
    }
}

/// How often a held request checks that its client is still there.
const CLIENT_CHECK: Duration = Duration::from_millis(500);

enum Held {
    /// Go to the app. `turn` (None when nobody was queued ahead) holds one of the
    /// `release_concurrency` permits until dropped; `write` counts the write in flight.
    Go {
        turn: Option<Place>,
        write: InFlight,
    },
    TimedOut,
    ClientGone,
    /// The server started shutting down: answer now, forward nothing.
    Stopping,
}

/// Waits, in arrival order, for the guard's release and then our turn, the hold's
/// `deadline`, the client leaving, or the server stopping, whichever comes first. Called
/// with the guard released, it lines up behind held writes still waiting for their turn
/// (there are none: it goes at once). Kept small, as each held write carries it: one timer
/// for both the client checks and the deadline, and the stop as a bare `Notified`.
async fn until_turn(guard: &Guard, client: Option<RawFd>, deadline: Instant) -> Held {
    let stopped = guard.stop_notified();
    tokio::pin!(stopped);
    if guard.stopping() {
        return Held::Stopping;
    }
    // The next client check, or the deadline if sooner.
    let next = || deadline::after_tokio(Instant::now(), CLIENT_CHECK).min(deadline);
    let timer = sleep_until(next());
    tokio::pin!(timer);
    let (gate, traffic) = (guard.gate(), guard.traffic());
    loop {
        // The episode first, then the guard: a release publishes the snapshot before it
        // opens the episode, so either the episode we took will be opened, or we see the
        // release here. (The other way round, a release in between would leave us queued
        // on the next, closed episode until our deadline.) The write is counted before the
        // guard is read, for `wait: quiesced`.
        let episode = gate.current();
        let write = traffic.write_in_flight();
        let place = if guard.snapshot().guarded() {
            drop(write);
            episode.enter()
        } else {
            match gate.join_released() {
                None => return Held::Go { turn: None, write },
                Some(place) => {
                    drop(write);
                    place
                }
            }
        };
        drop(episode);
        // Queue once per episode, keeping our place across the client checks.
        let mut place = place;
        let acquire = place.queue().acquire_owned();
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return Held::Stopping,
                permit = &mut acquire => {
                    // The queues are never closed.
                    let Ok(permit) = permit else { break };
                    place.admit(permit);
                    let write = traffic.write_in_flight();
                    if !guard.snapshot().guarded() {
                        return Held::Go { turn: Some(place), write };
                    }
                    // Released, then engaged again before our turn: wait for the next release.
                    break;
                }
                () = &mut timer => {
                    if Instant::now() >= deadline {
                        return Held::TimedOut;
                    }
                    if client.is_some_and(client_gone) {
                        return Held::ClientGone;
                    }
                    timer.as_mut().reset(next());
                }
            }
        }
    }
}

/// Whether the client closed its side of the connection (or it broke). Neither engine reads
/// the socket while a request is held, so ask the kernel: `POLLRDHUP` is set once the
/// client's FIN has arrived, even with unread body bytes still queued before it.
fn client_gone(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `fd` is the socket of the connection serving this request. The engine serving
    // it (hyper, or the native one) owns that connection and drops this request's future
    // before the socket, so the fd is open whenever this runs. poll() writes only into `pfd` and, with a zero timeout, never
    // blocks.
    #[allow(unsafe_code)]
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    ready > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
