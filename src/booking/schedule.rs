//! A launchpad's day-by-day schedule: what a booking page needs to offer only
//! trips that can be booked. Our flights are booking's; the launchpad and its
//! SpaceX launches come from [`crate::launchpads`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::PgPool;

use tonic_types::FieldViolation;

use super::{week_start, BookingError, Destination};
use crate::{
    clock::Clock,
    launchpads::{self, launches, Launchpad, SpacexLaunch},
};

/// Longest schedule window, in days.
pub const MAX_WINDOW_DAYS: i64 = 90;
/// Window when the request gives no end.
pub const DEFAULT_WINDOW_DAYS: u64 = 28;

/// The fields of a GetLaunchpadSchedule request, before parsing.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFields {
    /// The launchpad's id.
    pub id: String,
    /// The first day (`YYYY-MM-DD`, or a time whose UTC day it is); empty:
    /// tomorrow at the launchpad.
    pub from: String,
    /// The last day, included; empty: [`DEFAULT_WINDOW_DAYS`] from `from`.
    pub to: String,
}

/// The launchpad `fields.id` names and its schedule over the asked window (at
/// most [`MAX_WINDOW_DAYS`] days).
pub(crate) async fn launchpad_schedule(
    pool: &PgPool,
    clock: &Clock,
    fields: ScheduleFields,
) -> Result<(Launchpad, Vec<ScheduleDay>), BookingError> {
    let id = fields.id.trim();
    if !launchpads::is_launchpad_id(id) {
        return Err(BookingError::Invalid(vec![FieldViolation::new(
            "id",
            format!("{:?} is not a launchpad id", fields.id),
        )]));
    }
    let pad = launchpads::find(pool, id)
        .await?
        .ok_or_else(|| BookingError::LaunchpadNotFound(id.to_string()))?;
    let now = clock.now();
    let (from, to) = window(&pad, &fields, now).map_err(BookingError::Invalid)?;
    let days = schedule(pool, &pad, from, to, now).await?;
    Ok((pad, days))
}

/// The window's first and last pad-local days. Both ends stay within years
/// 1–9999: the default window is cut at the last day.
fn window(
    pad: &Launchpad,
    fields: &ScheduleFields,
    now: DateTime<Utc>,
) -> Result<(NaiveDate, NaiveDate), Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let from = parse_day("from", &fields.from).unwrap_or_else(|v| {
        violations.push(v);
        None
    });
    let to = parse_day("to", &fields.to).unwrap_or_else(|v| {
        violations.push(v);
        None
    });
    let from = from.unwrap_or_else(|| {
        let today = now.with_timezone(&pad.tz()).date_naive();
        today.checked_add_days(Days::new(1)).unwrap_or(today)
    });
    let to = to.unwrap_or_else(|| {
        from.checked_add_days(Days::new(DEFAULT_WINDOW_DAYS - 1))
            .map_or(super::LAST_DAY, |day| day.min(super::LAST_DAY))
    });
    if violations.is_empty() {
        if to < from {
            violations.push(FieldViolation::new("to", "must not be before from"));
        } else if (to - from).num_days() + 1 > MAX_WINDOW_DAYS {
            violations.push(FieldViolation::new(
                "to",
                format!("the window must be at most {MAX_WINDOW_DAYS} days"),
            ));
        }
    }
    if violations.is_empty() {
        Ok((from, to))
    } else {
        Err(violations)
    }
}

/// A day (`YYYY-MM-DD`, or an RFC 3339 time's UTC day) in years 1–9999; `None`
/// when blank.
fn parse_day(field: &str, raw: &str) -> Result<Option<NaiveDate>, FieldViolation> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(raw).map(|t| t.naive_utc().date()))
        .map_err(|_| FieldViolation::new(field, format!("{raw:?} is not a date (YYYY-MM-DD)")))?;
    super::check_day(day)
        .map(Some)
        .map_err(|e| FieldViolation::new(field, e))
}

/// Our flight on a day.
#[derive(Debug, Clone)]
pub struct FlightSummary {
    pub destination: Destination,
    pub seats_booked: i32,
    pub seats_left: i32,
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
    let launches = launches::on_pad_between(pool, &pad.id, from, to).await?;

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
