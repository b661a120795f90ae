//! Live events: `/.well-known/writeguard/events` sends the state at connect, on every
//! change, and again to a client that reconnects, and never the reason.

use crate::common::sse::Events;
use crate::common::{Upstream, Wg};

use super::public;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_send_the_state_at_connect_and_on_every_change_and_again_on_reconnect() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    let mut events = Events::open(wg.proxy, &public("/events")).await;
    assert!(
        events
            .headers
            .get("content-type")
            .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream")),
        "{:?}",
        events.headers
    );
    assert_eq!(
        events.headers.get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let first = events.next_state().await;
    assert!(
        events.seen.starts_with("retry:"),
        "the stream starts with a retry hint: {:?}",
        events.seen
    );
    assert_eq!(first["guarded"], false, "{first}");
    assert!(first["since"].is_null(), "{first}");
    assert_eq!(first["retry_after"], 30, "{first}");

    assert_eq!(wg.engage("deploy <1>", None).await.status, 201);
    let engaged = events.next_state().await;
    assert_eq!(engaged["guarded"], true, "{engaged}");
    assert!(engaged["since"].is_string(), "{engaged}");
    assert!(
        !events.seen.contains("deploy <1>"),
        "the reason leaked into the events: {:?}",
        events.seen
    );

    wg.release(true).await;
    let released = events.next_state().await;
    assert_eq!(released["guarded"], false, "{released}");

    // The client goes away; a deploy starts; the client reconnects and learns it at once.
    drop(events);
    assert_eq!(wg.engage("deploy 2", None).await.status, 201);
    let mut events = Events::open(wg.proxy, &public("/events")).await;
    let now = events.next_state().await;
    assert_eq!(now["guarded"], true, "a reconnect got a stale state: {now}");
    assert!(events.seen.starts_with("retry:"), "{:?}", events.seen);

    // Two listeners at once both see the release.
    let mut other = Events::open(wg.proxy, &public("/events")).await;
    assert_eq!(other.next_state().await["guarded"], true);
    wg.release(true).await;
    assert_eq!(events.next_state().await["guarded"], false);
    assert_eq!(other.next_state().await["guarded"], false);
    assert_eq!(up.hits(), 0);
}
