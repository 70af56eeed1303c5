//! The transactional outbox: events are written in the transaction of the change
//! that causes them; the relay publishes them.

use sqlx::PgConnection;

use crate::{
    booking::{CancellationReason, Ticket},
    proto,
};

/// Version of the event contract, sent as the `schema_version` attribute.
pub const SCHEMA_VERSION: &str = "1";

/// An event about a ticket.
#[derive(Debug, Clone)]
pub enum Event {
    TicketBooked(Ticket),
    TicketCancelled(Ticket, CancellationReason),
}

impl Event {
    /// The `event_type` attribute.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::TicketBooked(_) => "TicketBooked",
            Event::TicketCancelled(..) => "TicketCancelled",
        }
    }

    fn ticket(&self) -> &Ticket {
        match self {
            Event::TicketBooked(t) | Event::TicketCancelled(t, _) => t,
        }
    }

    /// The message data: the event in proto3 JSON.
    pub fn payload(&self) -> serde_json::Value {
        let ticket = Some(proto::Ticket::from(self.ticket()));
        let value = match self {
            Event::TicketBooked(_) => serde_json::to_value(proto::TicketBooked { ticket }),
            Event::TicketCancelled(_, reason) => serde_json::to_value(proto::TicketCancelled {
                ticket,
                reason: proto::CancellationReason::from(*reason) as i32,
            }),
        };
        value.expect("generated serde impls serialise")
    }
}

/// Writes `event` in the caller's transaction and wakes the relay on commit.
pub async fn enqueue(conn: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (event_type, aggregate_id, payload) VALUES ($1, $2, $3)")
        .bind(event.event_type())
        .bind(event.ticket().id)
        .bind(event.payload())
        .execute(&mut *conn)
        .await?;
    notify(conn).await
}

/// Writes many events in the caller's transaction with one statement (the SpaceX
/// sync cancels thousands of tickets at once) and wakes the relay on commit.
pub async fn enqueue_all(conn: &mut PgConnection, events: &[Event]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let types: Vec<&str> = events.iter().map(Event::event_type).collect();
    let aggregates: Vec<uuid::Uuid> = events.iter().map(|e| e.ticket().id).collect();
    let payloads: Vec<serde_json::Value> = events.iter().map(Event::payload).collect();
    sqlx::query(
        "INSERT INTO outbox (event_type, aggregate_id, payload)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::jsonb[])",
    )
    .bind(&types)
    .bind(&aggregates)
    .bind(&payloads)
    .execute(&mut *conn)
    .await?;
    notify(conn).await
}

/// `NOTIFY outbox`: delivered when the transaction commits, once per transaction.
pub async fn notify(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify('outbox', '')")
        .execute(conn)
        .await?;
    Ok(())
}

/// Starts the relay (work in progress: see issue 6).
pub fn spawn(_state: &crate::app::AppState) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}
