//! One log line per HTTP or gRPC request (method/route, status, latency, request
//! id), and the `x-request-id` header: kept when the client sends one, generated
//! otherwise, and returned in the response. Also the request metrics, whose labels
//! are bounded here: route templates and served gRPC methods, never raw paths.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::{LazyLock, Once},
    task::{Context, Poll},
    time::Instant,
};

use axum::extract::MatchedPath;
use http::{HeaderValue, Request, Response};
use prost::Message as _;
use tower::{Layer, Service};

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// The `route` label of an HTTP request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The `method` label of a gRPC call to a method the server does not serve.
pub const UNKNOWN_GRPC_METHOD: &str = "unknown";

/// The path (`/package.Service/Method`) of every method of the services the gRPC
/// server serves (reflection v1 and v1alpha included), read from their compiled
/// descriptors.
static GRPC_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    .flat_map(|encoded| {
        prost_types::FileDescriptorSet::decode(encoded)
            .expect("compiled descriptor sets decode")
            .file
    })
    .flat_map(|file| {
        let prefix = match file.package() {
            "" => String::new(),
            package => format!("{package}."),
        };
        file.service.into_iter().flat_map(move |service| {
            let service_name = format!("{prefix}{}", service.name());
            service
                .method
                .into_iter()
                .map(move |method| format!("/{service_name}/{}", method.name()))
        })
    })
    .collect()
});

/// The `method` label of a gRPC request path: the path of a served method, or
/// `unknown` (anyone can send any path to the gRPC port).
pub(crate) fn grpc_method_label(path: &str) -> &'static str {
    GRPC_METHODS
        .get(path)
        .map_or(UNKNOWN_GRPC_METHOD, String::as_str)
}

/// Registers the metrics and starts the known routes or methods at zero, once
/// per protocol, when the layer is installed: before the first scrape.
fn declare_series(protocol: Protocol) {
    static HTTP: Once = Once::new();
    static GRPC: Once = Once::new();
    crate::metrics::declare();
    // The label sets the features define.
    crate::booking::declare_metrics();
    crate::rockets::declare_metrics();
    match protocol {
        Protocol::Http => HTTP.call_once(|| {
            let routes = super::http_routes();
            crate::metrics::declare_http_routes(routes.iter().map(|(m, p)| (*m, p.as_str())))
        }),
        Protocol::Grpc => GRPC.call_once(|| {
            crate::metrics::declare_grpc_methods(GRPC_METHODS.iter().map(String::as_str))
        }),
    }
}

/// Name of the span each request is served in.
pub const REQUEST_SPAN: &str = crate::telemetry::REQUEST_SPAN;

/// Which protocol a log line is for.
#[derive(Clone, Copy, Debug)]
pub enum Protocol {
    Http,
    Grpc,
}

/// Layer adding request ids and access logs.
#[derive(Clone, Copy, Debug)]
pub struct AccessLogLayer(pub Protocol);

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        declare_series(self.0);
        AccessLog {
            inner,
            protocol: self.0,
        }
    }
}

/// See [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
    protocol: Protocol,
}

