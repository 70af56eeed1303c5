//! One SpaceX sync: fetch from SpaceX with no transaction open, then apply
//! everything in one transaction that only one replica at a time can run.
//!
//! The apply transaction, in order:
//! 1. `pg_try_advisory_xact_lock`: another replica applying → skip ("locked"). The
//!    lock belongs to the transaction, so it is released by its commit or rollback on
//!    the connection that took it, whatever happens to this task.
//! 2. Freshness, under that lock (scheduled syncs only): a sync that succeeded less
//!    than [`FRESH_FRACTION`] of the interval ago → skip ("fresh").
//! 3. What we hold is read ([`crate::launchpads`]) and compared with SpaceX's answer
//!    by a pure [`plan`](super::plan::plan): launchpads and launches to write,
//!    launches to retire, pads to lock, blocked days.
//! 4. `SELECT … FOR UPDATE` on the launchpads whose days this sync starts blocking
//!    or whose row it changes (see [`launchpads::lock_for_sync`] for why), then
//!    launchpads upserted (when fetched), launches upserted by id, launches no
//!    longer listed marked `upcoming = false`.
//! 5. Every scheduled flight, today or later at its pad, on a blocked pad and day
//!    is cancelled with its confirmed tickets (`SPACEX_CONFLICT`), and the events
//!    `EVENTS_FORMAT` selects: one `TicketCancelled` outbox event per ticket (`v1`),
//!    one Go-contract `BookingsCancelled` message for them all, ordered by the
//!    sync's id (`legacy`) — a handful of set-based statements however many tickets
//!    there are.
//!    Before cancelling, the circuit breaker counts what the sync would cancel (a
//!    read-only query in this transaction) and the plan decides
//!    ([`Plan::hold_reason`]): more than `SPACEX_MAX_CANCELLATIONS` tickets, or
//!    every day SpaceX blocked (today or later) freed at once — the
//!    mark of an empty or near-empty answer that is nonetheless consistent — and
//!    the whole transaction is rolled back. The sync is *held*: recorded in
//!    `sync_state` (resource [`HELD`]: when, and what it would do), shown on
//!    `/liveness`, counted in the metrics, and applied only by a confirmed sync
//!    (`spacet sync --confirm`, `TriggerSync {confirm: true}`).
//! 6. `sync_state` records the success (and clears a held sync).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    client::{SpaceXClient, SpaceXError, Upcoming},
    plan::{self, Plan},
    SyncDeps,
};
use crate::{
    booking,
    config::EventsFormat,
    launchpads::{self, launches, Launchpad},
    metrics,
};

/// Key of the transaction-level advisory lock held while a sync is applied
/// ("SPACEX" in ASCII, then 1).
pub const SYNC_LOCK_KEY: i64 = 0x5350_4143_4558_0001;

/// A scheduled sync is skipped when the last success is younger than this share of
/// `ORCHESTRATOR_INTERVAL`. Less than 1 so that a replica's own next tick, which
/// comes one interval after its previous sync *ended*, is never skipped by a hair.
pub const FRESH_FRACTION: f64 = 0.9;

/// `sync_state.resource` of the sync as a whole (launches, cancellations).
pub const LAUNCHES: &str = "spacex_launches";
/// `sync_state.resource` of the launchpad refresh.
pub const LAUNCHPADS: &str = "spacex_launchpads";
/// `sync_state.resource` of a sync held by the circuit breaker: `last_attempt_at`
/// is when it was last held, `last_error` what it would have done. Deleted by the
/// next applied sync.
pub const HELD: &str = "spacex_held";

/// Who asked for a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule: skipped when another replica synced less than the interval
    /// ago; launchpads refreshed only when older than `LAUNCHPADS_MAX_AGE`.
    Scheduled,
    /// An operator (`TriggerSync`, `spacet sync`): runs now, launchpads included.
    Forced,
    /// An operator confirming a held sync (`confirm: true`, `spacet sync --confirm`):
    /// a forced sync the circuit breaker does not hold. It applies SpaceX's answer
    /// as fetched now, which the report shows.
    Confirmed,
}

/// Why a sync applied nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Another sync succeeded less than the interval ago.
    Fresh,
    /// Another replica is applying a sync right now.
    Locked,
    /// The circuit breaker held it: see [`SyncReport::held_reason`].
    Held,
}

