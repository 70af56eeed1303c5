//! Assembly, start-up, supervision and shutdown. The only module that builds pools,
//! clients, the fixed list of liveness checks and the workers, and hands each
//! feature exactly what it uses.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use futures::FutureExt;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, ApiState},
    clock::Clock,
    config::{Database, Settings},
    embedded_pg::{EmbeddedCluster, EmbeddedPostgres},
    health::{DatabaseCheck, Health, HealthCheck},
    outbox::{Outbox, OutboxDeps},
    rockets::Rockets,
    spacex::{self, SyncDeps},
};

/// How long `pool.close()` may wait for connections in use at the end of shutdown.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections of the probes' own pool: `/readiness` and the liveness check.
const PROBE_POOL_MAX: u32 = 2;

/// How long a probe waits for one of its connections (a probe answers within
/// [`crate::health::CHECK_TIMEOUT`] anyway).
const PROBE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

type Task = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A built application: listeners bound, database configured, nothing served yet.
pub struct App {
    http: TcpListener,
    grpc: TcpListener,
    /// The challenge's ingestion listener (`ROCKETS_PORT`), when it is on.
    rockets_http: Option<TcpListener>,
    /// `/metrics` on its own listener (`METRICS_PORT`), when set.
    metrics_http: Option<TcpListener>,
    /// Verifies bearer tokens.
    auth: Arc<crate::auth::Authenticator>,
    settings: Arc<Settings>,
    pool: PgPool,
    /// The probes' own small pool: requests holding every connection of `pool`
    /// never delay `/readiness` or the liveness check.
    probes: PgPool,
    clock: Clock,
    rockets: Rockets,
    embedded: Option<EmbeddedPostgres>,
    shutdown: CancellationToken,
    extra_tasks: Vec<(&'static str, Task)>,
}

/// Binds `port` on `address`; an error names the setting.
async fn bind(
    address: IpAddr,
    port: u16,
    what: &str,
    setting: &str,
) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(address, port))
        .await
        .with_context(|| format!("binding {what} {port} ({setting})"))
}

impl App {
    /// Binds the listeners (port 0 picks a free port) and starts the embedded
    /// PostgreSQL when no `PG_DSN` is set. The database is connected lazily: the
    /// HTTP server answers probes while it comes up.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<App> {
        let address = settings.bind_address;
        let http = bind(address, settings.http_port, "the HTTP port", "HTTP_PORT").await?;
        let grpc = bind(address, settings.grpc_port, "the gRPC port", "GRPC_PORT").await?;
        let rockets_http = match settings.rockets_port {
            Some(port) => Some(bind(address, port, "the rockets port", "ROCKETS_PORT").await?),
            None => None,
        };
        let metrics_http = match settings.metrics_port {
            Some(port) => Some(bind(address, port, "the metrics port", "METRICS_PORT").await?),
            None => None,
        };
        let auth = crate::auth::Authenticator::start(&settings.auth)
            .await
            .context("setting up authentication")?;

