//! The background workers, started once the database is ready. Each stops when
//! the shutdown token fires, after finishing its unit of work.

use tokio::task::JoinHandle;

use crate::app::AppState;

/// Starts every background worker.
pub fn spawn_all(state: &AppState) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    workers.extend(crate::spacex::spawn(state));
    workers.extend(crate::outbox::spawn(state));
    workers.extend(crate::rockets::spawn(state));
    workers
}
