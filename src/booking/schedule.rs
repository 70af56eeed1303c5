//! Launchpads and their day-by-day schedule: what a booking page needs to offer
//! only trips that can be booked.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;

use super::{week_start, DatePrecision, Destination, LaunchpadStatus, Timezone};

/// Longest schedule window, in days.
pub const MAX_WINDOW_DAYS: i64 = 90;
/// Window when the request gives no end.
pub const DEFAULT_WINDOW_DAYS: u64 = 28;

/// A launchpad as stored.
#[derive(Debug, Clone)]
pub struct Launchpad {
    pub id: String,
    pub name: String,
    pub full_name: String,
    pub locality: String,
    pub region: String,
    pub timezone: Timezone,
    pub status: LaunchpadStatus,
}

impl Launchpad {
    pub fn tz(&self) -> Tz {
        self.timezone.0
    }
}

/// Every launchpad, by name.
pub async fn launchpads(pool: &PgPool) -> Result<Vec<Launchpad>, sqlx::Error> {
    sqlx::query_as!(
        Launchpad,
        r#"SELECT id, name, full_name, locality, region, timezone AS "timezone: Timezone",
                  status AS "status: LaunchpadStatus"
           FROM launchpads ORDER BY name, id"#
    )
    .fetch_all(pool)
    .await
}

/// One launchpad.
pub async fn launchpad(pool: &PgPool, id: &str) -> Result<Option<Launchpad>, sqlx::Error> {
    sqlx::query_as!(
        Launchpad,
        r#"SELECT id, name, full_name, locality, region, timezone AS "timezone: Timezone",
                  status AS "status: LaunchpadStatus"
           FROM launchpads WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// Our flight on a day.
#[derive(Debug, Clone)]
pub struct FlightSummary {
    pub destination: Destination,
    pub seats_booked: i32,
    pub seats_left: i32,
}

/// A SpaceX launch as last synced.
#[derive(Debug, Clone)]
pub struct SpacexLaunch {
    pub id: String,
    pub name: String,
    pub date_utc: DateTime<Utc>,
    pub date_precision: DatePrecision,
    pub blocked_day: Option<NaiveDate>,
}

impl SpacexLaunch {
    /// Days the launch may happen on: one day when firm; the whole month,
    /// quarter, half or year while tentative.
    pub fn possible_days(&self) -> (NaiveDate, NaiveDate) {
        if let Some(day) = self.blocked_day {
            return (day, day);
        }
        let start = self.date_utc.date_naive();
        let months = match self.date_precision {
            DatePrecision::Hour | DatePrecision::Day => 0,
            DatePrecision::Month => 1,
            DatePrecision::Quarter => 3,
            DatePrecision::Half => 6,
            DatePrecision::Year => 12,
        };
        let first = start.with_day(1).unwrap_or(start);
        let end = first
            .checked_add_months(Months::new(months))
            .and_then(|d| d.checked_sub_days(Days::new(1)))
            .unwrap_or(start);
        (first.min(start), end.max(start))
    }
}

/// One pad-local day of a schedule.
#[derive(Debug, Clone)]
pub struct ScheduleDay {
    pub date: NaiveDate,
    pub flight: Option<FlightSummary>,
    pub spacex: Vec<SpacexLaunch>,
    pub free_destinations: Vec<Destination>,
    pub bookable: bool,
}

/// The schedule of `pad` from `from` to `to` (inclusive, pad-local days).
pub async fn schedule(
    pool: &PgPool,
    pad: &Launchpad,
    from: NaiveDate,
    to: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<ScheduleDay>, sqlx::Error> {
    let weeks_from = week_start(from);
    let weeks_to = week_start(to)
        .checked_add_days(Days::new(6))
        .unwrap_or(NaiveDate::MAX);
    let flights = sqlx::query!(
        r#"SELECT launch_day, destination AS "destination: Destination", seats_booked, seats FROM flights
         WHERE launchpad_id = $1 AND status = 'scheduled' AND launch_day BETWEEN $2 AND $3"#,
        pad.id,
        weeks_from,
        weeks_to
    )
    .fetch_all(pool)
    .await?;
    let launches = sqlx::query_as!(
        SpacexLaunch,
        r#"SELECT id, name, date_utc, date_precision AS "date_precision: DatePrecision", blocked_day
           FROM spacex_launches
           WHERE launchpad_id = $1 AND upcoming
             AND (blocked_day BETWEEN $2 AND $3
                  OR (blocked_day IS NULL AND date_utc < ($3::date + 1) AND date_utc >= ($2::date - interval '1 year')))
           ORDER BY date_utc"#,
        pad.id,
        from,
        to
    )
    .fetch_all(pool)
    .await?;

    let mut by_day: BTreeMap<NaiveDate, FlightSummary> = BTreeMap::new();
    let mut used_by_week: BTreeMap<NaiveDate, BTreeSet<Destination>> = BTreeMap::new();
    for flight in flights {
        let destination = flight.destination;
        used_by_week
            .entry(week_start(flight.launch_day))
            .or_default()
            .insert(destination);
        by_day.insert(
            flight.launch_day,
            FlightSummary {
                destination,
                seats_booked: flight.seats_booked,
                seats_left: flight.seats - flight.seats_booked,
            },
        );
    }
    let today_at_pad = now.with_timezone(&pad.tz()).date_naive();
    let active = pad.status.is_bookable();
    let mut days = Vec::new();
    let mut next = Some(from);
    while let Some(date) = next.filter(|date| *date <= to) {
        let used = used_by_week.get(&week_start(date));
        let free_destinations: Vec<Destination> = Destination::ALL
            .into_iter()
            .filter(|d| used.is_none_or(|u| !u.contains(d)))
            .collect();
        let spacex: Vec<SpacexLaunch> = launches
            .iter()
            .filter(|l| {
                let (first, last) = l.possible_days();
                first <= date && date <= last
            })
            .cloned()
            .collect();
        let flight = by_day.get(&date).cloned();
        let spacex_blocks = spacex.iter().any(|l| l.blocked_day == Some(date));
        let bookable = active
            && date > today_at_pad
            && !spacex_blocks
            && match &flight {
                Some(f) => f.seats_left > 0,
                None => !free_destinations.is_empty(),
            };
        days.push(ScheduleDay {
            date,
            flight,
            spacex,
            free_destinations,
            bookable,
        });
        next = date.succ_opt();
    }
    Ok(days)
}
