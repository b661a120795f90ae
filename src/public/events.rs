//! `GET {prefix}/events`: Server-Sent Events. One `state` event at connect and one after every
//! change, a `retry:` hint for reconnects, and heartbeat comments so idle proxies between the
//! page and us keep the stream open. Streams end when the server shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio_stream::wrappers::{IntervalStream, WatchStream};

use crate::deadline;
use crate::guard::Guard;
use crate::http::Body;

const HEARTBEAT: Duration = Duration::from_secs(15);
/// Tells EventSource how long to wait before reconnecting (milliseconds).
const RETRY_MS: u32 = 2000;

pub fn stream(guard: Arc<Guard>) -> Body {
    let stopped = guard.stopped();
    let hello = stream::once(async { Bytes::from(format!("retry: {RETRY_MS}\n\n")) });
    // WatchStream yields the current value first: the state at connect.
    let states = WatchStream::new(guard.subscribe()).map(move |()| {
        let json = serde_json::to_string(&guard.public_status()).expect("status serializes");
        Bytes::from(format!("event: state\ndata: {json}\n\n"))
    });
    let mut beat = tokio::time::interval_at(
        deadline::after_tokio(tokio::time::Instant::now(), HEARTBEAT),
        HEARTBEAT,
    );
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeats = IntervalStream::new(beat).map(|_| Bytes::from_static(b": heartbeat\n\n"));
    let events = hello
        .chain(stream::select(states, heartbeats))
        .take_until(stopped)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Body::boxed(StreamBody::new(events))
}
