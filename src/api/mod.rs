//! The service's edges: authenticate, decode a request, call a feature's use
//! case, encode the answer — no business decision. One adapter per RPC
//! (`grpc/`) serves both the gRPC services and the HTTP/JSON gateway, which
//! registers them by hand (`http::gateway::RPCS`); rocket routes and probes are
//! in `http/`, the one error table in `error`, the proto ↔ domain conversions
//! in `convert`. The edges read [`ApiState`], which `app` assembles; nothing
//! here imports `app`.

pub mod access_log;
pub mod auth;
pub mod convert;
pub mod error;
pub mod grpc;
pub mod http;
pub mod serve;

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{MatchedPath, State},
    http::{HeaderValue, Request},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use futures::FutureExt;
use tower::{Layer, Service};
use tower_http::{
    compression::{predicate::SizeAbove, CompressionLayer},
    cors::{AllowOrigin, CorsLayer},
};

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{clock::Clock, config::Settings, health::Health, proto, rockets::Rockets, spacex};
use access_log::{AccessLogLayer, Protocol, REQUEST_ID};
use auth::AuthLayer;
use http::{gateway, probes};

/// What the edges read: assembled once by `app`, cloned into every handler.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub clock: Clock,
    pub settings: Arc<Settings>,
    /// Rocket telemetry: the writer's queue and the change feed.
    pub rockets: Rockets,
    /// What a forced sync (`TriggerSync`) runs with.
    pub sync: spacex::SyncDeps,
    /// Readiness and the `/liveness` checks.
    pub health: Health,
    /// Fired once when shutdown begins (readiness turns 503, streams end).
    pub shutdown: CancellationToken,
    /// Verifies bearer tokens (or says authentication is off).
    pub auth: Arc<crate::auth::Authenticator>,
    /// Per-principal rate limits.
    pub limits: Arc<crate::auth::RateLimits>,
}

impl ApiState {
    /// What a booking is held to: `SEATS_PER_FLIGHT`,
    /// `MAX_ACTIVE_TICKETS_PER_PASSENGER` and `BOOKING_RATE_LIMIT`.
    pub(crate) fn booking_limits(&self) -> crate::booking::BookingLimits<'_> {
        crate::booking::BookingLimits {
            seats_per_flight: self.settings.seats_per_flight,
            max_active_tickets_per_owner: self.settings.auth.max_active_tickets_per_passenger,
            rate: &self.limits.booking,
        }
    }
}

/// Every HTTP route: (method, path template). The OpenAPI document must list exactly these.
pub fn http_routes() -> Vec<(&'static str, String)> {
    let hand_written = [probes::ROUTES, http::rockets::ROUTES].concat();
    gateway::routes()
        .into_iter()
        .chain(hand_written.into_iter().map(|(m, p)| (m, p.to_string())))
        .collect()
}

/// The HTTP server: gateway, rocket telemetry, the dashboard, probes, metrics.
pub(crate) fn http_router(state: ApiState) -> axum::Router {
    let settings = state.settings.clone();
    let mut router = axum::Router::new()
        .merge(probes::router(settings.metrics_port.is_none()))
        .merge(gateway::router())
        .merge(http::rockets::router())
        .merge(http::dashboard::router())
        .route_layer(middleware::map_response(remember_route))
        .fallback(gateway::not_found)
        .method_not_allowed_fallback(gateway::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            settings.http_body_limit,
        ))
        // Small answers are not worth compressing.
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .compress_when(SizeAbove::new(1024)),
        );
    if !settings.cors_allowed_origins.is_empty() {
        let origins = if settings.cors_allowed_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                settings
                    .cors_allowed_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        router = router.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any),
        );
    }
    let auth = AuthLayer(Some(state.auth.clone()));
    outer_http_layers(router, auth, state)
}

/// The metrics port (`METRICS_PORT`): `GET /metrics` alone, for scrapers, so the
/// API's port need not be reachable by them (nor the metrics by API clients).
pub(crate) fn metrics_router(state: ApiState) -> axum::Router {
    let router = axum::Router::new()
        .merge(probes::metrics_router())
        .route_layer(middleware::map_response(remember_route))
        .fallback(gateway::not_found)
        .method_not_allowed_fallback(gateway::method_not_allowed);
    outer_http_layers(router, AuthLayer(None), state)
}

/// The rockets port (`ROCKETS_PORT`), for the challenge's program, which can
/// neither send a token nor reach the HTTP port: `POST /messages` and nothing
/// else, served by the HTTP port's own handler (the rocket routes' router, entered
/// only for that route) under the same limits, panic catcher and access log.
pub(crate) fn rockets_router(state: ApiState) -> axum::Router {
    let settings = state.settings.clone();
    let messages = http::rockets::router().with_state(state.clone());
    let router = axum::Router::new()
        .route("/messages", axum::routing::post_service(messages))
        .route_layer(middleware::map_response(remember_route))
        .fallback(gateway::not_found)
        .method_not_allowed_fallback(gateway::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            settings.http_body_limit,
        ));
    // A trusted listener: every caller may post (see `ROCKETS_PORT`).
    outer_http_layers(router, AuthLayer(None), state)
}

