//! Generated protobuf code and the conversions between it and domain types.

#![allow(clippy::all, missing_docs)]

/// `google.api` (HTTP annotations).
pub mod google_api {
    include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
}

mod generated {
    include!(concat!(env!("OUT_DIR"), "/spacet.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/spacet.v1.serde.rs"));
}

pub use generated::*;

/// Encoded descriptors of every proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spacet_descriptor.bin"));

use chrono::{DateTime, NaiveDate, Utc};

use crate::booking;

/// A `google.protobuf.Timestamp` from a UTC time.
pub fn timestamp(t: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Midnight UTC of a day, the way days travel in `launchDate` and `birthday`.
pub fn day_timestamp(day: NaiveDate) -> pbjson_types::Timestamp {
    timestamp(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
}

/// A UTC time from a timestamp, or why it is not one.
pub fn from_timestamp(t: &pbjson_types::Timestamp) -> Result<DateTime<Utc>, String> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err("is not a valid timestamp (nanos out of range)".into());
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .filter(|d| (1..=9999).contains(&chrono::Datelike::year(d)))
        .ok_or_else(|| "is not a valid timestamp (out of range)".into())
}

impl From<booking::Destination> for Destination {
    fn from(d: booking::Destination) -> Destination {
        Destination::from_str_name(d.as_str()).expect("names match the proto")
    }
}

impl From<booking::CancellationReason> for CancellationReason {
    fn from(r: booking::CancellationReason) -> CancellationReason {
        CancellationReason::from_str_name(r.as_str()).expect("names match the proto")
    }
}

/// The domain destination of a proto enum number (`None` when unset or unknown).
pub fn destination(value: i32) -> Option<booking::Destination> {
    Destination::try_from(value)
        .ok()
        .and_then(|d| booking::Destination::parse(d.as_str_name()))
}

impl From<&booking::Ticket> for Ticket {
    fn from(t: &booking::Ticket) -> Ticket {
        Ticket {
            id: t.id.to_string(),
            first_name: t.first_name.clone(),
            last_name: t.last_name.clone(),
            gender: Gender::from_str_name(&t.gender).unwrap_or(Gender::Unspecified) as i32,
            birthday: Some(day_timestamp(t.birthday)),
            launchpad_id: t.launchpad_id.clone(),
            launch_date: Some(day_timestamp(t.launch_day)),
            destination_id: Destination::from_str_name(&t.destination)
                .unwrap_or(Destination::Unspecified) as i32,
            status: TicketStatus::from_str_name(&t.status).unwrap_or(TicketStatus::Unspecified)
                as i32,
            cancellation_reason: t
                .cancellation_reason
                .as_deref()
                .and_then(CancellationReason::from_str_name)
                .unwrap_or(CancellationReason::Unspecified) as i32,
            created_at: Some(timestamp(t.created_at)),
            updated_at: Some(timestamp(t.updated_at)),
        }
    }
}
