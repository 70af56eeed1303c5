//! Shipping: the Kustomize base and overlays, the Dockerfile, the compose file, the
//! examples, `/metrics`, `spacet healthcheck`.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use serde::Deserialize;
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

/// A setting's built-in default.
fn default_of(key: &str) -> String {
    SETTINGS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, default, _)| default.to_string())
        .unwrap()
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
fn the_kustomize_base_parses_and_probes_real_routes_and_ports() {
    let deployment = yaml("deploy/kubernetes/base/deployment.yaml");
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
    let config = yaml("deploy/kubernetes/base/configmap.yaml");
    let data = config["data"].as_mapping().unwrap();
    let setting = |name: &str| data.get(name).and_then(|v| v.as_str()).unwrap().to_string();
    assert_eq!(ports["http"].to_string(), setting("HTTP_PORT"));
    assert_eq!(ports["grpc"].to_string(), setting("GRPC_PORT"));
    // The challenge's unauthenticated rocket port is off unless an overlay turns it on.
    assert_eq!(setting("ROCKETS_PORT"), "0");
    let kustomization = yaml("deploy/kubernetes/base/kustomization.yaml");
    assert!(kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|r| r == "networkpolicy.yaml"));
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

    let secret = yaml("deploy/kubernetes/base/secret.example.yaml");
    spacet::config::parse_dsn(secret["stringData"]["PG_DSN"].as_str().unwrap()).unwrap();
    let service = yaml("deploy/kubernetes/base/service.yaml");
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
    // The same emulator release as the development overlay's, by a version tag.
    let emulator = kustomize("development");
    assert_eq!(
        services["pubsub"]["image"],
        pod_spec(find(&emulator, "Deployment", "pubsub-emulator"))["containers"][0]["image"]
    );
    assert!(services["pubsub"]["image"]
        .as_str()
        .unwrap()
        .ends_with(":528.0.0-emulators"));
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
    // The image has no curl: the binary checks itself.
    assert_eq!(
        spacet["healthcheck"]["test"],
        serde_yaml::from_str::<Value>(r#"["CMD", "/usr/local/bin/spacet", "healthcheck"]"#)
            .unwrap()
    );
    // The subscriber comes from the Dockerfile's tools stage, not the production image.
    assert_eq!(services["subscriber"]["build"]["target"], "tools");
    for (name, service) in services.as_mapping().unwrap() {
        if let Some(image) = service["image"].as_str() {
            assert!(pinned_image(image), "{name:?}: {image} is not pinned");
        }
    }
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
    let dockerfile = Dockerfile::read();
    assert!(dockerfile.stage("tools").is_some());
    let tools = dockerfile.chain("tools");
    assert!(tools
        .iter()
        .any(|(op, args)| op == "ENTRYPOINT" && args.contains("spacet-subscriber")));

    // With the external PostgreSQL the service refuses `auto`: development tokens
    // are chosen explicitly, their key on a named volume (it survives restarts, and
    // `spacet token` run in the container reads it) in a directory the image makes
    // for uid 10001, so a fresh volume is writable by the service.
    assert_eq!(env.get("AUTH_MODE").unwrap(), "dev");
    let key_file = PathBuf::from(env.get("AUTH_DEV_KEY_FILE").unwrap().as_str().unwrap());
    let key_dir = key_file.parent().unwrap().to_str().unwrap();
    let volume = spacet["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|v| v.as_str().unwrap().strip_suffix(&format!(":{key_dir}")))
        .unwrap_or_else(|| panic!("no volume at {key_dir}"));
    assert!(
        compose["volumes"].get(volume).is_some(),
        "{volume} is not a named volume"
    );
    let final_stage = dockerfile.stages().last().unwrap().name.clone();
    assert!(
        dockerfile
            .chain(&final_stage)
            .iter()
            .any(|(op, args)| op == "RUN"
                && args.contains("-o 10001")
                && args.split_whitespace().any(|w| w == key_dir)),
        "the image does not make {key_dir} for uid 10001"
    );
    assert_eq!(spacet["read_only"], true);
    // The SpaceX settings can be pointed elsewhere from the environment (CI's fake):
    // `${NAME:-default}`, whose defaults are the service's own.
    let at_default = |value: &str| -> String {
        match value
            .strip_prefix("${")
            .and_then(|v| v.strip_suffix('}'))
            .and_then(|v| v.split_once(":-"))
        {
            Some((_, default)) => default.to_string(),
            None => value.to_string(),
        }
    };
    for key in ["SPACEX_API_URL", "SPACEX_ALLOW_HTTP", "SPACEX_SYNC_ENABLED"] {
        let value = env.get(key).unwrap().as_str().unwrap();
        assert!(value.starts_with(&format!("${{{key}:-")), "{key}: {value}");
        assert_eq!(at_default(value), default_of(&key.to_lowercase()), "{key}");
    }
    let resolved: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().into(), at_default(v.as_str().unwrap())))
        .collect();
    let settings = spacet::config::Settings::load(None, |k| resolved.get(k).cloned())
        .unwrap_or_else(|e| panic!("docker-compose.yml: {e}"));
    assert_eq!(settings.auth.mode, spacet::config::AuthMode::Dev);

    // CI's override (scripts/containers) swaps only `image:` lines for local
    // stand-ins, and gives the built services the stand-in bases as build
    // arguments the Dockerfile declares: it runs this file's services unchanged.
    let ci = yaml("docker-compose.ci.yml");
    let arguments: Vec<String> = dockerfile
        .global_args()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    for (name, service) in ci["services"].as_mapping().unwrap() {
        let original = &services[name.as_str().unwrap()];
        for (key, value) in service.as_mapping().unwrap() {
            match key.as_str().unwrap() {
                "image" => assert!(original["image"].is_string(), "{name:?} has no image"),
                "build" => {
                    assert!(!original["build"].is_null(), "{name:?} is not built");
                    assert_eq!(value["target"], original["build"]["target"], "{name:?}");
                    for arg in value["args"].as_mapping().unwrap().keys() {
                        assert!(
                            arguments.iter().any(|a| a == arg.as_str().unwrap()),
                            "{name:?}: the Dockerfile has no ARG {arg:?}"
                        );
                    }
                }
                other => panic!("docker-compose.ci.yml changes {other} of {name:?}"),
            }
        }
    }
}

