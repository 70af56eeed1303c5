//! The one error table: every domain error becomes an [`ApiError`] with a
//! [`Reason`], which gives its gRPC code and its HTTP status. An `ApiError` is
//! sent as a gRPC status with a `google.rpc.ErrorInfo` (AIP-193), or rendered
//! straight to grpc-gateway's HTTP status and JSON body (the same details, in
//! proto3 JSON).

use std::{collections::HashMap, time::Duration};

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};
use tonic::Code;
use tonic_types::{BadRequest, ErrorDetail, ErrorInfo, FieldViolation, RetryInfo, StatusExt};

/// The `domain` of our `google.rpc.ErrorInfo` details: the name the service is
/// published under. It is the one every `FAILED_PRECONDITION` has carried since
/// the first release, and a (reason, domain) pair must not change once clients
/// compare it, so it stays `spacet.v1` even should a `v2` package appear.
pub const ERROR_DOMAIN: &str = "spacet.v1";

/// How long a client should wait before retrying an UNAVAILABLE request: the
/// `google.rpc.RetryInfo` detail over gRPC, `Retry-After` over HTTP.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Declares [`Reason`] once: its name, gRPC code, HTTP status (grpc-gateway's for
/// the code unless given) and when it happens (`docs/errors.md`, generated from it).
macro_rules! reasons {
    ($( $variant:ident = $name:literal, $code:ident $(, $http:literal)? => $when:literal; )*) => {
        /// The `ErrorInfo.reason` of every error the service sends: stable
        /// UPPER_SNAKE names clients may branch on.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( #[doc = $when] $variant, )*
        }

        impl Reason {
            /// Every reason, in the order of `docs/errors.md`.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The `ErrorInfo.reason` string.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

            /// The gRPC code of errors with this reason.
            pub fn code(self) -> Code {
                match self { $(Reason::$variant => Code::$code,)* }
            }

            /// The HTTP status: grpc-gateway's for the code, unless the
            /// transport problem has one of its own (413, 405).
            pub fn http_status(self) -> StatusCode {
                match self {
                    $(Reason::$variant => reasons!(@http $code $($http)?),)*
                }
            }

            /// When it happens, in one sentence.
            pub fn when(self) -> &'static str {
                match self { $(Reason::$variant => $when,)* }
            }
        }
    };
    (@http $code:ident) => { http_status(Code::$code) };
    (@http $code:ident $http:literal) => {
        StatusCode::from_u16($http).expect("a valid HTTP status")
    };
}

