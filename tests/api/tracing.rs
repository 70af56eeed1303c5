//! OpenTelemetry end to end: the real `spacet` binary (the tracer provider is
//! global to a process) exports over OTLP/HTTP to a small receiver here; a booking
//! sent with a known `traceparent` is followed through PostgreSQL and the outbox
//! to the Pub/Sub message on the emulator and the example subscriber.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::{any_value, KeyValue},
    trace::v1::span::SpanKind,
};
use prost::Message as _;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::{
    helpers::{fresh_database, pads, poll, ready_within},
    pubsub_emulator::{free_port, unique_project, Emulator},
};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: HashMap<String, String>,
    service: String,
    /// The `target` of each span event (sqlx's statements are `sqlx::query`).
    event_targets: Vec<String>,
}

impl Received {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A small OTLP/HTTP receiver: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, as a collector would take it.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<usize>>,
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Keeps the spans of one export request.
fn record(into: &Mutex<Vec<Received>>, request: ExportTraceServiceRequest) {
    let mut spans = into.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(text)
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(Received {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                name: span.name.clone(),
                kind: span.kind,
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(kv)))
                    .collect(),
                service: service.clone(),
                event_targets: span
                    .events
                    .iter()
                    .flat_map(|e| &e.attributes)
                    .filter(|kv| kv.key == "target")
                    .map(text)
                    .collect(),
            });
        }
    }
}

/// The OTLP/gRPC `TraceService` of the receiver.
struct GrpcTraces {
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        *self.requests.lock().unwrap() += 1;
        record(&self.spans, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// OTLP/HTTP (protobuf) on `address`.
    async fn start_on(address: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .unwrap_or_else(|e| panic!("the OTLP receiver cannot listen on {address}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let requests: Arc<Mutex<usize>> = Arc::default();
        let (into, count) = (spans.clone(), requests.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (into, count) = (into.clone(), count.clone());
                async move {
                    *count.lock().unwrap() += 1;
                    let request = ExportTraceServiceRequest::decode(body)
                        .expect("an ExportTraceServiceRequest in protobuf");
                    record(&into, request);
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            port,
            spans,
            requests,
        }
    }

    /// OTLP/gRPC on a free port of 127.0.0.1.
    async fn start_grpc() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let requests: Arc<Mutex<usize>> = Arc::default();
        let service = TraceServiceServer::new(GrpcTraces {
            spans: spans.clone(),
            requests: requests.clone(),
        });
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap()
        });
        Receiver {
            port,
            spans,
            requests,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random W3C trace id or span id of `bytes` bytes, in hex.
fn random_id(bytes: usize) -> String {
    hex(&(0..bytes).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
}

/// The `spacet` binary on free ports, its stdout (log lines) collected.
struct Service {
    _child: tokio::process::Child,
    http: u16,
    grpc: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Service {
    async fn start(db: &PgConnectOptions, env: &[(&str, &str)]) -> Service {
        let (http, grpc) = (free_port(), free_port());
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_spacet"));
        command
            .env("HTTP_PORT", http.to_string())
            .env("GRPC_PORT", grpc.to_string())
            .env("PG_DSN", crate::helpers::dsn_of(db))
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("ROCKETS_PORT", "0")
            .env("SPACEX_SYNC_ENABLED", "false")
            .env("AUTH_MODE", "none")
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name.starts_with("PUBSUB_") || name.starts_with("LOG_")
            {
                command.env_remove(name);
            }
        }
        command.env("LOG_LEVEL", "info");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the spacet binary starts");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let into = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                into.lock().unwrap().push(line);
            }
        });
        // Errors before logging starts (a refused setting) are on stderr.
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let into = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                into.lock().unwrap().push(line);
            }
        });
        let service = Service {
            _child: child,
            http,
            grpc,
            lines,
        };
        assert!(
            ready_within(
                &reqwest::Client::new(),
                &service.base(),
                Duration::from_secs(60)
            )
            .await,
            "spacet not ready within 60 s: {:?}",
            service.lines.lock().unwrap()
        );
        service
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// The JSON log lines so far.
    fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Books over HTTP with `traceparent`; returns the ticket id.
    async fn book(&self, traceparent: &str, day: &str) -> String {
        let answer = reqwest::Client::new()
            .post(format!("{}/v1/bookings", self.base()))
            .header("traceparent", traceparent)
            .header("tracestate", "spacet=test")
            .json(&json!({
                "firstName": "Ada", "lastName": "Lovelace", "gender": "FEMALE",
                "birthday": "1990-12-01T00:00:00Z",
                "launchpadId": pads::KSC_39A,
                "launchDate": format!("{day}T00:00:00Z"), "destinationId": "MARS",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        body["id"].as_str().expect("the ticket's id").to_string()
    }
}

/// The example subscriber, reading `subscription` of `project`, with `env`.
async fn start_subscriber(
    emulator: &Emulator,
    project: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, Arc<Mutex<Vec<String>>>) {
    let mut command = tokio::process::Command::new(crate::packaging::example("subscriber"));
    command
        .env("PUBSUB_EMULATOR_HOST", emulator.host())
        .env("PUBSUB_PROJECT_ID", project)
        .env("PUBSUB_LAUNCHES_TOPIC", "launches")
        .env("PUBSUB_SUBSCRIPTION", "printer")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut subscriber = command.spawn().unwrap();
    let mut stderr = BufReader::new(subscriber.stderr.take().unwrap()).lines();
    crate::packaging::wait_until_reading(&mut stderr).await;
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let printed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut stdout = BufReader::new(subscriber.stdout.take().unwrap()).lines();
    let into = printed.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            into.lock().unwrap().push(line);
        }
    });
    (subscriber, printed)
}

