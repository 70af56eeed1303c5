//! HTTP routes of the rocket telemetry.

/// Rocket routes: (method, path).
pub const ROUTES: &[(&str, &str)] = &[];

/// The rocket routes.
pub fn router() -> axum::Router<crate::app::AppState> {
    axum::Router::new()
}