impl SkipReason {
    /// The name in reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Fresh => "fresh",
            SkipReason::Locked => "locked",
            SkipReason::Held => "held",
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    /// `None` when the sync was applied.
    pub skipped: Option<SkipReason>,
    pub launchpads_added: usize,
    pub launchpads_updated: usize,
    pub launches_seen: usize,
    pub launches_skipped: usize,
    pub launches_added: usize,
    pub launches_updated: usize,
    pub launches_removed: usize,
    pub flights_cancelled: usize,
    pub tickets_cancelled: usize,
    /// Fetch and apply.
    pub duration: Duration,
    /// The apply transaction alone.
    pub apply_duration: Duration,
    /// Why the circuit breaker held this sync (`skipped` is `Held`).
    pub held_reason: Option<String>,
    /// What a held sync would have cancelled (nothing was).
    pub flights_to_cancel: usize,
    pub tickets_to_cancel: usize,
    /// True when this forced sync joined one already running in this process
    /// (single flight): the report is that sync's.
    pub joined: bool,
    /// Id of an applied sync (UUIDv7): the ordering key of its `BookingsCancelled`
    /// message.
    pub sync_id: Option<Uuid>,
}

impl SyncReport {
    /// True when this sync's view of SpaceX was written to the database.
    pub fn applied(&self) -> bool {
        self.skipped.is_none()
    }

    fn skipped(reason: SkipReason) -> SyncReport {
        SyncReport {
            skipped: Some(reason),
            ..SyncReport::default()
        }
    }
}

/// Why a sync failed. Nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("SpaceX: {0}")]
    SpaceX(#[from] SpaceXError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("interrupted by shutdown")]
    Interrupted,
}

impl SyncError {
    /// The same failure for a caller that joined this sync (`sqlx::Error` cannot be
    /// cloned: a database failure is passed on as its text).
    pub(crate) fn for_joiner(&self) -> SyncError {
        match self {
            SyncError::SpaceX(e) => SyncError::SpaceX(e.clone()),
            SyncError::Database(e) => SyncError::Database(sqlx::Error::Protocol(e.to_string())),
            SyncError::Interrupted => SyncError::Interrupted,
        }
    }
}

/// Runs one sync, records its outcome (`sync_state`, metrics) and logs one summary line.
pub async fn run(
    deps: &SyncDeps,
    client: &SpaceXClient,
    trigger: Trigger,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let result = fetch_and_apply(deps, client, trigger).await;
    let duration = started.elapsed();
    match result {
        Ok(mut report) => {
            report.duration = duration;
            let result = match report.skipped {
                None => "applied",
                Some(SkipReason::Held) => "held",
                Some(_) => "skipped",
            };
            match report.skipped {
                None => metrics::SYNC_HELD.set(0),
                Some(SkipReason::Held) => metrics::SYNC_HELD.set(1),
                Some(_) => {}
            }
            metrics::SYNC_RUNS.with_label_values(&[result]).inc();
            metrics::SYNC_DURATION
                .with_label_values(&[result])
                .observe(duration.as_secs_f64());
            tracing::info!(
                result,
                trigger = ?trigger,
                skipped_reason = report.skipped.map(SkipReason::as_str),
                duration_ms = duration.as_millis() as u64,
                apply_ms = report.apply_duration.as_millis() as u64,
                launches_seen = report.launches_seen,
                launches_skipped = report.launches_skipped,
                launches_added = report.launches_added,
                launches_updated = report.launches_updated,
                launches_removed = report.launches_removed,
                launchpads_added = report.launchpads_added,
                launchpads_updated = report.launchpads_updated,
                flights_cancelled = report.flights_cancelled,
                tickets_cancelled = report.tickets_cancelled,
                held_reason = report.held_reason.as_deref(),
                sync_id = report.sync_id.map(|id| id.to_string()),
                "spacex sync"
            );
            Ok(report)
        }
        Err(SyncError::Interrupted) => {
            tracing::info!(trigger = ?trigger, "spacex sync interrupted by shutdown");
            Err(SyncError::Interrupted)
        }
        Err(error) => {
            metrics::SYNC_RUNS.with_label_values(&["failed"]).inc();
            metrics::SYNC_DURATION
                .with_label_values(&["failed"])
                .observe(duration.as_secs_f64());
            tracing::warn!(
                result = "failed",
                trigger = ?trigger,
                duration_ms = duration.as_millis() as u64,
                error = %error,
                "spacex sync"
            );
            if let Err(db) = record_failure(&deps.pool, deps.clock.now(), &error).await {
                tracing::warn!(error = %db, "could not record the failed spacex sync");
            }
            Err(error)
        }
    }
}

