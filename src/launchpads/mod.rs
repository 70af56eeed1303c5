//! Launchpads and the SpaceX launches on them: the `launchpads` and
//! `spacex_launches` tables, their one type each ([`Launchpad`], [`SpacexLaunch`])
//! and the only SQL that names those tables. The SpaceX sync writes them through
//! this module; booking reads them through it, and takes its launchpad lock here.
//!
//! The lock protocol between a booking and the sync lives here, on both sides:
//! a booking holds its pad `FOR KEY SHARE` and then looks for a SpaceX launch on
//! its day ([`hold_for_booking`]); the sync locks the pads whose blocked days it
//! changes `FOR UPDATE` before writing any launch ([`lock_for_sync`]). Either the
//! sync sees the booking's flight or the booking sees the sync's launch.
//!
//! - Here: launchpads — the type, reads, the locks, the sync's upsert.
//! - [`launches`]: SpaceX launches — the day a launch blocks, reads and the sync's
//!   writes.

pub mod launches;

use std::{collections::BTreeSet, fmt};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::{PgConnection, PgExecutor, PgPool};

pub use launches::{blocked_day, DatePrecision, SpacexLaunch};

/// A launchpad: SpaceX's description, as the sync stores it and bookings read it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The pad's time zone: its days are local days.
    pub(crate) fn tz(&self) -> Tz {
        self.timezone.0
    }
}

/// Status of a launchpad, as SpaceX reports it; only `active` pads can be booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchpadStatus {
    Active,
    Inactive,
    Unknown,
    Retired,
    Lost,
    UnderConstruction,
}

impl LaunchpadStatus {
    pub const ALL: [LaunchpadStatus; 6] = [
        LaunchpadStatus::Active,
        LaunchpadStatus::Inactive,
        LaunchpadStatus::Unknown,
        LaunchpadStatus::Retired,
        LaunchpadStatus::Lost,
        LaunchpadStatus::UnderConstruction,
    ];

    /// SpaceX's name, stored as it is.
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchpadStatus::Active => "active",
            LaunchpadStatus::Inactive => "inactive",
            LaunchpadStatus::Unknown => "unknown",
            LaunchpadStatus::Retired => "retired",
            LaunchpadStatus::Lost => "lost",
            LaunchpadStatus::UnderConstruction => "under construction",
        }
    }

    pub fn parse(name: &str) -> Option<LaunchpadStatus> {
        LaunchpadStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// Only active launchpads take bookings.
    pub(crate) fn is_bookable(self) -> bool {
        self == LaunchpadStatus::Active
    }
}

impl fmt::Display for LaunchpadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A launchpad's IANA time zone, decoded once from its row: a zone chrono-tz does
/// not know fails the row (no silent fallback to UTC, which would move pad days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timezone(pub Tz);

impl Timezone {
    pub fn as_str(self) -> &'static str {
        self.0.name()
    }

    pub fn parse(name: &str) -> Option<Timezone> {
        name.parse().ok().map(Timezone)
    }
}

crate::db::text_enum!(Timezone);
crate::db::text_enum!(LaunchpadStatus);

/// A launchpad id: SpaceX's 24 lowercase hex characters.
pub(crate) fn is_launchpad_id(raw: &str) -> bool {
    raw.len() == 24
        && raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The launchpad `id` names (surrounding blanks ignored), if there is one.
pub async fn find(pool: &PgPool, id: &str) -> Result<Option<Launchpad>, sqlx::Error> {
    let id = id.trim();
    if !is_launchpad_id(id) {
        return Ok(None);
    }
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

/// Every launchpad, by name: from the pool, or in the caller's transaction.
pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<Launchpad>, sqlx::Error> {
    sqlx::query_as!(
        Launchpad,
        r#"SELECT id, name, full_name, locality, region, timezone AS "timezone: Timezone",
                  status AS "status: LaunchpadStatus"
           FROM launchpads ORDER BY name, id"#
    )
    .fetch_all(db)
    .await
}

/// The ids of the launchpads whose id contains `text` (any case), in order: a
/// ticket list's launchpad filter.
pub(crate) async fn ids_containing(pool: &PgPool, text: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM launchpads WHERE strpos(lower(id), lower($1)) > 0 ORDER BY id",
        text
    )
    .fetch_all(pool)
    .await
}

/// Whether a launchpad can take a flight on a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Free,
    /// The pad is not active.
    Inactive(LaunchpadStatus),
    /// An upcoming SpaceX launch (named) blocks the pad's day.
    SpacexLaunch(String),
}

