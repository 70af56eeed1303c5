//! The HTTP/JSON gateway: serves each RPC's `google.api.http` rule the way
//! grpc-gateway would, calling in-process the adapter the gRPC service calls
//! ([`RPCS`] registers each RPC's), and rendering errors from the error table.
//!
//! Request messages are assembled as proto3 JSON — the body for `body: "*"`, the
//! query string for GET (using the message descriptor to type each parameter) and
//! the path parameters on top — and decoded with the pbjson serde impls.
//!
//! Marshalling follows grpc-gateway v2's defaults, which existing clients of the
//! Go service rely on: unknown body fields and unknown query parameters are
//! discarded (logged at debug), and a body is read as JSON whatever its
//! `Content-Type` says.

use std::future::Future;

use axum::{
    body::Bytes,
    extract::{
        rejection::BytesRejection, FromRequest, FromRequestParts, Path, Query, Request, State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use futures::future::BoxFuture;
use prost_reflect::{Kind, MessageDescriptor};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use super::rules::{self, BodyRule};
use crate::api::{
    auth::Caller,
    error::{ApiError, Reason},
    grpc::{booking, booking::IDEMPOTENCY_KEY, rockets},
    ApiState,
};

/// A unary RPC's in-process call: its request — the message as proto3 JSON,
/// the caller and the metadata — to the HTTP answer.
pub type Handler = fn(ApiState, tonic::Request<Value>) -> BoxFuture<'static, GatewayResult>;

/// Every unary RPC the gateway serves, by full name, with its adapter: the
/// function the gRPC service calls too. The routes are the RPCs'
/// `google.api.http` rules ([`router`]); the proto-surface test checks that this
/// table names exactly the annotated RPCs.
pub const RPCS: &[(&str, Handler)] = &[
    ("spacet.v1.SpaceTService.LaunchBooking", |s, r| {
        unary(s, r, booking::launch_booking)
    }),
    ("spacet.v1.SpaceTService.CancelBooking", |s, r| {
        unary(s, r, booking::cancel_booking)
    }),
    ("spacet.v1.SpaceTService.ListBookings", |s, r| {
        unary(s, r, booking::list_bookings)
    }),
    ("spacet.v1.SpaceTService.GetBooking", |s, r| {
        unary(s, r, booking::get_booking)
    }),
    ("spacet.v1.SpaceTService.ListLaunchpads", |s, r| {
        unary(s, r, booking::list_launchpads)
    }),
    ("spacet.v1.SpaceTService.GetLaunchpadSchedule", |s, r| {
        unary(s, r, booking::get_launchpad_schedule)
    }),
    ("spacet.v1.SpaceTService.TriggerSync", |s, r| {
        unary(s, r, booking::trigger_sync)
    }),
    ("spacet.v1.RocketService.ListRockets", |s, r| {
        unary(s, r, rockets::list_rockets)
    }),
    ("spacet.v1.RocketService.GetRocket", |s, r| {
        unary(s, r, rockets::get_rocket)
    }),
    ("spacet.v1.RocketService.ListRocketMessages", |s, r| {
        unary(s, r, rockets::list_rocket_messages)
    }),
];

/// Decodes the message, calls the adapter, renders its answer in proto3 JSON.
fn unary<Req, Resp, Fut>(
    state: ApiState,
    request: tonic::Request<Value>,
    adapter: fn(ApiState, tonic::Request<Req>) -> Fut,
) -> BoxFuture<'static, GatewayResult>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize,
    Fut: Future<Output = Result<Resp, ApiError>> + Send + 'static,
{
    Box::pin(async move {
        let (metadata, extensions, message) = request.into_parts();
        let message: Req = from_json(message)?;
        let request = tonic::Request::from_parts(metadata, extensions, message);
        Ok(json_response(&adapter(state, request).await?))
    })
}

/// The handler of an RPC, by full name.
pub fn handler(rpc: &str) -> Option<Handler> {
    RPCS.iter()
        .find(|(name, _)| *name == rpc)
        .map(|(_, handler)| *handler)
}

/// Every gateway route: (method, path template), from the `google.api.http` rules.
pub fn routes() -> Vec<(&'static str, String)> {
    rules::bindings()
        .iter()
        .map(|b| (b.verb, b.route.clone()))
        .collect()
}

/// The gateway's routes: one per `google.api.http` binding of an RPC, each
/// calling the RPC's handler in [`RPCS`]. Panics when an annotated RPC has none
/// (a streaming one): the proto asks for what the gateway cannot serve.
pub fn router() -> axum::Router<ApiState> {
    let mut router = axum::Router::new();
    for binding in rules::bindings() {
        let handler = handler(binding.rpc())
            .unwrap_or_else(|| panic!("{} is annotated but has no gateway call", binding.rpc()));
        let method = axum::routing::MethodFilter::try_from(
            http::Method::from_bytes(binding.verb.to_uppercase().as_bytes())
                .expect("an HTTP method"),
        )
        .expect("a routable method");
        router = router.route(
            &binding.route,
            axum::routing::on(
                method,
                move |State(state): State<ApiState>, request: Request| {
                    serve(state, binding, handler, request)
                },
            ),
        );
    }
    router
}

/// Serves one binding: the request message from the body, the query and the
/// path as grpc-gateway assembles it, with the caller and the metadata (the
/// `Idempotency-Key` and `X-Request-Id` headers), then the RPC's handler.
async fn serve(
    state: ApiState,
    binding: &'static rules::Binding,
    handler: Handler,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let Ok(caller) = Caller::from_request_parts(&mut parts, &state).await;
    let params = Path::<Vec<(String, String)>>::from_request_parts(&mut parts, &state)
        .await
        .map(|Path(params)| params)
        .unwrap_or_default();
    let query = Query::<Vec<(String, String)>>::from_request_parts(&mut parts, &state)
        .await
        .map(|Query(query)| query)
        .unwrap_or_default();
    let headers = parts.headers.clone();
    let body = Bytes::from_request(Request::from_parts(parts, body), &state).await;
    let message = match request_json(binding, body, &query, &params) {
        Ok(message) => message,
        Err(error) => return error.into_response(),
    };
    match handler(state, rpc_request(caller, &headers, message)).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The in-process request of an RPC: the message, the caller (which the
/// adapter authenticates, as over gRPC) and the headers gRPC carries as metadata.
fn rpc_request(caller: Caller, headers: &HeaderMap, message: Value) -> tonic::Request<Value> {
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
    request
}

/// The request message as proto3 JSON: the body (all of it for `body: "*"`, one
/// field for `body: "field"`), the query parameters unless the body is the whole
/// message, then the path variables on top.
fn request_json(
    binding: &rules::Binding,
    body: Result<Bytes, BytesRejection>,
    query: &[(String, String)],
    params: &[(String, String)],
) -> Result<Value, ApiError> {
    let input = binding.method.input();
    let mut object = match &binding.body {
        BodyRule::Whole => known_fields(&input, json_object(body)?),
        BodyRule::Field(field) => {
            let mut object = Map::new();
            if let Some(value) = json_value(body)? {
                object.insert(field.json_name().to_string(), value);
            }
            object
        }
        BodyRule::None => Map::new(),
    };
    if binding.body != BodyRule::Whole {
        insert_query(&input, &mut object, query)?;
    }
    for variable in &binding.variables {
        let Some((_, value)) = params.iter().find(|(name, _)| *name == variable.param) else {
            continue;
        };
        set_path(&mut object, &input, &variable.field_path, value);
    }
    Ok(Value::Object(object))
}

/// Sets the field at a dotted path (of proto names) to a path variable's value.
fn set_path(object: &mut Map<String, Value>, message: &MessageDescriptor, path: &str, value: &str) {
    let (head, tail) = match path.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path, None),
    };
    let Some(field) = message.get_field_by_name(head) else {
        return;
    };
    match (tail, field.kind()) {
        (Some(tail), Kind::Message(inner)) => {
            let entry = object
                .entry(field.json_name().to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(nested) = entry {
                set_path(nested, &inner, tail, value);
            }
        }
        _ => {
            object.remove(field.name());
            object.insert(
                field.json_name().to_string(),
                Value::String(value.to_string()),
            );
        }
    }
}

/// The body's fields the message has; unknown ones are discarded (logged at debug).
fn known_fields(
    descriptor: &MessageDescriptor,
    mut object: Map<String, Value>,
) -> Map<String, Value> {
    object.retain(|key, _| {
        let known = descriptor.get_field_by_json_name(key).is_some()
            || descriptor.get_field_by_name(key).is_some();
        if !known {
            tracing::debug!(field = %key, message = descriptor.full_name(), "unknown body field discarded");
        }
        known
    });
    object
}

/// An HTTP answer, or an error rendered from the error table.
pub type GatewayResult = Result<Response, ApiError>;

/// Serialises a message with its proto3 JSON mapping.
pub(crate) fn json_response<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(error) => ApiError::Internal(error.into()).into_response(),
    }
}

/// Decodes a JSON body that is not a proto message (rocket messages), read as
/// JSON whatever its content type.
pub(crate) fn decode_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    from_json(Value::Object(json_object(body)?))
}

