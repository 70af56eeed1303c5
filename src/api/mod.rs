//! The service's edges: gRPC, the HTTP/JSON gateway, probes; and the one error table.

pub mod access_log;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod probes;

use axum::{extract::MatchedPath, http::HeaderValue, middleware, response::Response};
use tower_http::{
    compression::{predicate::SizeAbove, CompressionLayer},
    cors::{AllowOrigin, CorsLayer},
};

use crate::{app::AppState, proto};
use access_log::{AccessLogLayer, Protocol};

/// Every HTTP route: (method, path template). The OpenAPI document must list exactly these.
pub fn http_routes() -> Vec<(&'static str, &'static str)> {
    [
        probes::ROUTES,
        gateway::ROUTES,
        crate::rockets::http::ROUTES,
    ]
    .concat()
}

/// The HTTP server: gateway, rocket telemetry, probes, metrics.
pub fn http_router(state: AppState) -> axum::Router {
    let settings = state.settings.clone();
    let mut router = axum::Router::new()
        .merge(probes::router())
        .merge(gateway::router())
        .merge(crate::rockets::http::router())
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

/// The gRPC server: booking and rocket services, health and reflection.
pub fn grpc_server(
    state: AppState,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> anyhow::Result<
    tonic::transport::server::Router<
        tower::layer::util::Stack<AccessLogLayer, tower::layer::util::Identity>,
    >,
> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(tonic::transport::Server::builder()
        .layer(AccessLogLayer(Protocol::Grpc))
        .add_service(health)
        .add_service(reflection)
        .add_service(proto::space_t_service_server::SpaceTServiceServer::new(
            grpc::BookingApi {
                state: state.clone(),
            },
        ))
        .add_service(proto::rocket_service_server::RocketServiceServer::new(
            crate::rockets::grpc::RocketApi::new(state),
        )))
}