        let (options, embedded) = match &settings.database {
            Database::External(options) => ((**options).clone(), None),
            Database::Embedded(dir) => {
                let dir = dir.clone();
                let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, false))
                    .await??;
                (pg.connect_options(), Some(pg))
            }
        };
        let options = session_options(&settings, options);
        let pool = PgPoolOptions::new()
            .max_connections(settings.pg_pool_max)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.clone());
        let probes = PgPoolOptions::new()
            .max_connections(PROBE_POOL_MAX)
            .acquire_timeout(PROBE_ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.application_name(&format!("{} probes", settings.app_name)));
        Ok(App {
            http,
            grpc,
            rockets_http,
            metrics_http,
            auth,
            rockets: Rockets::new(&pool, clock.clone(), settings.rockets.clone()),
            settings: Arc::new(settings),
            pool,
            probes,
            clock,
            embedded,
            shutdown: CancellationToken::new(),
            extra_tasks: Vec::new(),
        })
    }

    /// The bound HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http.local_addr().expect("bound listener").port()
    }

    /// The bound gRPC port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc.local_addr().expect("bound listener").port()
    }

    /// The bound rockets port (`ROCKETS_PORT`); `None` when it is turned off.
    pub fn rockets_port(&self) -> Option<u16> {
        self.rockets_http
            .as_ref()
            .map(|listener| listener.local_addr().expect("bound listener").port())
    }

    /// The application's database pool (tests and tools read through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The clock the business rules read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// What a SpaceX sync of this application runs with (tests and tools step it).
    pub fn sync_deps(&self) -> SyncDeps {
        SyncDeps {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            settings: self.settings.spacex.clone(),
            shutdown: self.shutdown.clone(),
            forced: Default::default(),
        }
    }

    /// Token that starts the graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs `task` under the same supervision as the servers and workers: should it
    /// end before shutdown, with an error or not, the application stops and
    /// [`App::run_until_stopped`] returns an error naming it.
    pub fn supervise(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.extra_tasks.push((name, Box::pin(task)));
    }

    /// Serves until the shutdown token fires or a supervised task ends, then stops
    /// in order: readiness 503, drain delay, servers stop accepting and in-flight
    /// requests finish, workers finish their unit of work — all within
    /// `SHUTDOWN_GRACE_PERIOD`, after which what is left is aborted — then the pool
    /// closes (bounded) and an embedded PostgreSQL stops. Returns an error when a
    /// task ended early or start-up failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let (http_port, grpc_port) = (self.http_port(), self.grpc_port());
        let rockets_port = self.rockets_port();
        let sync = self.sync_deps();
        let App {
            http,
            grpc,
            rockets_http,
            metrics_http,
            auth,
            settings,
            pool,
            probes,
            clock,
            rockets,
            embedded,
            shutdown,
            extra_tasks,
        } = self;

        let outbox = Outbox::new(OutboxDeps {
            pool: pool.clone(),
            settings: settings.outbox.clone(),
            pubsub: settings.pubsub.clone(),
            origin: settings.app_name.clone(),
        });
        let mut checks: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(DatabaseCheck(probes.clone()))];
        if settings.spacex.sync_enabled {
            checks.push(Arc::new(spacex::SpaceXCheck::new(&sync)));
        }
        checks.extend(outbox.checks());
        let health = Health::new(probes.clone(), checks);
        let state = ApiState {
            pool: pool.clone(),
            clock,
            settings: settings.clone(),
            rockets: rockets.clone(),
            sync: sync.clone(),
            health: health.clone(),
            shutdown: shutdown.clone(),
            limits: Arc::new(crate::auth::RateLimits::new(&settings.auth)),
            auth,
        };

        let mut tasks = Supervisor::new(shutdown.clone());
        // The rocket writer serves the requests still draining at shutdown; it
        // stops after the servers (see below), so it is supervised apart.
        let (mut rocket_tasks, rockets_stop) =
            (Supervisor::new(shutdown.clone()), CancellationToken::new());
        let servers_stop = CancellationToken::new();
        raise_open_files_limit();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let http_servers = [
            Some(("http server", http, api::http_router(state.clone()))),
            metrics_http.map(|l| ("metrics http server", l, api::metrics_router(state.clone()))),
            rockets_http.map(|l| ("rockets http server", l, api::rockets_router(state.clone()))),
        ];
        for (name, listener, router) in http_servers.into_iter().flatten() {
            let stop = servers_stop.clone();
            let limits = settings.server_limits;
            tasks.spawn(name, async move {
                api::serve::serve_http(listener, router, limits, stop)
                    .await
                    .with_context(|| format!("the {name} failed"))
            });
        }
        {
            let routes = api::grpc_server(state.clone(), health_service)?;
            let stop = servers_stop.clone();
            tasks.spawn("grpc server", async move {
                routes
                    .serve_with_incoming_shutdown(
                        api::serve::grpc_incoming(grpc, api::GRPC_TCP_KEEPALIVE),
                        stop.cancelled_owned(),
                    )
                    .await
                    .context("the gRPC server failed")
            });
        }
        for (name, task) in extra_tasks {
            tasks.spawn(name, task);
        }
        tracing::info!(http_port, grpc_port, ?rockets_port, version = %settings.app_version, "spacet listening");

        // Start-up: the database, migrations, then the workers. A task that dies
        // meanwhile (a server) ends start-up too.
        let started = tokio::select! {
            result = wait_and_migrate(&pool, settings.pg_connect_timeout) => result,
            failure = tasks.first_failure() => Err(failure),
            _ = shutdown.cancelled() => Ok(()),
        };
        let mut outcome = match started {
            Ok(()) if !shutdown.is_cancelled() => {
                health.set_ready(true);
                for handle in rockets.start(rockets_stop.clone()) {
                    rocket_tasks.watch("rocket writer", handle);
                }
                for (name, handle) in outbox.start(shutdown.clone()) {
                    tasks.watch(name, handle);
                }
                if let Some(handle) = spacex::start(sync).context("starting the SpaceX sync")? {
                    tasks.watch("spacex sync", handle);
                }
                health_reporter
                    .set_serving::<crate::proto::space_t_service_server::SpaceTServiceServer<
                        api::grpc::booking::BookingApi,
                    >>()
                    .await;
                health_reporter
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
                tracing::info!("spacet ready");
                // Serve until shutdown, or until a task ends on its own.
                tokio::select! {
                    _ = shutdown.cancelled() => Ok(()),
                    failure = tasks.first_failure() => Err(failure),
                    failure = rocket_tasks.first_failure() => Err(failure),
                }
            }
            Ok(()) => Ok(()),
            Err(error) => Err(error),
        };
        if outcome.is_err() {
            shutdown.cancel();
        }

        tracing::info!(grace_period = ?settings.shutdown_grace_period, "shutting down");
        health.set_ready(false);
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        health_reporter
            .set_not_serving::<crate::proto::space_t_service_server::SpaceTServiceServer<
                api::grpc::booking::BookingApi,
            >>()
            .await;
        if let (Some(delay), Ok(())) = (settings.shutdown_drain_delay, &outcome) {
            // Lets load balancers see readiness fail before the listeners close.
            tokio::time::sleep(delay).await;
        }
        servers_stop.cancel();
        let grace_ends = tokio::time::Instant::now() + settings.shutdown_grace_period;
        if let Err(error) = tasks.drain(settings.shutdown_grace_period).await {
            outcome = outcome.and(Err(error));
        }
        // The servers have answered their last request: now the writer may stop.
        rockets_stop.cancel();
        let left = grace_ends.saturating_duration_since(tokio::time::Instant::now());
        if let Err(error) = rocket_tasks.drain(left).await {
            outcome = outcome.and(Err(error));
        }
        // The probes' connections are idle once the servers stopped.
        let _ = tokio::time::timeout(POOL_CLOSE_TIMEOUT, probes.close()).await;
        if tokio::time::timeout(POOL_CLOSE_TIMEOUT, pool.close())
            .await
            .is_err()
        {
            tracing::warn!(
                "database connections still in use after {POOL_CLOSE_TIMEOUT:?}; leaving them"
            );
        }
        stop_embedded(embedded).await;
        match &outcome {
            Ok(()) => tracing::info!("spacet stopped"),
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "spacet stopped after a failure"
            ),
        }
        outcome
    }
}

