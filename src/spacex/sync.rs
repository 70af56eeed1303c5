//! One SpaceX sync: fetch from SpaceX with no transaction open, then apply
//! everything in one transaction that only one replica at a time can run.
//!
//! The apply transaction, in order:
//! 1. `pg_try_advisory_xact_lock`: another replica applying → skip ("locked"). The
//!    lock belongs to the transaction, so it is released by its commit or rollback on
//!    the connection that took it, whatever happens to this task.
//! 2. Freshness, under that lock (scheduled syncs only): a sync that succeeded less
//!    than [`FRESH_FRACTION`] of the interval ago → skip ("fresh").
//! 3. `SELECT … FOR UPDATE` on the launchpads whose days this sync starts blocking
//!    or whose row it changes (see [`lock_launchpads`] for why).
//! 4. Launchpads upserted (when fetched), launches upserted by id, launches no
//!    longer listed marked `upcoming = false`.
//! 5. Every scheduled flight, today or later at its pad, on a blocked pad and day
//!    is cancelled with its confirmed tickets (`SPACEX_CONFLICT`), and the events
//!    `EVENTS_FORMAT` selects: one `TicketCancelled` outbox event per ticket (`v1`),
//!    one Go-contract `BookingsCancelled` message for them all, ordered by the
//!    sync's id (`legacy`) — a handful of set-based statements however many tickets
//!    there are.
//!    Before cancelling, the circuit breaker counts what the sync would cancel (a
//!    read-only query in this transaction): more than `SPACEX_MAX_CANCELLATIONS`
//!    tickets, or every day SpaceX blocked (today or later) freed at once — the
//!    mark of an empty or near-empty answer that is nonetheless consistent — and
//!    the whole transaction is rolled back. The sync is *held*: recorded in
//!    `sync_state` (resource [`HELD`]: when, and what it would do), shown on
//!    `/liveness`, counted in the metrics, and applied only by a confirmed sync
//!    (`spacet sync --confirm`, `TriggerSync {confirm: true}`).
//! 6. `sync_state` records the success (and clears a held sync).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    client::{DatePrecision, Launchpad, SpaceXClient, SpaceXError, Upcoming},
    SyncDeps,
};
use crate::{booking, config::EventsFormat, metrics};

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
    pub fn for_joiner(&self) -> SyncError {
        match self {
            SyncError::SpaceX(e) => SyncError::SpaceX(e.clone()),
            SyncError::Database(e) => SyncError::Database(sqlx::Error::Protocol(e.to_string())),
            SyncError::Interrupted => SyncError::Interrupted,
        }
    }
}

