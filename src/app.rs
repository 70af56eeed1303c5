//! Start-up and shutdown: binds both listeners, brings up the database, serves
//! HTTP and gRPC, runs the background workers, and stops it all in order.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use anyhow::Context;
use sqlx::{postgres::PgPoolOptions, PgPool};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    clock::Clock,
    config::{Database, Settings},
    embedded_pg::EmbeddedPostgres,
    health::{DatabaseCheck, HealthCheck},
};

/// What every handler and worker shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub clock: Clock,
    ready: Arc<AtomicBool>,
    checks: Arc<RwLock<Vec<Arc<dyn HealthCheck>>>>,
    /// Fired once when shutdown begins.
    pub shutdown: CancellationToken,
    /// Rocket telemetry: the writer's queue and the change feed.
    pub rockets: crate::rockets::Rockets,
}

impl AppState {
    /// True once migrations are applied, false again from the start of shutdown.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Adds a dependency check to `/liveness`.
    pub fn register_check(&self, check: Arc<dyn HealthCheck>) {
        self.checks.write().unwrap().push(check);
    }

    /// The registered checks.
    pub fn checks(&self) -> Vec<Arc<dyn HealthCheck>> {
        self.checks.read().unwrap().clone()
    }
}

/// A built application: listeners bound, database configured, nothing served yet.
pub struct App {
    http: TcpListener,
    grpc: TcpListener,
    state: AppState,
    embedded: Option<EmbeddedPostgres>,
}

impl App {
    /// Binds the listeners (port 0 picks a free port) and starts the embedded
    /// PostgreSQL when no `PG_DSN` is set. The database is connected lazily: the
    /// HTTP server answers probes while it comes up.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<App> {
        let http = TcpListener::bind(SocketAddr::new(settings.bind_address, settings.http_port))
            .await
            .with_context(|| format!("binding the HTTP port {} (HTTP_PORT)", settings.http_port))?;
        let grpc = TcpListener::bind(SocketAddr::new(settings.bind_address, settings.grpc_port))
            .await
            .with_context(|| format!("binding the gRPC port {} (GRPC_PORT)", settings.grpc_port))?;

