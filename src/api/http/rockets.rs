//! HTTP routes of the rocket telemetry.
//!
//! - `POST /messages`: one message; 201 when stored, 200 when it was already
//!   stored, 400 (all problems named) when invalid, 409 (`ALREADY_EXISTS`) when its
//!   number is taken by another message, 503 when it could not be stored.
//! - `GET /rockets`, `GET /rockets/{channel}`: plain JSON (numbers as numbers).
//! - `GET /rockets/{channel}/messages`: the rocket's history, paged by number
//!   (`after`, `pageSize`), plain JSON.
//! - (`GET /v1/rockets`, `GET /v1/rockets/{channel}` and
//!   `GET /v1/rockets/{channel}/messages` are the RPCs' own routes, served by the
//!   gateway from their `google.api.http` rules.)
//!
//! - `GET /rockets/events` and `GET /v1/rockets:watch`: the change feed of
//!   `WatchRockets` as server-sent events (see [`rocket_events`]).
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
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::gateway::{decode_body, decode_query, GatewayResult};
use crate::{
    api::{
        auth::{self, Caller},
        error::{ApiError, Reason},
        ApiState,
    },
    proto,
    rockets::{
        self,
        list::Sort,
        read,
        state::Status as RocketState,
        store::{NumberRange, Rocket, StoredMessage},
        watch::NoSlot,
        writer::Outcome,
    },
};

/// Rocket routes: (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/messages"),
    ("get", "/rockets"),
    ("get", "/rockets/{channel}"),
    ("get", "/rockets/{channel}/messages"),
    ("get", "/rockets/events"),
    ("get", "/v1/rockets:watch"),
];

/// The rocket routes.
pub fn router() -> axum::Router<ApiState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/messages", post(post_message))
        .route("/rockets", get(list_rockets))
        .route("/rockets/{channel}", get(get_rocket))
        .route("/rockets/{channel}/messages", get(list_messages))
        .route("/rockets/events", get(rocket_events))
        .route("/v1/rockets:watch", get(rocket_events))
}

/// `POST /messages`: see [`rockets::post`]; 201 when stored, 200 when it was
/// already stored.
async fn post_message(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> GatewayResult {
    let requester = caller.into_requester()?;
    let body = decode_body::<Value>(body);
    let posted = rockets::post(&state.rockets, &requester, body).await?;
    let (status, result) = match posted.outcome {
        Outcome::Stored => (StatusCode::CREATED, rockets::MessageOutcome::Stored),
        Outcome::Duplicate => (StatusCode::OK, rockets::MessageOutcome::Duplicate),
    };
    Ok((
        status,
        Json(json!({"channel": posted.channel, "messageNumber": posted.number, "result": result.as_str()})),
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
    /// Only on a single rocket: the first missing ranges.
    #[serde(skip_serializing_if = "Option::is_none")]
    missing_ranges: Option<Vec<RangeJson>>,
}

/// A run of missing message numbers, both ends included.
#[derive(Serialize)]
struct RangeJson {
    from: i64,
    to: i64,
}

impl From<&NumberRange> for RangeJson {
    fn from(r: &NumberRange) -> RangeJson {
        RangeJson {
            from: r.from,
            to: r.to,
        }
    }
}

/// A stored message in plain JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageJson<'a> {
    number: i64,
    #[serde(rename = "type")]
    message_type: &'a str,
    time: DateTime<Utc>,
    received_at: DateTime<Utc>,
    message: &'a Value,
}

impl<'a> From<&'a StoredMessage> for MessageJson<'a> {
    fn from(m: &'a StoredMessage) -> MessageJson<'a> {
        MessageJson {
            number: m.number,
            message_type: &m.message_type,
            time: m.time,
            received_at: m.received_at,
            message: &m.message,
        }
    }
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
            missing_ranges: None,
        }
    }
}

async fn list_rockets(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    auth::read_rockets(&caller, &state)?;
    let query = plain_list_query(query)?;
    let req: proto::ListRocketsRequest = decode_query("spacet.v1.ListRocketsRequest", &query, &[])?;
    let (rockets, next) = read::rockets(&state.pool, &req).await?;
    let rockets: Vec<RocketJson> = rockets.iter().map(RocketJson::from).collect();
    Ok(Json(json!({"rockets": rockets, "nextCursor": next})).into_response())
}