/// Path of a compiled example (built by `cargo test --all-targets`).
pub(crate) fn example(name: &str) -> PathBuf {
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
async fn the_grpc_example_books_lists_and_cancels_with_a_token() {
    // As the default run does: development tokens, the token from `spacet token`.
    let (app, key) = crate::auth::dev_app(&[]).await;
    let token = crate::auth::cli_token(&key, "passenger", "ada");
    let run = |token: Option<&str>| {
        // tokio's Command: the app runs on this test's runtime and must keep serving.
        let mut command = tokio::process::Command::new(example("book_ticket"));
        command
            .args([
                "--addr",
                &format!("http://127.0.0.1:{}", app.grpc_port),
                "--date",
                "2049-06-01",
                "--destination",
                "TITAN",
            ])
            .env_remove("SPACET_TOKEN");
        if let Some(token) = token {
            command.env("SPACET_TOKEN", token);
        }
        command.output()
    };
    let refused = run(None).await.unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("a bearer token is required"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let output = run(Some(&token)).await.unwrap();
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

/// Waits until the subscriber example says it is reading (its subscription then
/// exists: it only receives what is published after that), from its stderr.
pub(crate) async fn wait_until_reading(
    stderr: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) {
    let mut said = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
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
    wait_until_reading(&mut stderr).await;

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

// --- The Kustomize overlays, rendered by kustomize itself ----------------------

/// `kubectl` to render with: `$KUBECTL` (scripts/test sets it when it had to
/// install one), else the one on PATH.
fn kubectl() -> PathBuf {
    let kubectl = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| "kubectl".into());
    let works = std::process::Command::new(&kubectl)
        .args(["kustomize", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "{} cannot run `kubectl kustomize`: run scripts/test (it installs kubectl \
         when missing) or set KUBECTL",
        kubectl.display()
    );
    kubectl
}

/// Every object `kubectl kustomize deploy/kubernetes/overlays/{overlay}` prints.
fn kustomize(overlay: &str) -> Vec<Value> {
    let dir = repo(&format!("deploy/kubernetes/overlays/{overlay}"));
    let output = std::process::Command::new(kubectl())
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    // A bare `latest` anywhere (an image, an annotation) fails, not only in images.
    assert!(!text.contains(":latest"), "{overlay} renders `latest`");
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn pod_labels(workload: &Value) -> &Value {
    &workload["spec"]["template"]["metadata"]["labels"]
}

/// Whether a label selector (`matchLabels` only, as ours are) selects these labels.
fn selects(match_labels: &Value, labels: &Value) -> bool {
    let wanted = match_labels.as_mapping().expect("a non-empty selector");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// An image reference that names fixed bytes or a fixed release: a digest, or an
/// explicit tag other than `latest`.
fn pinned_image(image: &str) -> bool {
    if let Some((_, digest)) = image.split_once("@sha256:") {
        return digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit());
    }
    // The tag follows the last ':' after the last '/' (a registry may have a port).
    let last = image.rsplit('/').next().unwrap();
    matches!(last.split_once(':'), Some((_, tag)) if !tag.is_empty() && tag != "latest")
}

/// The checks every overlay's service must pass; returns its Deployment.
fn check_spacet<'a>(overlay: &str, objects: &'a [Value]) -> &'a Value {
    let deployment = find(objects, "Deployment", "spacet");
    let labels = pod_labels(deployment);
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        labels
    ));
    let pod = pod_spec(deployment);
    let container = &pod["containers"][0];
    let ports: HashMap<&str, u64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        let path = get["path"].as_str().unwrap();
        assert!(routed(path), "{overlay}: {probe} asks {path}, not a route");
        assert!(
            ports.contains_key(get["port"].as_str().unwrap()),
            "{overlay}: {probe} port"
        );
    }
    // Prometheus scrapes /metrics on the HTTP port.
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{overlay}");
    let metrics = annotations["prometheus.io/path"].as_str().unwrap();
    assert!(metrics == "/metrics" && routed(metrics), "{overlay}");
    assert_eq!(
        annotations["prometheus.io/port"].as_str().unwrap(),
        ports["http"].to_string(),
        "{overlay}"
    );
    // Hardened: not root, the runtime's seccomp filter, nothing writable or escalating.
    let pod_security = &pod["securityContext"];
    assert_eq!(
        pod_security["seccompProfile"]["type"], "RuntimeDefault",
        "{overlay}"
    );
    assert_eq!(pod_security["runAsNonRoot"], true, "{overlay}");
    assert!(pod_security["runAsUser"].as_u64().unwrap() > 0, "{overlay}");
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{overlay}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{overlay}");
    assert_eq!(
        security["capabilities"]["drop"],
        serde_yaml::from_str::<Value>("[ALL]").unwrap(),
        "{overlay}"
    );
    // The Service reaches these pods on their named ports.
    let service = find(objects, "Service", "spacet");
    assert!(selects(&service["spec"]["selector"], labels), "{overlay}");
    for port in service["spec"]["ports"].as_sequence().unwrap() {
        assert!(ports.contains_key(port["targetPort"].as_str().unwrap()));
    }
    // The ConfigMap the pods read is known settings that load, beside the Secret's
    // external PG_DSN as in the cluster. A placeholder (`REPLACE_ME...`) stops the
    // start naming its setting; filled in, the settings load.
    let config = find(objects, "ConfigMap", "spacet");
    let mut env: HashMap<String, String> = config["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
        .collect();
    for key in env.keys() {
        assert!(known_setting(key), "{overlay}: unknown setting {key}");
    }
    let secret = yaml("deploy/kubernetes/base/secret.example.yaml");
    env.insert(
        "PG_DSN".into(),
        secret["stringData"]["PG_DSN"].as_str().unwrap().into(),
    );
    let placeholders: Vec<String> = env
        .iter()
        .filter(|(_, v)| v.trim_start().starts_with(spacet::config::PLACEHOLDER))
        .map(|(k, _)| k.clone())
        .collect();
    if !placeholders.is_empty() {
        let error = spacet::config::Settings::load(None, |k| env.get(k).cloned())
            .expect_err("settings with placeholders load");
        assert!(
            placeholders.contains(&error.setting),
            "{overlay}: {error} does not name a placeholder of {placeholders:?}"
        );
        for key in &placeholders {
            let filled = match key.as_str() {
                "AUTH_ISSUER" => "https://issuer.example.com",
                _ => "spacet",
            };
            env.insert(key.clone(), filled.into());
        }
    }
    let settings = spacet::config::Settings::load(None, |k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("{overlay}: {e}"));
    // With an external database the authentication mode is decided, never `auto`
    // falling back to development keys, nor off.
    assert!(
        matches!(
            env.get("AUTH_MODE").map(String::as_str),
            Some("dev" | "oidc")
        ),
        "{overlay}: AUTH_MODE {:?}",
        env.get("AUTH_MODE")
    );
    assert!(matches!(
        settings.auth.mode,
        spacet::config::AuthMode::Dev | spacet::config::AuthMode::Oidc
    ));
    // The root filesystem is read-only: the development key is written to a volume.
    if settings.auth.mode == spacet::config::AuthMode::Dev {
        let key = &settings.auth.dev_key_file;
        let mount = container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|m| key.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{overlay}: {} is on no volume", key.display()));
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert!(volume.get("emptyDir").is_some(), "{overlay}: {volume:?}");
    }

    // No Kubernetes API token and no service-link variables in the pods. The
    // NetworkPolicy lets in the HTTP and gRPC ports; the rocket port takes messages
    // without a token, so when an overlay turns it on only the senders reach it.
    assert_eq!(pod["automountServiceAccountToken"], false, "{overlay}");
    assert_eq!(pod["enableServiceLinks"], false, "{overlay}");
    let policy = find(objects, "NetworkPolicy", "spacet");
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        labels
    ));
    assert!(policy["spec"]["policyTypes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|t| t == "Ingress"));
    let rockets: u64 = env
        .get("ROCKETS_PORT")
        .cloned()
        .unwrap_or_else(|| default_of("rockets_port"))
        .parse()
        .unwrap();
    let mut allowed = Vec::new();
    for rule in policy["spec"]["ingress"].as_sequence().unwrap() {
        let rule_ports: Vec<u64> = rule["ports"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{overlay}: an ingress rule for every port"))
            .iter()
            .map(|p| match &p["port"] {
                Value::Number(n) => n.as_u64().unwrap(),
                name => *ports.get(name.as_str().unwrap()).unwrap_or_else(|| {
                    panic!("{overlay}: the NetworkPolicy names {name:?}, not a container port")
                }),
            })
            .collect();
        if rockets != 0 && rule_ports.contains(&rockets) {
            let senders_only = rule["from"].as_sequence().is_some_and(|peers| {
                !peers.is_empty()
                    && peers.iter().all(|peer| {
                        peer.as_mapping().unwrap().len() == 1
                            && peer["podSelector"]["matchLabels"]["spacet.io/rocket-sender"]
                                == "true"
                    })
            });
            assert!(
                senders_only,
                "{overlay}: the rocket port is open to {rule:?}"
            );
        }
        allowed.extend(rule_ports);
    }
    for name in ["http", "grpc"] {
        assert!(
            allowed.contains(&ports[name]),
            "{overlay}: {name} not let in"
        );
    }
    if rockets != 0 {
        assert!(
            ports.values().any(|p| *p == rockets) && allowed.contains(&rockets),
            "{overlay}: ROCKETS_PORT {rockets} is on but not a container port let in"
        );
    }
    // Every image of every workload is pinned.
    for object in objects {
        for container in pod_spec(object)["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let image = container["image"].as_str().unwrap();
            assert!(pinned_image(image), "{overlay}: {image} is not pinned");
        }
    }
    deployment
}

#[test]
fn the_development_overlay_runs_one_replica_publishing_to_an_in_cluster_emulator() {
    let objects = kustomize("development");
    let deployment = check_spacet("development", &objects);
    assert_eq!(deployment["spec"]["replicas"], 1);
    // One replica with development tokens (its key on the pod's emptyDir: every
    // token comes from it), and the rocket port on for the senders.
    let data = &find(&objects, "ConfigMap", "spacet")["data"];
    assert_eq!(data["AUTH_MODE"], "dev");
    assert_ne!(data["ROCKETS_PORT"], "0");

    let emulator = find(&objects, "Deployment", "pubsub-emulator");
    let service = find(&objects, "Service", "pubsub-emulator");
    assert!(selects(&service["spec"]["selector"], pod_labels(emulator)));
    // Neither Service picks the other's pods.
    assert!(!selects(
        &service["spec"]["selector"],
        pod_labels(deployment)
    ));
    assert!(!selects(
        &find(&objects, "Service", "spacet")["spec"]["selector"],
        pod_labels(emulator)
    ));
    // PUBSUB_EMULATOR_HOST names the Service's port, whose target is the port the
    // emulator is started on.
    let config = find(&objects, "ConfigMap", "spacet");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(
        config["data"]["PUBSUB_EMULATOR_HOST"].as_str().unwrap(),
        format!(
            "{}:{}",
            service["metadata"]["name"].as_str().unwrap(),
            service_port["port"].as_u64().unwrap()
        )
    );
    let container = &pod_spec(emulator)["containers"][0];
    let target = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == service_port["targetPort"])
        .expect("the Service's targetPort is a named port of the emulator");
    let host_port = format!(
        "--host-port=0.0.0.0:{}",
        target["containerPort"].as_u64().unwrap()
    );
    assert!(
        container["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|a| a.as_str() == Some(host_port.as_str())),
        "the emulator is not started with {host_port}"
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["port"],
        target["name"]
    );
}

#[test]
fn the_production_overlay_spreads_replicas_under_a_disruption_budget_with_workload_identity() {
    let objects = kustomize("production");
    let deployment = check_spacet("production", &objects);
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    assert!(replicas >= 2, "{replicas} replicas");
    let labels = pod_labels(deployment);

    // The budget selects exactly these pods and leaves room to drain a node.
    let budget = find(&objects, "PodDisruptionBudget", "spacet");
    assert!(selects(&budget["spec"]["selector"]["matchLabels"], labels));
    let can_evict = match (
        budget["spec"]["maxUnavailable"].as_u64(),
        budget["spec"]["minAvailable"].as_u64(),
    ) {
        (Some(max_unavailable), None) => max_unavailable >= 1 && max_unavailable < replicas,
        (None, Some(min_available)) => min_available >= 1 && min_available < replicas,
        other => panic!("the budget needs one integer bound: {other:?}"),
    };
    assert!(can_evict, "{budget:?}");

    // Spread over zones and nodes, counting these pods.
    let pod = pod_spec(deployment);
    let spread = pod["topologySpreadConstraints"].as_sequence().unwrap();
    let keys: Vec<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"topology.kubernetes.io/zone"), "{keys:?}");
    assert!(keys.contains(&"kubernetes.io/hostname"), "{keys:?}");
    for constraint in spread {
        assert!(selects(&constraint["labelSelector"]["matchLabels"], labels));
        assert_eq!(constraint["maxSkew"], 1);
    }

    // Pub/Sub credentials through Workload Identity: the pod runs as a service
    // account that names a Google service account; no key file is mounted.
    let account = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let google = find(&objects, "ServiceAccount", account)["metadata"]["annotations"]
        ["iam.gke.io/gcp-service-account"]
        .as_str()
        .unwrap();
    assert!(google.ends_with(".iam.gserviceaccount.com"), "{google}");
    let config = find(&objects, "ConfigMap", "spacet");
    assert!(config["data"].get("PUBSUB_EMULATOR_HOST").is_none());
    // Cloud Logging's JSON; tokens of the operator's issuer only, whose URL and
    // audience are placeholders that stop the start until they are set.
    assert_eq!(config["data"]["LOG_FORMAT"], "gcp");
    assert_eq!(config["data"]["AUTH_MODE"], "oidc");
    for key in ["AUTH_ISSUER", "AUTH_AUDIENCE"] {
        assert!(
            config["data"][key]
                .as_str()
                .unwrap()
                .starts_with(spacet::config::PLACEHOLDER),
            "{key}"
        );
    }
    assert_eq!(
        config["data"].get("ROCKETS_PORT").and_then(Value::as_str),
        Some("0")
    );
    // Managed Prometheus scrapes /metrics on the pods' HTTP port.
    let monitoring = find(&objects, "PodMonitoring", "spacet");
    assert_eq!(monitoring["apiVersion"], "monitoring.googleapis.com/v1");
    assert!(selects(
        &monitoring["spec"]["selector"]["matchLabels"],
        labels
    ));
    let endpoints = monitoring["spec"]["endpoints"].as_sequence().unwrap();
    assert!(!endpoints.is_empty());
    for endpoint in endpoints {
        assert_eq!(endpoint["path"], "/metrics");
        assert!(routed(endpoint["path"].as_str().unwrap()));
        assert_eq!(endpoint["port"], "http");
        assert!(pod["containers"][0]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "http"));
    }
    assert!(config["data"]
        .get("GOOGLE_APPLICATION_CREDENTIALS")
        .is_none());

    // The image is the release this tree builds, by its version tag.
    let image = pod["containers"][0]["image"].as_str().unwrap();
    assert!(
        image.ends_with(&format!("/spacet:{}", env!("CARGO_PKG_VERSION"))),
        "{image}"
    );
}

