//! The Go service's config file runs the real `spacet` binary unchanged: the three
//! ways of giving it, its settings taking effect, and the environment over it.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::{
    helpers::{fresh_database, ready_within},
    pubsub_emulator::{free_port, unique_project, Emulator},
};

const GO_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/go-service.yaml");

/// A spawned binary, killed when dropped.
struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// A value of a metric line `name{labels} value` in a Prometheus text page.
fn metric(page: &str, line_start: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_go_services_file_starts_the_binary_with_its_settings_under_the_environment() {
    let emulator = Emulator::shared().await;
    let project = unique_project();
    let rest = emulator.rest(&project);
    // The file's topic.
    rest.create_topic("launches").await;
    rest.create_subscription("go-config", "launches").await;
    let db = fresh_database().await;
    let (http, grpc) = (free_port(), free_port());
    // The file unchanged; the environment moves what must not collide here (ports,
    // database, project) and switches off what would leave the machine (the
    // SpaceX sync). The file turns Pub/Sub on; PUBSUB_EMULATOR_HOST points it at the emulator.
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_spacet"))
        .args(["-config", GO_FILE])
        .env("HTTP_PORT", http.to_string())
        .env("GRPC_PORT", grpc.to_string())
        .env("POSTGRES_DSN", crate::helpers::dsn_of(&db))
        .env("PUBSUB_EMULATOR_HOST", emulator.host())
        .env("PUBSUB_PROJECT_ID", &project)
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("ROCKETS_PORT", "0")
        .env("SPACEX_SYNC_ENABLED", "false")
        // Clients without tokens, as the Go service's (tests/api/auth.rs covers tokens).
        .env("AUTH_MODE", "none")
        .env_remove("PG_DSN")
        .env_remove("PUBSUB_ENABLED")
        .env_remove("LOG_LEVEL")
        .env_remove("APP_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the spacet binary starts");
    let _child = Child(child);
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http}");
    assert!(
        ready_within(&client, &base, Duration::from_secs(60)).await,
        "not ready within 60 s on the HTTP_PORT of the environment"
    );

    // postgres.pool_max: 20, from the file.
    let page = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&page, r#"spacet_db_pool_connections{state="max"}"#),
        Some(20.0),
        "pool size"
    );
    // The gRPC port of the environment answers.
    let channel = crate::helpers::grpc_channel(grpc).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("gRPC health answers")
        .into_inner();
    assert_eq!(serving.status, 1, "SERVING");

    // A booking's event reaches the emulator: pubsub.enabled and launches_topic
    // from the file, and app.name as the origin.
    let booked = client
        .post(format!("{base}/v1/bookings"))
        .json(&json!({
            "firstName": "Ada", "lastName": "Lovelace", "gender": "FEMALE",
            "birthday": "1990-12-01T00:00:00Z",
            "launchpadId": crate::helpers::pads::KSC_39A,
            "launchDate": "2049-03-02T00:00:00Z", "destinationId": "MARS",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(booked.status(), 200, "{:?}", booked.text().await);
    let received = rest
        .pull_at_least("go-config", 1, Duration::from_secs(30))
        .await;
    assert!(!received.is_empty(), "no event on the emulator within 30 s");
    assert_eq!(received[0].attr("event_type"), "TicketBooked");
    assert_eq!(received[0].attr("origin"), "spacet-service");
}

/// Runs the binary with `args` and a file the service refuses (an unknown Go key):
/// the refusal names the key, so the file was read.
fn refusal(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_spacet"))
        .args(args)
        .env_remove("PG_DSN")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_file_is_read_however_it_is_given_and_an_unknown_go_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("go.yaml");
    std::fs::write(&file, "http:\n  port: 8080\npostgres:\n  pool_min: 2\n").unwrap();
    let path = file.to_str().unwrap();
    let given: [Vec<String>; 5] = [
        vec!["-config".into(), path.into()],
        vec![format!("-config={path}")],
        vec!["--config".into(), path.into()],
        vec![format!("--config={path}")],
        vec!["migrate".into(), "-config".into(), path.into()],
    ];
    for args in given {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = refusal(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("postgres.pool_min"), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}
