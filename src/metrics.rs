//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! Every label value comes from a finite set (never verbatim from a request), and
//! every family is on the first scrape: the known label values start at zero so
//! `rate()` and alerts work from the start.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Encoder, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, TextEncoder,
};

/// Declares a metric's label set as an enum: each variant's label value
/// (`as_str`) and `ALL`, the values started at zero — so the set that starts at
/// zero is, by construction, the set the code can record.
macro_rules! label_set {
    (
        $(#[$doc:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_doc:meta])* $variant:ident = $label:literal, )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$variant_doc])* $variant, )*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}
pub(crate) use label_set;

/// The `method` label of a request whose method is not a standard one.
pub const OTHER_METHOD: &str = "OTHER";

/// The standard HTTP methods (RFC 9110 and PATCH), each its own label value.
const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Results of a SpaceX sync (`spacex::sync`).
const SYNC_RESULTS: &[&str] = &["applied", "skipped", "held", "failed"];
/// Limits a SpaceX answer can hit (`spacex::client`).
const SPACEX_LIMITS: &[&str] = &["bytes", "launches", "time"];
/// States of the database pool gauge.
const POOL_STATES: &[&str] = &["idle", "in_use", "max"];

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
/// Bookings by outcome: `booking::BookingOutcome`, whose every value the
/// feature starts at zero (`booking::declare_metrics`).
pub static BOOKINGS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_bookings_total",
        "Booking attempts by outcome",
        &["outcome"]
    )
    .unwrap()
});
/// Tokens refused by the authentication layer, by why.
pub static AUTH_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_auth_refused_tokens_total",
        "Bearer tokens refused, by reason",
        &["reason"]
    )
    .unwrap()
});
/// Calls refused by a per-principal rate limit, by limit.
pub static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_rate_limited_total",
        "Calls refused by a per-principal rate limit",
        &["limit"]
    )
    .unwrap()
});
/// SpaceX sync runs by result (`applied`, `skipped`, `held`, `failed`).
pub static SYNC_RUNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_spacex_sync_runs_total",
        "SpaceX sync runs by result",
        &["result"]
    )
    .unwrap()
});
/// SpaceX answers refused by a limit: `bytes` (SPACEX_MAX_RESPONSE_BYTES),
/// `launches` (SPACEX_MAX_LAUNCHES), `time` (SPACEX_TIMEOUT).
pub static SPACEX_LIMIT_HITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "spacet_spacex_response_limit_total",
        "SpaceX answers refused by a limit (bytes, launches, time)",
        &["limit"]
    )
    .unwrap()
});
/// 1 while the last sync this process ran was held by the circuit breaker,
/// waiting for an admin's confirmation; 0 once one is applied.
pub static SYNC_HELD: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "spacet_spacex_sync_held",
        "1 while a SpaceX sync is held for confirmation (too many cancellations, or every blocked day freed)"
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
/// Rocket messages by outcome: `rockets::MessageOutcome`, whose every value the
/// feature starts at zero (`rockets::declare_metrics`).
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

/// `spacet_build_info`: 1, with what was built.
static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "spacet_build_info",
        "Build information: always 1, the labels say what runs",
        &["version", "profile", "os", "arch"]
    )
    .unwrap()
});

/// The `method` label of an HTTP method: its name when it is a standard one,
/// `OTHER` otherwise (any token is a valid method, so a client could make up
/// one per request).
pub(crate) fn http_method_label(method: &str) -> &'static str {
    HTTP_METHODS
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or(OTHER_METHOD)
}

/// The canonical name of a gRPC status code (`INVALID_ARGUMENT`), as gRPC
/// documents and other services label it.
pub(crate) fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Records one HTTP request. `route` must be a route template or another fixed
/// label (the caller bounds it); the method is bounded here.
pub(crate) fn record_http(method: &http::Method, route: &str, status: u16, latency_ms: f64) {
    let method = http_method_label(method.as_str());
    HTTP_REQUESTS
        .with_label_values(&[method, route, &status.to_string()])
        .inc();
    HTTP_LATENCY
        .with_label_values(&[method, route])
        .observe(latency_ms / 1000.0);
}

/// Records one gRPC call. `method` must be a served method's path or another
/// fixed label (the caller bounds it).
pub(crate) fn record_grpc(method: &str, code: tonic::Code, latency_ms: f64) {
    GRPC_REQUESTS
        .with_label_values(&[method, grpc_code_name(code)])
        .inc();
    GRPC_LATENCY
        .with_label_values(&[method])
        .observe(latency_ms / 1000.0);
}

/// Starts the series of known HTTP routes (`(method, template)`, the method in
/// any case) at zero, with status 200.
pub(crate) fn declare_http_routes<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (method, route) in routes {
        let method = http_method_label(&method.to_ascii_uppercase());
        HTTP_REQUESTS.with_label_values(&[method, route, "200"]);
        HTTP_LATENCY.with_label_values(&[method, route]);
    }
}

/// Starts the series of known gRPC methods (their paths) at zero, with code OK.
pub(crate) fn declare_grpc_methods<'a>(methods: impl IntoIterator<Item = &'a str>) {
    for method in methods {
        GRPC_REQUESTS.with_label_values(&[method, grpc_code_name(tonic::Code::Ok)]);
        GRPC_LATENCY.with_label_values(&[method]);
    }
}

/// Registers every family and starts the known label values at zero, once.
/// The request families are registered here too; their known routes and methods
/// are declared by the access log, which knows them (`declare_*`).
static DECLARED: LazyLock<()> = LazyLock::new(|| {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_LATENCY);
    LazyLock::force(&GRPC_REQUESTS);
    LazyLock::force(&GRPC_LATENCY);
    LazyLock::force(&BOOKINGS);
    for result in SYNC_RESULTS {
        SYNC_RUNS.with_label_values(&[result]);
        SYNC_DURATION.with_label_values(&[result]);
    }
    for limit in SPACEX_LIMITS {
        SPACEX_LIMIT_HITS.with_label_values(&[limit]);
    }
    LazyLock::force(&SYNC_HELD);
    LazyLock::force(&OUTBOX_PUBLISHED);
    LazyLock::force(&OUTBOX_FAILED);
    LazyLock::force(&OUTBOX_PARKED);
    LazyLock::force(&OUTBOX_BACKLOG);
    LazyLock::force(&ROCKET_MESSAGES);
    for state in POOL_STATES {
        POOL.with_label_values(&[state]);
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    BUILD_INFO
        .with_label_values(&[
            env!("CARGO_PKG_VERSION"),
            profile,
            std::env::consts::OS,
            std::env::consts::ARCH,
        ])
        .set(1);
    // The process_* families (CPU, memory, file descriptors, threads, start time)
    // come from the ProcessCollector that the `process` feature registers in the
    // default registry on Linux.
});

/// Registers every family, with the known label values at zero (idempotent).
pub(crate) fn declare() {
    LazyLock::force(&DECLARED);
}

/// Renders every metric, after refreshing the pool gauges.
pub fn render(pool: &sqlx::PgPool) -> String {
    declare();
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