reasons! {
    FieldViolations = "FIELD_VIOLATIONS", InvalidArgument =>
        "A field, query parameter or header is invalid; a `BadRequest` detail names every one (an invalid `cursor` included).";
    MalformedBody = "MALFORMED_BODY", InvalidArgument =>
        "HTTP: the body cannot be read, is not JSON or is not a JSON object.";
    TicketNotFound = "TICKET_NOT_FOUND", NotFound =>
        "No ticket has this id, or the passenger calling does not own it.";
    LaunchpadNotFound = "LAUNCHPAD_NOT_FOUND", NotFound =>
        "No launchpad has this id.";
    RocketNotFound = "ROCKET_NOT_FOUND", NotFound =>
        "No message was ever received from this channel.";
    RouteNotFound = "ROUTE_NOT_FOUND", NotFound =>
        "HTTP: no route has this path.";
    LaunchpadDayTaken = "LAUNCHPAD_DAY_TAKEN", FailedPrecondition =>
        "The launchpad flies to another destination that day.";
    DestinationUsedThisWeek = "DESTINATION_USED_THIS_WEEK", FailedPrecondition =>
        "The destination is already flown from this launchpad in the same week.";
    FlightFull = "FLIGHT_FULL", FailedPrecondition =>
        "Every seat of the flight is taken (`SEATS_PER_FLIGHT`).";
    SpacexConflict = "SPACEX_CONFLICT", FailedPrecondition =>
        "SpaceX launches from this launchpad that day.";
    LaunchpadInactive = "LAUNCHPAD_INACTIVE", FailedPrecondition =>
        "The launchpad is not active (retired, under construction...).";
    ActiveTicketLimit = "ACTIVE_TICKET_LIMIT", FailedPrecondition =>
        "The passenger already holds the most active tickets allowed (`MAX_ACTIVE_TICKETS_PER_PASSENGER`).";
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED", AlreadyExists =>
        "The idempotency key was already used by this caller for a different booking.";
    RocketMessageConflict = "ROCKET_MESSAGE_CONFLICT", AlreadyExists =>
        "`POST /messages`: this channel's message number was already received with another content; the first is kept.";
    TokenMissing = "TOKEN_MISSING", Unauthenticated =>
        "No bearer token was sent and the call needs one.";
    TokenInvalid = "TOKEN_INVALID", Unauthenticated =>
        "The bearer token is malformed, expired, not yet valid, or not signed by a trusted key.";
    RoleRequired = "ROLE_REQUIRED", PermissionDenied =>
        "The token lacks a role the call needs (metadata `roles` names them).";
    RateLimited = "RATE_LIMITED", ResourceExhausted =>
        "This principal booked or forced syncs too often; `RetryInfo` says when to try again.";
    TooManyStreams = "TOO_MANY_STREAMS", ResourceExhausted =>
        "`ROCKETS_MAX_WATCHERS` rocket streams (`WatchRockets`, event streams) are already open.";
    BodyTooLarge = "BODY_TOO_LARGE", ResourceExhausted, 413 =>
        "HTTP: the body is larger than `HTTP_BODY_LIMIT` (no `RetryInfo`: the same body never fits).";
    MethodNotAllowed = "METHOD_NOT_ALLOWED", Unimplemented, 405 =>
        "HTTP: the route exists but not with this method.";
    StreamLagged = "STREAM_LAGGED", Aborted =>
        "`WatchRockets`: the stream fell too far behind the changes; call again with `include_current`.";
    DeadlineExceeded = "DEADLINE_EXCEEDED", DeadlineExceeded =>
        "Not answered within `HTTP_REQUEST_TIMEOUT` / `GRPC_REQUEST_TIMEOUT` or the client's shorter `grpc-timeout`; the outcome is unknown.";
    DatabaseUnavailable = "DATABASE_UNAVAILABLE", Unavailable =>
        "The database cannot be reached (connection refused or lost, server shutting down).";
    DatabaseOverloaded = "DATABASE_OVERLOADED", Unavailable =>
        "No pooled connection was free in time, or the database is out of a resource (SQLSTATE class 53).";
    DatabaseTimeout = "DATABASE_TIMEOUT", Unavailable =>
        "A statement outlived `PG_STATEMENT_TIMEOUT` or a lock `PG_LOCK_TIMEOUT`; it was rolled back.";
    TransactionConflict = "TRANSACTION_CONFLICT", Unavailable =>
        "A deadlock or serialization failure rolled the transaction back (a booking retried it once already).";
    SpacexUnavailable = "SPACEX_UNAVAILABLE", Unavailable =>
        "`TriggerSync`: the SpaceX API failed, was too slow or answered nonsense; nothing was applied.";
    MessageNotStored = "MESSAGE_NOT_STORED", Unavailable =>
        "`POST /messages`: the message was not stored in time (`ROCKETS_WRITE_TIMEOUT`), or the writer is starting, restarting or shutting down; send it again.";
    ShuttingDown = "SHUTTING_DOWN", Unavailable =>
        "The service is shutting down and stopped the work; another replica may take it.";
    Overloaded = "OVERLOADED", Unavailable =>
        "HTTP: `HTTP_MAX_CONNECTIONS` connections are open; the new one is answered and closed.";
    RpcUnimplemented = "RPC_UNIMPLEMENTED", Unimplemented =>
        "gRPC: no such service or method (reflection included, with `GRPC_REFLECTION=false`).";
    MessageTooLarge = "MESSAGE_TOO_LARGE", OutOfRange =>
        "gRPC: the request message is larger than the server accepts.";
    MalformedMessage = "MALFORMED_MESSAGE", InvalidArgument =>
        "gRPC: the request could not be decoded (not protobuf, bad framing or compression).";
    Internal = "INTERNAL", Internal =>
        "Anything else, a panic included: the cause is logged, never sent.";
}