/// The servers and workers, each with its name: the first to end before shutdown
/// is the application's failure.
struct Supervisor {
    set: JoinSet<(&'static str, anyhow::Result<()>)>,
    shutdown: CancellationToken,
}

impl Supervisor {
    fn new(shutdown: CancellationToken) -> Supervisor {
        Supervisor {
            set: JoinSet::new(),
            shutdown,
        }
    }

    fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.set.spawn(async move {
            match AssertUnwindSafe(task).catch_unwind().await {
                Ok(result) => (name, result),
                Err(_) => (name, Err(anyhow::anyhow!("{name} panicked"))),
            }
        });
    }

    /// Supervises a task a feature spawned itself; aborting the supervisor's side
    /// aborts the task too.
    fn watch(&mut self, name: &'static str, handle: tokio::task::JoinHandle<()>) {
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut guard = AbortOnDrop(handle);
        self.spawn(name, async move {
            (&mut guard.0)
                .await
                .map_err(|e| anyhow::anyhow!("{name} panicked: {e}"))
        });
    }

    /// Waits for the first task to end and describes it; pending while all run.
    async fn first_failure(&mut self) -> anyhow::Error {
        loop {
            match self.set.join_next().await {
                None => std::future::pending::<()>().await,
                Some(joined) => {
                    let error = describe(joined);
                    if self.shutdown.is_cancelled() {
                        // Ending at shutdown is what tasks are asked to do.
                        continue;
                    }
                    tracing::error!(
                        error = format!("{error:#}"),
                        "a task ended before shutdown; stopping"
                    );
                    return error;
                }
            }
        }
    }

    /// After shutdown began: waits for every task within `grace`, then aborts the
    /// rest. Errors of tasks that failed on the way out are reported.
    async fn drain(&mut self, grace: Duration) -> anyhow::Result<()> {
        let mut first: Option<anyhow::Error> = None;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, self.set.join_next()).await {
                Ok(None) => break,
                Ok(Some(joined)) => {
                    let name = joined.as_ref().map(|(n, _)| *n).unwrap_or("a task");
                    if let Err(error) = joined.map_err(anyhow::Error::from).and_then(|(_, r)| r) {
                        tracing::error!(
                            task = name,
                            error = format!("{error:#}"),
                            "task failed during shutdown"
                        );
                        first.get_or_insert(error);
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        left = self.set.len(),
                        "tasks did not finish within the grace period; aborting them"
                    );
                    self.set.shutdown().await;
                    break;
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn describe(
    joined: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Error {
    match joined {
        Ok((name, Ok(()))) => anyhow::anyhow!("{name} stopped before shutdown"),
        Ok((name, Err(error))) => error.context(format!("{name} failed")),
        Err(error) => anyhow::anyhow!("a task panicked or was cancelled: {error}"),
    }
}

/// Raises the soft limit on open files to the hard limit: every connection is a
/// file descriptor, and the usual soft default (1024) is far below
/// `HTTP_MAX_CONNECTIONS`. Logs the old and new limits.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "reading RLIMIT_NOFILE failed");
        return;
    }
    let old = limit.rlim_cur;
    if old >= limit.rlim_max {
        tracing::info!(soft = old, hard = limit.rlim_max, "open files limit");
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), soft = old, "raising RLIMIT_NOFILE failed");
        return;
    }
    tracing::info!(
        old_soft = old,
        new_soft = limit.rlim_cur,
        hard = limit.rlim_max,
        "open files limit raised"
    );
}