/// Holds `pad` for a booking on `day`, in the booking's transaction, and says
/// whether the pad can take a flight then.
///
/// Two statements, in this order: `FOR KEY SHARE` on the pad, then the look for
/// an upcoming SpaceX launch on its day. The lock serialises the booking with a
/// sync that changes the pad's blocked days ([`lock_for_sync`] takes `FOR UPDATE`)
/// without serialising bookings among themselves; the look, a later statement with
/// its own snapshot, sees the launches of a sync that committed while we waited.
/// One statement could not do both: its snapshot would predate that sync's commit.
/// The lock is held until the caller's transaction ends.
pub(crate) async fn hold_for_booking(
    conn: &mut PgConnection,
    pad: &str,
    day: NaiveDate,
) -> Result<Availability, sqlx::Error> {
    let status = sqlx::query_scalar!(
        r#"SELECT status AS "status: LaunchpadStatus" FROM launchpads WHERE id = $1 FOR KEY SHARE"#,
        pad
    )
    .fetch_one(&mut *conn)
    .await?;
    if !status.is_bookable() {
        return Ok(Availability::Inactive(status));
    }
    Ok(match launches::blocking(conn, pad, day).await? {
        Some(launch) => Availability::SpacexLaunch(launch),
        None => Availability::Free,
    })
}

/// Locks, `FOR UPDATE`, the launchpads on which a sync starts blocking a day or
/// whose row it changes, before it writes any launch.
///
/// A booking first takes `FOR KEY SHARE` on its launchpad, then looks for a SpaceX
/// launch on its pad and day, then opens or joins the flight ([`hold_for_booking`]).
/// `FOR UPDATE` is the only row lock that conflicts with `FOR KEY SHARE` (`FOR NO
/// KEY UPDATE`, which a plain `UPDATE` takes, does not), so:
/// - a booking that locked the pad first makes the sync wait until it commits, and
///   the sync's cancellation statement, which runs after this lock in its own
///   snapshot, sees its flight and ticket and cancels them;
/// - a booking that comes second waits for the sync's commit, and its look for a
///   SpaceX launch, a later statement, sees the launch the sync wrote and refuses.
///
/// Either the sync sees the booking or the booking sees the launch. Pads whose
/// blocks do not change are not locked, so a sync that changes nothing never holds
/// up a booking. Locks are taken in id order.
pub(crate) async fn lock_for_sync(
    conn: &mut PgConnection,
    ids: &BTreeSet<String>,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sqlx::query!(
        "SELECT id FROM launchpads WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &ids as &[&str]
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts or rewrites launchpads as SpaceX describes them, refreshed at `now`.
pub(crate) async fn upsert(
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
        &column(|p| p.timezone.as_str()) as &[&str],
        &column(|p| p.status.as_str()) as &[&str],
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_keeps_the_name_it_was_given() {
        // Links are zones of their own name: a pad stored as "US/Eastern" compares
        // equal to SpaceX's "US/Eastern", not to "America/New_York".
        for name in ["America/New_York", "US/Eastern", "Pacific/Kwajalein", "UTC"] {
            assert_eq!(Timezone::parse(name).map(Timezone::as_str), Some(name));
        }
        assert_ne!(
            Timezone::parse("US/Eastern"),
            Timezone::parse("America/New_York")
        );
        assert_eq!(Timezone::parse("Mars/Olympus_Mons"), None);
    }

    #[test]
    fn a_launchpad_id_is_24_lowercase_hex_characters() {
        assert!(is_launchpad_id("5e9e4502f509094188566f88"));
        for bad in [
            "",
            "5e9e4502f509094188566f8",
            "5E9E4502F509094188566F88",
            "5e9e4502f509094188566f88 ",
            "5e9e4502f509094188566g88",
        ] {
            assert!(!is_launchpad_id(bad), "{bad:?}");
        }
    }
}
