//! The test harness: the real app on port 0 against a real PostgreSQL, one fresh
//! database per test so tests run in parallel.
//!
//! The PostgreSQL server is the one in `SPACET_TEST_PG_DSN` (the test script starts
//! one ephemeral cluster per run), or else a cluster this process starts from the
//! system binaries and that dies with it.

use std::{
    collections::HashMap,
    sync::OnceLock,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use spacet::{
    app::App,
    clock::Clock,
    config::{Database, Settings},
    embedded_pg::EmbeddedPostgres,
    proto::{
        space_t_service_client::SpaceTServiceClient, BookingRequest, Destination, Ticket, TicketId,
    },
};
use sqlx::{postgres::PgConnectOptions, Connection, Executor, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

// Defined beside the emulator, which examples/bench_outbox.rs includes on its own.
pub use crate::pubsub_emulator::free_port;

/// The instant test clocks start at: bookings in 2049 are in the future.
pub fn test_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2048, 6, 1, 12, 0, 0).unwrap()
}

/// Connection options of the test server's `postgres` database.
pub fn server_options() -> PgConnectOptions {
    static SERVER: OnceLock<PgConnectOptions> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var("SPACET_TEST_PG_DSN") {
            Ok(dsn) if !dsn.trim().is_empty() => {
                spacet::config::parse_dsn(&dsn).expect("SPACET_TEST_PG_DSN parses")
            }
            _ => {
                let dir = tempfile::Builder::new()
                    .prefix("spacet-test-pg-")
                    .tempdir()
                    .expect("temp dir")
                    .keep();
                let pg = EmbeddedPostgres::start(&dir.join("data"), true)
                    .expect("embedded PostgreSQL for tests");
                let options = pg.connect_options();
                // Lives as long as the test process; the server dies with it.
                std::mem::forget(pg);
                options
            }
        })
        .clone()
}

/// Creates an empty database and returns its connection options.
pub async fn fresh_database() -> PgConnectOptions {
    let name = format!("spacet_test_{}", uuid::Uuid::new_v4().simple());
    let server = server_options();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match PgConnection::connect_with(&server).await {
            Ok(conn) => break conn,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("test PostgreSQL unreachable: {e}"),
        }
    };
    conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .expect("create test database");
    server.database(&name)
}

