//! SpaceX sync (work in progress: see issue 5).

use tokio::task::JoinHandle;

use crate::{api::error::ApiError, app::AppState, proto};

/// Starts the scheduled sync.
pub fn spawn(_state: &AppState) -> Vec<JoinHandle<()>> {
    Vec::new()
}

/// Runs one sync now.
pub async fn sync_now(_state: &AppState) -> Result<proto::SyncReport, ApiError> {
    Err(ApiError::Unavailable(
        "the SpaceX sync is not built yet".into(),
    ))
}