async fn fetch_and_apply(
    deps: &SyncDeps,
    client: &SpaceXClient,
    trigger: Trigger,
) -> Result<SyncReport, SyncError> {
    let settings = &deps.settings;
    let now = deps.clock.now();

    // A look before any HTTP call, so that replicas skip a fresh sync without
    // asking SpaceX; repeated under the advisory lock below, where it counts.
    let (launches_synced, launchpads_synced) = last_successes(&deps.pool).await?;
    if trigger == Trigger::Scheduled && is_fresh(launches_synced, now, settings.interval) {
        return Ok(SyncReport::skipped(SkipReason::Fresh));
    }
    let launchpads_due = trigger != Trigger::Scheduled
        || launchpads_synced.is_none_or(|at| age(now, at) >= settings.launchpads_max_age);

    // Everything is fetched before the transaction begins: no database
    // transaction is ever open across a network call.
    let fetch = async {
        tokio::try_join!(
            async {
                if launchpads_due {
                    client.launchpads().await.map(Some)
                } else {
                    Ok(None)
                }
            },
            client.upcoming_launches(),
        )
    };
    let (launchpads, upcoming) = tokio::select! {
        fetched = fetch => fetched?,
        _ = deps.shutdown.cancelled() => return Err(SyncError::Interrupted),
    };

    let apply_started = Instant::now();
    let now = deps.clock.now();
    let mut tx = deps.pool.begin().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
        SYNC_LOCK_KEY
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        tx.rollback().await?;
        return Ok(SyncReport::skipped(SkipReason::Locked));
    }
    if trigger == Trigger::Scheduled {
        // Under the lock: a replica that fetched at the same moment as another one
        // which has committed since sees its success here and applies nothing.
        let synced: Option<DateTime<Utc>> = sqlx::query_scalar!(
            "SELECT last_success_at FROM sync_state WHERE resource = $1",
            LAUNCHES
        )
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        if is_fresh(synced, now, settings.interval) {
            tx.rollback().await?;
            return Ok(SyncReport::skipped(SkipReason::Fresh));
        }
    }
    let breaker = (trigger != Trigger::Confirmed).then_some(settings.max_cancellations);
    let sync_id = Uuid::now_v7();
    let mut report = apply(
        &mut tx,
        launchpads.as_deref(),
        &upcoming,
        now,
        breaker,
        sync_id,
        settings.events_format,
    )
    .await?;
    if let Some(reason) = &report.held_reason {
        // Nothing of it is kept: not the launches, not the cancellations.
        tx.rollback().await?;
        record_held(&deps.pool, now, reason).await?;
        report.apply_duration = apply_started.elapsed();
        return Ok(report);
    }
    record_success(&mut tx, now, launchpads.is_some()).await?;
    tx.commit().await?;
    report.sync_id = Some(sync_id);
    report.apply_duration = apply_started.elapsed();
    Ok(report)
}

fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (now - at).to_std().unwrap_or(Duration::ZERO)
}

fn is_fresh(last_success: Option<DateTime<Utc>>, now: DateTime<Utc>, interval: Duration) -> bool {
    last_success.is_some_and(|at| age(now, at) < interval.mul_f64(FRESH_FRACTION))
}

async fn last_successes(
    pool: &PgPool,
) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT resource, last_success_at FROM sync_state WHERE resource IN ($1, $2)",
        LAUNCHES,
        LAUNCHPADS
    )
    .fetch_all(pool)
    .await?;
    let get = |resource: &str| {
        rows.iter()
            .find(|row| row.resource == resource)
            .and_then(|row| row.last_success_at)
    };
    Ok((get(LAUNCHES), get(LAUNCHPADS)))
}

