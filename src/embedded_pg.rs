//! An embedded PostgreSQL started from the system binaries, for the zero-setup
//! default and for the test harness. It has no TCP listener: a Unix socket in a
//! directory only its user can enter, and peer authentication mapped to the user
//! running SpaceT, so no other local user can connect.
//!
//! The postmaster is our child process and gets SIGKILL if we die (a parent-death
//! signal), so a crashed service leaves no server behind; a stale `postmaster.pid`
//! or a server still running from an older start is cleaned up at the next start.

use std::{
    fs, io,
    os::unix::{
        fs::{OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use sqlx::postgres::PgConnectOptions;

/// How long [`EmbeddedPostgres::start`] waits for the server to accept connections
/// (crash recovery of a large cluster can take a while).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running PostgreSQL server owned by this process.
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    pid: u32,
    exited: mpsc::Receiver<()>,
    stopped: std::sync::atomic::AtomicBool,
}

/// Why the embedded PostgreSQL could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and postgres on PATH and under /usr/lib/postgresql/*/bin): install PostgreSQL (apt-get install postgresql) or set PG_DSN to an existing server"
    )]
    BinariesNotFound,
    #[error("{step} failed: {detail}")]
    Failed { step: &'static str, detail: String },
}

fn failed(step: &'static str) -> impl Fn(io::Error) -> EmbeddedError {
    move |e| EmbeddedError::Failed {
        step,
        detail: e.to_string(),
    }
}

/// The directory holding `initdb` and `postgres`.
pub fn find_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
            .collect();
        versions.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        versions.pop()
    })
}

/// The `postgres` system user when we run as root (PostgreSQL refuses to run as root).
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the ids at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn command(bin: &Path, program: &str) -> Command {
    let mut cmd = Command::new(bin.join(program));
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").env("LC_ALL", "C");
    cmd
}

fn chown(path: &Path) -> Result<(), EmbeddedError> {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(failed("chown of the data directory"))?;
    }
    Ok(())
}

/// Where the cluster for `requested` lives. As root the server runs as the
/// `postgres` user, which cannot reach a directory under a 0700 home (root's, on
/// most systems). Then the cluster lives in [`SYSTEM_STATE_DIR`], one per requested
/// directory, and the user's directories are left as they are (neither created nor
/// re-permissioned). An ordinary user, or a requested directory the `postgres` user
/// can reach, keeps the requested directory.
fn placement(requested: &Path) -> Result<PathBuf, EmbeddedError> {
    let absolute =
        std::path::absolute(requested).map_err(failed("resolving the data directory"))?;
    let Some((uid, gid)) = run_as() else {
        return Ok(absolute);
    };
    if reachable_by(&absolute, uid, gid) {
        return Ok(absolute);
    }
    let relocated = relocated_dir(Path::new(SYSTEM_STATE_DIR), &absolute);
    tracing::info!(
        requested = %absolute.display(),
        data_dir = %relocated.display(),
        "the postgres user cannot reach the requested data directory (a 0700 parent); the embedded postgresql lives in the system state directory instead"
    );
    let parent = relocated.parent().expect("a directory under the state dir");
    fs::create_dir_all(parent).map_err(failed("creating the system state directory"))?;
    // The postgres user must traverse the parents, and only the parents: the data
    // directory itself is 0700 and its own.
    for dir in [Path::new(SYSTEM_STATE_DIR), parent] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(failed("chmod of the system state directory"))?;
    }
    Ok(relocated)
}

/// Where root's embedded clusters live when the requested directory is out of the
/// `postgres` user's reach.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/spacet";

/// `<state>/embedded/<name>-<hash>`: one cluster per requested directory, named so a
/// person can tell which is which. The hash (FNV-1a, 64 bits) is stable across
/// builds and toolchains, so the same launch directory finds its cluster again.
pub fn relocated_dir(state_dir: &Path, requested: &Path) -> PathBuf {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in requested.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The launch directory's name (`spacet` for `~/spacet/.spacet/postgres`).
    let name: String = requested
        .ancestors()
        .filter_map(|a| a.file_name())
        .map(|n| n.to_string_lossy())
        .find(|n| !n.starts_with('.') && n != "postgres")
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    state_dir.join("embedded").join(format!(
        "{}-{hash:016x}",
        if name.is_empty() { "cluster" } else { &name }
    ))
}

/// Whether a process with `uid`/`gid` can traverse every existing ancestor of
/// `path` (the permission bits; ACLs and supplementary groups are not read).
fn reachable_by(path: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors().skip(1).all(|dir| match fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.mode();
            if meta.uid() == uid {
                mode & 0o100 != 0
            } else if meta.gid() == gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        }
        // Not created yet: we create it, 0755 by the usual umask.
        Err(_) => true,
    })
}

