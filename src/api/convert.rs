//! Proto ↔ domain conversions at the edge. Domain → proto for tickets lives with
//! the events that embed the same message (`booking::events`).

use chrono::{DateTime, Utc};

pub use crate::booking::events::{day_timestamp, timestamp};
use crate::{booking, launchpads, proto, spacex};

/// A UTC time from a timestamp, or why it is not one (years 1–9999 only).
pub(crate) fn from_timestamp(t: &proto::Timestamp) -> Result<DateTime<Utc>, String> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err("is not a valid timestamp (nanos out of range)".into());
    }
    t.to_datetime()
        .filter(|d| (1..=9999).contains(&chrono::Datelike::year(d)))
        .ok_or_else(|| "is not a valid timestamp (out of range)".into())
}

/// The domain destination of a proto enum number (`None` when unknown). 0 is
/// MARS, as in the Go service.
pub fn destination(value: i32) -> Option<booking::Destination> {
    match proto::Destination::try_from(value).ok()? {
        proto::Destination::Mars => Some(booking::Destination::Mars),
        proto::Destination::Moon => Some(booking::Destination::Moon),
        proto::Destination::Pluto => Some(booking::Destination::Pluto),
        proto::Destination::AsteroidBelt => Some(booking::Destination::AsteroidBelt),
        proto::Destination::Europa => Some(booking::Destination::Europa),
        proto::Destination::Titan => Some(booking::Destination::Titan),
        proto::Destination::Ganymede => Some(booking::Destination::Ganymede),
    }
}

/// The domain gender of a proto enum number (`None` when unknown).
pub fn gender(value: i32) -> Option<booking::Gender> {
    Some(match proto::Gender::try_from(value).ok()? {
        proto::Gender::Unspecified => booking::Gender::Unspecified,
        proto::Gender::Male => booking::Gender::Male,
        proto::Gender::Female => booking::Gender::Female,
        proto::Gender::NonBinary => booking::Gender::NonBinary,
        proto::Gender::Other => booking::Gender::Other,
    })
}

impl From<&spacex::SyncReport> for proto::SyncReport {
    fn from(r: &spacex::SyncReport) -> proto::SyncReport {
        let n = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        proto::SyncReport {
            applied: r.applied(),
            launchpads_added: n(r.launchpads_added),
            launchpads_updated: n(r.launchpads_updated),
            launches_seen: n(r.launches_seen),
            launches_added: n(r.launches_added),
            launches_updated: n(r.launches_updated),
            launches_removed: n(r.launches_removed),
            flights_cancelled: n(r.flights_cancelled),
            tickets_cancelled: n(r.tickets_cancelled),
            launches_skipped: n(r.launches_skipped),
            duration_seconds: r.duration.as_secs_f64(),
            skipped_reason: r
                .skipped
                .map(spacex::SkipReason::as_str)
                .unwrap_or("")
                .to_string(),
            apply_duration_seconds: r.apply_duration.as_secs_f64(),
            held_reason: r.held_reason.clone().unwrap_or_default(),
            flights_to_cancel: n(r.flights_to_cancel),
            tickets_to_cancel: n(r.tickets_to_cancel),
            joined: r.joined,
        }
    }
}

/// A SpaceX date precision as the proto enum.
pub fn date_precision(precision: launchpads::DatePrecision) -> proto::DatePrecision {
    use launchpads::DatePrecision as D;
    match precision {
        D::Half => proto::DatePrecision::Half,
        D::Quarter => proto::DatePrecision::Quarter,
        D::Year => proto::DatePrecision::Year,
        D::Month => proto::DatePrecision::Month,
        D::Day => proto::DatePrecision::Day,
        D::Hour => proto::DatePrecision::Hour,
    }
}