/// The request id of a request, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl<S, ReqB, ResB> Service<Request<ReqB>> for AccessLog<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + Clone + 'static,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let started = Instant::now();
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            request.headers_mut().insert(REQUEST_ID, value);
        }
        request
            .extensions_mut()
            .insert(RequestId(request_id.clone()));
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let protocol = self.protocol;
        // One request, one span: every line logged while serving it (by handlers,
        // features and the panic hook) carries its request id. When traces are
        // exported it is the OpenTelemetry server span, child of the caller's
        // `traceparent`; the OpenTelemetry fields exist only then.
        let otel = crate::telemetry::otel_enabled();
        let span = if otel {
            tracing::info_span!(
                REQUEST_SPAN,
                request_id = %request_id,
                method = %method,
                path = %path,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
                trace_sampled = tracing::field::Empty,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
            )
        } else {
            tracing::info_span!(
                REQUEST_SPAN,
                request_id = %request_id,
                method = %method,
                path = %path,
                trace_id = tracing::field::Empty,
                trace_sampled = tracing::field::Empty,
            )
        };
        if let Some(ids) = crate::telemetry::accept_remote_parent(&span, request.headers()) {
            span.record("trace_id", ids.trace_id.as_str());
            span.record("trace_sampled", ids.sampled);
            if let Some(span_id) = &ids.span_id {
                span.record("span_id", span_id.as_str());
            }
        }
        if otel {
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            span.set_attribute("http.request.method", method.to_string());
            span.set_attribute("url.path", path.clone());
            span.set_attribute("spacet.request_id", request_id.clone());
            if let Protocol::Grpc = self.protocol {
                span.set_attribute("rpc.system", "grpc");
                rename(&span, path.trim_start_matches('/').to_string());
                if let Some((service, method)) = path.trim_start_matches('/').split_once('/') {
                    span.set_attribute("rpc.service", service.to_string());
                    span.set_attribute("rpc.method", method.to_string());
                }
            }
        }
        let span_handle = span.clone();
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(tracing::Instrument::instrument(
            async move {
                let mut response = future.await?;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID, value);
                }
                let status = response.status().as_u16();
                match protocol {
                    Protocol::Http => {
                        // The router copies the matched route template into the response
                        // (see `api::remember_route`); unmatched paths share one label.
                        let route = response
                            .extensions()
                            .get::<MatchedPath>()
                            .map(|p| p.as_str().to_owned());
                        crate::metrics::record_http(
                            &method,
                            route.as_deref().unwrap_or(UNMATCHED_ROUTE),
                            status,
                            latency_ms,
                        );
                        if otel {
                            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
                            let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
                            rename(&span_handle, format!("{method} {route}"));
                            span_handle.set_attribute("http.route", route.to_string());
                            span_handle.set_attribute("http.response.status_code", status as i64);
                            if status >= 500 {
                                span_handle.record("otel.status_code", "ERROR");
                            }
                        }
                        tracing::info!(%method, path, route, status, latency_ms, request_id, "http request");
                    }
                    Protocol::Grpc => {
                        // Errors come back trailers-only, with grpc-status in the headers;
                        // a success puts grpc-status 0 in the trailers.
                        let grpc_status = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .unwrap_or(0);
                        let code = tonic::Code::from_i32(grpc_status);
                        crate::metrics::record_grpc(grpc_method_label(&path), code, latency_ms);
                        if otel {
                            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
                            span_handle.set_attribute("rpc.grpc.status_code", grpc_status as i64);
                            // The server errors of the semantic conventions.
                            if matches!(
                                code,
                                tonic::Code::Unknown
                                    | tonic::Code::DeadlineExceeded
                                    | tonic::Code::Unimplemented
                                    | tonic::Code::Internal
                                    | tonic::Code::Unavailable
                                    | tonic::Code::DataLoss
                            ) {
                                span_handle.record("otel.status_code", "ERROR");
                            }
                        }
                        tracing::info!(method = %path, grpc_status = ?code, latency_ms, request_id, "grpc request");
                    }
                }
                Ok(response)
            },
            span,
        ))
    }
}

/// Names the (already started) OpenTelemetry span of `span`.
fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    span.context().span().update_name(name);
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::api::tests::Captured;

    #[tokio::test]
    async fn every_line_logged_while_serving_a_request_carries_its_request_id() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        // A handler that logs before and after an await, like a feature would.
        let handler = tower::service_fn(|_: Request<axum::body::Body>| async {
            tracing::info!("handler started");
            tokio::task::yield_now().await;
            tracing::warn!(detail = 7, "feature warning");
            Ok::<_, std::convert::Infallible>(Response::new(axum::body::Body::empty()))
        });
        let request = Request::builder()
            .uri("/v1/bookings")
            .header(REQUEST_ID, "req-7")
            .body(axum::body::Body::empty())
            .unwrap();
        AccessLogLayer(Protocol::Http)
            .layer(handler)
            .oneshot(request)
            .await
            .unwrap();

        let lines = captured.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines {
            assert_eq!(line["span"]["request_id"], "req-7", "{line}");
            assert_eq!(line["span"]["name"], REQUEST_SPAN, "{line}");
        }
    }
}