/// The port in the socket's name. Fixed: the socket lives in a directory of its own.
const SOCKET_PORT: u16 = 5432;

/// Longest socket directory we use as it is: a Unix socket path holds at most 107
/// bytes, and `/.s.PGSQL.5432.lock` takes 19 of them.
const MAX_SOCKET_DIR_LEN: usize = 80;

/// The socket's directory: the data directory itself (0700, the server's user's),
/// or, when its path is too long for a socket, a private directory under /tmp named
/// after it.
fn socket_dir(data_dir: &Path) -> Result<PathBuf, EmbeddedError> {
    if data_dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
        return Ok(data_dir.to_path_buf());
    }
    let name = relocated_dir(Path::new("/"), data_dir);
    let dir = Path::new("/tmp").join(format!(
        "spacet-pg-{}",
        name.file_name().unwrap_or_default().to_string_lossy()
    ));
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Ours only if it is a real directory (not a planted symlink).
            let meta =
                fs::symlink_metadata(&dir).map_err(failed("checking the socket directory"))?;
            if !meta.is_dir() {
                return Err(EmbeddedError::Failed {
                    step: "creating the socket directory",
                    detail: format!("{} exists and is not a directory", dir.display()),
                });
            }
        }
        Err(e) => return Err(failed("creating the socket directory")(e)),
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(failed("chmod of the socket directory"))?;
    chown(&dir)?;
    Ok(dir)
}

/// Writes the access rules at every start (an older cluster initialised with
/// `trust` gets them too): Unix-socket connections only, by peer authentication,
/// mapped to the `postgres` role only for the user running SpaceT and for the
/// `postgres` system user. Any other local user is refused even if it reached the
/// socket.
fn write_access_rules(data_dir: &Path) -> Result<(), EmbeddedError> {
    let me = current_user().ok_or_else(|| EmbeddedError::Failed {
        step: "finding the current user",
        detail: "no passwd entry for the effective user id".into(),
    })?;
    let hba = "# Written by SpaceT at every start: local connections only, by peer\n\
               # authentication through the `spacet` map (pg_ident.conf).\n\
               local all all peer map=spacet\n";
    let ident = format!(
        "# Written by SpaceT at every start: who may connect as the postgres role.\n\
         spacet {me} postgres\n\
         spacet postgres postgres\n"
    );
    for (name, text) in [("pg_hba.conf", hba.to_string()), ("pg_ident.conf", ident)] {
        let path = data_dir.join(name);
        // Replace, never follow: the file may be a link planted by another user.
        let _ = fs::remove_file(&path);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(failed("writing the access rules"))?;
        chown(&path)?;
    }
    Ok(())
}

