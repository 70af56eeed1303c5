//! The transactional outbox: events are written in the transaction of the change
//! that causes them; the relay publishes them.

pub mod publisher;
pub mod relay;

use std::sync::Arc;

use sqlx::PgConnection;
use tokio::{sync::Notify, task::JoinHandle};

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
    sqlx::query(
        "INSERT INTO outbox (event_type, aggregate_id, payload, schema_version) VALUES ($1, $2, $3, $4)",
    )
    .bind(event.event_type())
    .bind(event.ticket().id)
    .bind(event.payload())
    .bind(SCHEMA_VERSION)
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

/// Registers the outbox liveness checks and starts the relay and its listener,
/// unless `OUTBOX_RELAY_ENABLED=false`. Pub/Sub when `PUBSUB_ENABLED`, else the log.
pub fn spawn(state: &crate::app::AppState) -> Vec<JoinHandle<()>> {
    let settings = state.settings.clone();
    state.register_check(Arc::new(relay::BacklogCheck {
        pool: state.pool.clone(),
        threshold: settings.outbox.backlog_threshold,
        max_age: settings.outbox.backlog_max_age,
    }));
    let pubsub = Arc::new(tokio::sync::OnceCell::new());
    if settings.pubsub.enabled {
        state.register_check(Arc::new(publisher::PubSubCheck(pubsub.clone())));
    }
    if !settings.outbox.relay_enabled {
        tracing::info!("outbox relay disabled (OUTBOX_RELAY_ENABLED=false)");
        return Vec::new();
    }

    let pool = relay_pool(&state.pool);
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(relay::listen(
        pool.clone(),
        wake.clone(),
        state.shutdown.clone(),
    ));
    let shutdown = state.shutdown.clone();
    let worker = tokio::spawn(async move {
        let publisher: Arc<dyn publisher::Publisher> = if settings.pubsub.enabled {
            let Some(client) = connect_pubsub(&settings.pubsub, &shutdown).await else {
                return;
            };
            let _ = pubsub.set(client.clone());
            client
        } else {
            Arc::new(publisher::LogPublisher)
        };
        relay::Relay::new(
            pool,
            publisher,
            relay::RelayConfig::from_settings(&settings),
        )
        .run(wake, shutdown)
        .await
    });
    vec![listener, worker]
}

/// The relay's own small pool: requests cannot starve it, and its bookkeeping
/// commits without waiting for the WAL flush (`synchronous_commit=off`). A crash of
/// PostgreSQL can then lose at most a lease (the row is claimed again) or a
/// "published" mark (the event is published again, a duplicate consumers drop by
/// `event_id`); bookings and their events keep the server's durability.
fn relay_pool(pool: &sqlx::PgPool) -> sqlx::PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options([("synchronous_commit", "off")]);
    sqlx::postgres::PgPoolOptions::new()
        // The listener, the relay, and one spare.
        .max_connections(3)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy_with(options)
}

/// Builds the Pub/Sub clients, retrying until it works or shutdown begins.
async fn connect_pubsub(
    settings: &crate::config::PubSubSettings,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<Arc<publisher::PubSubPublisher>> {
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        let built = tokio::select! {
            _ = shutdown.cancelled() => return None,
            built = publisher::PubSubPublisher::connect(settings) => built,
        };
        match built {
            Ok(client) => {
                tracing::info!(topic = client.topic(), emulator = ?settings.emulator_host, "publishing events to Pub/Sub");
                return Some(Arc::new(client));
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    retry_in_s = delay.as_secs(),
                    "cannot build the Pub/Sub client"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(60));
            }
        }
    }
}
