//! Dependency checks behind `/liveness`: each bounded by a timeout so the probe
//! never hangs. Features provide their checks (SpaceX, Pub/Sub, outbox); `app`
//! assembles the fixed list once, with the readiness flag and the probes' own
//! database pool, into a [`Health`].

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::{json, Value};
use sqlx::PgPool;

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Healthy,
    /// Working around a problem: reported, but the probe still passes.
    Degraded,
    Unhealthy,
}

/// One check's answer: status and details for humans.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub status: CheckStatus,
    pub details: Value,
}

impl CheckResult {
    pub fn healthy(details: Value) -> CheckResult {
        CheckResult {
            status: CheckStatus::Healthy,
            details,
        }
    }
    pub fn degraded(details: Value) -> CheckResult {
        CheckResult {
            status: CheckStatus::Degraded,
            details,
        }
    }
    pub fn unhealthy(details: Value) -> CheckResult {
        CheckResult {
            status: CheckStatus::Unhealthy,
            details,
        }
    }
}

/// A dependency the liveness probe checks.
#[async_trait::async_trait]
pub trait HealthCheck: Send + Sync {
    /// Key in the probe's `checks` object.
    fn name(&self) -> &'static str;
    /// Runs the check; the caller bounds it with [`CHECK_TIMEOUT`].
    async fn check(&self) -> CheckResult;
}

/// Readiness, the probes' database pool and the fixed list of `/liveness` checks,
/// shared by the probes.
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    /// A small pool of the probes' own: requests holding every connection of the
    /// API's pool never make a probe wait.
    database: PgPool,
    checks: Arc<[Arc<dyn HealthCheck>]>,
}

impl Health {
    /// Not ready until [`Health::set_ready`]. `database` is the probes' own pool.
    pub fn new(database: PgPool, checks: Vec<Arc<dyn HealthCheck>>) -> Health {
        Health {
            ready: Arc::new(AtomicBool::new(false)),
            database,
            checks: checks.into(),
        }
    }

    /// True when the database answers a query within [`CHECK_TIMEOUT`], asked
    /// through the probes' own pool.
    pub(crate) async fn database_answers(&self) -> bool {
        let query = sqlx::query_scalar!("SELECT 1 AS one").fetch_one(&self.database);
        match tokio::time::timeout(CHECK_TIMEOUT, query).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "readiness: the database does not answer");
                false
            }
            Err(_) => false,
        }
    }

    /// True once migrations are applied, false again from the start of shutdown.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The `/liveness` checks.
    pub fn checks(&self) -> &[Arc<dyn HealthCheck>] {
        &self.checks
    }
}

/// The database answers a query (asked through the probes' own pool).
pub struct DatabaseCheck(pub PgPool);

#[async_trait::async_trait]
impl HealthCheck for DatabaseCheck {
    fn name(&self) -> &'static str {
        "database"
    }
    async fn check(&self) -> CheckResult {
        match sqlx::query_scalar!("SELECT 1 AS one")
            .fetch_one(&self.0)
            .await
        {
            Ok(_) => CheckResult::healthy(json!({})),
            Err(error) => {
                tracing::warn!(%error, "liveness: database check failed");
                CheckResult::unhealthy(json!({"error": "the database does not answer"}))
            }
        }
    }
}

/// Runs every check concurrently; the overall status is the worst one.
pub(crate) async fn run_all(checks: &[Arc<dyn HealthCheck>]) -> (CheckStatus, Value) {
    let results = futures::future::join_all(checks.iter().map(|check| async move {
        let result = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
            Ok(result) => result,
            Err(_) => CheckResult::unhealthy(
                json!({"error": format!("no answer within {CHECK_TIMEOUT:?}")}),
            ),
        };
        (check.name(), result)
    }))
    .await;
    let mut overall = CheckStatus::Healthy;
    let mut out = serde_json::Map::new();
    for (name, result) in results {
        if result.status == CheckStatus::Unhealthy {
            overall = CheckStatus::Unhealthy;
        }
        let mut entry = json!({"status": result.status});
        if let (Value::Object(entry), Value::Object(details)) = (&mut entry, result.details) {
            entry.extend(details);
        }
        out.insert(name.to_string(), entry);
    }
    (overall, Value::Object(out))
}