/// The effective user's name.
fn current_user() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the
    // name at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl EmbeddedPostgres {
    /// Initialises `data_dir` if needed and starts a server listening only on a Unix
    /// socket in a private directory, with peer authentication for the user running
    /// SpaceT. `fast` trades durability for speed (for throwaway test clusters).
    pub fn start(data_dir: &Path, fast: bool) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bin = find_binaries().ok_or(EmbeddedError::BinariesNotFound)?;
        let data_dir = &placement(data_dir)?;
        fs::create_dir_all(data_dir).map_err(failed("creating the data directory"))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(failed("resolving the data directory"))?;
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .map_err(failed("chmod of the data directory"))?;
        chown(&data_dir)?;

        if !data_dir.join("PG_VERSION").exists() {
            tracing::info!(data_dir = %data_dir.display(), "initialising embedded postgresql");
            let mut initdb = command(&bin, "initdb");
            initdb.arg("-D").arg(&data_dir).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]);
            if fast {
                initdb.arg("--no-sync");
            }
            let out = initdb.output().map_err(failed("running initdb"))?;
            if !out.status.success() {
                return Err(EmbeddedError::Failed {
                    step: "initdb",
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        stop_leftover(&bin, &data_dir);
        write_access_rules(&data_dir)?;
        let socket_dir = socket_dir(&data_dir)?;

        let port = SOCKET_PORT;
        let mut postgres = command(&bin, "postgres");
        postgres
            .arg("-D")
            .arg(&data_dir)
            .args(["-p", &port.to_string()])
            // No TCP listener: a Unix socket in a directory only the server's user
            // (and root) can enter, with peer authentication (see
            // `write_access_rules`). The server binds it itself: no port race.
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .args(["-c", "unix_socket_permissions=0700"])
            // The log files are created by the server's user, in the data directory.
            .args([
                "-c",
                "logging_collector=on",
                "-c",
                "log_directory=log",
                "-c",
                "log_filename=postgres.log",
            ])
            .args(["-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if fast {
            postgres.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        // SAFETY: prctl and setsid are async-signal-safe; the child gets SIGKILL when
        // the thread that spawned it ends, and that thread lives until the child exits.
        unsafe {
            postgres.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setsid();
                Ok(())
            });
        }

        // The spawning thread waits for the child, so the parent-death signal fires
        // only if the whole process dies.
        let (spawned_tx, spawned_rx) = mpsc::channel();
        let (exited_tx, exited) = mpsc::channel();
        std::thread::Builder::new()
            .name("embedded-postgres".into())
            .spawn(move || match postgres.spawn() {
                Ok(mut child) => {
                    let _ = spawned_tx.send(Ok(child.id()));
                    // What the server says before its log collector starts (a
                    // failure to start, typically) reaches our log.
                    if let Some(stderr) = child.stderr.take() {
                        let _ = std::thread::Builder::new()
                            .name("embedded-postgres-log".into())
                            .spawn(move || {
                                use std::io::BufRead;
                                for line in io::BufReader::new(stderr).lines().map_while(Result::ok)
                                {
                                    tracing::info!(target: "postgres", "{line}");
                                }
                            });
                    }
                    let _ = child.wait();
                    let _ = exited_tx.send(());
                }
                Err(e) => {
                    let _ = spawned_tx.send(Err(e));
                }
            })
            .map_err(failed("spawning the postgres thread"))?;
        let pid = spawned_rx
            .recv()
            .map_err(|_| EmbeddedError::Failed {
                step: "starting postgres",
                detail: "the spawning thread died".into(),
            })?
            .map_err(failed("starting postgres"))?;
        tracing::info!(
            data_dir = %data_dir.display(),
            socket_dir = %socket_dir.display(),
            pid,
            log = %data_dir.join("log/postgres.log").display(),
            "embedded postgresql started (set PG_DSN to use another server)"
        );
        let server = EmbeddedPostgres {
            socket_dir,
            data_dir,
            port,
            pid,
            exited,
            stopped: false.into(),
        };
        server.wait_ready(READY_WITHIN)?;
        Ok(server)
    }

    /// Returns once the server accepts connections, as `pg_ctl -w` tells: the
    /// status line of its `postmaster.pid` (line 8) says `ready`, in the file our
    /// child wrote (line 1 is its pid; a stale file from a crash is not ours).
    /// Callers can connect at once (the benchmarks did, and raced the server).
    fn wait_ready(&self, within: Duration) -> Result<(), EmbeddedError> {
        let deadline = std::time::Instant::now() + within;
        let pid_file = self.data_dir.join("postmaster.pid");
        let log = self.data_dir.join("log/postgres.log");
        loop {
            if let Ok(text) = fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = text.lines().collect();
                let ours =
                    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(self.pid);
                if ours && lines.get(7).map(|l| l.trim()) == Some("ready") {
                    return Ok(());
                }
            }
            match self.exited.recv_timeout(Duration::from_millis(20)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.stopped
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    return Err(EmbeddedError::Failed {
                        step: "starting postgres",
                        detail: format!("the server exited during start-up; see {}", log.display()),
                    });
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(EmbeddedError::Failed {
                    step: "starting postgres",
                    detail: format!(
                        "not accepting connections within {} s; see {}",
                        within.as_secs(),
                        log.display()
                    ),
                });
            }
        }
    }

    /// The data directory in use (see [`placement`] for where that is as root).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The port number in the socket's name (`.s.PGSQL.<port>`); there is no TCP
    /// listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket (for `psql -h`, `pgbench -h`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Connection options for the `postgres` database as the `postgres` superuser.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(self.port)
            .username("postgres")
            .database("postgres")
    }

    /// Fast shutdown: waits up to 10 s, then kills.
    pub fn stop(&self) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // SAFETY: kill with a pid we spawned and have not yet reaped.
        unsafe { libc::kill(self.pid as i32, libc::SIGINT) };
        if self.exited.recv_timeout(Duration::from_secs(10)).is_err() {
            tracing::warn!(
                pid = self.pid,
                "embedded postgresql did not stop in 10s, killing it"
            );
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            let _ = self.exited.recv_timeout(Duration::from_secs(5));
        }
        tracing::info!(data_dir = %self.data_dir.display(), "embedded postgresql stopped");
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The embedded cluster of a one-shot command (`spacet migrate`, `spacet sync`).
pub enum EmbeddedCluster {
    /// A server another process runs in the data directory (the running service's):
    /// used as it is, never stopped or restarted.
    Running(Box<PgConnectOptions>),
    /// No server was running: started for the command, stopped when dropped.
    Started(EmbeddedPostgres),
}

