//! The README's run command as a new user runs it: the binary with no
//! configuration, started from a 0700 directory (root's home is one).

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{blocking_http_status, free_port};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_run_command_works_from_a_0700_directory() {
    // Like `git clone … ~/spacet && cd ~/spacet` under a 0700 home.
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let launch = home.path().join("spacet");
    std::fs::create_dir(&launch).unwrap();
    let (http, grpc) = (free_port(), free_port());
    let mut service = Command::new(env!("CARGO_BIN_EXE_spacet"))
        .current_dir(&launch)
        .env("HTTP_PORT", http.to_string())
        .env("GRPC_PORT", grpc.to_string())
        .env("SPACEX_SYNC_ENABLED", "false")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .env_remove("PG_DSN")
        .env_remove("EMBEDDED_PG_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = service.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut up = false;
    while Instant::now() < deadline {
        if blocking_http_status(http, "/readiness") == Some(200) {
            up = true;
            break;
        }
        if service.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    let status = service.wait().unwrap();
    let lines = lines.join().unwrap();
    let started = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "embedded postgresql started (set PG_DSN to use another server)");
    let data_dir = started
        .as_ref()
        .and_then(|l| l["data_dir"].as_str())
        .map(PathBuf::from);
    // The relocated cluster is this test's to remove, whatever happened.
    if is_root() {
        if let Some(dir) = &data_dir {
            if dir.starts_with(spacet::embedded_pg::SYSTEM_STATE_DIR) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    assert!(up, "not ready within 90 s; log:\n{}", lines.join("\n"));
    assert_eq!(status.code(), Some(0), "log:\n{}", lines.join("\n"));
    let data_dir = data_dir.expect("the log says where the cluster lives");

    // The user's directory keeps its permissions.
    let mode = std::fs::metadata(home.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    if is_root() {
        // The postgres user cannot enter the 0700 home: the cluster lives in the
        // system state directory, one per launch directory, and the log says so.
        let expected = spacet::embedded_pg::relocated_dir(
            std::path::Path::new(spacet::embedded_pg::SYSTEM_STATE_DIR),
            &std::path::absolute(launch.join(".spacet/postgres")).unwrap(),
        );
        assert_eq!(data_dir, expected);
        assert!(!launch.join(".spacet/postgres").exists());
    } else {
        assert_eq!(
            data_dir,
            launch.join(".spacet/postgres").canonicalize().unwrap()
        );
    }
}
