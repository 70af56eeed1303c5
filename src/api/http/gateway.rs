//! The HTTP/JSON gateway: serves each RPC's `google.api.http` rule the way
//! grpc-gateway would, calling the gRPC implementation in-process.
//!
//! Request messages are assembled as proto3 JSON — the body for `body: "*"`, the
//! query string for GET (using the message descriptor to type each parameter) and
//! the path parameters on top — and decoded with the pbjson serde impls.
//!
//! Marshalling follows grpc-gateway v2's defaults, which existing clients of the
//! Go service rely on: unknown body fields and unknown query parameters are
//! discarded (logged at debug), and a body is read as JSON whatever its
//! `Content-Type` says.

use std::sync::LazyLock;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use crate::{
    api::{
        auth::Caller,
        error::{ApiError, GatewayError, Reason},
        grpc::booking::{BookingApi, IDEMPOTENCY_KEY},
        ApiState,
    },
    proto,
    proto::space_t_service_server::SpaceTService,
};

static DESCRIPTORS: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).expect("embedded descriptors decode")
});

fn descriptor(full_name: &str) -> MessageDescriptor {
    DESCRIPTORS
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is in the descriptor set"))
}

/// Declares the gateway routes once: the router and the list the OpenAPI test
/// compares with the document.
macro_rules! gateway_routes {
    ($( $method:ident $path:literal => $handler:path ),* $(,)?) => {
        /// Every gateway route: (method, path template).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        /// The gateway's routes.
        pub fn router() -> axum::Router<ApiState> {
            let router = axum::Router::new();
            $(let router = router.route($path, axum::routing::$method($handler));)*
            router
        }
    };
}

gateway_routes! {
    post "/v1/bookings" => launch_booking,
    get "/v1/bookings" => list_bookings,
    get "/v1/bookings/{id}" => get_booking,
    patch "/v1/bookings/{id}/cancel" => cancel_booking,
    get "/v1/launchpads" => list_launchpads,
    get "/v1/launchpads/{id}/schedule" => get_launchpad_schedule,
    post "/v1/admin/sync" => trigger_sync,
}

/// A proto3 JSON response, or a grpc-gateway error.
pub type GatewayResult = Result<Response, GatewayError>;

/// Serialises a message with its proto3 JSON mapping.
pub fn json_response<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(error) => GatewayError::from(ApiError::Internal(error.into())).into_response(),
    }
}

/// Calls an RPC in-process with the request's caller (which the RPC authorises,
/// as it does over gRPC) and metadata, and renders its answer.
pub async fn call<Req, Resp, F, Fut>(
    caller: Caller,
    headers: &HeaderMap,
    message: Req,
    rpc: F,
) -> GatewayResult
where
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(caller);
    for (http_name, grpc_name) in [
        ("idempotency-key", IDEMPOTENCY_KEY),
        ("x-request-id", "x-request-id"),
    ] {
        if let Some(value) = headers.get(http_name).and_then(|v| v.to_str().ok()) {
            if let Ok(value) = value.parse() {
                request.metadata_mut().insert(grpc_name, value);
            }
        }
    }
    let response = rpc(request).await.map_err(GatewayError::from_status)?;
    Ok(json_response(response.get_ref()))
}

/// Decodes a `body: "*"` request of the message `message` (its full proto name):
/// the body read as JSON whatever its content type, unknown fields discarded,
/// then proto3 JSON. `path` fields override the body's.
pub fn decode_message<T: DeserializeOwned>(
    message: &str,
    body: Result<Bytes, BytesRejection>,
    path: &[(&str, &str)],
) -> Result<T, GatewayError> {
    let mut object = json_object(body)?;
    let descriptor = descriptor(message);
    object.retain(|key, _| {
        let known = descriptor.get_field_by_json_name(key).is_some()
            || descriptor.get_field_by_name(key).is_some();
        if !known {
            tracing::debug!(field = %key, message, "unknown body field discarded");
        }
        known
    });
    for (name, value) in path {
        object.insert((*name).to_string(), Value::String((*value).to_string()));
    }
    from_json(Value::Object(object))
}

/// Decodes a JSON body that is not a proto message (rocket messages), read as
/// JSON whatever its content type.
pub fn decode_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, GatewayError> {
    from_json(Value::Object(json_object(body)?))
}

/// The body as a JSON object (an empty body is `{}`), or a 400/413 naming the problem.
fn json_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, GatewayError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::new(Reason::BodyTooLarge, "request body too large")
        } else {
            GatewayError::new(Reason::MalformedBody, "could not read the request body")
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(GatewayError::new(
            Reason::MalformedBody,
            "the request body must be a JSON object",
        )),
        Err(error) => Err(GatewayError::new(
            Reason::MalformedBody,
            format!(
                "the request body is not JSON: malformed at line {} column {}",
                error.line(),
                error.column()
            ),
        )),
    }
}

/// Decodes a GET request: query parameters by grpc-gateway's rules, then path
/// parameters. `message` is the request's full proto name.
pub fn decode_query<T: DeserializeOwned>(
    message: &str,
    query: &[(String, String)],
    path: &[(&str, &str)],
) -> Result<T, GatewayError> {
    let descriptor = descriptor(message);
    let mut object = Map::new();
    let mut violations = Vec::new();
    for (key, value) in query {
        if let Err(problem) = insert_query_param(&descriptor, &mut object, key, value) {
            violations.push(tonic_types::FieldViolation::new(key.clone(), problem));
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::InvalidArgument(violations).into());
    }
    for (name, value) in path {
        object.insert((*name).to_string(), Value::String((*value).to_string()));
    }
    from_json(Value::Object(object))
}