impl EmbeddedCluster {
    /// Connects to the server running in `data_dir` (where [`EmbeddedPostgres::start`]
    /// puts it), or starts one when none runs.
    pub fn open(data_dir: &Path) -> Result<EmbeddedCluster, EmbeddedError> {
        let placed = placement(data_dir)?;
        let placed = placed.canonicalize().unwrap_or(placed);
        let deadline = std::time::Instant::now() + READY_WITHIN;
        while let Some(server) = live_postmaster(&placed) {
            if server.ready {
                tracing::info!(
                    data_dir = %placed.display(),
                    pid = server.pid,
                    "using the embedded postgresql already running in the data directory (left running)"
                );
                return Ok(EmbeddedCluster::Running(Box::new(
                    PgConnectOptions::new_without_pgpass()
                        .socket(&server.socket_dir)
                        .port(server.port)
                        .username("postgres")
                        .database("postgres"),
                )));
            }
            if std::time::Instant::now() > deadline {
                return Err(EmbeddedError::Failed {
                    step: "waiting for the running embedded postgresql",
                    detail: format!(
                        "pid {} in {} was not ready within {} s",
                        server.pid,
                        placed.display(),
                        READY_WITHIN.as_secs()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(EmbeddedCluster::Started(EmbeddedPostgres::start(
            data_dir, false,
        )?))
    }

    /// Connection options for the `postgres` database as the `postgres` superuser.
    pub fn connect_options(&self) -> PgConnectOptions {
        match self {
            EmbeddedCluster::Running(options) => (**options).clone(),
            EmbeddedCluster::Started(server) => server.connect_options(),
        }
    }
}

/// A live server's `postmaster.pid`.
struct Postmaster {
    pid: i32,
    port: u16,
    socket_dir: PathBuf,
    ready: bool,
}

/// The server running in `data_dir`, read from its `postmaster.pid`: `None` when
/// there is no such file or the pid it names is not a live postgres.
fn live_postmaster(data_dir: &Path) -> Option<Postmaster> {
    let contents = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = contents.lines().map(str::trim).collect();
    let pid: i32 = lines.first()?.parse().ok().filter(|&pid| pid > 0)?;
    let alive_postgres = fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .map(|cmd| cmd.contains("postgres"))
        .unwrap_or(false);
    alive_postgres.then(|| Postmaster {
        pid,
        port: lines
            .get(3)
            .and_then(|l| l.parse().ok())
            .unwrap_or(SOCKET_PORT),
        socket_dir: lines
            .get(4)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.to_path_buf()),
        ready: lines.get(7) == Some(&"ready"),
    })
}

/// Stops a server left running in `data_dir` by an earlier start, and removes a
/// stale pid file.
fn stop_leftover(bin: &Path, data_dir: &Path) {
    let pid_file = data_dir.join("postmaster.pid");
    if !pid_file.exists() {
        return;
    }
    if let Some(Postmaster { pid, .. }) = live_postmaster(data_dir) {
        tracing::warn!(
            pid,
            "a postgresql from an earlier run is still running in the data directory; stopping it"
        );
        let stopped = command(bin, "pg_ctl")
            .arg("-D")
            .arg(data_dir)
            .args(["stop", "-m", "fast", "-w", "-t", "20"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            // SAFETY: plain kill of the pid the pid file names, which is a postgres.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    if pid_file.exists() {
        tracing::info!("removing a stale postmaster.pid");
        let _ = fs::remove_file(&pid_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_directory_always_maps_to_the_same_cluster() {
        let state = Path::new("/var/lib/spacet");
        let a = relocated_dir(state, Path::new("/root/spacet/.spacet/postgres"));
        assert_eq!(
            a,
            relocated_dir(state, Path::new("/root/spacet/.spacet/postgres"))
        );
        // Pinned: a new toolchain or build must find the same cluster again.
        assert_eq!(
            a,
            Path::new("/var/lib/spacet/embedded/spacet-").with_file_name(format!(
                "spacet-{:016x}",
                {
                    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                    for b in b"/root/spacet/.spacet/postgres" {
                        h ^= u64::from(*b);
                        h = h.wrapping_mul(0x0100_0000_01b3);
                    }
                    h
                }
            ))
        );
        let b = relocated_dir(state, Path::new("/root/other/.spacet/postgres"));
        assert_ne!(a, b);
        assert!(b
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("other-"));
    }

    #[test]
    fn a_0700_parent_is_out_of_reach_of_another_user() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("home");
        fs::create_dir(&inner).unwrap();
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o700)).unwrap();
        let me = unsafe { libc::geteuid() };
        let other = me.wrapping_add(4242);
        let target = inner.join("spacet/.spacet/postgres");
        assert!(reachable_by(&target, me, u32::MAX));
        assert!(!reachable_by(&target, other, u32::MAX));
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o711)).unwrap();
        assert!(reachable_by(&target, other, u32::MAX));
    }
}