// --- The Dockerfile, checked statically (no Docker engine runs here) -----------

/// The Dockerfile's instructions, continuation lines joined, with the comment
/// block above each `FROM`.
struct Dockerfile {
    /// `(instruction, arguments, comment above)`
    instructions: Vec<(String, String, String)>,
}

impl Dockerfile {
    fn read() -> Dockerfile {
        let text = std::fs::read_to_string(repo("Dockerfile")).unwrap();
        let (mut instructions, mut comment, mut pending) = (Vec::new(), String::new(), None);
        for line in text.lines() {
            let trimmed = line.trim();
            if pending.is_none() {
                if let Some(c) = trimmed.strip_prefix('#') {
                    comment.push_str(c);
                    comment.push('\n');
                    continue;
                }
                if trimmed.is_empty() {
                    comment.clear();
                    continue;
                }
            }
            let joined: String = pending.take().unwrap_or_default();
            let joined = format!("{joined} {}", trimmed.trim_end_matches('\\'));
            if trimmed.ends_with('\\') {
                pending = Some(joined);
                continue;
            }
            let joined = joined.trim();
            let (op, args) = joined.split_once(' ').unwrap_or((joined, ""));
            instructions.push((
                op.to_uppercase(),
                args.trim().to_string(),
                std::mem::take(&mut comment),
            ));
        }
        Dockerfile { instructions }
    }