impl Reason {
    /// The reason of a status tonic answered itself, before our code ran (an
    /// unknown method, a message it could not decode or too large), by its code;
    /// `None` for codes tonic does not answer with (or only for a caller that is
    /// gone, such as CANCELLED).
    pub(crate) fn of_transport(code: Code) -> Option<Reason> {
        let reason = match code {
            Code::Unimplemented => Reason::RpcUnimplemented,
            Code::OutOfRange => Reason::MessageTooLarge,
            Code::InvalidArgument => Reason::MalformedMessage,
            Code::DeadlineExceeded => Reason::DeadlineExceeded,
            Code::Unavailable => Reason::ShuttingDown,
            Code::Unauthenticated => Reason::TokenInvalid,
            Code::Internal | Code::Unknown => Reason::Internal,
            _ => return None,
        };
        Some(reason)
    }

    /// The reason named `name`, if it is one of ours.
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == name)
    }

    /// The retry advice (`RetryInfo`, `Retry-After`) of errors with this reason:
    /// every UNAVAILABLE and RESOURCE_EXHAUSTED, except a body too large, which no
    /// retry makes fit. (A rate limit gives the limiter's own delay.)
    pub fn retry_after(self) -> Option<Duration> {
        match self.code() {
            Code::ResourceExhausted if self == Reason::BodyTooLarge => None,
            Code::Unavailable | Code::ResourceExhausted => Some(RETRY_AFTER),
            _ => None,
        }
    }
}

/// An error an RPC returns: what the client did wrong, or that we failed. Every
/// one has a [`Reason`], which decides its code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more fields are invalid; all of them are named (`FIELD_VIOLATIONS`).
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// A refusal with its reason, message and `ErrorInfo` metadata.
    #[error("{message}")]
    Refused {
        reason: Reason,
        message: String,
        metadata: HashMap<String, String>,
    },
    /// One principal called too often: retry after `retry_after` (`RATE_LIMITED`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// Anything else: the cause is logged, never sent (`INTERNAL`).
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

    /// A refusal with `reason` and no metadata.
    pub fn refused(reason: Reason, message: impl Into<String>) -> ApiError {
        ApiError::Refused {
            reason,
            message: message.into(),
            metadata: HashMap::new(),
        }
    }

    /// Adds an `ErrorInfo.metadata` entry (snake_case keys, as the first reasons shipped them).
    pub fn with(mut self, key: &str, value: impl ToString) -> ApiError {
        if let ApiError::Refused { metadata, .. } = &mut self {
            metadata.insert(key.to_string(), value.to_string());
        }
        self
    }

    /// Wraps a database error: unreachable, out of resources (SQLSTATE class 53),
    /// timed out (57014 at `statement_timeout`, 55P03 at `lock_timeout`) or rolled
    /// back by a deadlock or serialization failure (40P01, 40001) → UNAVAILABLE with
    /// retry advice; anything else → INTERNAL.
    pub fn database(error: sqlx::Error) -> ApiError {
        use crate::db::Failure;
        let (reason, what) = match crate::db::classify(&error) {
            // Every connection busy (the pool's acquire timeout), not a dead server.
            Failure::Unreachable if matches!(error, sqlx::Error::PoolTimedOut) => (
                Reason::DatabaseOverloaded,
                "the database is busy: no connection was free in time",
            ),
            Failure::Unreachable => (Reason::DatabaseUnavailable, "the database is not reachable"),
            Failure::OutOfResources => (
                Reason::DatabaseOverloaded,
                "the database is out of resources",
            ),
            Failure::TimedOut => (
                Reason::DatabaseTimeout,
                "the database did not answer in time",
            ),
            Failure::Conflict => (
                Reason::TransactionConflict,
                "the request conflicted with concurrent ones",
            ),
            Failure::Other => return ApiError::Internal(error.into()),
        };
        // The cause (its SQLSTATE) is for the logs; the client gets the kind.
        tracing::warn!(%error, what, "database failure answered UNAVAILABLE");
        ApiError::unavailable(reason, what)
    }

    /// UNAVAILABLE (or another code of `reason`) with the message "service
    /// unavailable: {what}".
    pub fn unavailable(reason: Reason, what: impl std::fmt::Display) -> ApiError {
        ApiError::refused(reason, format!("service unavailable: {what}"))
    }

    /// The reason, which decides the code.
    pub fn reason(&self) -> Reason {
        match self {
            ApiError::InvalidArgument(_) => Reason::FieldViolations,
            ApiError::Refused { reason, .. } => *reason,
            ApiError::RateLimited { .. } => Reason::RateLimited,
            ApiError::Internal(_) => Reason::Internal,
        }
    }

    /// The gRPC code, the one mapping from domain errors.
    pub fn code(&self) -> Code {
        self.reason().code()
    }
}

