//! Kubernetes probes, metrics and the OpenAPI document.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::{
    api::{auth::Caller, ApiState},
    health::CheckStatus,
};

/// Probe and document routes: (method, path), for the OpenAPI test.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readiness"),
    ("get", "/liveness"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// The OpenAPI 3.1 document of the HTTP surface (kept in `openapi/spacet.json`).
pub const OPENAPI: &str = include_str!("../../../openapi/spacet.json");

/// The probe routes, with `/metrics` unless it has a listener of its own.
pub fn router(with_metrics: bool) -> axum::Router<ApiState> {
    use axum::routing::get;
    let router = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readiness", get(readiness))
        .route("/liveness", get(liveness))
        .route("/openapi.json", get(openapi));
    if with_metrics {
        router.merge(metrics_router())
    } else {
        router
    }
}

/// `GET /metrics`.
pub(crate) fn metrics_router() -> axum::Router<ApiState> {
    axum::Router::new().route("/metrics", axum::routing::get(metrics))
}

/// 200 while the process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 once migrations are applied and the database answers; 503 before that
/// and from the moment shutdown begins.
async fn readiness(State(state): State<ApiState>) -> Response {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "shutting down"})),
        )
            .into_response();
    }
    if state.rockets.is_stalled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not ready", "reason": "the rocket writer has not committed for longer than ROCKETS_WRITE_TIMEOUT"}))).into_response();
    }
    if !state.health.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not ready", "reason": "starting: database or migrations not ready"}))).into_response();
    }
    // Through the probes' own pool: requests holding every API connection do not
    // make readiness wait, nor fail it.
    if state.health.database_answers().await {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "the database does not answer"})),
        )
            .into_response()
    }
}

/// 200 healthy (degraded checks included) or 500 unhealthy, one entry per
/// dependency. Everyone sees the statuses; the details (error text, topic names,
/// counts) only admins (and everyone when authentication is off, which the
/// answer then says).
async fn liveness(State(state): State<ApiState>, caller: Caller) -> Response {
    let (overall, mut checks) = crate::health::run_all(state.health.checks()).await;
    if !caller.is_admin() {
        if let serde_json::Value::Object(checks) = &mut checks {
            for entry in checks.values_mut() {
                if let serde_json::Value::Object(entry) = entry {
                    entry.retain(|key, _| key == "status");
                }
            }
        }
    }
    let mut body = json!({"checks": checks, "auth_mode": state.auth.mode_name()});
    match state.auth.mode_name() {
        "none" => {
            body["warning"] = json!(
            "authentication is off (AUTH_MODE=none): every caller may read and cancel every ticket"
        )
        }
        "dev" => {
            body["warning"] = json!(
                "development tokens (AUTH_MODE=dev): signed with a local key, not for production"
            )
        }
        _ => {}
    }
    match overall {
        CheckStatus::Unhealthy => {
            body["status"] = json!("unhealthy");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
        _ => {
            body["status"] = json!("healthy");
            (StatusCode::OK, Json(body)).into_response()
        }
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state.pool),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
