//! Rocket telemetry (work in progress: see issue 7).

pub mod grpc;
pub mod http;

/// Starts the rocket workers.
pub fn spawn(_state: &crate::app::AppState) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}