    /// The `FROM` stages in order.
    fn stages(&self) -> Vec<Stage> {
        let mut stages: Vec<Stage> = Vec::new();
        for (op, args, _) in &self.instructions {
            if op == "FROM" {
                let words: Vec<&str> = args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                    _ => stages.len().to_string(),
                };
                stages.push(Stage {
                    base: words[0].to_string(),
                    name,
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push((op.clone(), args.clone()));
            }
        }
        stages
    }

    fn stage(&self, name: &str) -> Option<Stage> {
        self.stages().into_iter().find(|s| s.name == name)
    }

    /// The `ARG`s declared before the first `FROM` (usable in `FROM` lines):
    /// `(name, default, comment above)`.
    fn global_args(&self) -> Vec<(String, String, String)> {
        self.instructions
            .iter()
            .take_while(|(op, _, _)| op != "FROM")
            .filter(|(op, _, _)| op == "ARG")
            .map(|(_, args, comment)| {
                let (name, default) = args.split_once('=').unwrap_or((args, ""));
                (name.to_string(), default.to_string(), comment.clone())
            })
            .collect()
    }

    /// What a `FROM` names with the global `ARG`s at their defaults: `${RUST_IMAGE}`
    /// becomes the pinned image a plain `docker build` uses.
    fn resolve(&self, image: &str) -> String {
        match image
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
            .or_else(|| image.strip_prefix('$'))
        {
            Some(name) => self
                .global_args()
                .into_iter()
                .find(|(arg, _, _)| arg == name)
                .map(|(_, default, _)| default)
                .unwrap_or_else(|| panic!("FROM {image}: no ARG {name} before the first FROM")),
            None => image.to_string(),
        }
    }

    /// A stage's instructions and those of the stages it is built `FROM`.
    fn chain(&self, name: &str) -> Vec<(String, String)> {
        let mut all = Vec::new();
        let mut next = self.stage(name);
        while let Some(stage) = next {
            all.extend(stage.instructions);
            next = self.stage(&stage.base);
        }
        all
    }
}

/// One `FROM` stage: what it is built on, its name (`AS`), its instructions.
struct Stage {
    base: String,
    name: String,
    /// `(instruction, arguments)`
    instructions: Vec<(String, String)>,
}

#[test]
fn the_dockerfile_pins_its_bases_and_ships_only_the_service_as_non_root_without_curl() {
    let dockerfile = Dockerfile::read();
    let stages = dockerfile.stages();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    // Every base that is not an earlier stage is a build argument (CI builds on
    // local stand-ins: scripts/containers) whose default is pinned by digest, and
    // the comment above the ARG names the version that digest is.
    let global_args = dockerfile.global_args();
    for stage in &stages {
        if names.contains(&stage.base.as_str()) {
            continue;
        }
        let name = stage
            .base
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_else(|| {
                panic!(
                    "FROM {}: a base image is a build argument (ARG ..._IMAGE=...)",
                    stage.base
                )
            });
        let (_, image, comment) = global_args
            .iter()
            .find(|(arg, _, _)| arg == name)
            .unwrap_or_else(|| panic!("no ARG {name} before the first FROM"));
        let (reference, digest) = image
            .split_once("@sha256:")
            .unwrap_or_else(|| panic!("{name}={image} is not pinned by digest"));
        assert!(
            digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "{image}"
        );
        let tag = reference.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(!tag.is_empty() && tag != "latest", "{image}");
        let version = tag.split('-').next().unwrap();
        assert!(
            comment.contains(version),
            "the comment above ARG {name} does not name its version {version}"
        );
    }
    // No `# syntax=` directive: BuildKit would fetch that frontend from a registry.
    let text = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    assert!(
        !text.trim_start().starts_with("# syntax="),
        "a syntax directive"
    );

    // rust-toolchain.toml, the builder's image and its RUSTUP_TOOLCHAIN agree.
    let toolchain = std::fs::read_to_string(repo("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .expect("a channel")
        .trim_matches('"');
    let rust_image = dockerfile.resolve(&dockerfile.stage("chef").unwrap().base);
    let rust_tag = rust_image.split(['@', ':']).nth(1).unwrap();
    assert!(
        channel.starts_with(rust_tag.split('-').next().unwrap()),
        "{rust_image} against the toolchain {channel}"
    );
    assert!(dockerfile
        .chain("builder")
        .contains(&("ENV".into(), format!("RUSTUP_TOOLCHAIN={channel}"))));

    // The last stage is the production image.
    let final_name = &stages.last().unwrap().name;
    let runtime = dockerfile.chain(final_name);
    let user = runtime
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, args)| args.split(':').next().unwrap().to_string())
        .expect("the production image sets USER");
    assert!(user != "0" && user != "root", "runs as {user}");
    for (op, args) in &runtime {
        assert!(
            !args.contains("curl") && !args.contains("wget"),
            "{op} {args}: no HTTP client in the production image"
        );
        assert!(!args.contains("examples"), "{op} {args}: an example");
    }
    let healthcheck = runtime
        .iter()
        .find(|(op, _)| op == "HEALTHCHECK")
        .map(|(_, args)| args.clone())
        .expect("a HEALTHCHECK");
    assert!(
        healthcheck.ends_with(r#"CMD ["/usr/local/bin/spacet", "healthcheck"]"#),
        "{healthcheck}"
    );
    assert!(runtime.contains(&("ENTRYPOINT".into(), r#"["/usr/local/bin/spacet"]"#.into())));
    // What it copies from the build is the service alone: the build step makes only it.
    let copied_from: Vec<&str> = runtime
        .iter()
        .filter(|(op, _)| op == "COPY")
        .filter_map(|(_, args)| args.strip_prefix("--from="))
        .map(|args| args.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(copied_from, ["builder"]);
    let builds: Vec<String> = dockerfile
        .chain("builder")
        .into_iter()
        .filter(|(op, args)| op == "RUN" && args.contains("cargo build"))
        .map(|(_, args)| args)
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert!(
        builds[0].contains("--bin spacet") && !builds[0].contains("--example"),
        "{}",
        builds[0]
    );
    for (op, args) in dockerfile.stage(final_name).unwrap().instructions {
        if op == "COPY" && args.starts_with("--from=builder") {
            assert!(args.contains("/app/target/release/spacet "), "{args}");
        }
    }
}

// --- `spacet healthcheck` ------------------------------------------------------

/// Runs `spacet healthcheck` against HTTP_PORT=`port` and returns its exit code.
async fn healthcheck(port: u16) -> i32 {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_spacet"))
        .arg("healthcheck")
        .current_dir(repo(""))
        .env("HTTP_PORT", port.to_string())
        .env("BIND_ADDRESS", "0.0.0.0")
        .env("LOG_FORMAT", "json")
        .output()
        .await
        .unwrap();
    output.status.code().expect("an exit code")
}

fn port_of(http: &str) -> u16 {
    http.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn spacet_healthcheck_exits_0_when_the_service_is_ready_and_1_otherwise() {
    let app = TestApp::spawn().await;
    assert_eq!(healthcheck(port_of(&app.http)).await, 0);

    // Nothing listening.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    assert_eq!(healthcheck(closed).await, 1);

    // A server that answers, but not ready.
    let not_ready = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/readiness"))
        .respond_with(wiremock::ResponseTemplate::new(503))
        .expect(1)
        .mount(&not_ready)
        .await;
    assert_eq!(healthcheck(not_ready.address().port()).await, 1);

    // A server that never answers: the check gives up on its own (2 s), well
    // within a container runtime's HEALTHCHECK timeout.
    let hanging = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/readiness"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&hanging)
        .await;
    let code = tokio::time::timeout(
        Duration::from_secs(10),
        healthcheck(hanging.address().port()),
    )
    .await
    .expect("the healthcheck gives up before 10 s");
    assert_eq!(code, 1);
}
