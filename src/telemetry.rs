//! Tracing, set up once: log lines (pretty, JSON, or the JSON Cloud Logging reads)
//! and, when an OTLP endpoint is configured, OpenTelemetry traces exported over
//! OTLP (http/protobuf or gRPC), with the W3C trace context read from requests and
//! written into outgoing SpaceX requests and Pub/Sub messages.

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::{TraceContextExt as _, TracerProvider as _},
    Context,
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::{
    field::{Field, Visit},
    Event, Subscriber,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    filter::FilterExt as _,
    fmt::{
        self,
        format::{JsonFields, Writer},
        FmtContext, FormatEvent, FormatFields, FormattedFields,
    },
    prelude::*,
    registry::LookupSpan,
    EnvFilter, Layer,
};

use crate::config::LogFormat;

/// Name of the span each HTTP or gRPC request is served in (`api::access_log`):
/// the log lines under it carry its `request_id` and `trace_id`.
pub const REQUEST_SPAN: &str = "request";

/// Whether spans go to an OpenTelemetry tracer (an OTLP endpoint is configured).
static OTEL: AtomicBool = AtomicBool::new(false);

/// Whether requests get OpenTelemetry spans: true once [`init_with`] installed an
/// exporter. Without one, nothing but the trace id of an incoming `traceparent`
/// (for the logs) is read.
pub(crate) fn otel_enabled() -> bool {
    OTEL.load(Ordering::Relaxed)
}

/// The running telemetry; [`Telemetry::shutdown`] flushes the spans not yet sent.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter (bounded by the
    /// exporter's timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("spacet: flushing the trace exporter failed: {error}");
            }
        }
    }
}

/// What [`init_with`] needs, taken from the settings.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// An EnvFilter directive.
    pub level: String,
    pub format: LogFormat,
    /// The service name in the exported resource (unless `OTEL_SERVICE_NAME`).
    pub service_name: String,
    pub service_version: String,
    /// The Google Cloud project of `logging.googleapis.com/trace` (`LOG_FORMAT=gcp`).
    pub gcp_project: Option<String>,
    /// Log lines to stderr instead of stdout (a program whose stdout is its output).
    pub to_stderr: bool,
}

/// Whether the standard variables ask for an OTLP trace exporter: an endpoint is
/// set, and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`.
pub(crate) fn otlp_configured() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some();
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let no_exporter = set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    endpoint && !disabled && !no_exporter
}

/// Installs the global subscriber: `level` is an EnvFilter directive. No traces
/// are exported (the benchmarks and tests use this).
pub fn init(level: &str, format: LogFormat) {
    let options = LogOptions {
        level: level.to_string(),
        format,
        service_name: "spacet".into(),
        service_version: env!("CARGO_PKG_VERSION").into(),
        gcp_project: None,
        to_stderr: false,
    };
    let _ = install(&options, None);
}

/// Installs the global subscriber, with an OTLP trace exporter when
/// [`otlp_configured`]. Call it inside the Tokio runtime (the gRPC exporter
/// needs one) and keep the result until exit.
pub fn init_with(options: &LogOptions) -> anyhow::Result<Telemetry> {
    let provider = if otlp_configured() {
        Some(tracer_provider(options)?)
    } else {
        None
    };
    let installed = install(options, provider.clone());
    if installed && provider.is_some() {
        OTEL.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
    })
}