/// Every connection of every pool inherits these: the outbox relay's pool and the
/// rocket writer derive theirs from `pool.connect_options()` (sqlx's `options()`
/// appends, so their own entries add to these).
fn session_options(settings: &Settings, options: PgConnectOptions) -> PgConnectOptions {
    crate::db::with_session_limits(
        options.application_name(&settings.app_name),
        &settings.pg_session_limits,
    )
}

async fn stop_embedded(embedded: Option<EmbeddedPostgres>) {
    if let Some(pg) = embedded {
        let _ = tokio::task::spawn_blocking(move || drop(pg)).await;
    }
}

/// Waits for the database and applies the migrations.
async fn wait_and_migrate(pool: &PgPool, wait_at_most: Duration) -> anyhow::Result<()> {
    wait_for_database(pool, wait_at_most).await?;
    crate::db::migrate(pool)
        .await
        .context("applying database migrations")
}

/// Polls the database with exponential backoff and a log line per attempt.
pub(crate) async fn wait_for_database(pool: &PgPool, wait_at_most: Duration) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        match sqlx::query_scalar!("SELECT 1 AS one").fetch_one(pool).await {
            Ok(_) => return Ok(()),
            Err(error) if started.elapsed() + delay < wait_at_most => {
                tracing::warn!(attempt, %error, retry_in_ms = delay.as_millis() as u64, "database not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "the database did not answer within {wait_at_most:?} (PG_CONNECT_TIMEOUT)"
                )))
            }
        }
    }
}

/// The database of a one-shot command: no listener is bound and no authenticator
/// started, so it runs beside a service on the same ports. With the embedded
/// database it uses the server the running service started (and leaves it
/// running), or starts one for itself and stops it afterwards.
struct CommandDatabase {
    pool: PgPool,
    embedded: Option<EmbeddedCluster>,
}

impl CommandDatabase {
    async fn open(settings: &Settings) -> anyhow::Result<CommandDatabase> {
        let (options, embedded) = match &settings.database {
            Database::External(options) => ((**options).clone(), None),
            Database::Embedded(dir) => {
                let dir = dir.clone();
                let cluster =
                    tokio::task::spawn_blocking(move || EmbeddedCluster::open(&dir)).await??;
                (cluster.connect_options(), Some(cluster))
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(session_options(settings, options));
        wait_and_migrate(&pool, settings.pg_connect_timeout).await?;
        Ok(CommandDatabase { pool, embedded })
    }

    async fn close(self) {
        self.pool.close().await;
        if let Some(EmbeddedCluster::Started(pg)) = self.embedded {
            stop_embedded(Some(pg)).await;
        }
    }
}

/// `spacet migrate`: applies the migrations and stops.
pub async fn migrate_only(settings: Settings) -> anyhow::Result<()> {
    let db = CommandDatabase::open(&settings).await?;
    tracing::info!("migrations applied");
    db.close().await;
    Ok(())
}

/// How `spacet sync` ended, short of a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Applied, or nothing to apply.
    Applied,
    /// The circuit breaker held it (the reason): `--confirm` applies it.
    Held(String),
    /// Another instance was applying a sync at that moment: try again.
    Busy,
}

/// `spacet sync [--confirm]`: one SpaceX sync, its report as JSON on stdout, then
/// stop. `--confirm` applies a sync the circuit breaker would hold.
pub async fn sync_once(settings: Settings, confirm: bool) -> anyhow::Result<SyncOutcome> {
    let db = CommandDatabase::open(&settings).await?;
    let deps = SyncDeps {
        pool: db.pool.clone(),
        clock: Clock::system(),
        settings: settings.spacex.clone(),
        shutdown: CancellationToken::new(),
        forced: Default::default(),
    };
    let result = async {
        let report = if confirm {
            spacex::sync_confirmed(&deps).await?
        } else {
            spacex::sync_now(&deps).await?
        };
        println!(
            "{}",
            serde_json::to_string(&crate::proto::SyncReport::from(&report))?
        );
        anyhow::Ok(match (report.skipped, report.held_reason) {
            (_, Some(reason)) => SyncOutcome::Held(reason),
            (Some(spacex::SkipReason::Locked), None) => SyncOutcome::Busy,
            _ => SyncOutcome::Applied,
        })
    }
    .await;
    db.close().await;
    result
}