/// Settings for a test app: ports 0, the given database, no SpaceX sync, no Pub/Sub,
/// then `overrides` (environment names) on top.
pub fn test_settings(db: &PgConnectOptions, overrides: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = [
        ("HTTP_PORT", "0"),
        ("GRPC_PORT", "0"),
        // Off: every test app would want 8088. A test of that listener passes a
        // port of its own (`free_port`).
        ("ROCKETS_PORT", "0"),
        ("BIND_ADDRESS", "127.0.0.1"),
        ("LOG_LEVEL", "warn"),
        ("SPACEX_SYNC_ENABLED", "false"),
        ("SPACEX_API_URL", "http://127.0.0.1:9"),
        // The fake SpaceX (wiremock) speaks plain http.
        ("SPACEX_ALLOW_HTTP", "true"),
        ("PUBSUB_ENABLED", "false"),
        ("PG_CONNECT_TIMEOUT", "30s"),
        ("SHUTDOWN_GRACE_PERIOD", "5s"),
        ("NOTIFICATIONS_INTERVAL", "200ms"),
        // The suite's tests of everything but authentication run as the Go
        // service's clients do, without tokens (tests/api/auth.rs covers tokens).
        ("AUTH_MODE", "none"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    let mut settings =
        Settings::load(None, |k| env.get(k).cloned()).expect("test settings are valid");
    settings.database = Database::External(Box::new(db.clone()));
    settings
}

/// A running app.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub http: String,
    pub grpc_port: u16,
    pub pool: PgPool,
    pub clock: Clock,
    pub db: PgConnectOptions,
    pub client: reqwest::Client,
    /// What the app's SpaceX sync runs with (to step it directly).
    pub sync: spacet::spacex::SyncDeps,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// An app on a fresh database with the test clock.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    /// An app on a fresh database with settings overridden by environment names.
    pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
        let db = fresh_database().await;
        TestApp::spawn_on(&db, overrides, Clock::fixed(test_now())).await
    }

    /// An app on an existing database (for several replicas over one database).
    pub async fn spawn_on(
        db: &PgConnectOptions,
        overrides: &[(&str, &str)],
        clock: Clock,
    ) -> TestApp {
        let app = TestApp::start(test_settings(db, overrides), clock).await;
        app.wait_ready().await;
        app
    }

    /// Starts an app without waiting for readiness.
    pub async fn start(settings: Settings, clock: Clock) -> TestApp {
        init_test_logs();
        let db = match &settings.database {
            Database::External(o) => (**o).clone(),
            Database::Embedded(_) => panic!("tests use an external database"),
        };
        let app = App::build(settings, clock.clone())
            .await
            .expect("app builds");
        let http_port = app.http_port();
        let grpc_port = app.grpc_port();
        let pool = app.pool().clone();
        let sync = app.sync_deps();
        let shutdown = app.shutdown_token();
        let handle = tokio::spawn(app.run_until_stopped());
        TestApp {
            http: format!("http://127.0.0.1:{http_port}"),
            grpc_port,
            pool,
            clock,
            db,
            client: reqwest::Client::new(),
            sync,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Polls `/readiness` until it answers 200 (30 s at most).
    pub async fn wait_ready(&self) {
        let ok = ready_within(&self.client, &self.http, Duration::from_secs(30)).await;
        assert!(ok, "app did not become ready in 30 s");
    }

    /// A gRPC client of the booking service.
    pub async fn grpc(&self) -> SpaceTServiceClient<Channel> {
        SpaceTServiceClient::new(self.channel().await)
    }

    /// A gRPC channel to the app.
    pub async fn channel(&self) -> Channel {
        grpc_channel(self.grpc_port).await
    }

    /// Full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http, path)
    }

    /// `GET path`: the status and the JSON body.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        send_json(self.client.get(self.url(path))).await
    }

    /// `POST path` with a JSON body: the status and the JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        send_json(self.client.post(self.url(path)).json(body)).await
    }

    /// Books over gRPC, on a connection of its own.
    pub async fn book(&self, request: BookingRequest) -> Result<Ticket, tonic::Status> {
        let answer = self.grpc().await.launch_booking(request).await;
        answer.map(tonic::Response::into_inner)
    }

    /// Books `booking_request(pad, day, destination)` over gRPC; panics if refused.
    pub async fn book_ok(&self, pad: &str, day: &str, destination: Destination) -> Ticket {
        self.book(booking_request(pad, day, destination))
            .await
            .unwrap_or_else(|s| panic!("booking {pad} {day}: {s:?}"))
    }

    /// Books `booking_request(pad, day, destination)` over gRPC; panics unless refused.
    pub async fn book_err(&self, pad: &str, day: &str, destination: Destination) -> tonic::Status {
        match self.book(booking_request(pad, day, destination)).await {
            Ok(ticket) => panic!("booking {pad} {day} was not refused: {ticket:?}"),
            Err(status) => status,
        }
    }

    /// Cancels a ticket over gRPC.
    pub async fn cancel(&self, id: &str) -> Result<(), tonic::Status> {
        let id = TicketId { id: id.into() };
        self.grpc().await.cancel_booking(id).await.map(|_| ())
    }

    /// Reads a ticket over gRPC.
    pub async fn ticket(&self, id: &str) -> Result<Ticket, tonic::Status> {
        let id = TicketId { id: id.into() };
        let answer = self.grpc().await.get_booking(id).await;
        answer.map(tonic::Response::into_inner)
    }

    /// What a `SELECT count(*) …` finds in the app's database.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Begins the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and returns the app's result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("app stops within 30 s")
            .expect("app task does not panic")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The test process's logs: with `SPACET_TEST_LOG_DIR` set (the test script sets
