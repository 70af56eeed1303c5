//! SpaceX sync: keeps our copy of SpaceX's launchpads and upcoming launches fresh
//! and cancels our flights when SpaceX takes their pad and day.
//!
//! - [`client`]: the SpaceX v4 HTTP client (timeouts, retries, tolerant decoding).
//! - [`sync`]: one sync — fetch, then apply in one transaction, one replica at a time.
//! - [`plan`]: what a sync writes and cancels, and whether it is held, decided
//!   without a database.
//! - Here: the scheduled worker (a sync at start-up, then every
//!   `ORCHESTRATOR_INTERVAL`), the forced sync and the `/liveness` check.
//!
//! Forced syncs are single-flight within a process: one that arrives while another
//! of the same kind (confirmed or not) runs joins it and gets the same report,
//! marked `joined`, instead of fetching everything again. A scheduled sync does not
//! join (it may be skipped as fresh); it and a forced one are serialised by the
//! apply transaction's advisory lock, like replicas.
//!
//! The launchpads and launches the sync keeps are [`crate::launchpads`]'s; which
//! day a launch blocks depends on SpaceX's `date_precision`: see
//! [`crate::launchpads::blocked_day`].

pub mod client;
pub mod plan;
pub mod sync;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::{
    future::{BoxFuture, Shared},
    FutureExt,
};
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::{SpaceXClient, SpaceXError};
pub use sync::{SkipReason, SyncError, SyncReport, Trigger};

use crate::metrics;

use crate::{
    auth::{Forbidden, RateLimit, RateLimited, Requester, Role},
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
    /// The forced syncs running now (clones share them).
    pub forced: ForcedSyncs,
}

type Outcome = Arc<Result<SyncReport, SyncError>>;
/// A running forced sync: its number and its shared result.
type Flight = (u64, Shared<BoxFuture<'static, Outcome>>);

/// The forced syncs running in a process, one per kind (plain, confirmed), that
/// later forced syncs join. Clones share the same slots.
#[derive(Clone, Default)]
pub struct ForcedSyncs {
    slots: Arc<Mutex<[Option<Flight>; 2]>>,
    next_id: Arc<AtomicU64>,
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

/// Runs one sync now, whatever the schedule (`TriggerSync`, `spacet sync`), or
/// joins the one running; the circuit breaker may hold it.
pub async fn sync_now(deps: &SyncDeps) -> Result<SyncReport, SyncError> {
    forced(deps, Trigger::Forced).await
}

/// Like [`sync_now`], and applied whatever it cancels or frees: an admin's
/// confirmation of a held sync (`TriggerSync {confirm: true}`, `spacet sync --confirm`).
pub(crate) async fn sync_confirmed(deps: &SyncDeps) -> Result<SyncReport, SyncError> {
    forced(deps, Trigger::Confirmed).await
}

/// Why a forced sync (`TriggerSync`) was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// Only admins (and trusted requesters) force a sync.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// `TriggerSync`: a sync now for an admin (or a trusted requester), within its
/// rate limit (`SYNC_RATE_LIMIT`); with `confirm`, applied whatever it cancels
/// or frees ([`sync_confirmed`]), else [`sync_now`].
pub async fn trigger(
    deps: &SyncDeps,
    requester: &Requester,
    confirm: bool,
    rate: &RateLimit,
) -> Result<SyncReport, TriggerError> {
    requester.require(&[Role::Admin])?;
    rate.check(requester)?;
    let report = if confirm {
        sync_confirmed(deps).await
    } else {
        sync_now(deps).await
    }?;
    Ok(report)
}

async fn forced(deps: &SyncDeps, trigger: Trigger) -> Result<SyncReport, SyncError> {
    let slot = usize::from(trigger == Trigger::Confirmed);
    let (flight, joined) = {
        let mut slots = deps.forced.slots.lock().expect("forced sync slots");
        match &slots[slot] {
            Some((_, flight)) => (flight.clone(), true),
            None => {
                let id = deps.forced.next_id.fetch_add(1, Ordering::Relaxed);
                let (deps, forced) = (deps.clone(), deps.forced.clone());
                // Its own task: a caller that goes away (a client hanging up) never
                // leaves the sync, or its open transaction, unpolled. It stays in the
                // span (and trace) of the request that started it.
                let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
                    let outcome = match SpaceXClient::new(&deps.settings) {
                        Ok(client) => sync::run(&deps, &client, trigger).await,
                        Err(e) => Err(e.into()),
                    };
                    // Freed as it ends: a sync forced from now on fetches anew.
                    let mut slots = forced.slots.lock().expect("forced sync slots");
                    if slots[slot]
                        .as_ref()
                        .is_some_and(|(running, _)| *running == id)
                    {
                        slots[slot] = None;
                    }
                    Arc::new(outcome)
                }));
                let flight = async move {
                    match task.await {
                        Ok(outcome) => outcome,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => Arc::new(Err(SyncError::Interrupted)),
                    }
                }
                .boxed()
                .shared();
                slots[slot] = Some((id, flight.clone()));
                (flight, false)
            }
        }
    };
    if joined {
        tracing::info!(trigger = ?trigger, "spacex sync already running: joining it");
    }
    // The last caller to look takes the result as it is; the others a copy.
    let outcome = flight.await;
    let mut result = match Arc::try_unwrap(outcome) {
        Ok(result) => result,
        Err(shared) => match shared.as_ref() {
            Ok(report) => Ok(report.clone()),
            Err(error) => Err(error.for_joiner()),
        },
    };
    if let Ok(report) = &mut result {
        report.joined = joined;
    }
    result
}

/// `/liveness` entry `spacex`: degraded — never unhealthy, we serve from the last
/// sync — when a sync is held for confirmation (with what it would do and when),
/// when the last sync failed (with the error and its age), when none has succeeded
/// yet, or when the last success is older than three intervals.
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
        let rows = sqlx::query!(
            "SELECT resource, last_success_at, last_attempt_at, last_error
             FROM sync_state WHERE resource IN ($1, $2)",
            sync::LAUNCHES,
            sync::HELD
        )
        .fetch_all(&self.pool)
        .await;
        let now = self.clock.now();
        let seconds = |at: DateTime<Utc>| (now - at).num_seconds().max(0);
        let rows = match rows {
            Ok(rows) => rows,
            // The database check reports the database; we only cannot tell.
            Err(_) => {
                return CheckResult::degraded(json!({"error": "the sync state cannot be read"}))
            }
        };
        let (mut row, mut held) = (None, None);
        for r in rows {
            if r.resource == sync::HELD {
                held = Some(r);
            } else {
                row = Some(r);
            }
        }
        // No row yet: no sync has been attempted.
        let last_success = row.as_ref().and_then(|r| r.last_success_at);
        // Whichever replica held it: the gauge follows the shared state.
        metrics::SYNC_HELD.set(i64::from(held.is_some()));
        if let Some(held) = held {
            return CheckResult::degraded(json!({
                "held": true,
                "last_error": held.last_error,
                "held_at": held.last_attempt_at,
                "last_success_at": last_success,
            }));
        }
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