/// A status with `reason`'s code, `message`, an `ErrorInfo` and the reason's
/// retry advice, for gRPC errors that do not come from a handler (the server
/// limits and fallbacks).
pub fn status(reason: Reason, message: impl Into<String>) -> tonic::Status {
    ApiError::refused(reason, message).into()
}

/// What a client is told of an error, whichever the protocol: the reason (which
/// decides the gRPC code and the HTTP status), the message and the details.
/// Internal causes are logged here, once, and never sent.
struct Answer {
    reason: Reason,
    message: String,
    violations: Vec<FieldViolation>,
    retry: Option<Duration>,
    metadata: HashMap<String, String>,
}

impl From<ApiError> for Answer {
    fn from(error: ApiError) -> Answer {
        let reason = error.reason();
        let mut answer = Answer {
            reason,
            message: String::new(),
            violations: Vec::new(),
            retry: reason.retry_after(),
            metadata: HashMap::new(),
        };
        match error {
            ApiError::InvalidArgument(violations) => {
                answer.message = format!("invalid request: {}", describe(&violations));
                answer.violations = violations;
            }
            ApiError::Refused {
                message, metadata, ..
            } => {
                if reason.code() == Code::Unavailable {
                    tracing::warn!(reason = reason.as_str(), %message, "dependency unavailable");
                }
                answer.message = message;
                answer.metadata = metadata;
            }
            ApiError::RateLimited {
                message,
                retry_after,
            } => {
                answer.message = message;
                answer.retry = Some(retry_after);
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                answer.message = "internal error".to_string();
            }
        }
        answer
    }
}

impl From<ApiError> for tonic::Status {
    /// The details in a fixed order that keeps the index of the ones clients
    /// read before every error had an `ErrorInfo`: `BadRequest`, then
    /// `RetryInfo`, then `ErrorInfo` (first of a `FAILED_PRECONDITION`).
    fn from(error: ApiError) -> tonic::Status {
        let answer = Answer::from(error);
        let mut details: Vec<ErrorDetail> = Vec::new();
        if !answer.violations.is_empty() {
            details.push(BadRequest::new(answer.violations).into());
        }
        if let Some(delay) = answer.retry {
            details.push(RetryInfo::new(Some(delay)).into());
        }
        details.push(ErrorInfo::new(answer.reason.as_str(), ERROR_DOMAIN, answer.metadata).into());
        tonic::Status::with_error_details_vec(answer.reason.code(), answer.message, details)
    }
}