/// it), JSON lines at `TEST_LOG` (default `info,spacet=debug`) into a file per
/// process there, which the script greps for personal data after the run;
/// otherwise `TEST_LOG` (default `warn`) on stdout.
pub fn init_test_logs() {
    match std::env::var("SPACET_TEST_LOG_DIR") {
        Ok(dir) if !dir.trim().is_empty() => {
            let path = std::path::Path::new(&dir).join(format!("{}.jsonl", std::process::id()));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("test log {}: {e}", path.display()));
            spacet::telemetry::init_json_file(
                &std::env::var("TEST_LOG").unwrap_or_else(|_| "info,spacet=debug".into()),
                file,
            );
        }
        _ => spacet::telemetry::init(
            &std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            spacet::config::LogFormat::Pretty,
        ),
    }
}

/// Sends a request: the status and the JSON body (`null` for an empty body).
pub async fn send_json(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the app answers");
    let status = response.status();
    let text = response.text().await.expect("a whole body");
    if text.is_empty() {
        return (status, Value::Null);
    }
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a {status} body that is not JSON ({e}): {text}"));
    (status, body)
}

/// Polls `{http}/readiness` until it answers 200 or `deadline` passes.
pub async fn ready_within(client: &reqwest::Client, http: &str, deadline: Duration) -> bool {
    poll(deadline, || async {
        client
            .get(format!("{http}/readiness"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
}

/// A gRPC channel to `127.0.0.1:port`.
pub async fn grpc_channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects")
}

/// The status code of `GET path` on `127.0.0.1:port` over a plain blocking socket
/// (for tests without a runtime), or `None` when nothing answers.
pub fn blocking_http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `check` every 20 ms until it holds or `deadline` passes.
pub async fn poll<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The six seeded launchpads.
pub mod pads {
    /// KSC LC 39A, active, America/New_York.
    pub const KSC_39A: &str = "5e9e4502f509094188566f88";
    /// CCSFS SLC 40, active, America/New_York.
    pub const CCSFS_40: &str = "5e9e4501f509094ba4566f84";
    /// VAFB SLC 4E, active, America/Los_Angeles.
    pub const VAFB_4E: &str = "5e9e4502f509092b78566f87";
    /// VAFB SLC 3W, retired.
    pub const VAFB_3W: &str = "5e9e4501f5090910d4566f83";
    /// STLS, under construction.
    pub const STLS: &str = "5e9e4502f5090927f8566f85";
}

/// Every sort key of the rocket listings.
pub const ROCKET_SORTS: [&str; 7] = [
    "channel",
    "type",
    "speed",
    "mission",
    "status",
    "launchedAt",
    "updatedAt",
];

/// The `RocketSort` name of a sort's plain name (`launchedAt` →
/// `ROCKET_SORT_LAUNCHED_AT`), for the `/v1/rockets` routes.
pub fn rocket_sort(plain: &str) -> String {
    let mut name = String::from("ROCKET_SORT_");
    for c in plain.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// A valid booking request for `pad`, `day` (YYYY-MM-DD) and a destination.
pub fn booking_request(pad: &str, day: &str, destination: Destination) -> BookingRequest {
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
    BookingRequest {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        gender: spacet::proto::Gender::Female as i32,
        birthday: Some(spacet::api::convert::day_timestamp(
            chrono::NaiveDate::from_ymd_opt(1990, 12, 1).unwrap(),
        )),
        launchpad_id: pad.into(),
        launch_date: Some(spacet::api::convert::day_timestamp(date)),
        destination_id: destination as i32,
        request_id: String::new(),
        owner: String::new(),
    }
}

/// What a gRPC error says in its details.
pub trait StatusDetails {
    /// The reason of its `google.rpc.ErrorInfo`.
    fn reason(&self) -> Option<String>;

    /// (field, description) of each field violation in its `google.rpc.BadRequest`;
    /// asserts that the error's reason is `FIELD_VIOLATIONS` when there are some.
    fn violations(&self) -> Vec<(String, String)>;

    /// The fields of its field violations, in order (see [`Self::violations`]).
    fn violated_fields(&self) -> Vec<String> {
        self.violations()
            .into_iter()
            .map(|(field, _)| field)
            .collect()
    }
}

impl StatusDetails for tonic::Status {
    fn reason(&self) -> Option<String> {
        self.get_details_error_info().map(|info| info.reason)
    }

    fn violations(&self) -> Vec<(String, String)> {
        let violations: Vec<(String, String)> = self
            .get_details_bad_request()
            .map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|v| (v.field, v.description))
                    .collect()
            })
            .unwrap_or_default();
        if !violations.is_empty() {
            assert_reason(self, "FIELD_VIOLATIONS");
            assert_eq!(self.code(), tonic::Code::InvalidArgument, "{self:?}");
        }
        violations
    }
}

/// The fields of the `google.rpc.BadRequest` field violations in a JSON error body
/// (grpc-gateway's shape), sorted; asserts that the body's reason is
/// `FIELD_VIOLATIONS` when there are some.
pub fn error_fields(body: &Value) -> Vec<String> {
    let mut fields: Vec<String> = body["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .flat_map(|d| d["fieldViolations"].as_array().unwrap().clone())
        .map(|v| v["field"].as_str().unwrap().to_string())
        .collect();
    fields.sort();
    if !fields.is_empty() {
        assert_body_reason(body, "FIELD_VIOLATIONS");
    }
    fields
}

/// The `google.rpc.ErrorInfo` reason of a JSON error body (grpc-gateway's shape),
/// checked to be in the service's domain.
pub fn body_reason(body: &Value) -> Option<String> {
    let info = body["details"]
        .as_array()?
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")?;
    assert_eq!(info["domain"], spacet::api::error::ERROR_DOMAIN, "{body}");
    info["reason"].as_str().map(str::to_string)
}

/// Asserts that a gRPC error carries an `ErrorInfo` with `reason` in our domain.
#[track_caller]
pub fn assert_reason(status: &tonic::Status, reason: &str) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, spacet::api::error::ERROR_DOMAIN, "{status:?}");
}