/// The pad-local day a launch blocks, from how precisely SpaceX knows its date:
/// - `hour`: `date_utc` is the instant; it blocks the day it falls on at the pad
///   (`2049-11-03T03:24Z` at Cape Canaveral, UTC−4, blocks November 2nd). `None`
///   when the pad's zone is unknown (a pad we do not have cannot be booked).
/// - `day`: SpaceX names a date and writes it as midnight UTC of that date, so the
///   UTC date as written is the day (`2049-11-08T00:00Z` blocks November 8th);
///   converting it to pad-local time would wrongly move it to the evening before at
///   every American pad.
/// - `month`, `quarter`, `half`, `year`: no day is known; nothing is blocked until
///   SpaceX narrows it. The launch is stored and shown as tentative.
pub fn blocked_day(
    date_utc: DateTime<Utc>,
    precision: DatePrecision,
    pad_timezone: Option<Tz>,
) -> Option<NaiveDate> {
    match precision {
        DatePrecision::Hour => pad_timezone.map(|tz| date_utc.with_timezone(&tz).date_naive()),
        DatePrecision::Day => Some(date_utc.date_naive()),
        DatePrecision::Month
        | DatePrecision::Quarter
        | DatePrecision::Half
        | DatePrecision::Year => None,
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

/// A row of `spacex_launches`, as stored or as it is about to be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LaunchRow {
    id: String,
    name: String,
    launchpad_id: String,
    date_utc: DateTime<Utc>,
    date_precision: DatePrecision,
    upcoming: bool,
    blocked_day: Option<NaiveDate>,
}

impl LaunchRow {
    /// The pad and day this launch blocks now.
    fn blocks(&self) -> Option<(&str, NaiveDate)> {
        self.blocked_day
            .filter(|_| self.upcoming)
            .map(|day| (self.launchpad_id.as_str(), day))
    }
}

/// Writes SpaceX's view in the caller's transaction; returns what changed. With a
/// `breaker` (the most tickets it may cancel), a sync that would cancel more, or
/// free every day SpaceX blocks, stops before cancelling anything and returns a
/// report with `held_reason`: the caller rolls the transaction back.
async fn apply(
    conn: &mut PgConnection,
    launchpads: Option<&[Launchpad]>,
    upcoming: &Upcoming,
    now: DateTime<Utc>,
    breaker: Option<usize>,
    sync_id: Uuid,
    events_format: EventsFormat,
) -> Result<SyncReport, sqlx::Error> {
    let mut report = SyncReport {
        launches_seen: upcoming.seen,
        launches_skipped: upcoming.skipped,
        ..SyncReport::default()
    };

    // Launchpads: what changes, and every pad's zone once the refresh is applied.
    let stored_pads: HashMap<String, Launchpad> = sqlx::query_as!(
        Launchpad,
        "SELECT id, name, full_name, locality, region, timezone, status FROM launchpads"
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|pad| (pad.id.clone(), pad))
    .collect();
    let mut timezones: HashMap<&str, Option<Tz>> = stored_pads
        .values()
        .map(|p| (p.id.as_str(), p.timezone.parse().ok()))
        .collect();
    let mut to_lock: BTreeSet<&str> = BTreeSet::new();
    for pad in launchpads.unwrap_or_default() {
        match stored_pads.get(&pad.id) {
            None => report.launchpads_added += 1,
            Some(stored) if stored == pad => {}
            Some(_) => {
                report.launchpads_updated += 1;
                to_lock.insert(&pad.id);
            }
        }
        timezones.insert(&pad.id, pad.timezone.parse().ok());
    }

    // Launches: the rows as they should be, compared with the rows we have.
    let fetched_ids: Vec<&str> = upcoming.launches.iter().map(|l| l.id.as_str()).collect();
    let stored: Vec<LaunchRow> = sqlx::query_as!(
        LaunchRow,
        r#"SELECT id, name, launchpad_id, date_utc,
                  date_precision AS "date_precision: DatePrecision", upcoming, blocked_day
           FROM spacex_launches WHERE upcoming OR id = ANY($1)"#,
        &fetched_ids as &[&str]
    )
    .fetch_all(&mut *conn)
    .await?;
    let stored: HashMap<&str, &LaunchRow> = stored.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut changed: Vec<LaunchRow> = Vec::new();
    for launch in &upcoming.launches {
        let timezone = timezones
            .get(launch.launchpad_id.as_str())
            .copied()
            .flatten();
        if timezone.is_none() && launch.date_precision == DatePrecision::Hour {
            tracing::warn!(
                launch_id = %launch.id,
                launchpad_id = %launch.launchpad_id,
                "spacex launch on a launchpad we do not know: it blocks no day"
            );
        }
        let row = LaunchRow {
            id: launch.id.clone(),
            name: launch.name.clone(),
            launchpad_id: launch.launchpad_id.clone(),
            date_utc: launch.date_utc,
            date_precision: launch.date_precision,
            upcoming: launch.upcoming,
            blocked_day: blocked_day(launch.date_utc, launch.date_precision, timezone),
        };
        let before = stored.get(launch.id.as_str()).copied();
        match before {
            None => report.launches_added += 1,
            Some(before) if *before == row => continue,
            Some(_) => report.launches_updated += 1,
        }
        changed.push(row);
    }
    for row in &changed {
        let before = stored.get(row.id.as_str()).and_then(|b| b.blocks());
        if let Some(blocks) = row.blocks().filter(|b| Some(*b) != before) {
            to_lock.insert(blocks.0);
        }
    }
    let listed: HashSet<&str> = fetched_ids.iter().copied().collect();
    let removed: Vec<&str> = stored
        .values()
        .filter(|r| r.upcoming)
        .map(|r| r.id.as_str())
        .filter(|id| !listed.contains(id) && !upcoming.unreadable_ids.contains(*id))
        .collect();
    report.launches_removed = removed.len();

    // Each pad's current day: blocks before it have passed.
    let today: Vec<(String, NaiveDate)> = timezones
        .iter()
        .map(|(id, tz)| {
            let day = tz.map_or(now.date_naive(), |tz| now.with_timezone(&tz).date_naive());
            (id.to_string(), day)
        })
        .collect();
    let today_at: HashMap<&str, NaiveDate> =
        today.iter().map(|(id, day)| (id.as_str(), *day)).collect();
    let ahead = |(pad, day): &(&str, NaiveDate)| {
        *day >= today_at.get(pad).copied().unwrap_or(now.date_naive())
    };
    // The days blocked now and after this sync, from today on.
    let blocked_before: HashSet<(&str, NaiveDate)> = stored
        .values()
        .filter_map(|r| r.blocks())
        .filter(ahead)
        .collect();
    let replaced: HashSet<&str> = changed.iter().map(|r| r.id.as_str()).collect();
    let removed_ids: HashSet<&str> = removed.iter().copied().collect();
    let blocked_after: HashSet<(&str, NaiveDate)> = stored
        .values()
        .filter(|r| !replaced.contains(r.id.as_str()) && !removed_ids.contains(r.id.as_str()))
        .filter_map(|r| r.blocks())
        .chain(changed.iter().filter_map(LaunchRow::blocks))
        .filter(ahead)
        .collect();
    let frees_every_day = !blocked_before.is_empty() && blocked_before.is_disjoint(&blocked_after);

    lock_launchpads(conn, &to_lock).await?;
    if let Some(pads) = launchpads {
        upsert_launchpads(conn, pads, now).await?;
    }
    upsert_launches(conn, &changed, now).await?;
    if !removed.is_empty() {
        // Kept for the record, no longer blocking: the day is free again.
        sqlx::query!(
            "UPDATE spacex_launches SET upcoming = false, synced_at = $2 WHERE id = ANY($1)",
            &removed as &[&str],
            now
        )
        .execute(&mut *conn)
        .await?;
    }

    if let Some(max_tickets) = breaker {
        let would = booking::count_flights_blocked_by_spacex(conn, &today).await?;
        let mut reasons = Vec::new();
        if would.tickets > max_tickets {
            reasons.push(format!(
                "it would cancel {} tickets on {} flights, more than SPACEX_MAX_CANCELLATIONS ({max_tickets})",
                would.tickets, would.flights
            ));
        }
        if frees_every_day {
            reasons.push(format!(
                "it would free all {} days SpaceX blocks (an empty or near-empty answer)",
                blocked_before.len()
            ));
        }
        if !reasons.is_empty() {
            report.skipped = Some(SkipReason::Held);
            report.flights_to_cancel = would.flights;
            report.tickets_to_cancel = would.tickets;
            report.held_reason = Some(format!(
                "sync held: {}; apply it with `spacet sync --confirm` or TriggerSync {{confirm: true}}",
                reasons.join(", and ")
            ));
            return Ok(report);
        }
    }
    let cancelled =
        booking::cancel_flights_blocked_by_spacex(conn, &today, sync_id, events_format).await?;
    report.flights_cancelled = cancelled.flights;
    report.tickets_cancelled = cancelled.tickets;
    Ok(report)
}

/// Locks, `FOR UPDATE`, the launchpads on which this sync starts blocking a day or
/// whose row it changes, before it writes any launch.
///
/// A booking first takes `FOR KEY SHARE` on its launchpad, then looks for a SpaceX
/// launch on its pad and day, then opens or joins the flight. `FOR UPDATE` is the
/// only row lock that conflicts with `FOR KEY SHARE` (`FOR NO KEY UPDATE`, which a
/// plain `UPDATE` takes, does not), so:
/// - a booking that locked the pad first makes us wait until it commits, and our
///   cancellation statement, which runs after this lock in its own snapshot, sees
///   its flight and ticket and cancels them;
/// - a booking that comes second waits for our commit, and its look for a SpaceX
///   launch, a later statement, sees the launch we wrote and refuses.
///
/// Either the sync sees the booking or the booking sees the launch. Pads whose
/// blocks do not change are not locked, so a sync that changes nothing never holds
/// up a booking. Locks are taken in id order.
async fn lock_launchpads(conn: &mut PgConnection, ids: &BTreeSet<&str>) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = ids.iter().copied().collect();
    sqlx::query!(
        "SELECT id FROM launchpads WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &ids as &[&str]
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert_launchpads(
    conn: &mut PgConnection,
    pads: &[Launchpad],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if pads.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Launchpad) -> &str| pads.iter().map(f).collect::<Vec<&str>>();
    sqlx::query!(
        "INSERT INTO launchpads (id, name, full_name, locality, region, timezone, status, refreshed_at)
         SELECT u.*, $8 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
              AS u(id, name, full_name, locality, region, timezone, status)
         ON CONFLICT (id) DO UPDATE SET
             name = EXCLUDED.name, full_name = EXCLUDED.full_name, locality = EXCLUDED.locality,
             region = EXCLUDED.region, timezone = EXCLUDED.timezone, status = EXCLUDED.status,
             refreshed_at = EXCLUDED.refreshed_at",
        &column(|p| &p.id) as &[&str],
        &column(|p| &p.name) as &[&str],
        &column(|p| &p.full_name) as &[&str],
        &column(|p| &p.locality) as &[&str],
        &column(|p| &p.region) as &[&str],
        &column(|p| &p.timezone) as &[&str],
        &column(|p| &p.status) as &[&str],
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts new launches and rewrites changed ones (a moved launch gets its new
/// date, precision, pad and blocked day). `synced_at` is when the row last changed.
async fn upsert_launches(
    conn: &mut PgConnection,
    rows: &[LaunchRow],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&LaunchRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let date_utc: Vec<DateTime<Utc>> = rows.iter().map(|r| r.date_utc).collect();
    let upcoming: Vec<bool> = rows.iter().map(|r| r.upcoming).collect();
    let blocked_day: Vec<Option<NaiveDate>> = rows.iter().map(|r| r.blocked_day).collect();
    sqlx::query!(
        "INSERT INTO spacex_launches (id, name, launchpad_id, date_utc, date_precision, upcoming, blocked_day, synced_at)
         SELECT u.*, $8 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::boolean[], $7::date[])
              AS u(id, name, launchpad_id, date_utc, date_precision, upcoming, blocked_day)
         ON CONFLICT (id) DO UPDATE SET
             name = EXCLUDED.name, launchpad_id = EXCLUDED.launchpad_id, date_utc = EXCLUDED.date_utc,
             date_precision = EXCLUDED.date_precision, upcoming = EXCLUDED.upcoming,
             blocked_day = EXCLUDED.blocked_day, synced_at = EXCLUDED.synced_at",
        &text(|r| &r.id) as &[&str],
        &text(|r| &r.name) as &[&str],
        &text(|r| &r.launchpad_id) as &[&str],
        date_utc.as_slice(),
        &text(|r| r.date_precision.as_str()) as &[&str],
        upcoming.as_slice(),
        &blocked_day as &[Option<NaiveDate>],
        now
    )
    .execute(&mut *conn)
    .await?;
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

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn day(s: &str) -> Option<NaiveDate> {
        Some(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn an_hour_blocks_the_pad_local_day_of_the_instant() {
        let cape = Some(chrono_tz::America::New_York);
        // The issue's example: 23:24 on November 2nd at the Cape.
        assert_eq!(
            blocked_day(at("2049-11-03T03:24:00Z"), DatePrecision::Hour, cape),
            day("2049-11-02")
        );
        assert_eq!(
            blocked_day(at("2049-11-03T12:00:00Z"), DatePrecision::Hour, cape),
            day("2049-11-03")
        );
        // Kwajalein is ahead of UTC: the evening in UTC is the next day there.
        assert_eq!(
            blocked_day(
                at("2049-03-01T20:00:00Z"),
                DatePrecision::Hour,
                Some(chrono_tz::Pacific::Kwajalein)
            ),
            day("2049-03-02")
        );
        assert_eq!(
            blocked_day(at("2049-11-03T03:24:00Z"), DatePrecision::Hour, None),
            None
        );
    }

    #[test]
    fn a_day_is_the_utc_date_as_written_and_coarser_blocks_nothing() {
        let cape = Some(chrono_tz::America::New_York);
        assert_eq!(
            blocked_day(at("2049-11-08T00:00:00Z"), DatePrecision::Day, cape),
            day("2049-11-08")
        );
        for coarse in [
            DatePrecision::Month,
            DatePrecision::Quarter,
            DatePrecision::Half,
            DatePrecision::Year,
        ] {
            assert_eq!(blocked_day(at("2049-12-01T00:00:00Z"), coarse, cape), None);
        }
    }

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
