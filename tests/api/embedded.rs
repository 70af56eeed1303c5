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
        .env("ROCKETS_PORT", "0")
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

#[tokio::test]
async fn no_other_local_user_can_connect_to_the_embedded_cluster() {
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pg = tokio::task::spawn_blocking(move || {
        spacet::embedded_pg::EmbeddedPostgres::start(&data, true).unwrap()
    })
    .await
    .unwrap();
    // We (the user running SpaceT) connect, over the Unix socket.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match sqlx::PgConnection::connect_with(&pg.connect_options()).await {
            Ok(conn) => break conn,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the owner cannot connect: {e}"),
        }
    };
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(listen, "", "no TCP listener");
    let _ = conn.close().await;

    // The socket's directory is private to the server's user.
    let mode = std::fs::metadata(pg.socket_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);

    if is_root() {
        // Another local user: cannot reach the socket, and would be refused by the
        // peer map if it could; there is no TCP port to try instead.
        for args in [
            vec!["-h".to_string(), pg.socket_dir().display().to_string()],
            vec!["-h".into(), "127.0.0.1".into()],
        ] {
            let out = Command::new("runuser")
                .args(["-u", "nobody", "--", "psql", "-w", "-U", "postgres", "-p"])
                .arg(pg.port().to_string())
                .args(&args)
                .args(["-d", "postgres", "-c", "SELECT 1"])
                .output()
                .unwrap();
            assert!(
                !out.status.success(),
                "nobody connected with {args:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap();
}
