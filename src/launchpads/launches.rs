//! SpaceX launches on our launchpads, as last synced (`spacex_launches`): the day
//! a launch blocks, the reads a booking and a schedule need, and the sync's writes.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::{PgConnection, PgPool};

/// How precisely SpaceX knows a launch date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatePrecision {
    Hour,
    Day,
    Month,
    Quarter,
    Half,
    Year,
}

impl DatePrecision {
    /// The name SpaceX (and our `spacex_launches.date_precision`) uses.
    pub fn as_str(self) -> &'static str {
        match self {
            DatePrecision::Hour => "hour",
            DatePrecision::Day => "day",
            DatePrecision::Month => "month",
            DatePrecision::Quarter => "quarter",
            DatePrecision::Half => "half",
            DatePrecision::Year => "year",
        }
    }

    /// The precision of a stored name.
    pub fn parse(name: &str) -> Option<DatePrecision> {
        Some(match name {
            "hour" => DatePrecision::Hour,
            "day" => DatePrecision::Day,
            "month" => DatePrecision::Month,
            "quarter" => DatePrecision::Quarter,
            "half" => DatePrecision::Half,
            "year" => DatePrecision::Year,
            _ => return None,
        })
    }
}

crate::db::text_enum!(DatePrecision);

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

/// A SpaceX launch, as stored or as a sync is about to store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpacexLaunch {
    pub id: String,
    pub name: String,
    pub launchpad_id: String,
    pub date_utc: DateTime<Utc>,
    pub date_precision: DatePrecision,
    /// False once SpaceX no longer lists the launch as upcoming: kept for the
    /// record, it blocks nothing.
    pub upcoming: bool,
    /// The pad-local day the launch blocks ([`blocked_day`]); `None` while the
    /// date is coarser than a day.
    pub blocked_day: Option<NaiveDate>,
}

impl SpacexLaunch {
    /// The pad and day this launch blocks now.
    pub fn blocks(&self) -> Option<(&str, NaiveDate)> {
        self.blocked_day
            .filter(|_| self.upcoming)
            .map(|day| (self.launchpad_id.as_str(), day))
    }

    /// Days the launch may happen on: one day when firm; the whole month,
    /// quarter, half or year while tentative.
    pub(crate) fn possible_days(&self) -> (NaiveDate, NaiveDate) {
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

/// The name of an upcoming launch that blocks `pad` on `day`, if any, in the
/// caller's transaction (see [`super::hold_for_booking`] for when it must run).
pub async fn blocking(
    conn: &mut PgConnection,
    pad: &str,
    day: NaiveDate,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT name FROM spacex_launches WHERE launchpad_id = $1 AND blocked_day = $2 AND upcoming LIMIT 1",
        pad,
        day
    )
    .fetch_optional(conn)
    .await
}

/// The upcoming launches of `pad` that may happen between `from` and `to` (pad-local
/// days, inclusive): those blocking a day of the range, and the tentative ones
/// whose month, quarter, half or year may reach into it. By date.
pub(crate) async fn on_pad_between(
    pool: &PgPool,
    pad: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<SpacexLaunch>, sqlx::Error> {
    sqlx::query_as!(
        SpacexLaunch,
        r#"SELECT id, name, launchpad_id, date_utc, date_precision AS "date_precision: DatePrecision",
                  upcoming, blocked_day
           FROM spacex_launches
           WHERE launchpad_id = $1 AND upcoming
             AND (blocked_day BETWEEN $2 AND $3
                  OR (blocked_day IS NULL AND date_utc < ($3::date + 1) AND date_utc >= ($2::date - interval '1 year')))
           ORDER BY date_utc"#,
        pad,
        from,
        to
    )
    .fetch_all(pool)
    .await
}

/// What a sync compares SpaceX's answer with, in its transaction: every upcoming
/// launch, and the launches the answer lists (`ids`) whatever they are now.
pub(crate) async fn upcoming_or_listed(
    conn: &mut PgConnection,
    ids: &[&str],
) -> Result<Vec<SpacexLaunch>, sqlx::Error> {
    sqlx::query_as!(
        SpacexLaunch,
        r#"SELECT id, name, launchpad_id, date_utc,
                  date_precision AS "date_precision: DatePrecision", upcoming, blocked_day
           FROM spacex_launches WHERE upcoming OR id = ANY($1)"#,
        ids as &[&str]
    )
    .fetch_all(conn)
    .await
}

/// Inserts new launches and rewrites changed ones (a moved launch gets its new
/// date, precision, pad and blocked day). `synced_at` is when the row last changed.
pub(crate) async fn upsert(
    conn: &mut PgConnection,
    rows: &[SpacexLaunch],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&SpacexLaunch) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
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

/// Marks launches SpaceX no longer lists as not upcoming: kept for the record, no
/// longer blocking, so their days are free again.
pub(crate) async fn retire(
    conn: &mut PgConnection,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE spacex_launches SET upcoming = false, synced_at = $2 WHERE id = ANY($1)",
        ids,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
