//! Exit as soon as the last connection is done once shutdown starts, rather than after the
//! whole grace period as pingora would (a clean exit: the pid file goes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::server::{ExecutionPhase, Server};

use super::pidfile::PidFile;
use crate::deadline;
use crate::listener::OpenConnections;

/// Once pingora enters its grace period (listeners closed, connections told to finish),
/// exit as soon as no connection is open, or when the grace period ends.
pub(super) fn spawn_drain_watcher(
    server: &Server,
    connections: Arc<OpenConnections>,
    grace: Duration,
    pid_file: Arc<PidFile>,
) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::ShutdownGracePeriod) => {
                let deadline = deadline::after(Instant::now(), grace);
                while connections.open() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let left = connections.open();
                if left > 0 {
                    tracing::warn!(left, "grace period over; closing remaining connections");
                } else {
                    tracing::info!("all connections finished; exiting");
                }
                pid_file.remove();
                std::process::exit(0);
            }
            Ok(ExecutionPhase::Terminated)
            | Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            _ => {}
        }
    });
}
