//! The one error table: every domain error becomes a gRPC status here, and the
//! gateway turns a status into grpc-gateway's HTTP status and JSON body.

use std::{collections::HashMap, time::Duration};

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};
use tonic::Code;
use tonic_types::{ErrorDetail, ErrorDetails, FieldViolation, StatusExt};

/// The `domain` of our `google.rpc.ErrorInfo` details.
pub const ERROR_DOMAIN: &str = "spacet.v1";

/// How long a client should wait before retrying an UNAVAILABLE request: the
/// `google.rpc.RetryInfo` detail over gRPC, `Retry-After` over HTTP.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// An error an RPC returns: what the client did wrong, or that we failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more fields are invalid; all of them are named.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0}")]
    NotFound(String),
    /// A business rule refuses the request: `reason` is machine-readable.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
        metadata: HashMap<String, String>,
    },
    #[error("{0}")]
    AlreadyExists(String),
    /// No valid token: `reason` is `TOKEN_MISSING` or `TOKEN_INVALID`.
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    /// A valid token without a role the call needs (`roles` names them).
    #[error("{message}")]
    PermissionDenied { message: String, roles: String },
    /// One principal called too often: retry after `retry_after`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// The database (or another dependency) cannot be reached, is overloaded or
    /// timed out: nothing was done, the client may retry after [`RETRY_AFTER`].
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything else: the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// A single field violation.
    pub fn field(field: &str, description: impl Into<String>) -> ApiError {
        ApiError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// Wraps a database error: unreachable, out of resources (SQLSTATE class 53),
    /// timed out (57014 at `statement_timeout`, 55P03 at `lock_timeout`) or rolled
    /// back by a deadlock or serialization failure (40P01, 40001) → UNAVAILABLE with
    /// retry advice; anything else → INTERNAL.
    pub fn database(error: sqlx::Error) -> ApiError {
        use crate::db::Failure;
        let what = match crate::db::classify(&error) {
            // Every connection busy (the pool's acquire timeout), not a dead server.
            Failure::Unreachable if matches!(error, sqlx::Error::PoolTimedOut) => {
                "the database is busy: no connection was free in time"
            }
            Failure::Unreachable => "the database is not reachable",
            Failure::OutOfResources => "the database is out of resources",
            Failure::TimedOut => "the database did not answer in time",
            Failure::Conflict => "the request conflicted with concurrent ones",
            Failure::Other => return ApiError::Internal(error.into()),
        };
        // The cause (its SQLSTATE) is for the logs; the client gets the kind.
        tracing::warn!(%error, what, "database failure answered UNAVAILABLE");
        ApiError::Unavailable(what.into())
    }

    /// The gRPC code, the one mapping from domain errors.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::FailedPrecondition { .. } => Code::FailedPrecondition,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Unauthenticated { .. } => Code::Unauthenticated,
            ApiError::PermissionDenied { .. } => Code::PermissionDenied,
            ApiError::RateLimited { .. } => Code::ResourceExhausted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> tonic::Status {
        let code = error.code();
        match error {
            ApiError::InvalidArgument(violations) => {
                let message = format!("invalid request: {}", describe(&violations));
                tonic::Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ApiError::FailedPrecondition {
                reason,
                message,
                metadata,
            } => tonic::Status::with_error_details(
                code,
                message,
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
            ),
            ApiError::Unauthenticated { reason, message } => tonic::Status::with_error_details(
                code,
                message,
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
            ),
            ApiError::PermissionDenied { message, roles } => tonic::Status::with_error_details(
                code,
                message,
                ErrorDetails::with_error_info(
                    "ROLE_REQUIRED",
                    ERROR_DOMAIN,
                    HashMap::from([("roles".to_string(), roles)]),
                ),
            ),
            ApiError::RateLimited {
                message,
                retry_after,
            } => {
                let mut details =
                    ErrorDetails::with_error_info("RATE_LIMITED", ERROR_DOMAIN, HashMap::new());
                details.set_retry_info(Some(retry_after));
                tonic::Status::with_error_details(code, message, details)
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                tonic::Status::new(code, "internal error")
            }
            ApiError::Unavailable(ref what) => {
                tracing::warn!(%what, "dependency unavailable");
                tonic::Status::with_error_details(
                    code,
                    error.to_string(),
                    ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
                )
            }
            other => tonic::Status::new(code, other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        ApiError::database(error)
    }
}

/// grpc-gateway's mapping from gRPC code to HTTP status.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// grpc-gateway's error body: `{"code", "message", "details": [{"@type", ...}]}`.
pub fn error_body(status: &tonic::Status) -> Value {
    let details: Vec<Value> = status
        .get_error_details_vec()
        .into_iter()
        .filter_map(|detail| match detail {
            ErrorDetail::BadRequest(bad) => Some(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": bad.field_violations.iter().map(|v| json!({
                    "field": v.field,
                    "description": v.description,
                })).collect::<Vec<_>>(),
            })),
            ErrorDetail::ErrorInfo(info) => Some(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": info.reason,
                "domain": info.domain,
                "metadata": info.metadata,
            })),
            // proto3 JSON writes a Duration as seconds with an `s`.
            ErrorDetail::RetryInfo(retry) => Some(json!({
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": retry
                    .retry_delay
                    .map(|d| format!("{}s", d.as_secs_f64())),
            })),
            _ => None,
        })
        .collect();
    json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": details,
    })
}