#[tokio::test]
async fn a_booking_is_one_trace_from_the_http_request_through_postgresql_to_the_pubsub_message() {
    let receiver = Receiver::start_on("127.0.0.1:0").await;
    let emulator = Emulator::shared().await;
    let project = unique_project();
    let rest = emulator.rest(&project);
    rest.create_topic("launches").await;
    rest.create_subscription("traced", "launches").await;
    let endpoint = receiver.endpoint();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let (_subscriber, printed) = start_subscriber(emulator, &project, &otel).await;
    let db = fresh_database().await;
    let service = Service::start(
        &db,
        &[
            otel[0],
            otel[1],
            ("PUBSUB_ENABLED", "true"),
            ("PUBSUB_EMULATOR_HOST", &emulator.host()),
            ("PUBSUB_PROJECT_ID", &project),
            ("PUBSUB_LAUNCHES_TOPIC", "launches"),
            ("LOG_FORMAT", "gcp"),
            ("LOG_GCP_PROJECT", "spacet-prod"),
        ],
    )
    .await;

    let trace = random_id(16);
    let caller_span = random_id(8);
    let ticket = service
        .book(&format!("00-{trace}-{caller_span}-01"), "2049-04-05")
        .await;

    // A gRPC call with its own trace context in the metadata.
    let grpc_trace = random_id(16);
    let mut grpc = spacet::proto::space_t_service_client::SpaceTServiceClient::new(
        crate::helpers::grpc_channel(service.grpc).await,
    );
    let mut request = tonic::Request::new(spacet::proto::TicketId { id: ticket.clone() });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{grpc_trace}-{}-01", random_id(8))
            .parse()
            .unwrap(),
    );
    grpc.get_booking(request).await.expect("GetBooking answers");

    // The message on the emulator carries the booking's trace.
    let received = rest
        .pull_at_least("traced", 1, Duration::from_secs(30))
        .await;
    assert_eq!(received.len(), 1, "{received:?}");
    let message = &received[0];
    assert_eq!(message.attr("event_type"), "TicketBooked");
    let traceparent = message.attr("traceparent");
    assert_eq!(
        traceparent.split('-').nth(1),
        Some(trace.as_str()),
        "the message's traceparent {traceparent:?} is not in the booking's trace"
    );

    // The spans: the HTTP server span (child of the caller's), PostgreSQL work
    // under it, the publish in the same trace whose id the message carries, and
    // the subscriber's consumer span under the publish.
    let complete = |spans: &[Received]| {
        spans.iter().any(|s| s.kind == SpanKind::Consumer as i32)
            && spans.iter().any(|s| s.kind == SpanKind::Producer as i32)
            && spans
                .iter()
                .any(|s| s.attr("db.system") == Some("postgresql"))
            && spans.iter().any(|s| s.kind == SpanKind::Server as i32)
    };
    let arrived = poll(Duration::from_secs(30), || async {
        complete(&receiver.of_trace(&trace)) && !receiver.of_trace(&grpc_trace).is_empty()
    })
    .await;
    let spans = receiver.of_trace(&trace);
    assert!(
        arrived,
        "the trace is incomplete after 30 s: {spans:#?}; {} export requests, all spans: {:#?}",
        receiver.requests.lock().unwrap(),
        receiver.spans.lock().unwrap()
    );

    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(server.name, "POST /v1/bookings", "{server:?}");
    assert_eq!(server.parent_span_id, caller_span, "{server:?}");
    assert_eq!(server.attr("http.request.method"), Some("POST"));
    assert_eq!(server.attr("http.route"), Some("/v1/bookings"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.service, "spacet");

    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let descends_from = |span: &Received, ancestor: &str| {
        let mut parent = span.parent_span_id.as_str();
        while let Some(up) = by_id.get(parent) {
            if up.span_id == ancestor {
                return true;
            }
            parent = up.parent_span_id.as_str();
        }
        parent == ancestor
    };
    let db = spans
        .iter()
        .find(|s| s.attr("db.system") == Some("postgresql"))
        .unwrap();
    assert_eq!(db.kind, SpanKind::Client as i32, "{db:?}");
    assert_eq!(db.attr("db.operation.name"), Some("INSERT"), "{db:?}");
    assert!(
        descends_from(db, &server.span_id),
        "{db:?} under {server:?}"
    );
    // The statements sqlx ran in the transaction, as the span's events.
    assert!(
        db.event_targets
            .iter()
            .filter(|t| *t == "sqlx::query")
            .count()
            >= 2,
        "{db:?}"
    );

    let publish = spans
        .iter()
        .find(|s| s.kind == SpanKind::Producer as i32)
        .unwrap();
    assert_eq!(publish.attr("messaging.system"), Some("gcp_pubsub"));
    assert_eq!(publish.attr("messaging.destination.name"), Some("launches"));
    assert_eq!(
        publish.attr("messaging.message.id"),
        Some(message.message_id.as_str())
    );
    assert!(descends_from(publish, &server.span_id), "{publish:?}");
    assert_eq!(
        traceparent.split('-').nth(2),
        Some(publish.span_id.as_str()),
        "the message's parent is the publish span"
    );

    let consumer = spans
        .iter()
        .find(|s| s.kind == SpanKind::Consumer as i32)
        .unwrap();
    assert_eq!(consumer.parent_span_id, publish.span_id, "{consumer:?}");
    assert_eq!(consumer.service, "spacet-subscriber");

    // The gRPC call's server span is in the trace its metadata named.
    let grpc_spans = receiver.of_trace(&grpc_trace);
    let grpc_server = grpc_spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no gRPC server span: {grpc_spans:#?}"));
    assert_eq!(grpc_server.name, "spacet.v1.SpaceTService/GetBooking");
    assert_eq!(grpc_server.attr("rpc.system"), Some("grpc"));

    // The example subscriber logs the booking's trace id.
    let subscriber_saw = poll(Duration::from_secs(30), || async {
        printed.lock().unwrap().iter().any(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| v["trace_id"] == trace.as_str())
        })
    })
    .await;
    assert!(subscriber_saw, "{:?}", printed.lock().unwrap());

    // LOG_FORMAT=gcp: the request's lines name the trace as Cloud Logging reads it.
    let lines = service.json_lines();
    let access = lines
        .iter()
        .find(|l| l["message"] == "http request" && l["trace_id"] == trace.as_str())
        .unwrap_or_else(|| panic!("no access line in the trace: {lines:#?}"));
    assert_eq!(access["severity"], "INFO", "{access}");
    assert_eq!(
        access["logging.googleapis.com/trace"],
        format!("projects/spacet-prod/traces/{trace}"),
        "{access}"
    );
    assert_eq!(
        access["logging.googleapis.com/spanId"], server.span_id,
        "{access}"
    );
    assert_eq!(
        access["logging.googleapis.com/trace_sampled"], true,
        "{access}"
    );
    assert!(access["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert!(access["time"].is_string(), "{access}");
    assert!(access.get("level").is_none(), "{access}");
}

#[tokio::test]
async fn without_an_otlp_endpoint_nothing_is_exported_and_logs_still_carry_the_callers_trace_id() {
    // The exporter's default endpoint, had one been built.
    let receiver = Receiver::start_on("127.0.0.1:4318").await;
    let db = fresh_database().await;
    // A short batch delay: an exporter, had one been built, would send at once.
    let service = Service::start(
        &db,
        &[("LOG_FORMAT", "json"), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;

    let trace = random_id(16);
    service
        .book(&format!("00-{trace}-{}-01", random_id(8)), "2049-04-06")
        .await;
    let pool = sqlx::PgPool::connect_with(db).await.unwrap();
    let stored: Vec<Option<String>> = sqlx::query_scalar("SELECT trace_context FROM outbox")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored, vec![None], "no trace context without tracing");

    let logged = poll(Duration::from_secs(10), || async {
        service
            .json_lines()
            .iter()
            .any(|l| l["message"] == "http request" && l["trace_id"] == trace.as_str())
    })
    .await;
    let lines = service.json_lines();
    assert!(logged, "no access line with the trace id: {lines:#?}");
    let access = lines
        .iter()
        .find(|l| l["trace_id"] == trace.as_str())
        .unwrap();
    assert_eq!(access["level"], "INFO", "{access}");
    assert!(access["request_id"].is_string(), "{access}");
    assert!(access.get("logging.googleapis.com/trace").is_none());

    // Well past the batch delay an exporter would have used (an absence cannot
    // be polled for).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        *receiver.requests.lock().unwrap(),
        0,
        "something was exported"
    );
}

#[tokio::test]
async fn a_forced_sync_sends_its_trace_context_to_spacex_in_a_client_span() {
    use wiremock::{
        matchers::{method, path},
        Mock, MockServer, ResponseTemplate,
    };
    let spacex = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v4/launchpads"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&spacex)
        .await;
    // No upcoming launches (a failing page would cancel the launchpads request
    // running beside it, before its answer).
    Mock::given(method("POST"))
        .and(path("/v4/launches/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "docs": [], "totalDocs": 0, "page": 1, "totalPages": 1,
            "hasNextPage": false, "hasPrevPage": false,
        })))
        .mount(&spacex)
        .await;
    let receiver = Receiver::start_on("127.0.0.1:0").await;
    let endpoint = receiver.endpoint();
    let api = format!("{}/v4", spacex.uri());
    let db = fresh_database().await;
    let service = Service::start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("SPACEX_API_URL", api.as_str()),
            ("SPACEX_RETRIES", "0"),
            ("SPACEX_ALLOW_HTTP", "true"),
            ("SPACEX_SYNC_ENABLED", "true"),
        ],
    )
    .await;

    let trace = random_id(16);
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/admin/sync", service.base()))
        .header("traceparent", format!("00-{trace}-{}-01", random_id(8)))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    // Applied or held by the circuit breaker (it frees nothing here): answered.
    assert!(
        answer.status().is_success() || answer.status() == 412,
        "{}",
        answer.status()
    );

    let requests = spacex.received_requests().await.unwrap();
    let traceparents: Vec<&str> = requests
        .iter()
        .filter(|r| r.url.path() == "/v4/launchpads")
        .filter_map(|r| r.headers.get("traceparent")?.to_str().ok())
        .collect();
    let traceparent = traceparents
        .iter()
        .find(|t| t.split('-').nth(1) == Some(trace.as_str()))
        .unwrap_or_else(|| panic!("no SpaceX request in the trace: {traceparents:?}"));

    let arrived = poll(Duration::from_secs(30), || async {
        receiver
            .of_trace(&trace)
            .iter()
            .any(|s| s.name == "GET /launchpads" && s.kind == SpanKind::Client as i32)
    })
    .await;
    let spans = receiver.of_trace(&trace);
    assert!(arrived, "no SpaceX client span in the trace: {spans:#?}");
    let client = spans
        .iter()
        .find(|s| s.name == "GET /launchpads" && s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(traceparent.split('-').nth(2), Some(client.span_id.as_str()));
    assert_eq!(
        client.attr("http.response.status_code"),
        Some("200"),
        "{client:?}"
    );
}

#[tokio::test]
async fn with_otel_exporter_otlp_protocol_grpc_spans_go_over_otlp_grpc() {
    let receiver = Receiver::start_grpc().await;
    let endpoint = receiver.endpoint();
    let db = fresh_database().await;
    let service = Service::start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "spacet-grpc-export"),
        ],
    )
    .await;
    let trace = random_id(16);
    let answer = reqwest::Client::new()
        .get(format!("{}/v1/launchpads", service.base()))
        .header("traceparent", format!("00-{trace}-{}-01", random_id(8)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let arrived = poll(Duration::from_secs(30), || async {
        !receiver.of_trace(&trace).is_empty()
    })
    .await;
    assert!(arrived, "nothing of the trace over gRPC");
    let spans = receiver.of_trace(&trace);
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(server.name, "GET /v1/launchpads");
    assert_eq!(server.service, "spacet-grpc-export");
}