/// Applies SpaceX's view in the caller's transaction; returns what changed. Reads
/// what we hold, plans, writes the plan, then cancels the flights on the days it
/// blocks. With a `breaker` (the most tickets it may cancel), a sync the plan
/// holds stops before cancelling anything and returns a report with
/// `held_reason`: the caller rolls the transaction back.
async fn apply(
    conn: &mut PgConnection,
    launchpads: Option<&[Launchpad]>,
    upcoming: &Upcoming,
    now: DateTime<Utc>,
    breaker: Option<usize>,
    sync_id: Uuid,
    events_format: EventsFormat,
) -> Result<SyncReport, sqlx::Error> {
    let stored_pads = launchpads::all(&mut *conn).await?;
    let listed: Vec<&str> = upcoming.launches.iter().map(|l| l.id.as_str()).collect();
    let stored_launches = launches::upcoming_or_listed(conn, &listed).await?;
    let plan = plan::plan(launchpads, upcoming, &stored_pads, &stored_launches, now);
    for (launch_id, launchpad_id) in &plan.on_unknown_pads {
        tracing::warn!(
            %launch_id,
            %launchpad_id,
            "spacex launch on a launchpad we do not know: it blocks no day"
        );
    }
    let mut report = SyncReport {
        launches_seen: upcoming.seen,
        launches_skipped: upcoming.skipped,
        launchpads_added: plan.launchpads_added,
        launchpads_updated: plan.launchpads_updated,
        launches_added: plan.launches_added,
        launches_updated: plan.launches_updated,
        launches_removed: plan.removed.len(),
        ..SyncReport::default()
    };

    write(conn, &plan, now).await?;

    if let Some(max_tickets) = breaker {
        let would = booking::count_flights_blocked_by_spacex(conn, &plan.blocked).await?;
        if let Some(reason) = plan.hold_reason(would, max_tickets) {
            report.skipped = Some(SkipReason::Held);
            report.flights_to_cancel = would.flights;
            report.tickets_to_cancel = would.tickets;
            report.held_reason = Some(reason);
            return Ok(report);
        }
    }
    let cancelled =
        booking::cancel_flights_blocked_by_spacex(conn, &plan.blocked, sync_id, events_format)
            .await?;
    report.flights_cancelled = cancelled.flights;
    report.tickets_cancelled = cancelled.tickets;
    Ok(report)
}

/// Writes a plan: locks its pads first (before any launch is written), then the
/// launchpads, the launches, and the launches it retires.
async fn write(
    conn: &mut PgConnection,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    launchpads::lock_for_sync(conn, &plan.to_lock).await?;
    launchpads::upsert(conn, &plan.launchpads, now).await?;
    launches::upsert(conn, &plan.launches, now).await?;
    // Kept for the record, no longer blocking: the day is free again.
    launches::retire(conn, &plan.removed, now).await?;
    Ok(())
}

async fn record_success(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    launchpads_refreshed: bool,
) -> Result<(), sqlx::Error> {
    let resources: &[&str] = if launchpads_refreshed {
        &[LAUNCHES, LAUNCHPADS]
    } else {
        &[LAUNCHES]
    };
    sqlx::query!(
        "INSERT INTO sync_state (resource, last_success_at, last_attempt_at, last_error)
         SELECT r, $2, $2, NULL FROM UNNEST($1::text[]) AS r
         ON CONFLICT (resource) DO UPDATE SET
             last_success_at = EXCLUDED.last_success_at,
             last_attempt_at = EXCLUDED.last_attempt_at,
             last_error = NULL",
        resources as &[&str],
        now
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("DELETE FROM sync_state WHERE resource = $1", HELD)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a held sync: when, and what it would have done.
async fn record_held(pool: &PgPool, now: DateTime<Utc>, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO sync_state (resource, last_attempt_at, last_error) VALUES ($1, $2, $3)
         ON CONFLICT (resource) DO UPDATE SET
             last_attempt_at = EXCLUDED.last_attempt_at, last_error = EXCLUDED.last_error",
        HELD,
        now,
        reason
    )
    .execute(pool)
    .await?;
    Ok(())
}

async fn record_failure(
    pool: &PgPool,
    now: DateTime<Utc>,
    error: &SyncError,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO sync_state (resource, last_attempt_at, last_error) VALUES ($1, $2, $3)
         ON CONFLICT (resource) DO UPDATE SET
             last_attempt_at = EXCLUDED.last_attempt_at, last_error = EXCLUDED.last_error",
        LAUNCHES,
        now,
        error.to_string()
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_sync_is_fresh_for_most_of_an_interval() {
        let now = Utc.with_ymd_and_hms(2048, 6, 1, 12, 0, 0).unwrap();
        let hour = Duration::from_secs(3600);
        assert!(!is_fresh(None, now, hour));
        assert!(is_fresh(
            Some(now - chrono::Duration::minutes(30)),
            now,
            hour
        ));
        assert!(!is_fresh(
            Some(now - chrono::Duration::minutes(55)),
            now,
            hour
        ));
        // A clock that went backwards is not a reason to sync again and again.
        assert!(is_fresh(
            Some(now + chrono::Duration::minutes(5)),
            now,
            hour
        ));
    }
}