/// `a.b=1` sets field `b` of message field `a`; a repeated field collects every
/// occurrence; enums take names or numbers; names are snake_case or lowerCamelCase.
fn insert_query_param(
    descriptor: &MessageDescriptor,
    object: &mut Map<String, Value>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let (head, rest) = match key.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (key, None),
    };
    let Some(field) = descriptor
        .get_field_by_name(head)
        .or_else(|| descriptor.get_field_by_json_name(head))
    else {
        tracing::debug!(parameter = %key, message = descriptor.full_name(), "unknown query parameter discarded");
        return Ok(());
    };
    let json_name = field.json_name().to_string();
    match (field.kind(), rest) {
        (Kind::Message(inner), Some(rest))
            if !inner.full_name().starts_with("google.protobuf.") =>
        {
            let entry = object
                .entry(json_name)
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(nested) = entry else {
                return Err("conflicting parameters".into());
            };
            insert_query_param(&inner, nested, rest, value)
        }
        (_, Some(_)) => Err("is not a message field".into()),
        (kind, None) => {
            let scalar = match kind {
                // A name must be one of the enum's (as grpc-gateway checks), so
                // that a wrong one is a violation naming the parameter.
                Kind::Enum(e) => match value.parse::<i64>() {
                    Ok(number) => Value::from(number),
                    Err(_) if e.get_value_by_name(value).is_some() => {
                        Value::String(value.to_string())
                    }
                    Err(_) => {
                        return Err(format!(
                            "{value:?} is not one of {}",
                            e.values()
                                .map(|v| v.name().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }
                },
                Kind::Bool => match value {
                    "true" | "1" => Value::Bool(true),
                    "false" | "0" => Value::Bool(false),
                    _ => return Err("must be true or false".into()),
                },
                Kind::Message(inner) if !inner.full_name().starts_with("google.protobuf.") => {
                    return Err("is a message: set its fields with dotted names".into())
                }
                _ => Value::String(value.to_string()),
            };
            if field.is_list() {
                match object
                    .entry(json_name)
                    .or_insert_with(|| Value::Array(Vec::new()))
                {
                    Value::Array(items) => items.push(scalar),
                    _ => return Err("conflicting parameters".into()),
                }
            } else if object.insert(json_name, scalar).is_some() {
                return Err("is given more than once".into());
            }
            Ok(())
        }
    }
}

/// pbjson decoding, with its error turned into a field violation.
fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, GatewayError> {
    serde_json::from_value(value).map_err(|error| {
        let text = error.to_string();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.starts_with("unknown field") || text.starts_with("duplicate field"))
            .unwrap_or("body")
            .to_string();
        GatewayError::bad_request(&field, format!("cannot decode the request: {text}"))
    })
}

fn api(state: &ApiState) -> BookingApi {
    BookingApi {
        state: state.clone(),
    }
}

async fn launch_booking(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> GatewayResult {
    let message: proto::BookingRequest = decode_message("spacet.v1.BookingRequest", body, &[])?;
    let api = api(&state);
    call(caller, &headers, message, |r| async move {
        api.launch_booking(r).await
    })
    .await
}

async fn cancel_booking(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> GatewayResult {
    let message: proto::TicketId = decode_message("spacet.v1.TicketID", body, &[("id", &id)])?;
    let api = api(&state);
    call(caller, &headers, message, |r| async move {
        api.cancel_booking(r).await
    })
    .await
}

async fn list_bookings(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    let message: proto::ListTicketsRequest =
        decode_query("spacet.v1.ListTicketsRequest", &query, &[])?;
    let api = api(&state);
    call(caller, &headers, message, |r| async move {
        api.list_bookings(r).await
    })
    .await
}

async fn get_booking(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    let message: proto::TicketId = decode_query("spacet.v1.TicketID", &query, &[("id", &id)])?;
    let api = api(&state);
    call(caller, &headers, message, |r| async move {
        api.get_booking(r).await
    })
    .await
}

async fn list_launchpads(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    let message: proto::ListLaunchpadsRequest =
        decode_query("spacet.v1.ListLaunchpadsRequest", &query, &[])?;
    let api = api(&state);
    call(caller, &headers, message, |r| async move {
        api.list_launchpads(r).await
    })
    .await
}

async fn get_launchpad_schedule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> GatewayResult {
    let message: proto::GetLaunchpadScheduleRequest = decode_query(
        "spacet.v1.GetLaunchpadScheduleRequest",
        &query,
        &[("id", &id)],
    )?;
    let api = api(&state);
    call(caller, &headers, message, |r| async move {
        api.get_launchpad_schedule(r).await
    })
    .await
}

async fn trigger_sync(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> GatewayResult {
    let message: proto::TriggerSyncRequest =
        decode_message("spacet.v1.TriggerSyncRequest", body, &[])?;
    let api = api(&state);
    call(caller, &headers, message, |r| async move {
        api.trigger_sync(r).await
    })
    .await
}

/// 404 for an unknown route, with a grpc-gateway body.
pub async fn not_found() -> Response {
    GatewayError::new(Reason::RouteNotFound, "Not Found").into_response()
}

/// 405 for a known route with another method.
pub async fn method_not_allowed() -> Response {
    GatewayError::new(Reason::MethodNotAllowed, "Method Not Allowed").into_response()
}
