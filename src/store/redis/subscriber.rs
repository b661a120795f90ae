//! The change notices: a subscription to the site's channel, made again whenever it is lost
//! (after a restart of Redis, an idle subscriber is not resubscribed by anything else). A
//! notice only wakes the poll early: the poll is what makes a change certain, since pub/sub
//! loses whatever was published while the subscription was down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_stream::StreamExt;

/// How long to wait before subscribing again after a failure.
const RETRY: Duration = Duration::from_millis(250);

/// Runs until the runtime stops: each message, and each (re)subscription (something may
/// have been published while there was none), notifies `changes`.
pub(super) async fn run(
    client: redis::Client,
    channel: String,
    connect_timeout: Duration,
    changes: Arc<Notify>,
) {
    let mut failing = false;
    loop {
        let subscribed = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                if failing {
                    tracing::info!("subscribed to guard state changes again");
                    failing = false;
                }
                changes.notify_one();
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    changes.notify_one();
                }
                tracing::warn!("the subscription to guard state changes ended; subscribing again (the poll goes on meanwhile)");
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot subscribe to guard state changes; retrying (the poll goes on meanwhile)");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!("cannot subscribe to guard state changes: no answer; retrying (the poll goes on meanwhile)");
            }
            _ => {}
        }
        tokio::time::sleep(RETRY).await;
    }
}
