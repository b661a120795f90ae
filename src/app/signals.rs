//! Which signal stops how: SIGTERM and SIGINT drain and exit, SIGQUIT hands the listeners
//! to a new instance.

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// SIGTERM and SIGINT both stop gracefully (containers and terminals alike); SIGQUIT hands
/// the listeners over to a new instance.
pub(super) struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: finishing in-flight requests"); ShutdownSignal::GracefulTerminate }
            _ = int.recv() => { tracing::info!("SIGINT: finishing in-flight requests"); ShutdownSignal::GracefulTerminate }
            _ = quit.recv() => { tracing::info!("SIGQUIT: handing listeners to the new instance"); ShutdownSignal::GracefulUpgrade }
        }
    }
}