/// The tracer provider: OTLP exporter (protocol, endpoint, headers, timeout from
/// the `OTEL_EXPORTER_OTLP_*` variables), batch processor (`OTEL_BSP_*`), sampler
/// (`OTEL_TRACES_SAMPLER`), resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
fn tracer_provider(options: &LogOptions) -> anyhow::Result<SdkTracerProvider> {
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    if !matches!(protocol.trim(), "" | "http/protobuf" | "grpc") {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL: {protocol:?} is not one of http/protobuf, grpc"
        );
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .build()
        .map_err(|e| anyhow::anyhow!("the OTLP trace exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", options.service_version.clone()),
    );
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(options.service_name.clone());
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// What the OpenTelemetry layer records.
const TRACES_FILTER: &str =
    "info,sqlx::query=debug,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// The subscriber: the log layer under `level`; with `provider`, the
/// OpenTelemetry layer too, which also sees sqlx's statement events (as span events of the
/// database spans). Returns false when a subscriber was already installed (tests
/// start many apps in one process: the first one stays).
fn install(options: &LogOptions, provider: Option<SdkTracerProvider>) -> bool {
    let filter = || EnvFilter::try_new(&options.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match options.format {
        LogFormat::Json | LogFormat::Gcp => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let writer = if options.to_stderr {
        fmt::writer::BoxMakeWriter::new(std::io::stderr)
    } else {
        fmt::writer::BoxMakeWriter::new(std::io::stdout)
    };
    let logs = if json {
        let gcp = (options.format == LogFormat::Gcp).then(|| GcpTrace {
            project: options.gcp_project.clone(),
        });
        fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines { gcp })
            .with_writer(writer)
            .with_filter(filter())
            .boxed()
    } else {
        fmt::layer()
            .compact()
            .with_writer(writer)
            .with_filter(filter())
            .boxed()
    };
    let otel = provider.map(|provider| {
        // Spans at info whatever LOG_LEVEL says (a quiet log keeps its traces),
        // sqlx's statements as span events, and nothing of the exporter's own
        // transport (its requests would be traced in turn).
        let traces = EnvFilter::new(TRACES_FILTER);
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("spacet"))
            .with_threads(false)
            .with_location(false)
            // The relay's polling rounds would be a trace a second; its publishes
            // are spans of their own, in the traces of the requests that wrote them.
            .with_filter(traces.and(tracing_subscriber::filter::filter_fn(|meta| {
                !(meta.is_span()
                    && meta.name() == "step"
                    && meta.target() == "spacet::outbox::relay")
            })))
            .boxed()
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init()
        .is_ok();
    if installed {
        log_panics();
    }
    installed
}

/// Installs the global subscriber writing JSON lines to `file` (the test suite's
/// log, which a check greps for personal data). Later calls keep the first.
/// Panics keep Rust's own report on stderr, where the test runner shows it.
pub fn init_json_file(level: &str, file: std::fs::File) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let result = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines { gcp: None })
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(filter),
        )
        .try_init();
    let _ = result;
}

/// `LOG_FORMAT=gcp`: how to name the trace.
#[derive(Debug, Clone)]
struct GcpTrace {
    project: Option<String>,
}

impl JsonLines {
    /// `LOG_FORMAT=json`'s lines.
    pub fn json() -> JsonLines {
        JsonLines { gcp: None }
    }

    /// `LOG_FORMAT=gcp`'s lines, naming traces in `project` when known.
    pub fn gcp(project: Option<String>) -> JsonLines {
        JsonLines {
            gcp: Some(GcpTrace { project }),
        }
    }
}

