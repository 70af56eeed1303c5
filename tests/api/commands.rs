//! The one-shot commands (`spacet migrate`, `spacet sync`) as an operator runs them
//! beside a running service (`kubectl exec deploy/spacet -- spacet sync --confirm`):
//! same environment, same ports, and exit codes that say what happened.

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use spacet::proto::Destination;

use crate::{
    helpers::{blocking_http_status, dsn_of, free_port, pads, TestApp},
    spacex::{upcoming_2049, FakeSpaceX},
};

/// Runs the release-like binary with exactly `env` (and PATH).
async fn spacet(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_spacet"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)));
    command.output().await.expect("spacet runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The running app's own environment, as a pod's `kubectl exec` inherits it.
fn beside(app: &TestApp, spacex_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let port_of = |url: &str| url.rsplit(':').next().unwrap().to_string();
    let mut env: Vec<(String, String)> = [
        ("PG_DSN", dsn_of(&app.db)),
        ("BIND_ADDRESS", "127.0.0.1".into()),
        ("HTTP_PORT", port_of(&app.http)),
        ("GRPC_PORT", app.grpc_port.to_string()),
        ("SPACEX_API_URL", spacex_url.into()),
        ("SPACEX_ALLOW_HTTP", "true".into()),
        ("SPACEX_RETRIES", "0".into()),
        ("SPACEX_MAX_CANCELLATIONS", "0".into()),
        ("LOG_FORMAT", "json".into()),
        ("LOG_LEVEL", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[tokio::test]
async fn migrate_and_sync_run_beside_the_service_on_its_ports_with_exit_codes_that_tell() {
    let fake = FakeSpaceX::start().await;
    fake.serve(&upcoming_2049()).await;
    let app = TestApp::spawn_with(&[("SPACEX_API_URL", &fake.url())]).await;
    // The rockets port, taken too (the one-shot commands would have bound 8088).
    let rockets = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rockets_port = rockets.local_addr().unwrap().port().to_string();
    // Galaxy 31 & 32 fly from CCSFS SLC 40 on 2049-11-08: this ticket collides.
    let ticket = app
        .book_ok(pads::CCSFS_40, "2049-11-08", Destination::Moon)
        .await;
    // No AUTH_ISSUER with an external database: serving would be refused, the
    // one-shot commands verify no token and run.
    let env = beside(&app, &fake.url(), &[("ROCKETS_PORT", &rockets_port)]);

    let migrate = spacet(&["migrate"], &env).await;
    assert_eq!(migrate.status.code(), Some(0), "{}", text(&migrate.stderr));
    assert!(migrate.stdout.is_empty(), "{}", text(&migrate.stdout));
    assert!(text(&migrate.stderr).contains("migrations applied"));

    // One ticket to cancel with SPACEX_MAX_CANCELLATIONS=0: held, exit 3, the
    // report on stdout and nothing else there.
    let held = spacet(&["sync"], &env).await;
    assert_eq!(held.status.code(), Some(3), "{}", text(&held.stderr));
    let report: Value = serde_json::from_slice(&held.stdout).expect("stdout is the JSON report");
    assert_eq!(report["skippedReason"], "held", "{report}");
    assert_eq!(report["ticketsToCancel"], 1, "{report}");
    assert!(text(&held.stderr).contains("--confirm"));
    assert_eq!(app.ticket(&ticket.id).await.unwrap().ticket_status, 1);

    let confirmed = spacet(&["sync", "--confirm"], &env).await;
    assert_eq!(
        confirmed.status.code(),
        Some(0),
        "{}",
        text(&confirmed.stderr)
    );
    let report: Value = serde_json::from_slice(&confirmed.stdout).unwrap();
    assert_eq!(report["applied"], true, "{report}");
    assert_eq!(report["ticketsCancelled"], 1, "{report}");
    let cancelled = app
        .count(&format!(
            "SELECT count(*) FROM tickets WHERE id = '{}' AND status = 'CANCELLED'",
            ticket.id
        ))
        .await;
    assert_eq!(cancelled, 1);

    // Nothing left to change: 0 again.
    let again = spacet(&["sync"], &env).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));

    // The service beside them was never disturbed.
    let (status, _) = app.get_json("/readiness").await;
    assert_eq!(status, 200);

    // SpaceX unreachable: a failure, 1.
    let closed = format!("http://127.0.0.1:{}/v4", free_port());
    let failed = spacet(&["sync"], &beside(&app, &closed, &[])).await;
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    assert!(failed.stdout.is_empty());

    // A bad setting: 2, naming it.
    let bad = spacet(
        &["sync"],
        &beside(&app, &fake.url(), &[("PG_POOL_MAX", "many")]),
    )
    .await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("PG_POOL_MAX"));
    drop(rockets);
}

#[tokio::test]
async fn serving_with_an_external_database_and_no_issuer_is_refused_naming_the_settings() {
    let app = TestApp::spawn().await;
    let env = beside(
        &app,
        "http://127.0.0.1:9/v4",
        &[("HTTP_PORT", "0"), ("GRPC_PORT", "0")],
    );
    let serve = spacet(&["serve"], &env).await;
    assert_eq!(serve.status.code(), Some(2), "{}", text(&serve.stderr));
    let stderr = text(&serve.stderr);
    assert!(
        stderr.contains("AUTH_ISSUER") && stderr.contains("AUTH_MODE=dev"),
        "{stderr}"
    );
    // `spacet token` refuses too: there is no development key to sign with.
    let token = spacet(&["token", "--role", "admin", "--subject", "x"], &env).await;
    assert_eq!(token.status.code(), Some(2), "{}", text(&token.stderr));
    assert!(token.stdout.is_empty());
}

#[test]
fn migrate_uses_the_running_services_embedded_cluster_and_leaves_it_running() {
    let dir = tempfile::tempdir().unwrap();
    // Reachable by the postgres user when we are root: no relocation.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("pg");
    let (http, grpc) = (free_port(), free_port());
    let env = |command: &mut Command| {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("EMBEDDED_PG_DIR", &data)
            .env("AUTH_DEV_KEY_FILE", dir.path().join("dev.key"))
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("HTTP_PORT", http.to_string())
            .env("GRPC_PORT", grpc.to_string())
            .env("ROCKETS_PORT", "0")
            .env("SPACEX_SYNC_ENABLED", "false")
            .env("LOG_FORMAT", "json");
    };
    let mut serve = Command::new(env!("CARGO_BIN_EXE_spacet"));
    env(&mut serve);
    let mut service = serve
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while blocking_http_status(http, "/readiness") != Some(200) {
        assert!(Instant::now() < deadline, "the service never became ready");
        assert!(service.try_wait().unwrap().is_none(), "the service exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    let postmaster = || std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
    let before = postmaster();

    let mut migrate = Command::new(env!("CARGO_BIN_EXE_spacet"));
    env(&mut migrate);
    let output = migrate.arg("migrate").output().unwrap();
    let stderr = text(&output.stderr);

    let after = postmaster();
    let still_ready = blocking_http_status(http, "/readiness");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    let stopped = service.wait().unwrap();

    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert_eq!(
        before.lines().next(),
        after.lines().next(),
        "the same postmaster"
    );
    assert_eq!(still_ready, Some(200));
    assert_eq!(stopped.code(), Some(0));
}