        let (options, embedded) = match &settings.database {
            Database::External(options) => ((**options).clone(), None),
            Database::Embedded(dir) => {
                let dir = dir.clone();
                let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, false))
                    .await??;
                (pg.connect_options(), Some(pg))
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(settings.pg_pool_max)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.application_name(&settings.app_name));
        let state = AppState {
            pool: pool.clone(),
            settings: Arc::new(settings),
            rockets: crate::rockets::Rockets::new(&pool, clock.clone()),
            clock,
            ready: Arc::new(AtomicBool::new(false)),
            checks: Arc::new(RwLock::new(vec![Arc::new(DatabaseCheck(pool))])),
            shutdown: CancellationToken::new(),
        };
        Ok(App {
            http,
            grpc,
            state,
            embedded,
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

    /// The shared state (tests use its pool and clock).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Token that starts the graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Serves until the shutdown token fires, then stops in order: readiness 503,
    /// servers drain within the grace period, workers stop, pool closes, embedded
    /// PostgreSQL stops.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let (http_port, grpc_port) = (self.http_port(), self.grpc_port());
        let App {
            http,
            grpc,
            state,
            embedded,
        } = self;
        let settings = state.settings.clone();
        let servers_stop = CancellationToken::new();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;

        let http_task = tokio::spawn({
            let router = crate::api::http_router(state.clone());
            let stop = servers_stop.clone();
            async move {
                axum::serve(http, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
        });
        let grpc_task = tokio::spawn({
            let stop = servers_stop.clone();
            let routes = crate::api::grpc_server(state.clone(), health_service)?;
            async move {
                routes
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(grpc),
                        stop.cancelled_owned(),
                    )
                    .await
            }
        });
        tracing::info!(http_port, grpc_port, "spacet listening");

        let started = tokio::select! {
            result = start(&state) => result,
            _ = state.shutdown.cancelled() => Ok(Vec::new()),
        };
        let workers = match started {
            Ok(workers) => {
                if !state.shutdown.is_cancelled() {
                    health_reporter
                        .set_serving::<crate::proto::space_t_service_server::SpaceTServiceServer<
                            crate::api::grpc::BookingApi,
                        >>()
                        .await;
                    health_reporter
                        .set_service_status("", tonic_health::ServingStatus::Serving)
                        .await;
                    tracing::info!("spacet ready");
                }
                workers
            }
            Err(error) => {
                state.shutdown.cancel();
                servers_stop.cancel();
                let _ = http_task.await;
                let _ = grpc_task.await;
                state.pool.close().await;
                stop_embedded(embedded).await;
                return Err(error);
            }
        };

        state.shutdown.cancelled().await;
        tracing::info!(grace_period = ?settings.shutdown_grace_period, "shutting down");
        state.ready.store(false, Ordering::SeqCst);
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        health_reporter.set_not_serving::<crate::proto::space_t_service_server::SpaceTServiceServer<crate::api::grpc::BookingApi>>().await;
        if let Some(delay) = settings.shutdown_drain_delay {
            // Lets load balancers see readiness fail before the listeners close.
            tokio::time::sleep(delay).await;
        }
        servers_stop.cancel();
        let drained = tokio::time::timeout(settings.shutdown_grace_period, async {
            let _ = http_task.await;
            let _ = grpc_task.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        let _ = tokio::time::timeout(
            settings.shutdown_grace_period,
            futures::future::join_all(workers),
        )
        .await;
        state.pool.close().await;
        stop_embedded(embedded).await;
        tracing::info!("spacet stopped");
        Ok(())
    }
}

async fn stop_embedded(embedded: Option<EmbeddedPostgres>) {
    if let Some(pg) = embedded {
        let _ = tokio::task::spawn_blocking(move || drop(pg)).await;
    }
}

/// Waits for the database, applies migrations, marks the app ready and starts the
/// background workers.
async fn start(state: &AppState) -> anyhow::Result<Vec<JoinHandle<()>>> {
    wait_for_database(&state.pool, state.settings.pg_connect_timeout).await?;
    crate::db::migrate(&state.pool)
        .await
        .context("applying database migrations")?;
    state.ready.store(true, Ordering::SeqCst);
    Ok(crate::workers::spawn_all(state))
}

/// Polls the database with exponential backoff and a log line per attempt.
pub async fn wait_for_database(pool: &PgPool, wait_at_most: Duration) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        match sqlx::query("SELECT 1").execute(pool).await {
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

/// `spacet migrate`: brings up the database (embedded or not), applies the
/// migrations, stops.
pub async fn migrate_only(settings: Settings) -> anyhow::Result<()> {
    let app = App::build(settings, Clock::system()).await?;
    let result = async {
        wait_for_database(&app.state.pool, app.state.settings.pg_connect_timeout).await?;
        crate::db::migrate(&app.state.pool)
            .await
            .context("applying database migrations")?;
        tracing::info!("migrations applied");
        anyhow::Ok(())
    }
    .await;
    app.state.pool.close().await;
    stop_embedded(app.embedded).await;
    result
}

/// `spacet sync`: one SpaceX sync, then stop.
pub async fn sync_once(settings: Settings) -> anyhow::Result<()> {
    let app = App::build(settings, Clock::system()).await?;
    let result = async {
        wait_for_database(&app.state.pool, app.state.settings.pg_connect_timeout).await?;
        crate::db::migrate(&app.state.pool)
            .await
            .context("applying database migrations")?;
        let report = crate::spacex::sync_now(&app.state)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{}", serde_json::to_string(&report)?);
        anyhow::Ok(())
    }
    .await;
    app.state.pool.close().await;
    stop_embedded(app.embedded).await;
    result
}
