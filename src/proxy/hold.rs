//! Holding a guarded write while the deploy finishes: it waits, unread (TCP back-pressure
//! keeps its body in the client), until the guard is released and its turn comes, its hold
//! budget is spent, or the server stops. A client that goes away while held is never
//! forwarded.

use std::os::fd::RawFd;
use std::time::Duration;

use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};

use crate::deadline;
use crate::guard::{Guard, Place};
use crate::traffic::InFlight;

/// How often a held request checks that its client is still there.
const CLIENT_CHECK: Duration = Duration::from_millis(500);

pub enum Held {
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
/// (there are none: it goes at once).
pub async fn until_turn(guard: &Guard, client: Option<RawFd>, deadline: Instant) -> Held {
    let mut check = interval_at(
        deadline::after_tokio(Instant::now(), CLIENT_CHECK),
        CLIENT_CHECK,
    );
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stopped = guard.stopped();
    tokio::pin!(stopped);
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
                _ = &mut stopped => return Held::Stopping,
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