/// One JSON object per line: the event's fields (flattened), the current span's
/// fields under `span`, and the request's `request_id` and `trace_id` at the top
/// on every line logged while serving a request, however deep in its spans. With
/// `gcp`, Cloud Logging's names: `severity`, `time`, `message`,
/// `logging.googleapis.com/trace`, `.../spanId`, `.../trace_sampled`.
pub struct JsonLines {
    gcp: Option<GcpTrace>,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        use serde_json::{Map, Value};
        let meta = event.metadata();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut line = Map::new();
        match &self.gcp {
            Some(_) => {
                line.insert("time".into(), now.into());
                let severity = match *meta.level() {
                    tracing::Level::ERROR => "ERROR",
                    tracing::Level::WARN => "WARNING",
                    tracing::Level::INFO => "INFO",
                    _ => "DEBUG",
                };
                line.insert("severity".into(), severity.into());
            }
            None => {
                line.insert("timestamp".into(), now.into());
                line.insert("level".into(), meta.level().as_str().into());
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        line.insert("target".into(), meta.target().into());

        let mut request: Option<Map<String, Value>> = None;
        if let Some(scope) = ctx.event_scope() {
            for (depth, span) in scope.enumerate() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                let is_request = span.name() == REQUEST_SPAN;
                if depth > 0 && !is_request {
                    continue;
                }
                let mut fields = match serde_json::from_str::<Value>(fields.as_str()) {
                    Ok(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                if is_request {
                    request = Some(fields.clone());
                }
                if depth == 0 {
                    fields.retain(|k, _| !k.starts_with("otel."));
                    fields.insert("name".into(), span.name().into());
                    line.insert("span".into(), Value::Object(fields));
                }
                if request.is_some() {
                    break;
                }
            }
        }
        if let Some(request) = request {
            let field = |name: &str| request.get(name).cloned();
            if let Some(id) = field("request_id") {
                line.insert("request_id".into(), id);
            }
            if let Some(Value::String(trace_id)) = field("trace_id") {
                if let Some(gcp) = &self.gcp {
                    let trace = match &gcp.project {
                        Some(project) => format!("projects/{project}/traces/{trace_id}"),
                        None => trace_id.clone(),
                    };
                    line.insert("logging.googleapis.com/trace".into(), trace.into());
                    if let Some(span_id) = field("span_id") {
                        line.insert("logging.googleapis.com/spanId".into(), span_id);
                    }
                    let sampled = field("trace_sampled").unwrap_or(Value::Bool(false));
                    line.insert("logging.googleapis.com/trace_sampled".into(), sampled);
                }
                line.insert("trace_id".into(), trace_id.into());
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Writes an event's fields into a JSON object.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// The W3C trace context (`traceparent`, `tracestate`).
static PROPAGATOR: std::sync::LazyLock<TraceContextPropagator> =
    std::sync::LazyLock::new(TraceContextPropagator::new);

/// Reads a carrier of string pairs (Pub/Sub attributes, HTTP headers).
struct Pairs<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// The trace context a `traceparent` (and `tracestate`) names.
pub fn remote_context(traceparent: &str, tracestate: Option<&str>) -> Context {
    let mut pairs = vec![("traceparent", traceparent)];
    if let Some(state) = tracestate {
        pairs.push(("tracestate", state));
    }
    PROPAGATOR.extract(&Pairs(&pairs))
}

/// What the request span records of the caller's or its own trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: String,
    /// Our span's id; none when no span is exported (only the caller's trace is known).
    pub span_id: Option<String>,
    pub sampled: bool,
}

/// Makes the trace context in `headers` (`traceparent`, `tracestate`) the parent
/// of `span` when traces are exported, and returns the ids to log: the request
/// span's own when exported, else the caller's trace id (none without a valid
/// `traceparent`).
pub(crate) fn accept_remote_parent(
    span: &tracing::Span,
    headers: &http::HeaderMap,
) -> Option<TraceIds> {
    let otel = otel_enabled();
    let traceparent = headers.get("traceparent");
    if !otel && traceparent.is_none() {
        return None;
    }
    let remote = match traceparent {
        Some(_) => PROPAGATOR.extract(&opentelemetry_http::HeaderExtractor(headers)),
        None => Context::new(),
    };
    if !otel {
        let remote_span = remote.span();
        let context = remote_span.span_context();
        return context.is_valid().then(|| TraceIds {
            trace_id: context.trace_id().to_string(),
            span_id: None,
            sampled: context.is_sampled(),
        });
    }
    if remote.span().span_context().is_valid() {
        let _ = span.set_parent(remote);
    }
    let own = span.context();
    let own_span = own.span();
    let context = own_span.span_context();
    context.is_valid().then(|| TraceIds {
        trace_id: context.trace_id().to_string(),
        span_id: Some(context.span_id().to_string()),
        sampled: context.is_sampled(),
    })
}

/// Writes `span`'s trace context into outgoing HTTP headers (`traceparent`,
/// `tracestate`). Nothing without an exporter.
pub(crate) fn inject_headers(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if otel_enabled() {
        PROPAGATOR.inject_context(
            &span.context(),
            &mut opentelemetry_http::HeaderInjector(headers),
        );
    }
}

/// Collects injected pairs.
struct Collect(Vec<(String, String)>);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// `span`'s trace context as `traceparent` and `tracestate` (when not empty)
/// pairs, for message attributes. Empty without an exporter or a valid context.
pub(crate) fn context_pairs(span: &tracing::Span) -> Vec<(String, String)> {
    if !otel_enabled() {
        return Vec::new();
    }
    let mut pairs = Collect(Vec::new());
    PROPAGATOR.inject_context(&span.context(), &mut pairs);
    pairs.0.retain(|(_, v)| !v.is_empty());
    pairs.0
}

/// The current span's `traceparent`, stored with outbox rows so that their publish
/// joins the trace of the request that wrote them. None without an exporter.
pub(crate) fn current_traceparent() -> Option<String> {
    context_pairs(&tracing::Span::current())
        .into_iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v)
}

/// Routes panics through tracing: one structured line (JSON in production) instead
/// of free text on stderr. The request layers still answer `INTERNAL` to the caller.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        // A request's panic is caught and logged, once, with the request by the
        // API's panic layer.
        if tracing::Span::current()
            .metadata()
            .is_some_and(|m| m.name() == REQUEST_SPAN)
        {
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            panic = %message,
            location = %location,
            thread = thread.name().unwrap_or("unnamed"),
            "panic"
        );
    }));
}
