//! HTTP routes of the rocket telemetry.
//!
//! - `POST /messages`: one message; 201 when stored, 200 when it was already
//!   stored, 400 (all problems named) when invalid, 409 (`ALREADY_EXISTS`) when its
//!   number is taken by another message, 503 when it could not be stored.
//! - `GET /rockets`, `GET /rockets/{channel}`: plain JSON (numbers as numbers).
//! - `GET /v1/rockets`, `GET /v1/rockets/{channel}`: the RPCs through the gateway
//!   (proto3 JSON, as grpc-gateway would serve them).
//!
//! Every error body is grpc-gateway's `{"code", "message", "details"}`.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    Json,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::gateway::{call, decode_body, decode_query, GatewayResult};
use crate::{
    api::{
        error::{ApiError, GatewayError},
        grpc::rockets::RocketApi,
        ApiState,
    },
    metrics::ROCKET_MESSAGES,
    proto::{self, rocket_service_server::RocketService},
    rockets::{message::Message, store::Rocket, writer::Outcome, RocketError},
};

/// Rocket routes: (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/messages"),
    ("get", "/rockets"),
    ("get", "/rockets/{channel}"),
    ("get", "/v1/rockets"),
    ("get", "/v1/rockets/{channel}"),
];

/// The rocket routes.
pub fn router() -> axum::Router<ApiState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/messages", post(post_message))
        .route("/rockets", get(list_rockets))
        .route("/rockets/{channel}", get(get_rocket))
        .route("/v1/rockets", get(list_rockets_v1))
        .route("/v1/rockets/{channel}", get(get_rocket_v1))
}

async fn post_message(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> GatewayResult {
    let message = decode_body::<Value>(&headers, body, &[])
        .and_then(|body| Message::parse(&body).map_err(|v| ApiError::InvalidArgument(v).into()))
        .inspect_err(|_| ROCKET_MESSAGES.with_label_values(&["invalid"]).inc())?;
    let (channel, number) = (message.channel, message.number);
    let result = state.rockets.ingest(message).await;
    let (status, outcome) = match result {
        Ok(Outcome::Stored) => (StatusCode::CREATED, "stored"),
        Ok(Outcome::Duplicate) => (StatusCode::OK, "duplicate"),
        Err(error) => {
            let label = match &error {
                RocketError::Conflict { .. } => {
                    tracing::warn!(%channel, number, "conflicting duplicate refused, the first message is kept");
                    "conflict"
                }
                _ => "error",
            };
            ROCKET_MESSAGES.with_label_values(&[label]).inc();
            return Err(ApiError::from(error).into());
        }
    };
    ROCKET_MESSAGES.with_label_values(&[outcome]).inc();
    Ok((
        status,
        Json(json!({"channel": channel, "messageNumber": number, "result": outcome})),
    )
        .into_response())
}

/// A rocket in plain JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RocketJson<'a> {
    channel: Uuid,
    #[serde(rename = "type")]
    rocket_type: Option<&'a str>,
    launch_speed: Option<i64>,
    speed: i64,
    mission: Option<&'a str>,
    status: &'static str,
    explosion_reason: Option<&'a str>,
    launched_at: Option<DateTime<Utc>>,
    last_message_number: i64,
    last_message_time: DateTime<Utc>,
    messages_received: i64,
    missing_messages: i64,
    updated_at: DateTime<Utc>,
}

impl<'a> From<&'a Rocket> for RocketJson<'a> {
    fn from(r: &'a Rocket) -> RocketJson<'a> {
        RocketJson {
            channel: r.channel,
            rocket_type: r.rocket_type.as_deref(),
            launch_speed: r.launch_speed,
            speed: r.speed,
            mission: r.mission.as_deref(),
            status: r.status.as_str(),
            explosion_reason: r.explosion_reason.as_deref(),
            launched_at: r.launched_at,
            last_message_number: r.last_message_number,
            last_message_time: r.last_message_time,
            messages_received: r.messages_received,
            missing_messages: r.missing_messages,
            updated_at: r.updated_at,
        }
    }
}

async fn list_rockets(
    State(state): State<ApiState>,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    let req: proto::ListRocketsRequest = decode_query("spacet.v1.ListRocketsRequest", &query, &[])?;
    let (rockets, next) = RocketApi::new(state).list(&req).await?;
    let rockets: Vec<RocketJson> = rockets.iter().map(RocketJson::from).collect();
    Ok(Json(json!({"rockets": rockets, "nextCursor": next})).into_response())
}

async fn get_rocket(
    State(state): State<ApiState>,
    Path(channel): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    let req: proto::GetRocketRequest = decode_query(
        "spacet.v1.GetRocketRequest",
        &query,
        &[("channel", &channel)],
    )?;
    let rocket = RocketApi::new(state)
        .get(&req.channel)
        .await
        .map_err(GatewayError::from)?;
    Ok(Json(RocketJson::from(&rocket)).into_response())
}

async fn list_rockets_v1(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    let message: proto::ListRocketsRequest =
        decode_query("spacet.v1.ListRocketsRequest", &query, &[])?;
    let api = RocketApi::new(state);
    call(
        &headers,
        message,
        |r| async move { api.list_rockets(r).await },
    )
    .await
}

async fn get_rocket_v1(
    State(state): State<ApiState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    let message: proto::GetRocketRequest = decode_query(
        "spacet.v1.GetRocketRequest",
        &query,
        &[("channel", &channel)],
    )?;
    let api = RocketApi::new(state);
    call(
        &headers,
        message,
        |r| async move { api.get_rocket(r).await },
    )
    .await
}