/// The layers around every HTTP router, outermost last: the access log sees a
/// caught panic as the 500 it was answered with, and a timeout as its 504; the
/// time spent verifying a token counts in the timeout.
fn outer_http_layers(
    router: axum::Router<ApiState>,
    auth: AuthLayer,
    state: ApiState,
) -> axum::Router {
    let timeout = state.settings.server_limits.http_request_timeout;
    router
        .layer(auth)
        .layer(middleware::from_fn_with_state(timeout, answer_within))
        .layer(CatchPanicLayer(Protocol::Http))
        .layer(AccessLogLayer(Protocol::Http))
        .with_state(state)
}

/// `HTTP_REQUEST_TIMEOUT`: a request not answered in time gets 504 with
/// grpc-gateway's body (DEADLINE_EXCEEDED) and its handler is dropped. Only the
/// wait for the response's head counts, not the streaming of its body.
async fn answer_within(
    State(limit): State<Duration>,
    request: Request<Body>,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::ApiError::refused(
            error::Reason::DeadlineExceeded,
            format!("the request was not answered within {limit:?}"),
        )
        .into_response(),
    }
}

/// Copies the matched route template into the response, for the access log's
/// metrics labels (the outer layer runs before routing and cannot see it).
async fn remember_route(matched: Option<MatchedPath>, mut response: Response) -> Response {
    if let Some(matched) = matched {
        response.extensions_mut().insert(matched);
    }
    response
}

/// The gRPC server's layers: the access log around the ErrorInfo filler around
/// the panic catcher around the deadline around authentication.
pub type GrpcLayers = tower::layer::util::Stack<
    AuthLayer,
    tower::layer::util::Stack<
        DeadlineLayer,
        tower::layer::util::Stack<
            CatchPanicLayer,
            tower::layer::util::Stack<
                tower::util::MapResponseLayer<fn(Response) -> Response>,
                tower::layer::util::Stack<AccessLogLayer, tower::layer::util::Identity>,
            >,
        >,
    >,
>;

/// Gives an `ErrorInfo` to an error status tonic answered itself, before any of
/// our code ran (an unknown method, a message it could not decode or too large):
/// such answers are headers only, and ours always carry details.
fn fill_error_info(mut response: Response) -> Response {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return response;
    };
    // tonic answers INTERNAL to a message that is not protobuf: the client's
    // mistake, so INVALID_ARGUMENT.
    let reason = if status.code() == tonic::Code::Internal
        && status
            .message()
            .starts_with("failed to decode Protobuf message")
    {
        error::Reason::MalformedMessage
    } else {
        match error::Reason::of_transport(status.code()) {
            Some(reason) => reason,
            None => return response,
        }
    };
    let with_details = error::status(reason, status.message()).into_http::<axum::body::Body>();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        match with_details.headers().get(name) {
            Some(value) => {
                response.headers_mut().insert(name, value.clone());
            }
            None => {
                response.headers_mut().remove(name);
            }
        }
    }
    response
}

/// HTTP/2 PING interval on gRPC connections: a peer that stops answering is
/// dropped after [`GRPC_KEEPALIVE_TIMEOUT`] more.
const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before the kernel probes a gRPC connection (for long streams whose
/// peer vanished without a FIN).
pub const GRPC_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The gRPC server: booking and rocket services, health and reflection.
pub fn grpc_server(
    state: ApiState,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> anyhow::Result<tonic::transport::server::Router<GrpcLayers>> {
    // Both reflection versions: grpcio-reflection (Python), grpc_cli and older
    // grpcurl speak v1alpha only.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let limits = state.settings.server_limits;
    let reflect = state.settings.grpc_reflection;
    Ok(tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(limits.grpc_max_concurrent_streams)
        // The HTTP/2 limit bounds open streams; this one bounds the handlers running
        // on one connection, should a client not respect the former.
        .concurrency_limit_per_connection(limits.grpc_max_concurrent_streams as usize)
        // The layer added first is outermost: the access log sees a caught panic
        // as the INTERNAL it was answered with, and a deadline as DEADLINE_EXCEEDED.
        .layer(AccessLogLayer(Protocol::Grpc))
        .layer(tower::util::MapResponseLayer::new(
            fill_error_info as fn(Response) -> Response,
        ))
        .layer(CatchPanicLayer(Protocol::Grpc))
        .layer(DeadlineLayer(limits.grpc_request_timeout))
        .layer(AuthLayer(Some(state.auth.clone())))
        .add_service(health)
        .add_optional_service(reflect.then(|| reflection().build_v1()).transpose()?)
        .add_optional_service(reflect.then(|| reflection().build_v1alpha()).transpose()?)
        .add_service(proto::space_t_service_server::SpaceTServiceServer::new(
            grpc::booking::BookingApi {
                state: state.clone(),
            },
        ))
        .add_service(proto::rocket_service_server::RocketServiceServer::new(
            grpc::rockets::RocketApi { state },
        )))
}

/// Ends a gRPC call that is not answered within the shorter of the client's
/// `grpc-timeout` and `GRPC_REQUEST_TIMEOUT` with DEADLINE_EXCEEDED, dropping its
/// handler. (tonic's own `Server::timeout` answers CANCELLED, which clients and
/// their retry policies read as "the caller gave up".) Only the wait for the
/// response's head counts: a server stream, once started, is not cut.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer(pub Duration);

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            limit: self.0,
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Deadline<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: HttpBody<Data = Bytes> + Send + 'static,
    ResB::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let limit = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()))
            .map_or(self.limit, |asked| asked.min(self.limit));
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(result) => result.map(|response| response.map(Body::new)),
                Err(_) => Ok(error::status(
                    error::Reason::DeadlineExceeded,
                    format!("the call was not answered within {limit:?}"),
                )
                .into_http()),
            }
        })
    }
}

