//! The service's edges: decode a request, call a feature, encode the answer.
//! gRPC services (`grpc/`), the HTTP/JSON gateway, rocket routes and probes
//! (`http/`), the one error table (`error`) and the proto ↔ domain conversions
//! (`convert`). The edges read [`ApiState`], which `app` assembles; nothing here
//! imports `app`.

pub mod access_log;
pub mod convert;
pub mod error;
pub mod grpc;
pub mod http;

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::MatchedPath,
    http::{HeaderValue, Request},
    middleware,
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
}

/// Every HTTP route: (method, path template). The OpenAPI document must list exactly these.
pub fn http_routes() -> Vec<(&'static str, &'static str)> {
    [probes::ROUTES, gateway::ROUTES, http::rockets::ROUTES].concat()
}

/// The HTTP server: gateway, rocket telemetry, probes, metrics.
pub fn http_router(state: ApiState) -> axum::Router {
    let settings = state.settings.clone();
    let mut router = axum::Router::new()
        .merge(probes::router())
        .merge(gateway::router())
        .merge(http::rockets::router())
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
    router
        .layer(CatchPanicLayer(Protocol::Http))
        .layer(AccessLogLayer(Protocol::Http))
        .with_state(state)
}

/// Copies the matched route template into the response, for the access log's
/// metrics labels (the outer layer runs before routing and cannot see it).
async fn remember_route(matched: Option<MatchedPath>, mut response: Response) -> Response {
    if let Some(matched) = matched {
        response.extensions_mut().insert(matched);
    }
    response
}

/// The gRPC server's layers: the access log around the panic catcher.
pub type GrpcLayers = tower::layer::util::Stack<
    CatchPanicLayer,
    tower::layer::util::Stack<AccessLogLayer, tower::layer::util::Identity>,
>;

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
    Ok(tonic::transport::Server::builder()
        // The layer added first is outermost: the access log sees a caught panic
        // as the INTERNAL it was answered with.
        .layer(AccessLogLayer(Protocol::Grpc))
        .layer(CatchPanicLayer(Protocol::Grpc))
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(proto::space_t_service_server::SpaceTServiceServer::new(
            grpc::booking::BookingApi {
                state: state.clone(),
            },
        ))
        .add_service(proto::rocket_service_server::RocketServiceServer::new(
            grpc::rockets::RocketApi::new(state),
        )))
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
    let status = tonic::Status::internal("internal error");
    match protocol {
        Protocol::Http => error::GatewayError::from_status(status).into_response(),
        Protocol::Grpc => status.into_http(),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

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
        fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
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
            json!({"code": 13, "message": "internal error", "details": []})
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