/// The body as a JSON object (an empty body is `{}`), or a 400/413 naming the problem.
fn json_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    match json_value(body)? {
        None => Ok(Map::new()),
        Some(Value::Object(object)) => Ok(object),
        _ => Err(ApiError::refused(
            Reason::MalformedBody,
            "the request body must be a JSON object",
        )),
    }
}

/// The body as JSON (`None` when empty), or a 400/413 naming the problem.
fn json_value(body: Result<Bytes, BytesRejection>) -> Result<Option<Value>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::refused(Reason::BodyTooLarge, "request body too large")
        } else {
            ApiError::refused(Reason::MalformedBody, "could not read the request body")
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Value>(&body)
        .map(Some)
        .map_err(|error| {
            ApiError::refused(
                Reason::MalformedBody,
                format!(
                    "the request body is not JSON: malformed at line {} column {}",
                    error.line(),
                    error.column()
                ),
            )
        })
}

/// Decodes a GET request: query parameters by grpc-gateway's rules, then path
/// parameters. `message` is the request's full proto name.
pub(crate) fn decode_query<T: DeserializeOwned>(
    message: &str,
    query: &[(String, String)],
    path: &[(&str, &str)],
) -> Result<T, ApiError> {
    let mut object = Map::new();
    insert_query(&rules::message(message), &mut object, query)?;
    for (name, value) in path {
        object.insert((*name).to_string(), Value::String((*value).to_string()));
    }
    from_json(Value::Object(object))
}

/// Every query parameter into `object`, or a 400 naming each bad one.
fn insert_query(
    descriptor: &MessageDescriptor,
    object: &mut Map<String, Value>,
    query: &[(String, String)],
) -> Result<(), ApiError> {
    let violations: Vec<_> = query
        .iter()
        .filter_map(|(key, value)| {
            insert_query_param(descriptor, object, key, value)
                .err()
                .map(|problem| tonic_types::FieldViolation::new(key.clone(), problem))
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(violations))
    }
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
fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|error| {
        let text = error.to_string();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.starts_with("unknown field") || text.starts_with("duplicate field"))
            .unwrap_or("body")
            .to_string();
        ApiError::field(&field, format!("cannot decode the request: {text}"))
    })
}

/// 404 for an unknown route, with a grpc-gateway body.
pub async fn not_found() -> Response {
    ApiError::refused(Reason::RouteNotFound, "Not Found").into_response()
}

/// 405 for a known route with another method.
pub(crate) async fn method_not_allowed() -> Response {
    ApiError::refused(Reason::MethodNotAllowed, "Method Not Allowed").into_response()
}
