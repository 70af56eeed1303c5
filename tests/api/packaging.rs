//! Shipping: Kubernetes manifests, the compose file, the examples, `/metrics`.

use std::{collections::HashMap, path::PathBuf};

use serde_yaml::Value;
use spacet::config::SETTINGS;

use crate::helpers::{pads, TestApp};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo(path)).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn known_setting(name: &str) -> bool {
    SETTINGS
        .iter()
        .any(|(key, _, _)| key.to_uppercase() == name)
}

fn routed(path: &str) -> bool {
    spacet::api::http_routes()
        .iter()
        .any(|(m, p)| *m == "get" && *p == path)
}

#[test]
fn kubernetes_manifests_parse_and_probe_real_routes_and_ports() {
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let ports: HashMap<String, u64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let config = yaml("deploy/kubernetes/configmap.yaml");
    let data = config["data"].as_mapping().unwrap();
    let setting = |name: &str| data.get(name).and_then(|v| v.as_str()).unwrap().to_string();
    assert_eq!(ports["http"].to_string(), setting("HTTP_PORT"));
    assert_eq!(ports["grpc"].to_string(), setting("GRPC_PORT"));
    for (probe, path) in [
        ("startupProbe", "/readiness"),
        ("readinessProbe", "/readiness"),
        // Liveness asks only whether the process answers: a database outage must not
        // make Kubernetes restart every replica at once (`/liveness` is the
        // dependency report for people and alerts, not for the kubelet).
        ("livenessProbe", "/healthz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(routed(get["path"].as_str().unwrap()));
        assert!(
            ports.contains_key(get["port"].as_str().unwrap()),
            "{probe} port"
        );
        assert!(container[probe]["periodSeconds"].as_u64().unwrap() > 0);
    }
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    // The pod gets the drain delay plus the grace period plus a margin to stop:
    // the pool's bounded close and the exit come after the grace period.
    let seconds = |name: &str| {
        spacet::config::parse_duration(&setting(name), std::time::Duration::from_secs(1))
            .unwrap()
            .as_secs()
    };
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap()
            >= seconds("SHUTDOWN_DRAIN_DELAY") + seconds("SHUTDOWN_GRACE_PERIOD") + 5
    );
    for key in data.keys() {
        assert!(
            known_setting(key.as_str().unwrap()),
            "unknown setting {key:?} in the ConfigMap"
        );
    }
    // The ConfigMap loads as valid settings.
    let env: HashMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
        .collect();
    spacet::config::Settings::load(None, |k| env.get(k).cloned()).unwrap();

    let secret = yaml("deploy/kubernetes/secret.example.yaml");
    spacet::config::parse_dsn(secret["stringData"]["PG_DSN"].as_str().unwrap()).unwrap();
    let service = yaml("deploy/kubernetes/service.yaml");
    let service_ports: Vec<&str> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["targetPort"].as_str().unwrap())
        .collect();
    assert!(service_ports.iter().all(|p| ports.contains_key(*p)));
}

#[test]
fn the_compose_file_wires_postgres_the_emulator_the_service_and_the_subscriber() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    assert!(services["postgres"]["healthcheck"]["test"].is_sequence());
    assert_eq!(
        services["pubsub"]["image"],
        "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators"
    );
    let command: Vec<&str> = services["pubsub"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(command.contains(&"--host-port=0.0.0.0:8085"));
    assert!(services["pubsub"]["healthcheck"]["test"].is_sequence());
    let spacet = &services["spacet"];
    assert_eq!(
        spacet["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    assert_eq!(
        spacet["depends_on"]["pubsub"]["condition"],
        "service_healthy"
    );
    let env = spacet["environment"].as_mapping().unwrap();
    for key in env.keys() {
        assert!(
            known_setting(key.as_str().unwrap()),
            "unknown setting {key:?} in docker-compose.yml"
        );
    }
    assert_eq!(env.get("PUBSUB_EMULATOR_HOST").unwrap(), "pubsub:8085");
    spacet::config::parse_dsn(env.get("PG_DSN").unwrap().as_str().unwrap()).unwrap();
    assert!(services["subscriber"]["entrypoint"][0]
        .as_str()
        .unwrap()
        .contains("subscriber"));
    // The subscriber is configured only through variables the example reads.
    let subscriber_source = std::fs::read_to_string(repo("examples/subscriber.rs")).unwrap();
    for key in services["subscriber"]["environment"]
        .as_mapping()
        .unwrap()
        .keys()
    {
        let key = key.as_str().unwrap();
        assert!(
            subscriber_source.contains(&format!("\"{key}\"")),
            "the subscriber example does not read {key}"
        );
    }
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    for needed in [
        "STOPSIGNAL SIGTERM",
        "USER 10001",
        "cargo chef cook",
        "--example subscriber",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
}

/// Path of a compiled example (built by `cargo test --all-targets`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // `cargo build --examples` leaves the binary here (the test script builds them;
    // `cargo test` only builds examples as test harnesses).
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run cargo build --examples",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_grpc_example_books_lists_and_cancels() {
    let app = TestApp::spawn().await;
    // tokio's Command: the app runs on this test's runtime and must keep serving.
    let output = tokio::process::Command::new(example("book_ticket"))
        .args([
            "--addr",
            &format!("http://127.0.0.1:{}", app.grpc_port),
            "--date",
            "2049-06-01",
            "--destination",
            "TITAN",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("booked") && stdout.contains("\"ticketStatus\":\"CANCELLED\""),
        "{stdout}"
    );
    let cancelled = app
        .count("SELECT count(*) FROM tickets WHERE status = 'CANCELLED' AND destination = 'TITAN'")
        .await;
    assert_eq!(cancelled, 1);
}

#[tokio::test]
async fn the_curl_examples_cover_every_route() {
    let app = TestApp::spawn().await;
    let output = tokio::process::Command::new("bash")
        .arg(repo("examples/api.sh"))
        .env("BASE", &app.http)
        .env("DAY", "2049-06-02")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{stderr}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let script = std::fs::read_to_string(repo("examples/api.sh")).unwrap();
    for (method, path) in spacet::api::http_routes() {
        let stem = path.split('{').next().unwrap().trim_end_matches('/');
        assert!(
            script
                .lines()
                .any(|l| l.contains(&method.to_uppercase()) && l.contains(stem)),
            "examples/api.sh does not call {method} {path}"
        );
    }
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let app = TestApp::spawn().await;
    app.book_ok(
        pads::KSC_39A,
        "2049-03-02",
        spacet::proto::Destination::Mars,
    )
    .await;
    app.get_json("/v1/launchpads").await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let mut samples: HashMap<String, f64> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_string(), value);
    }
    let sum = |prefix: &str| {
        samples
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert!(
        sum("spacet_http_requests_total{method=\"GET\",route=\"/v1/launchpads\",status=\"200\"}")
            >= 1.0,
        "{text}"
    );
    assert!(
        samples
            .iter()
            .any(|(k, v)| k.starts_with("spacet_grpc_requests_total{")
                && k.contains("LaunchBooking")
                && k.contains("code=\"OK\"")
                && *v >= 1.0),
        "{text}"
    );
    assert!(sum("spacet_bookings_total{outcome=\"confirmed\"}") >= 1.0);
    assert!(sum("spacet_http_request_duration_seconds_bucket") > 0.0);
    assert!(samples
        .keys()
        .any(|k| k.starts_with("spacet_db_pool_connections{state=\"max\"}")));
    for family in [
        "spacet_http_requests_total",
        "spacet_grpc_request_duration_seconds",
        "spacet_bookings_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} has no TYPE line"
        );
    }
}

