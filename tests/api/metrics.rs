//! Metrics: every family is on the first scrape, and no request can add series.
//!
//! These tests run the real binary, so its metrics registry (one per process)
//! holds only what this test did, whatever other tests run beside it.

use std::{collections::BTreeSet, str::FromStr, time::Duration};

use futures::StreamExt as _;
use http::uri::PathAndQuery;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::helpers::{free_port, fresh_database, grpc_channel, ready_within};

/// The `spacet` binary on its own fresh database, killed when dropped.
struct Service {
    http: String,
    grpc_port: u16,
    client: reqwest::Client,
    _child: Child,
}

impl Service {
    async fn start() -> Service {
        let db = fresh_database().await;
        let (http_port, grpc_port) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_spacet"))
            .env("HTTP_PORT", http_port.to_string())
            .env("GRPC_PORT", grpc_port.to_string())
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("PG_DSN", crate::helpers::dsn_of(&db))
            .env("SPACEX_SYNC_ENABLED", "false")
            // Clients without tokens, as the Go service's (tests/api/auth.rs covers tokens).
            .env("AUTH_MODE", "none")
            .env("ROCKETS_PORT", "0")
            .env("PUBSUB_ENABLED", "false")
            .env("LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the spacet binary starts");
        let service = Service {
            http: format!("http://127.0.0.1:{http_port}"),
            grpc_port,
            client: reqwest::Client::new(),
            _child: child,
        };
        let ready = ready_within(&service.client, &service.http, Duration::from_secs(60)).await;
        assert!(ready, "the service was not ready within 60 s");
        service
    }

    async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    async fn channel(&self) -> Channel {
        grpc_channel(self.grpc_port).await
    }
}

/// Every series (name and labels, without the value), process metrics aside:
/// those are the process's own and their set does not depend on requests.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.starts_with("process_"))
        .map(|l| {
            l.rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"))
                .0
                .to_string()
        })
        .collect()
}

/// The families that have a `# TYPE` line.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// An HTTP request with any method, answered or not: only its effect on the metrics counts.
async fn http_call(service: &Service, method: &str, path: &str) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    service
        .client
        .request(method, format!("{}{path}", service.http))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A unary gRPC call to any path, with an empty message.
