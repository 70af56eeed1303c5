//! SpaceX sync: keeps our copy of SpaceX's launchpads and upcoming launches fresh
//! and cancels our flights when SpaceX takes their pad and day.
//!
//! - [`client`]: the SpaceX v4 HTTP client (timeouts, retries, tolerant decoding).
//! - [`sync`]: one sync — fetch, then apply in one transaction, one replica at a time.
//! - Here: the scheduled worker (a sync at start-up, then every
//!   `ORCHESTRATOR_INTERVAL`), the forced sync and the `/liveness` check.
//!
//! Which day a launch blocks depends on SpaceX's `date_precision`: see
//! [`sync::blocked_day`].

pub mod client;
pub mod sync;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::{DatePrecision, SpaceXClient, SpaceXError};
pub use sync::{blocked_day, SkipReason, SyncError, SyncReport, Trigger};

use crate::{
    clock::Clock,
    config::SpaceXSettings,
    health::{CheckResult, HealthCheck},
};

/// What a sync uses: the database, the clock, its settings and the shutdown token
/// (a fetch in flight is abandoned when shutdown begins).
#[derive(Clone)]
pub struct SyncDeps {
    pub pool: PgPool,
    pub clock: Clock,
    pub settings: SpaceXSettings,
    pub shutdown: CancellationToken,
}

/// Starts the scheduled sync, unless `SPACEX_SYNC_ENABLED` is false.
pub fn start(deps: SyncDeps) -> Result<Option<JoinHandle<()>>, SpaceXError> {
    if !deps.settings.sync_enabled {
        tracing::info!("spacex sync disabled (SPACEX_SYNC_ENABLED=false)");
        return Ok(None);
    }
    let worker = SyncWorker::new(deps)?;
    Ok(Some(tokio::spawn(worker.run_until_stopped())))
}

/// The scheduled sync, one [`SyncWorker::step`] at a time.
pub struct SyncWorker {
    deps: SyncDeps,
    client: SpaceXClient,
}

impl SyncWorker {
    /// A worker with its own HTTP client.
    pub fn new(deps: SyncDeps) -> Result<SyncWorker, SpaceXError> {
        Ok(SyncWorker {
            client: SpaceXClient::new(&deps.settings)?,
            deps,
        })
    }

    /// One scheduled sync: skipped when fresh or when another replica is applying.
    pub async fn step(&self) -> Result<SyncReport, SyncError> {
        sync::run(&self.deps, &self.client, Trigger::Scheduled).await
    }

    /// A sync now, then one every interval, until shutdown. A failed sync is retried
    /// at the next tick; in between the service serves what the last sync stored.
    pub async fn run_until_stopped(self) {
        let interval = self.deps.settings.interval;
        loop {
            // Outcomes are logged, counted and recorded by `sync::run`.
            let _ = self.step().await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.deps.shutdown.cancelled() => break,
            }
        }
        tracing::debug!("spacex sync stopped");
    }
}

/// One scheduled step with a new client (tests and tools drive the worker this way).
pub async fn step(deps: &SyncDeps) -> Result<SyncReport, SyncError> {
    SyncWorker::new(deps.clone())?.step().await
}

/// Runs one sync now, whatever the schedule (`TriggerSync`, `spacet sync`).
pub async fn sync_now(deps: &SyncDeps) -> Result<SyncReport, SyncError> {
    let client = SpaceXClient::new(&deps.settings)?;
    sync::run(deps, &client, Trigger::Forced).await
}

/// `/liveness` entry `spacex`: degraded — never unhealthy, we serve from the last
/// sync — when the last sync failed (with the error and its age), when none has
/// succeeded yet, or when the last success is older than three intervals.
pub struct SpaceXCheck {
    pool: PgPool,
    clock: Clock,
    interval: Duration,
}

impl SpaceXCheck {
    /// The check of the sync `deps` run.
    pub fn new(deps: &SyncDeps) -> SpaceXCheck {
        SpaceXCheck {
            pool: deps.pool.clone(),
            clock: deps.clock.clone(),
            interval: deps.settings.interval,
        }
    }
}

#[async_trait::async_trait]
impl HealthCheck for SpaceXCheck {
    fn name(&self) -> &'static str {
        "spacex"
    }

    async fn check(&self) -> CheckResult {
        let row = sqlx::query!(
            "SELECT last_success_at, last_attempt_at, last_error FROM sync_state WHERE resource = $1",
            sync::LAUNCHES
        )
        .fetch_optional(&self.pool)
        .await;
        let now = self.clock.now();
        let seconds = |at: DateTime<Utc>| (now - at).num_seconds().max(0);
        let row = match row {
            Ok(row) => row,
            // The database check reports the database; we only cannot tell.
            Err(_) => {
                return CheckResult::degraded(json!({"error": "the sync state cannot be read"}))
            }
        };
        // No row yet: no sync has been attempted.
        let last_success = row.as_ref().and_then(|r| r.last_success_at);
        let last_attempt = row.as_ref().and_then(|r| r.last_attempt_at);
        let last_error = row.and_then(|r| r.last_error);
        if let Some(error) = last_error {
            return CheckResult::degraded(json!({
                "last_error": error,
                "last_error_at": last_attempt,
                "last_error_age_seconds": last_attempt.map(seconds),
                "last_success_at": last_success,
            }));
        }
        match last_success {
            None => {
                CheckResult::degraded(json!({"last_error": "no SpaceX sync has succeeded yet"}))
            }
            Some(at) if seconds(at) as f64 > 3.0 * self.interval.as_secs_f64() => {
                CheckResult::degraded(json!({
                    "last_error": "no SpaceX sync has succeeded for three intervals",
                    "last_success_at": at,
                    "last_success_age_seconds": seconds(at),
                }))
            }
            Some(at) => CheckResult::healthy(json!({
                "last_success_at": at,
                "last_success_age_seconds": seconds(at),
            })),
        }
    }
}