/// A gRPC status rendered the grpc-gateway way, as an HTTP response.
#[derive(Debug)]
pub struct GatewayError {
    pub status: tonic::Status,
    /// Overrides the HTTP status grpc-gateway derives from the code.
    pub http: Option<StatusCode>,
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let http = self.http.unwrap_or_else(|| http_status(self.status.code()));
        let mut response = (http, Json(error_body(&self.status))).into_response();
        // A RetryInfo detail is `Retry-After` in HTTP: whole seconds, at least 1.
        if let Some(delay) = self
            .status
            .get_details_retry_info()
            .and_then(|retry| retry.retry_delay)
        {
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        // RFC 6750: a 401 names the scheme, and why a token that was sent failed.
        if self.status.code() == Code::Unauthenticated {
            let challenge = match self.status.get_details_error_info() {
                Some(info) if info.reason == "TOKEN_INVALID" => format!(
                    r#"Bearer realm="spacet", error="invalid_token", error_description="{}""#,
                    self.status.message().replace(['"', '\\'], "'")
                ),
                _ => r#"Bearer realm="spacet""#.to_string(),
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

impl From<ApiError> for GatewayError {
    fn from(error: ApiError) -> GatewayError {
        GatewayError::from_status(error.into())
    }
}

impl GatewayError {
    /// A status with one field violation, for request decoding errors.
    pub fn bad_request(field: &str, description: impl Into<String>) -> GatewayError {
        ApiError::field(field, description).into()
    }

    /// A bare status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> GatewayError {
        GatewayError::from_status(tonic::Status::new(code, message))
    }

    /// A status with an HTTP status of its own (413, 415, 405), which grpc-gateway
    /// writes for transport-level problems.
    pub fn with_http(http: StatusCode, code: Code, message: impl Into<String>) -> GatewayError {
        GatewayError {
            status: tonic::Status::new(code, message),
            http: Some(http),
        }
    }

    /// A status rendered with the HTTP status grpc-gateway gives its code.
    pub fn from_status(status: tonic::Status) -> GatewayError {
        GatewayError { status, http: None }
    }
}

impl From<crate::booking::BookingError> for ApiError {
    fn from(error: crate::booking::BookingError) -> ApiError {
        use crate::booking::BookingError as E;
        let message = error.to_string();
        let precondition =
            |reason: &'static str, pairs: &[(&str, String)]| ApiError::FailedPrecondition {
                reason,
                message: message.clone(),
                metadata: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            };
        match &error {
            E::TicketNotFound(_) => ApiError::NotFound(message),
            E::LaunchpadDayTaken { pad, day, taken_by } => precondition(
                "LAUNCHPAD_DAY_TAKEN",
                &[
                    ("launchpad_id", pad.clone()),
                    ("launch_date", day.to_string()),
                    ("destination", taken_by.to_string()),
                ],
            ),
            E::DestinationUsedThisWeek {
                pad,
                day,
                destination,
                flown_on,
            } => precondition(
                "DESTINATION_USED_THIS_WEEK",
                &[
                    ("launchpad_id", pad.clone()),
                    ("launch_date", day.to_string()),
                    ("destination", destination.to_string()),
                    ("flown_on", flown_on.to_string()),
                ],
            ),
            E::FlightFull {
                pad,
                day,
                destination,
                seats,
            } => precondition(
                "FLIGHT_FULL",
                &[
                    ("launchpad_id", pad.clone()),
                    ("launch_date", day.to_string()),
                    ("destination", destination.to_string()),
                    ("seats", seats.to_string()),
                ],
            ),
            E::SpacexConflict { pad, day, launch } => precondition(
                "SPACEX_CONFLICT",
                &[
                    ("launchpad_id", pad.clone()),
                    ("launch_date", day.to_string()),
                    ("spacex_launch", launch.clone()),
                ],
            ),
            E::LaunchpadInactive { pad, status } => precondition(
                "LAUNCHPAD_INACTIVE",
                &[
                    ("launchpad_id", pad.clone()),
                    ("status", status.to_string()),
                ],
            ),
            E::IdempotencyKeyReused(_) => ApiError::AlreadyExists(message),
            E::ActiveTicketLimit { limit } => {
                precondition("ACTIVE_TICKET_LIMIT", &[("limit", limit.to_string())])
            }
            E::Database(_) => match error {
                E::Database(e) => ApiError::database(e),
                _ => unreachable!(),
            },
        }
    }
}

impl From<crate::spacex::SyncError> for ApiError {
    fn from(error: crate::spacex::SyncError) -> ApiError {
        use crate::spacex::SyncError as E;
        match error {
            // SpaceX down, slow or answering nonsense: nothing was applied, try later.
            E::SpaceX(e) => ApiError::Unavailable(format!("the SpaceX sync failed: {e}")),
            E::Database(e) => ApiError::database(e),
            E::Interrupted => ApiError::Unavailable("the service is shutting down".into()),
        }
    }
}

impl From<crate::rockets::RocketError> for ApiError {
    fn from(error: crate::rockets::RocketError) -> ApiError {
        use crate::rockets::RocketError as E;
        match error {
            // ALREADY_EXISTS (HTTP 409): the number is taken by another message.
            E::Conflict { .. } => ApiError::AlreadyExists(error.to_string()),
            E::NotFound(_) => ApiError::NotFound(error.to_string()),
            E::Unavailable(what) => ApiError::Unavailable(what),
            E::Internal(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}