/// Asserts that a JSON error body (grpc-gateway's shape) carries an `ErrorInfo`
/// with `reason` and a `code` that is the reason's.
#[track_caller]
pub fn assert_body_reason(body: &Value, reason: &str) {
    assert_eq!(body_reason(body).as_deref(), Some(reason), "{body}");
    let code = spacet::api::error::Reason::parse(reason)
        .unwrap_or_else(|| panic!("{reason} is not one of the service's reasons"))
        .code();
    assert_eq!(body["code"], code as i32, "{body}");
}

/// The `RetryInfo` delay of a JSON error body (`"1s"`), if any.
pub fn body_retry_delay(body: &Value) -> Option<String> {
    body["details"]
        .as_array()?
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")?["retryDelay"]
        .as_str()
        .map(str::to_string)
}

/// Asserts that a gRPC error is UNAVAILABLE with `reason` and retry advice.
#[track_caller]
pub fn assert_unavailable(status: &tonic::Status, reason: &str) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_reason(status, reason);
    let delay = status.get_details_retry_info().and_then(|r| r.retry_delay);
    assert_eq!(
        delay,
        Some(spacet::api::error::RETRY_AFTER),
        "no RetryInfo: {status:?}"
    );
}

/// Asserts that a JSON error body is UNAVAILABLE with `reason` and retry advice.
#[track_caller]
pub fn assert_body_unavailable(body: &Value, reason: &str) {
    assert_body_reason(body, reason);
    assert_eq!(body["code"], 14, "{body}");
    assert_eq!(body_retry_delay(body).as_deref(), Some("1s"), "{body}");
}

/// The DSN of a test database in libpq key/value form (`PG_DSN`, the Go
/// service's `POSTGRES_DSN`), for the tests that start the binary.
pub fn dsn_of(db: &PgConnectOptions) -> String {
    format!(
        "host={} port={} user={} dbname={}",
        db.get_host(),
        db.get_port(),
        db.get_username(),
        db.get_database().expect("test databases are named")
    )
}
