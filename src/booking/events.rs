//! The events booking publishes (`proto/spacet/v1/events.proto`), built here and
//! handed to the outbox in the transaction of the change. The event's `Ticket` is
//! the API's `Ticket` message, so this is also the one conversion of a ticket to its
//! proto message.

use chrono::{DateTime, NaiveDate, Utc};

use super::{CancellationReason, Destination, Gender, Ticket, TicketStatus};
use crate::{outbox::NewEvent, proto};

/// `event_type` of a booking.
pub const TICKET_BOOKED: &str = "TicketBooked";
/// `event_type` of a cancellation.
pub const TICKET_CANCELLED: &str = "TicketCancelled";

/// A ticket was booked.
pub fn booked(ticket: &Ticket) -> NewEvent {
    let payload = proto::TicketBooked {
        ticket: Some(proto::Ticket::from(ticket)),
    };
    NewEvent {
        event_type: TICKET_BOOKED,
        aggregate_id: ticket.id,
        payload: serde_json::to_value(payload).expect("generated serde impls serialise"),
    }
}

/// A ticket was cancelled, for `reason`.
pub fn cancelled(ticket: &Ticket, reason: CancellationReason) -> NewEvent {
    let payload = proto::TicketCancelled {
        ticket: Some(proto::Ticket::from(ticket)),
        reason: proto::CancellationReason::from(reason) as i32,
    };
    NewEvent {
        event_type: TICKET_CANCELLED,
        aggregate_id: ticket.id,
        payload: serde_json::to_value(payload).expect("generated serde impls serialise"),
    }
}

/// A `google.protobuf.Timestamp` from a UTC time.
pub fn timestamp(t: DateTime<Utc>) -> proto::Timestamp {
    proto::Timestamp::from(t)
}

/// Midnight UTC of a day, the way days travel in `launchDate` and `birthday`.
pub fn day_timestamp(day: NaiveDate) -> proto::Timestamp {
    timestamp(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
}

impl From<Destination> for proto::Destination {
    fn from(d: Destination) -> proto::Destination {
        match d {
            Destination::Mars => proto::Destination::Mars,
            Destination::Moon => proto::Destination::Moon,
            Destination::Pluto => proto::Destination::Pluto,
            Destination::AsteroidBelt => proto::Destination::AsteroidBelt,
            Destination::Europa => proto::Destination::Europa,
            Destination::Titan => proto::Destination::Titan,
            Destination::Ganymede => proto::Destination::Ganymede,
        }
    }
}

impl From<Gender> for proto::Gender {
    fn from(g: Gender) -> proto::Gender {
        match g {
            Gender::Unspecified => proto::Gender::Unspecified,
            Gender::Male => proto::Gender::Male,
            Gender::Female => proto::Gender::Female,
            Gender::NonBinary => proto::Gender::NonBinary,
            Gender::Other => proto::Gender::Other,
        }
    }
}

/// The Go service's status string of a ticket (`Ticket.status`).
pub(crate) fn go_status(s: TicketStatus) -> &'static str {
    match s {
        TicketStatus::Confirmed => "scheduled",
        TicketStatus::Cancelled => "cancelled",
    }
}

impl From<TicketStatus> for proto::TicketStatus {
    fn from(s: TicketStatus) -> proto::TicketStatus {
        match s {
            TicketStatus::Confirmed => proto::TicketStatus::Confirmed,
            TicketStatus::Cancelled => proto::TicketStatus::Cancelled,
        }
    }
}

impl From<CancellationReason> for proto::CancellationReason {
    fn from(r: CancellationReason) -> proto::CancellationReason {
        match r {
            CancellationReason::UserRequested => proto::CancellationReason::UserRequested,
            CancellationReason::SpacexConflict => proto::CancellationReason::SpacexConflict,
        }
    }
}

impl From<&Ticket> for proto::Ticket {
    fn from(t: &Ticket) -> proto::Ticket {
        proto::Ticket {
            id: t.id.to_string(),
            first_name: t.first_name.clone(),
            last_name: t.last_name.clone(),
            launch_date: Some(day_timestamp(t.launch_day)),
            launchpad_id: t.launchpad_id.clone(),
            destination_id: proto::Destination::from(t.destination) as i32,
            status: go_status(t.status).to_string(),
            gender: proto::Gender::from(t.gender) as i32,
            birthday: Some(day_timestamp(t.birthday)),
            ticket_status: proto::TicketStatus::from(t.status) as i32,
            cancellation_reason: t
                .cancellation_reason
                .map_or(proto::CancellationReason::Unspecified, Into::into)
                as i32,
            created_at: Some(timestamp(t.created_at)),
            updated_at: Some(timestamp(t.updated_at)),
            owner: t.owner.clone().unwrap_or_default(),
        }
    }
}
