//! Prometheus metrics, served at `GET /metrics` in the text format.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Encoder, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_http_requests_total",
        "HTTP requests by route and status",
        &["method", "route", "status"]
    )
    .unwrap()
});
static HTTP_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "spacet_http_request_duration_seconds",
        "HTTP request latency by route",
        &["method", "route"],
        LATENCY_BUCKETS.to_vec()
    )
    .unwrap()
});
static GRPC_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_grpc_requests_total",
        "gRPC requests by method and code",
        &["method", "code"]
    )
    .unwrap()
});
static GRPC_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "spacet_grpc_request_duration_seconds",
        "gRPC request latency by method",
        &["method"],
        LATENCY_BUCKETS.to_vec()
    )
    .unwrap()
});
/// Bookings by outcome (`confirmed`, `replayed`, or the refusal reason).
pub static BOOKINGS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_bookings_total",
        "Booking attempts by outcome",
        &["outcome"]
    )
    .unwrap()
});
/// SpaceX sync runs by result (`applied`, `skipped`, `failed`).
pub static SYNC_RUNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_spacex_sync_runs_total",
        "SpaceX sync runs by result",
        &["result"]
    )
    .unwrap()
});
/// Duration of SpaceX syncs.
pub static SYNC_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "spacet_spacex_sync_duration_seconds",
        "SpaceX sync duration",
        &["result"],
        LATENCY_BUCKETS.to_vec()
    )
    .unwrap()
});
/// Events published by the outbox relay.
pub static OUTBOX_PUBLISHED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("spacet_outbox_published_total", "Outbox events published").unwrap()
});
/// Failed publish attempts.
pub static OUTBOX_FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "spacet_outbox_failed_total",
        "Failed outbox publish attempts"
    )
    .unwrap()
});
/// Events parked after too many failures.
pub static OUTBOX_PARKED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "spacet_outbox_parked_total",
        "Outbox events parked after repeated failures"
    )
    .unwrap()
});
/// Unpublished events, as last measured.
pub static OUTBOX_BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("spacet_outbox_backlog", "Unpublished outbox events").unwrap()
});
/// Rocket messages by outcome (`stored`, `duplicate`, `conflict`, `invalid`).
pub static ROCKET_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_rocket_messages_total",
        "Rocket telemetry messages by outcome",
        &["outcome"]
    )
    .unwrap()
});
static POOL: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "spacet_db_pool_connections",
        "Database pool connections by state",
        &["state"]
    )
    .unwrap()
});

/// Records one HTTP request.
pub fn record_http(method: &http::Method, route: &str, status: u16, latency_ms: f64) {
    HTTP_REQUESTS
        .with_label_values(&[method.as_str(), route, &status.to_string()])
        .inc();
    HTTP_LATENCY
        .with_label_values(&[method.as_str(), route])
        .observe(latency_ms / 1000.0);
}

/// Records one gRPC call.
pub fn record_grpc(method: &str, code: tonic::Code, latency_ms: f64) {
    GRPC_REQUESTS
        .with_label_values(&[method, &format!("{code:?}")])
        .inc();
    GRPC_LATENCY
        .with_label_values(&[method])
        .observe(latency_ms / 1000.0);
}

/// Renders every metric, after refreshing the pool gauges.
pub fn render(pool: &sqlx::PgPool) -> String {
    let idle = pool.num_idle() as i64;
    POOL.with_label_values(&["idle"]).set(idle);
    POOL.with_label_values(&["in_use"])
        .set(pool.size() as i64 - idle);
    POOL.with_label_values(&["max"])
        .set(pool.options().get_max_connections() as i64);
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut out)
        .expect("text encoding cannot fail");
    String::from_utf8(out).expect("metrics are UTF-8")
}