async fn grpc_call(channel: Channel, path: String) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let answer = grpc
        .unary(
            tonic::Request::new(()),
            PathAndQuery::from_str(&path).unwrap(),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    match answer {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// One request of kind `i % 5`, unique by `tag` and `i`: an extension method on an
/// unknown path, an extension method on a known route, GET on an unknown path, an
/// unknown gRPC service, an unknown method of a served gRPC service.
async fn odd_request(service: &Service, channel: Channel, tag: &str, i: usize) {
    match i % 5 {
        0 => {
            let status = http_call(service, &format!("X{tag}{i}"), &format!("/{tag}/{i}")).await;
            assert_eq!(status, 404);
        }
        1 => {
            let status = http_call(service, &format!("X{tag}{i}"), "/v1/launchpads").await;
            assert_eq!(status, 405);
        }
        2 => {
            let status = http_call(service, "GET", &format!("/{tag}-{i}?q={i}")).await;
            assert_eq!(status, 404);
        }
        3 => {
            let code = grpc_call(channel, format!("/made.up.{tag}{i}.Service/Call{i}")).await;
            assert_eq!(code, tonic::Code::Unimplemented);
        }
        _ => {
            let code = grpc_call(channel, format!("/spacet.v1.SpaceTService/{tag}{i}")).await;
            assert_eq!(code, tonic::Code::Unimplemented);
        }
    }
}

#[tokio::test]
async fn a_thousand_requests_with_unique_methods_and_paths_add_no_series() {
    let service = Service::start().await;
    let channel = service.channel().await;
    // One request of each kind first: the first may open its catch-all series
    // (`OTHER`, `unmatched`, `unknown`); none after it may add another.
    for i in 0..5 {
        odd_request(&service, channel.clone(), "warmup", i).await;
    }
    let before = series(&service.metrics().await);

    futures::stream::iter(0..1000)
        .map(|i| odd_request(&service, channel.clone(), "flood", i))
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;

    let after = series(&service.metrics().await);
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(
        added.is_empty(),
        "{} series added by 1,000 odd requests (was {}), e.g. {:#?}",
        added.len(),
        before.len(),
        &added[..added.len().min(10)]
    );
    assert_eq!(after.len(), before.len());
}

#[tokio::test]
async fn a_fresh_service_lists_every_family_and_its_build() {
    let service = Service::start().await;
    let text = service.metrics().await;
    let families = families(&text);
    for family in [
        "spacet_http_requests_total",
        "spacet_http_request_duration_seconds",
        "spacet_grpc_requests_total",
        "spacet_grpc_request_duration_seconds",
        "spacet_bookings_total",
        "spacet_spacex_sync_runs_total",
        "spacet_spacex_sync_duration_seconds",
        "spacet_outbox_published_total",
        "spacet_outbox_failed_total",
        "spacet_outbox_parked_total",
        "spacet_outbox_backlog",
        "spacet_rocket_messages_total",
        "spacet_db_pool_connections",
        "spacet_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(families.contains(family), "{family} missing from\n{text}");
    }

    let series = series(&text);
    // The known label values are there at zero, so `rate()` and alerts work from
    // the start.
    let mut expected: Vec<String> = [
        "confirmed",
        "replayed",
        "invalid",
        "idempotency_conflict",
        "error",
        "LAUNCHPAD_DAY_TAKEN",
        "DESTINATION_USED_THIS_WEEK",
        "FLIGHT_FULL",
        "SPACEX_CONFLICT",
        "LAUNCHPAD_INACTIVE",
    ]
    .iter()
    .map(|o| format!("spacet_bookings_total{{outcome=\"{o}\"}}"))
    .collect();
    for result in ["applied", "skipped", "failed"] {
        expected.push(format!(
            "spacet_spacex_sync_runs_total{{result=\"{result}\"}}"
        ));
        expected.push(format!(
            "spacet_spacex_sync_duration_seconds_count{{result=\"{result}\"}}"
        ));
    }
    for outcome in ["stored", "duplicate", "conflict", "invalid", "error"] {
        expected.push(format!(
            "spacet_rocket_messages_total{{outcome=\"{outcome}\"}}"
        ));
    }
    expected.extend(
        [
            r#"spacet_http_requests_total{method="POST",route="/v1/bookings",status="200"}"#,
            r#"spacet_http_requests_total{method="PATCH",route="/v1/bookings/{id}/cancel",status="200"}"#,
            r#"spacet_http_request_duration_seconds_count{method="GET",route="/v1/launchpads"}"#,
            r#"spacet_grpc_requests_total{code="OK",method="/spacet.v1.SpaceTService/LaunchBooking"}"#,
            r#"spacet_grpc_requests_total{code="OK",method="/spacet.v1.RocketService/ListRockets"}"#,
            r#"spacet_grpc_requests_total{code="OK",method="/grpc.health.v1.Health/Check"}"#,
            r#"spacet_grpc_request_duration_seconds_count{method="/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}"#,
            "spacet_outbox_published_total",
            "spacet_outbox_failed_total",
            "spacet_outbox_parked_total",
        ]
        .map(String::from),
    );
    for want in &expected {
        assert!(series.contains(want), "{want} missing from\n{text}");
    }

    let build = text
        .lines()
        .find(|l| l.starts_with("spacet_build_info{"))
        .unwrap_or_else(|| panic!("no spacet_build_info in\n{text}"));
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.ends_with(" 1"), "{build}");
}

#[tokio::test]
async fn grpc_codes_and_http_methods_have_their_canonical_names() {
    let service = Service::start().await;
    let channel = service.channel().await;
    let code = grpc_call(
        channel.clone(),
        "/spacet.v1.SpaceTService/GetBooking".to_string(),
    )
    .await;
    assert_eq!(code, tonic::Code::InvalidArgument);
    let code = grpc_call(channel, "/no.such.Service/Call".to_string()).await;
    assert_eq!(code, tonic::Code::Unimplemented);
    assert_eq!(http_call(&service, "BREW", "/coffee").await, 404);

    let text = service.metrics().await;
    let series = series(&text);
    for want in [
        r#"spacet_grpc_requests_total{code="INVALID_ARGUMENT",method="/spacet.v1.SpaceTService/GetBooking"}"#,
        r#"spacet_grpc_requests_total{code="UNIMPLEMENTED",method="unknown"}"#,
        r#"spacet_http_requests_total{method="OTHER",route="unmatched",status="404"}"#,
    ] {
        assert!(series.contains(want), "{want} missing from\n{text}");
    }
}