/// The plain route's query (the challenge's contract): `sort`, `order` and
/// `status` take lowercase names (`speed`, `desc`, `launched`), which become the
/// names of the proto enums before the query is decoded; an empty one is the
/// default. A name that is none of them is a violation naming its parameter.
fn plain_list_query(query: Vec<(String, String)>) -> Result<Vec<(String, String)>, ApiError> {
    use proto::{RocketSort as S, RocketStatus as R, SortOrder as O};
    let mut violations = Vec::new();
    let mut translated = Vec::with_capacity(query.len());
    for (key, value) in query {
        let raw = value.trim();
        let name = match key.as_str() {
            "sort" | "order" | "status" if raw.is_empty() => continue,
            "sort" => Sort::parse(raw)
                .map(|sort| match sort {
                    Sort::Channel => S::Channel,
                    Sort::Type => S::Type,
                    Sort::Speed => S::Speed,
                    Sort::Mission => S::Mission,
                    Sort::Status => S::Status,
                    Sort::LaunchedAt => S::LaunchedAt,
                    Sort::UpdatedAt => S::UpdatedAt,
                })
                .map(|s| s.as_str_name())
                .ok_or_else(|| {
                    let names: Vec<_> = Sort::all().into_iter().map(Sort::as_str).collect();
                    format!("{raw:?} is not one of {}", names.join(", "))
                }),
            "order" => match raw {
                "asc" => Ok(O::Asc.as_str_name()),
                "desc" => Ok(O::Desc.as_str_name()),
                _ => Err(format!("{raw:?} is not asc or desc")),
            },
            "status" => RocketState::parse(raw)
                .map(|status| match status {
                    RocketState::Unknown => R::Unknown,
                    RocketState::Launched => R::Launched,
                    RocketState::Exploded => R::Exploded,
                })
                .map(|s| s.as_str_name())
                .ok_or_else(|| {
                    let names = RocketState::ALL.map(RocketState::as_str);
                    format!("{raw:?} is not one of {}", names.join(", "))
                }),
            _ => {
                translated.push((key, value));
                continue;
            }
        };
        match name {
            Ok(name) => translated.push((key, name.to_string())),
            Err(problem) => violations.push(tonic_types::FieldViolation::new(key, problem)),
        }
    }
    if violations.is_empty() {
        Ok(translated)
    } else {
        Err(ApiError::InvalidArgument(violations))
    }
}

async fn get_rocket(
    State(state): State<ApiState>,
    caller: Caller,
    Path(channel): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    auth::read_rockets(&caller, &state)?;
    let req: proto::GetRocketRequest = decode_query(
        "spacet.v1.GetRocketRequest",
        &query,
        &[("channel", &channel)],
    )?;
    let (rocket, ranges) = read::rocket(&state.pool, &req.channel).await?;
    Ok(Json(RocketJson {
        missing_ranges: Some(ranges.iter().map(RangeJson::from).collect()),
        ..RocketJson::from(&rocket)
    })
    .into_response())
}

async fn list_messages(
    State(state): State<ApiState>,
    caller: Caller,
    Path(channel): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    auth::read_rockets(&caller, &state)?;
    let req: proto::ListRocketMessagesRequest = decode_query(
        "spacet.v1.ListRocketMessagesRequest",
        &query,
        &[("channel", &channel)],
    )?;
    let (messages, next) = read::history(&state.pool, &req).await?;
    let messages: Vec<MessageJson> = messages.iter().map(MessageJson::from).collect();
    Ok(Json(json!({"messages": messages, "nextAfter": next})).into_response())
}

/// Keep-alive comment interval of an event stream: below the usual idle timeouts
/// of proxies (and of `HTTP_IDLE_TIMEOUT`).
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// `GET /rockets/events`, `GET /v1/rockets:watch`: every rocket state change, as
/// server-sent events (see [`Rockets::follow`](crate::rockets::Rockets::follow)).
/// Each event's `data:` is the rocket in plain JSON and its `id:` the state's
/// `updatedAt` in microseconds since the epoch.
///
/// Resumption: with `Last-Event-ID`, the stream first replays the current state
/// of every rocket whose state changed at or after that position (less a
/// margin), then follows the feed. A client keeps, per channel, the state with
/// the most `messagesReceived`.
///
/// Bounded like `WatchRockets`: each stream takes one of the
/// `ROCKETS_MAX_WATCHERS` slots (429 `RESOURCE_EXHAUSTED` when none is left). A
/// client more than 4,096 changes behind, like one slower than the writers, has
/// its stream ended; reconnecting (`EventSource` does it by itself) replays what
/// it missed. Only `Accept: text/event-stream` is served (400 otherwise), so a
/// plain HTTP client does not wait forever on a body that never ends.
async fn rocket_events(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
) -> GatewayResult {
    use axum::http::header::ACCEPT;
    auth::read_rockets(&caller, &state)?;
    let wants_events = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_events {
        return Err(ApiError::field(
            "Accept",
            "this route streams server-sent events: send Accept: text/event-stream",
        ));
    }
    let since = match headers.get("last-event-id") {
        None => None,
        Some(raw) => Some(
            raw.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .and_then(DateTime::<Utc>::from_timestamp_micros)
                .ok_or_else(|| {
                    ApiError::field("Last-Event-ID", "must be the id of an event of this stream")
                })?,
        ),
    };
    let changes = state
        .rockets
        .follow(since, state.shutdown.clone())
        .map_err(|NoSlot { max }| {
            ApiError::refused(
                Reason::TooManyStreams,
                format!("{max} rocket streams are open, the most this server serves (ROCKETS_MAX_WATCHERS); try again later"),
            )
        })?;
    let events = tokio_stream::wrappers::ReceiverStream::new(changes)
        .map(|rocket| Ok::<_, std::convert::Infallible>(event(&rocket)));
    Ok(axum::response::sse::Sse::new(events)
        .keep_alive(axum::response::sse::KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// One server-sent event: the rocket's plain JSON, identified by its `updatedAt`.
fn event(rocket: &Rocket) -> axum::response::sse::Event {
    axum::response::sse::Event::default()
        .id(rocket.updated_at.timestamp_micros().to_string())
        .data(serde_json::to_string(&RocketJson::from(rocket)).unwrap_or_default())
}