impl Answer {
    /// grpc-gateway's body: `{"code", "message", "details"}`, the details of the
    /// gRPC status in the same order, each in proto3 JSON with its `@type`.
    fn body(&self) -> Value {
        let mut details = Vec::new();
        if !self.violations.is_empty() {
            let violations: Vec<Value> = self
                .violations
                .iter()
                .map(|v| json!({"field": v.field, "description": v.description}))
                .collect();
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": violations,
            }));
        }
        if let Some(delay) = self.retry {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": duration_json(delay),
            }));
        }
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": self.reason.as_str(),
            "domain": ERROR_DOMAIN,
            "metadata": self.metadata,
        }));
        json!({
            "code": self.reason.code() as i32,
            "message": self.message,
            "details": details,
        })
    }
}

impl ApiError {
    /// grpc-gateway's JSON body of this error (see [`IntoResponse`]).
    pub(crate) fn http_body(self) -> Value {
        Answer::from(self).body()
    }
}

impl IntoResponse for ApiError {
    /// The reason's HTTP status and grpc-gateway's body, with `Retry-After` for
    /// retry advice and, on a 401, the bearer challenge.
    fn into_response(self) -> Response {
        let answer = Answer::from(self);
        let mut response = (answer.reason.http_status(), Json(answer.body())).into_response();
        // A RetryInfo detail is `Retry-After` in HTTP: whole seconds, at least 1.
        if let Some(delay) = answer.retry {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(delay)),
            );
        }
        // RFC 6750: a 401 names the scheme, and why a token that was sent failed.
        if answer.reason.code() == Code::Unauthenticated {
            let challenge = match answer.reason {
                Reason::TokenInvalid => format!(
                    r#"Bearer realm="spacet", error="invalid_token", error_description="{}""#,
                    answer.message.replace(['"', '\\'], "'")
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

/// A `google.protobuf.Duration` in proto3 JSON: seconds with 0, 3, 6 or 9
/// fractional digits and an `s`.
fn duration_json(d: Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    match nanos {
        0 => format!("{secs}s"),
        n if n % 1_000_000 == 0 => format!("{secs}.{:03}s", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{secs}.{:06}s", n / 1_000),
        n => format!("{secs}.{n:09}s"),
    }
}

/// `Retry-After` for a retry delay: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_seconds(delay: Duration) -> u64 {
    (delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).max(1)
}

impl From<crate::auth::Forbidden> for ApiError {
    fn from(error: crate::auth::Forbidden) -> ApiError {
        let roles: Vec<&str> = error.roles.iter().map(|r| r.as_str()).collect();
        ApiError::refused(Reason::RoleRequired, error.message).with("roles", roles.join(","))
    }
}

impl From<crate::auth::RateLimited> for ApiError {
    fn from(error: crate::auth::RateLimited) -> ApiError {
        ApiError::RateLimited {
            message: error.message,
            retry_after: error.retry_after,
        }
    }
}

impl From<crate::booking::BookingError> for ApiError {
    fn from(error: crate::booking::BookingError) -> ApiError {
        use crate::booking::BookingError as E;
        let message = error.to_string();
        let refused = |reason: Reason, pairs: &[(&str, String)]| ApiError::Refused {
            reason,
            message: message.clone(),
            metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        match &error {
            E::TicketNotFound(id) => {
                refused(Reason::TicketNotFound, &[("ticket_id", id.to_string())])
            }
            E::LaunchpadDayTaken { pad, day, taken_by } => refused(
                Reason::LaunchpadDayTaken,
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
            } => refused(
                Reason::DestinationUsedThisWeek,
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
            } => refused(
                Reason::FlightFull,
                &[
                    ("launchpad_id", pad.clone()),
                    ("launch_date", day.to_string()),
                    ("destination", destination.to_string()),
                    ("seats", seats.to_string()),
                ],
            ),
            E::SpacexConflict { pad, day, launch } => refused(
                Reason::SpacexConflict,
                &[
                    ("launchpad_id", pad.clone()),
                    ("launch_date", day.to_string()),
                    ("spacex_launch", launch.clone()),
                ],
            ),
            E::LaunchpadInactive { pad, status } => refused(
                Reason::LaunchpadInactive,
                &[
                    ("launchpad_id", pad.clone()),
                    ("status", status.to_string()),
                ],
            ),
            E::IdempotencyKeyReused(key) => refused(
                Reason::IdempotencyKeyReused,
                &[("idempotency_key", key.clone())],
            ),
            E::ActiveTicketLimit { limit } => {
                refused(Reason::ActiveTicketLimit, &[("limit", limit.to_string())])
            }
            E::LaunchpadNotFound(pad) => {
                refused(Reason::LaunchpadNotFound, &[("launchpad_id", pad.clone())])
            }
            E::Invalid(_) | E::Forbidden(_) | E::RateLimited(_) | E::Database(_) => match error {
                E::Invalid(violations) => ApiError::InvalidArgument(violations),
                E::Forbidden(e) => e.into(),
                E::RateLimited(e) => e.into(),
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
            E::SpaceX(e) => ApiError::unavailable(
                Reason::SpacexUnavailable,
                format!("the SpaceX sync failed: {e}"),
            ),
            E::Database(e) => ApiError::database(e),
            E::Interrupted => {
                ApiError::unavailable(Reason::ShuttingDown, "the service is shutting down")
            }
        }
    }
}

impl From<crate::spacex::TriggerError> for ApiError {
    fn from(error: crate::spacex::TriggerError) -> ApiError {
        use crate::spacex::TriggerError as E;
        match error {
            E::Forbidden(e) => e.into(),
            E::RateLimited(e) => e.into(),
            E::Sync(e) => e.into(),
        }
    }
}

impl From<crate::rockets::RocketError> for ApiError {
    fn from(error: crate::rockets::RocketError) -> ApiError {
        use crate::rockets::RocketError as E;
        match error {
            // ALREADY_EXISTS (HTTP 409): the number is taken by another message.
            E::Conflict { channel, number } => {
                ApiError::refused(Reason::RocketMessageConflict, error.to_string())
                    .with("channel", channel)
                    .with("message_number", number)
            }
            E::NotFound(channel) => ApiError::refused(Reason::RocketNotFound, error.to_string())
                .with("channel", channel),
            E::Unavailable(what) => ApiError::unavailable(Reason::MessageNotStored, what),
            E::Internal(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

impl From<crate::rockets::read::ReadError> for ApiError {
    fn from(error: crate::rockets::read::ReadError) -> ApiError {
        use crate::rockets::{read::ReadError as E, RocketError};
        match error {
            E::Invalid(violations) => ApiError::InvalidArgument(violations),
            E::NotFound(channel) => RocketError::NotFound(channel).into(),
            E::Database(e) => ApiError::database(e),
        }
    }
}

impl From<crate::rockets::PostError<ApiError>> for ApiError {
    fn from(error: crate::rockets::PostError<ApiError>) -> ApiError {
        use crate::rockets::PostError as E;
        match error {
            E::Forbidden(e) => e.into(),
            E::Unreadable(e) => e,
            E::Invalid(violations) => ApiError::InvalidArgument(violations),
            E::Rocket(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tonic_types::StatusExt;

    use super::*;

    /// One error of each variant and each reason.
    fn every_error() -> Vec<ApiError> {
        let mut errors = vec![
            ApiError::field("first_name", "must not be empty"),
            ApiError::RateLimited {
                message: "slow down".into(),
                retry_after: Duration::from_millis(2500),
            },
            ApiError::Internal(anyhow::anyhow!("secret cause")),
        ];
        errors.extend(
            Reason::ALL
                .iter()
                .map(|&reason| ApiError::refused(reason, "refused").with("key", "value")),
        );
        errors
    }

    #[test]
    fn every_reason_is_one_upper_snake_name_with_one_meaning_and_a_code() {
        let mut names = HashSet::new();
        let mut meanings = HashSet::new();
        for &reason in Reason::ALL {
            let name = reason.as_str();
            assert!(!name.is_empty(), "{reason:?}");
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    && !name.starts_with('_')
                    && !name.ends_with('_'),
                "{name} is not UPPER_SNAKE"
            );
            assert!(name.len() <= 63, "AIP-193 caps a reason at 63 characters");
            assert!(names.insert(name), "{name} is used twice");
            assert!(
                meanings.insert(reason.when()),
                "{name} means what another means"
            );
            assert_ne!(reason.code(), Code::Ok, "{name}");
            assert_eq!(Reason::parse(name), Some(reason));
        }
    }

    #[test]
    fn every_api_error_carries_its_reason_and_retry_advice_on_unavailable_and_exhausted() {
        for (error, same) in every_error().into_iter().zip(every_error()) {
            let reason = error.reason();
            let internal = matches!(error, ApiError::Internal(_));
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), reason.code(), "{reason:?}");
            let info = status.get_details_error_info().expect("an ErrorInfo");
            assert_eq!(info.reason, reason.as_str());
            assert_eq!(info.domain, ERROR_DOMAIN);
            let retry = status.get_details_retry_info().and_then(|r| r.retry_delay);
            match status.code() {
                Code::Unavailable => assert_eq!(retry, Some(RETRY_AFTER), "{reason:?}"),
                Code::ResourceExhausted if reason == Reason::BodyTooLarge => {
                    assert_eq!(retry, None)
                }
                Code::ResourceExhausted => assert!(retry.is_some(), "{reason:?}"),
                _ => assert_eq!(retry, None, "{reason:?}"),
            }
            if internal {
                assert_eq!(status.message(), "internal error");
                assert!(info.metadata.is_empty());
            }
            let body = same.http_body();
            assert_eq!(body["code"], reason.code() as i32);
            let last = body["details"].as_array().unwrap().last().cloned().unwrap();
            assert_eq!(last["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
            assert_eq!(last["reason"], reason.as_str());
        }
    }

    /// grpc-gateway's rendering of a status: its code, message and details in
    /// proto3 JSON, in order (the three detail types the service sends).
    fn gateway_body(status: &tonic::Status) -> Value {
        let details: Vec<Value> = status
            .get_error_details_vec()
            .iter()
            .map(|detail| match detail {
                ErrorDetail::BadRequest(bad) => json!({
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": bad.field_violations.iter()
                        .map(|v| json!({"field": v.field, "description": v.description}))
                        .collect::<Vec<_>>(),
                }),
                ErrorDetail::RetryInfo(retry) => json!({
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": duration_json(retry.retry_delay.unwrap()),
                }),
                ErrorDetail::ErrorInfo(info) => json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": info.reason,
                    "domain": info.domain,
                    "metadata": info.metadata,
                }),
                other => panic!("the service does not send {other:?}"),
            })
            .collect();
        json!({"code": status.code() as i32, "message": status.message(), "details": details})
    }

    #[test]
    fn the_http_body_is_the_grpc_status_in_proto3_json() {
        let mut errors: Vec<(ApiError, ApiError)> =
            every_error().into_iter().zip(every_error()).collect();
        let violations = || {
            ApiError::InvalidArgument(vec![
                FieldViolation::new("launch_date", "in the past"),
                FieldViolation::new("first_name", "is required"),
            ])
        };
        errors.push((violations(), violations()));
        for (error, same) in errors {
            let status = tonic::Status::from(error);
            assert_eq!(same.http_body(), gateway_body(&status), "{status:?}");
        }
    }

    #[test]
    fn the_http_body_renders_each_detail_with_its_at_type_in_proto3_json() {
        let body = ApiError::RateLimited {
            message: "slow down".into(),
            retry_after: Duration::from_millis(1500),
        }
        .http_body();
        let by_type = |body: &Value, name: &str| {
            body["details"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["@type"] == format!("type.googleapis.com/google.rpc.{name}"))
                .cloned()
                .unwrap_or_else(|| panic!("no {name} in {body}"))
        };
        assert_eq!(body["code"], 8);
        assert_eq!(body["message"], "slow down");
        assert_eq!(by_type(&body, "RetryInfo")["retryDelay"], "1.500s");
        assert_eq!(by_type(&body, "ErrorInfo")["reason"], "RATE_LIMITED");

        let body = ApiError::refused(Reason::FlightFull, "full")
            .with("seats", 2)
            .http_body();
        assert_eq!(body["code"], 9);
        assert_eq!(body["message"], "full");
        assert_eq!(by_type(&body, "ErrorInfo")["reason"], "FLIGHT_FULL");
        assert_eq!(by_type(&body, "ErrorInfo")["metadata"]["seats"], "2");
        assert_eq!(body["details"].as_array().unwrap().len(), 1, "{body}");

        let body = ApiError::field("launchDate", "in the past").http_body();
        assert_eq!(
            by_type(&body, "BadRequest")["fieldViolations"],
            json!([{"field": "launchDate", "description": "in the past"}])
        );

        let body = ApiError::Internal(anyhow::anyhow!("secret cause")).http_body();
        assert_eq!(body["message"], "internal error");
        assert!(!body.to_string().contains("secret"));
    }

    #[test]
    fn a_booking_refusal_is_counted_under_its_error_reason() {
        use crate::booking::{BookingError as E, BookingOutcome, Destination};
        let day = chrono::NaiveDate::from_ymd_opt(2049, 4, 5).unwrap();
        let pad = || "5e9e4502f509094188566f88".to_string();
        let refusals = [
            E::LaunchpadDayTaken {
                pad: pad(),
                day,
                taken_by: Destination::Moon,
            },
            E::DestinationUsedThisWeek {
                pad: pad(),
                day,
                destination: Destination::Moon,
                flown_on: day,
            },
            E::FlightFull {
                pad: pad(),
                day,
                destination: Destination::Moon,
                seats: 2,
            },
            E::SpacexConflict {
                pad: pad(),
                day,
                launch: "Starlink".into(),
            },
            E::LaunchpadInactive {
                pad: pad(),
                status: crate::launchpads::LaunchpadStatus::Retired,
            },
            E::ActiveTicketLimit { limit: 10 },
        ];
        let mut counted = HashSet::new();
        for refusal in refusals {
            let result = Err(refusal);
            let outcome = BookingOutcome::of(&result);
            let Err(refusal) = result else { unreachable!() };
            let reason = ApiError::from(refusal).reason();
            assert_eq!(reason.code(), Code::FailedPrecondition, "{reason:?}");
            assert_eq!(outcome.as_str(), reason.as_str());
            counted.insert(outcome);
        }
        // Every outcome named as a reason is one of these refusals.
        let named: HashSet<BookingOutcome> = BookingOutcome::ALL
            .iter()
            .copied()
            .filter(|o| Reason::parse(o.as_str()).is_some())
            .collect();
        assert_eq!(counted, named);
        assert!(counted.contains(&BookingOutcome::ActiveTicketLimit));
    }

    #[test]
    fn durations_are_written_as_proto3_json_and_retry_after_rounds_up() {
        assert_eq!(duration_json(Duration::from_secs(3)), "3s");
        assert_eq!(duration_json(Duration::from_millis(1500)), "1.500s");
        assert_eq!(duration_json(Duration::from_micros(1_000_001)), "1.000001s");
        assert_eq!(duration_json(Duration::from_nanos(5)), "0.000000005s");
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }

    #[tokio::test]
    async fn transport_reasons_keep_their_own_http_status_and_retry_after() {
        let response = ApiError::refused(Reason::BodyTooLarge, "too large").into_response();
        assert_eq!(response.status(), 413);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let response = ApiError::refused(Reason::MethodNotAllowed, "no").into_response();
        assert_eq!(response.status(), 405);
        let response = ApiError::unavailable(Reason::DatabaseTimeout, "slow").into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
