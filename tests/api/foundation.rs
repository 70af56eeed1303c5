//! Start-up, probes, shutdown, configuration, gRPC health and reflection.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use spacet::{clock::Clock, config::Settings, embedded_pg::EmbeddedPostgres};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

use crate::helpers::{
    blocking_http_status, free_port, fresh_database, grpc_channel, poll, test_now, test_settings,
    TestApp,
};

#[tokio::test]
async fn probes_answer_once_the_app_is_ready() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get_json("/healthz").await.0, 200);
    let (status, body) = app.get_json("/readiness").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
    let (status, body) = app.get_json("/liveness").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["checks"]["database"]["status"], "healthy");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = TestApp::spawn().await;
    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    let kept = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn readiness_is_503_from_the_moment_shutdown_begins() {
    let app = TestApp::spawn_with(&[("SHUTDOWN_DRAIN_DELAY", "3s")]).await;
    app.begin_shutdown();
    let (status, body) = app.get_json("/readiness").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not ready");
    // The process is still alive while it drains.
    assert_eq!(app.get_json("/healthz").await.0, 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_is_503_while_the_database_is_not_there_yet() {
    // A database port nobody listens on: the app serves probes while it waits.
    let unreachable = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(free_port())
        .username("postgres");
    let app = TestApp::start(
        test_settings(&unreachable, &[("PG_CONNECT_TIMEOUT", "60s")]),
        Clock::fixed(test_now()),
    )
    .await;
    let ok = poll(Duration::from_secs(10), || async {
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ok);
    assert_eq!(app.get_json("/readiness").await.0, 503);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn liveness_fails_when_the_database_stops_and_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(&dir.path().join("data"), true).unwrap();
    let app = TestApp::spawn_on(&pg.connect_options(), &[], Clock::fixed(test_now())).await;
    assert_eq!(app.get_json("/liveness").await.0, 200);
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap();
    let started = Instant::now();
    let (status, body) = app.get_json("/liveness").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "liveness took {:?}",
        started.elapsed()
    );
    assert_eq!(status, 500);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["checks"]["database"]["status"], "unhealthy");
    assert_eq!(app.get_json("/readiness").await.0, 503);
}

#[tokio::test]
async fn grpc_health_says_serving_and_reflection_lists_the_services() {
    let app = TestApp::spawn().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "spacet.v1.SpaceTService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    assert_lists_our_services(list.service.into_iter().map(|s| s.name).collect());
}

fn assert_lists_our_services(names: Vec<String>) {
    for expected in [
        "spacet.v1.SpaceTService",
        "spacet.v1.RocketService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// grpcio-reflection (Python), grpc_cli and older grpcurl speak v1alpha only.
#[tokio::test]
async fn reflection_answers_v1alpha_clients_too() {
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient, server_reflection_request,
        server_reflection_response, ServerReflectionRequest,
    };
    let app = TestApp::spawn().await;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("the v1alpha reflection service answers")
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    assert_lists_our_services(list.service.into_iter().map(|s| s.name).collect());
}

/// A gRPC method that panics answers INTERNAL with a generic message; the
/// connection survives for the next call.
#[tokio::test]
async fn a_panicking_grpc_method_answers_internal() {
    use spacet::api::access_log::{AccessLogLayer, Protocol};
    use tonic_health::pb::{
        health_server::{Health, HealthServer},
        HealthCheckResponse,
    };

    struct Panicking;
    #[tonic::async_trait]
    impl Health for Panicking {
        async fn check(
            &self,
            _: tonic::Request<HealthCheckRequest>,
        ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
            panic!("secret detail of the crash")
        }
        type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, tonic::Status>>;
        async fn watch(
            &self,
            _: tonic::Request<HealthCheckRequest>,
        ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
            Ok(tonic::Response::new(futures::stream::empty()))
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(AccessLogLayer(Protocol::Grpc))
            .layer(spacet::api::CatchPanicLayer(Protocol::Grpc))
            .add_service(HealthServer::new(Panicking))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = HealthClient::new(grpc_channel(port).await);
    for _ in 0..2 {
        let status = client
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
        assert_eq!(status.message(), "internal error");
        crate::helpers::assert_reason(&status, "INTERNAL");
    }
}

#[tokio::test]
async fn two_instances_migrate_one_empty_database_at_the_same_moment() {
    let db = fresh_database().await;
    let clock = Clock::fixed(test_now());
    let (a, b) = tokio::join!(
        TestApp::spawn_on(&db, &[], clock.clone()),
        TestApp::spawn_on(&db, &[], clock.clone())
    );
    let applied = a
        .count("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .await;
    assert_eq!(applied as usize, spacet::db::MIGRATOR.iter().count());
    assert_eq!(b.count("SELECT count(*) FROM launchpads").await, 6);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[test]
fn environment_overrides_the_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spacet.yaml");
    std::fs::write(
        &file,
        "http_port: 9000\ngrpc_port: 9001\norchestrator_interval: 2\nlog_level: debug\n",
    )
    .unwrap();
    let env = |name: &str| match name {
        "HTTP_PORT" => Some("9100".to_string()),
        "PG_DSN" => Some(
            "host=db port=5432 user=postgres dbname=spacet-db password=secret sslmode=disable"
                .to_string(),
        ),
        _ => None,
    };
    let settings = Settings::load(Some(&file), env).unwrap();
    assert_eq!(settings.http_port, 9100, "environment beats the file");
    assert_eq!(settings.grpc_port, 9001, "the file beats the defaults");
    assert_eq!(
        settings.spacex.interval,
        Duration::from_secs(2 * 3600),
        "a bare ORCHESTRATOR_INTERVAL is hours"
    );
    assert_eq!(settings.log_level, "debug");
    assert_eq!(settings.pg_pool_max, 10, "defaults fill the rest");
    assert!(
        !format!("{settings:?}").contains("secret"),
        "the password never appears in Debug output"
    );

    let defaults = Settings::load(Some(&file), |_| None).unwrap();
    assert_eq!(defaults.http_port, 9000);
}

#[test]
fn bad_configuration_names_the_setting() {
    let cases = [
        ("HTTP_PORT", "eighty", "HTTP_PORT"),
        ("HTTP_PORT", "70000", "HTTP_PORT"),
        ("ORCHESTRATOR_INTERVAL", "0", "ORCHESTRATOR_INTERVAL"),
        ("NOTIFICATIONS_INTERVAL", "-3s", "NOTIFICATIONS_INTERVAL"),
        ("PG_POOL_MAX", "0", "PG_POOL_MAX"),
        ("PUBSUB_ENABLED", "maybe", "PUBSUB_ENABLED"),
        ("PG_DSN", "host=x nonsense", "PG_DSN"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
    ];
    for (name, value, expected) in cases {
        let error = Settings::load(None, |k| (k == name).then(|| value.to_string())).unwrap_err();
        assert_eq!(error.setting, expected, "{name}={value}: {error}");
    }
}

#[test]
fn the_binary_exits_2_with_one_message_on_bad_configuration() {
    let output = Command::new(env!("CARGO_BIN_EXE_spacet"))
        .env("HTTP_PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HTTP_PORT"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let go_style = Command::new(env!("CARGO_BIN_EXE_spacet"))
        .arg("-config=/nonexistent/spacet.yaml")
        .output()
        .unwrap();
    assert_eq!(go_style.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&go_style.stderr).contains("/nonexistent/spacet.yaml"));
}

/// The README's way: no configuration, embedded PostgreSQL, SIGTERM → exit 0 and
/// no postgres left; a killed service does not prevent the next start.
#[test]
fn the_binary_runs_with_no_configuration_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = dir.path().join("pg");
    let (http, grpc) = (free_port(), free_port());
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_spacet"))
            .env("HTTP_PORT", http.to_string())
            .env("GRPC_PORT", grpc.to_string())
            .env("EMBEDDED_PG_DIR", &pg_dir)
            .env("SPACEX_SYNC_ENABLED", "false")
            .env("ROCKETS_PORT", "0")
            .env("LOG_LEVEL", "warn")
            .env_remove("PG_DSN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let ready = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if blocking_http_status(http, "/readiness") == Some(200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    let postmaster_pid = || -> i32 {
        std::fs::read_to_string(pg_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0)
    };
    let alive = |pid: i32| pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists();

    // First start, then SIGTERM.
    let mut service = start();
    assert!(ready(), "not ready within 60 s of the first start");
    let pg_pid = postmaster_pid();
    assert!(alive(pg_pid));
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    let status = wait_with_timeout(&mut service, Duration::from_secs(10))
        .expect("exits within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        poll_blocking(Duration::from_secs(5), || !alive(pg_pid)),
        "postgres left behind"
    );

    // A crash (SIGKILL) takes the embedded postgres with it; the next start works.
    let mut service = start();
    assert!(ready(), "not ready within 15 s of a later start");
    let pg_pid = postmaster_pid();
    service.kill().unwrap();
    service.wait().unwrap();
    assert!(
        poll_blocking(Duration::from_secs(10), || !alive(pg_pid)),
        "postgres survived a crash"
    );
    let mut service = start();
    assert!(ready(), "did not start after a crash");
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    assert_eq!(
        wait_with_timeout(&mut service, Duration::from_secs(10))
            .unwrap()
            .code(),
        Some(0)
    );
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn poll_blocking(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// What tonic answers itself, before any of our code runs, carries an ErrorInfo
/// too: an unknown method, an unknown service, a message that is not protobuf
/// (INVALID_ARGUMENT, not tonic's INTERNAL: the client's mistake).
#[tokio::test]
async fn tonics_own_answers_carry_an_error_info() {
    use std::str::FromStr;
    let app = TestApp::spawn().await;
    let call = |path: &'static str, body: Vec<u8>| {
        let channel = app.channel();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel.await);
            grpc.ready().await.unwrap();
            grpc.unary(
                tonic::Request::new(body),
                http::uri::PathAndQuery::from_str(path).unwrap(),
                tonic_prost::ProstCodec::<Vec<u8>, ()>::default(),
            )
            .await
            .unwrap_err()
        }
    };
    for path in [
        "/spacet.v1.SpaceTService/NoSuchMethod",
        "/no.such.Service/Call",
    ] {
        let status = call(path, Vec::new()).await;
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
        crate::helpers::assert_reason(&status, "RPC_UNIMPLEMENTED");
    }
    // A BytesValue whose bytes are not UTF-8, read as TicketID's string field.
    let status = call("/spacet.v1.SpaceTService/GetBooking", vec![0xff, 0xfe]).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("failed to decode"),
        "{status:?}"
    );
    crate::helpers::assert_reason(&status, "MALFORMED_MESSAGE");
}