/// A `grpc-timeout` value: at most eight digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Answers a request whose handler panicked with INTERNAL — grpc-gateway's JSON
/// body over HTTP, a `grpc-status` over gRPC — instead of a reset connection, and
/// logs the panic with the request's method, path and id. The panic's text is
/// never sent.
#[derive(Clone, Copy, Debug)]
pub struct CatchPanicLayer(pub Protocol);

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic {
            inner,
            protocol: self.0,
        }
    }
}

/// See [`CatchPanicLayer`].
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
    protocol: Protocol,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CatchPanic<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: HttpBody<Data = Bytes> + Send + 'static,
    ResB::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let protocol = self.protocol;
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let answer_panic = move |panic: Box<dyn Any + Send>| {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("non-string panic payload");
            tracing::error!(panic = message, %method, path, request_id, "request handler panicked");
            panic_response(protocol)
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => Box::pin(async move {
                match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(result) => result.map(|response| response.map(Body::new)),
                    Err(panic) => Ok(answer_panic(panic)),
                }
            }),
            Err(panic) => Box::pin(std::future::ready(Ok(answer_panic(panic)))),
        }
    }
}

/// INTERNAL with a generic message, as each protocol writes it.
fn panic_response(protocol: Protocol) -> Response {
    let error = error::ApiError::refused(error::Reason::Internal, "internal error");
    match protocol {
        Protocol::Http => error.into_response(),
        Protocol::Grpc => tonic::Status::from(error).into_http(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;

    /// Log output kept in memory (the API's unit tests read their JSON lines).
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub(crate) fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_garbage_is_ignored() {
        assert_eq!(parse_grpc_timeout(b"50m"), Some(Duration::from_millis(50)));
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [&b""[..], b"m", b"123456789S", b"5x", b"-5S", b"5 S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    fn panicking_request(path: &str) -> Request<Body> {
        Request::get(path)
            .header(REQUEST_ID, "req-42")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_panic_is_answered_internal_and_logged_once_with_its_request() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        // Over HTTP, a handler panicking while it is polled.
        let router = axum::Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("secret detail of the crash");
                    }
                }),
            )
            .layer(CatchPanicLayer(Protocol::Http));
        let response = router.oneshot(panicking_request("/boom")).await.unwrap();
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"code": 13, "message": "internal error", "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "INTERNAL",
                "domain": "spacet.v1",
                "metadata": {},
            }]})
        );

        // Over gRPC, a service panicking as it is called.
        let service = tower::service_fn(
            |_: Request<Body>| -> std::future::Ready<Result<Response, std::convert::Infallible>> {
                panic!("secret detail of the crash")
            },
        );
        let response = CatchPanicLayer(Protocol::Grpc)
            .layer(service)
            .oneshot(panicking_request("/spacet.v1.SpaceTService/GetBooking"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "13");
        // Percent-encoded, as gRPC sends messages.
        assert_eq!(response.headers()["grpc-message"], "internal%20error");
        assert_eq!(response.headers()["content-type"], "application/grpc");

        let lines = captured.lines();
        assert_eq!(lines.len(), 2, "one line per panic: {lines:?}");
        for (line, path) in lines
            .iter()
            .zip(["/boom", "/spacet.v1.SpaceTService/GetBooking"])
        {
            assert_eq!(line["level"], "ERROR", "{line}");
            let fields = &line["fields"];
            assert_eq!(fields["message"], "request handler panicked", "{line}");
            assert_eq!(fields["panic"], "secret detail of the crash", "{line}");
            assert_eq!(fields["path"], path, "{line}");
            assert_eq!(fields["request_id"], "req-42", "{line}");
        }
    }
}