/// The JSON log lines of requests (`telemetry::JsonLines`), served through the
/// access log.
#[cfg(test)]
mod json_lines {
    use tower::{Layer as _, ServiceExt as _};
    use tracing_subscriber::{fmt::format::JsonFields, prelude::*};

    use super::*;
    use crate::{api::tests::Captured, telemetry::JsonLines};

    /// Serves one request through the access log, with a handler logging a warning
    /// inside a span of its own, under `format`'s JSON lines; returns the lines.
    async fn serve_one(format: JsonLines, traceparent: Option<&str>) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(format)
                .with_writer(move || writer.clone()),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let handler = tower::service_fn(|_: http::Request<axum::body::Body>| async {
            async {
                tokio::task::yield_now().await;
                tracing::warn!(detail = 7, "feature warning");
            }
            .instrument(tracing::info_span!("feature", pad = "KSC"))
            .await;
            Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::empty()))
        });
        let mut request = http::Request::builder()
            .uri("/v1/bookings")
            .header(REQUEST_ID, "req-9");
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        AccessLogLayer(Protocol::Http)
            .layer(handler)
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        captured.lines()
    }

    use tracing::Instrument as _;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[tokio::test]
    async fn gcp_lines_carry_severity_and_the_callers_trace_in_nested_spans() {
        let lines = serve_one(
            JsonLines::gcp(Some("spacet-prod".into())),
            Some(&format!("00-{TRACE}-00f067aa0ba902b7-01")),
        )
        .await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        let warning = &lines[0];
        assert_eq!(warning["severity"], "WARNING", "{warning}");
        assert_eq!(warning["message"], "feature warning", "{warning}");
        assert_eq!(warning["detail"], 7, "{warning}");
        assert!(warning["time"].is_string(), "{warning}");
        assert_eq!(
            warning["logging.googleapis.com/trace"],
            format!("projects/spacet-prod/traces/{TRACE}"),
            "{warning}"
        );
        assert_eq!(warning["logging.googleapis.com/trace_sampled"], true);
        // Inside the feature's span, the request's ids still.
        assert_eq!(warning["request_id"], "req-9", "{warning}");
        assert_eq!(warning["trace_id"], TRACE, "{warning}");
        assert_eq!(warning["span"]["name"], "feature", "{warning}");
        assert_eq!(warning["span"]["pad"], "KSC", "{warning}");
        assert_eq!(lines[1]["severity"], "INFO");
        assert_eq!(lines[1]["message"], "http request");
    }

    #[tokio::test]
    async fn json_lines_have_the_request_id_everywhere_and_a_trace_id_only_when_given() {
        let lines = serve_one(JsonLines::json(), None).await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        for line in &lines {
            assert_eq!(line["request_id"], "req-9", "{line}");
            assert!(line.get("trace_id").is_none(), "{line}");
            assert!(line.get("logging.googleapis.com/trace").is_none());
        }
        assert_eq!(lines[0]["level"], "WARN");
        // An invalid traceparent is ignored.
        let lines = serve_one(JsonLines::json(), Some("00-zz-00f067aa0ba902b7-01")).await;
        assert!(lines[0].get("trace_id").is_none(), "{:?}", lines[0]);
        let lines = serve_one(
            JsonLines::json(),
            Some(&format!("00-{TRACE}-00f067aa0ba902b7-00")),
        )
        .await;
        assert_eq!(lines[0]["trace_id"], TRACE);
    }
}