#[tokio::test]
async fn the_subscriber_example_prints_each_event_the_service_publishes() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};

    let emulator = crate::pubsub_emulator::Emulator::shared().await;
    let project = crate::pubsub_emulator::unique_project();
    let mut subscriber = tokio::process::Command::new(example("subscriber"))
        .env("PUBSUB_EMULATOR_HOST", emulator.host())
        .env("PUBSUB_PROJECT_ID", &project)
        .env("PUBSUB_LAUNCHES_TOPIC", "launches")
        .env("PUBSUB_SUBSCRIPTION", "printer")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(subscriber.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(subscriber.stderr.take().unwrap()).lines();
    // The subscription exists (it only receives what is published after it does)
    // once the subscriber says it is reading.
    let mut said = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            let reading = line.contains("subscriber: reading");
            said.push(line);
            if reading {
                return;
            }
        }
        panic!("the subscriber exited: {said:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("the subscriber did not start reading: {said:?}"));

    let app = TestApp::spawn_with(&[
        ("PUBSUB_ENABLED", "true"),
        ("PUBSUB_EMULATOR_HOST", &emulator.host()),
        ("PUBSUB_PROJECT_ID", &project),
        ("PUBSUB_LAUNCHES_TOPIC", "launches"),
    ])
    .await;
    let ticket = app
        .book_ok(
            pads::KSC_39A,
            "2049-06-03",
            spacet::proto::Destination::Europa,
        )
        .await;
    app.cancel(&ticket.id).await.unwrap();

    let mut printed: Vec<serde_json::Value> = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while printed.len() < 2 {
            let line = stdout
                .next_line()
                .await
                .unwrap()
                .expect("the subscriber keeps running");
            printed.push(serde_json::from_str(&line).expect("one JSON object per line"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("two events not printed within 30 s: {printed:#?}"));

    let event_ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(event_ids.len(), 2);
    for (line, (event_type, event_id)) in printed.iter().zip(
        ["TicketBooked", "TicketCancelled"]
            .into_iter()
            .zip(event_ids),
    ) {
        assert_eq!(line["event_type"], event_type, "{line}");
        assert_eq!(line["event_id"], event_id.to_string(), "{line}");
        assert_eq!(line["origin"], "spacet", "{line}");
        assert_eq!(line["schema_version"], "1", "{line}");
        assert_eq!(line["ticket"], ticket.id.as_str(), "{line}");
        assert_eq!(line["data"]["ticket"]["id"], ticket.id.as_str(), "{line}");
        assert_eq!(line["data"]["ticket"]["lastName"], "Lovelace", "{line}");
    }
    assert_eq!(printed[0]["data"]["ticket"]["status"], "scheduled");
    assert_eq!(printed[1]["data"]["ticket"]["status"], "cancelled");
    assert_eq!(printed[1]["data"]["reason"], "USER_REQUESTED");

    // Ctrl-C stops it cleanly.
    unsafe { libc::kill(subscriber.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), subscriber.wait())
        .await
        .expect("the subscriber stops within 10 s of SIGINT")
        .unwrap();
    assert!(status.success(), "{status}");
}
