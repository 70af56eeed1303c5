//! The transactional outbox: events are written in the transaction of the change
//! that causes them; the relay publishes them.

pub mod publisher;
pub mod relay;

use std::sync::Arc;

use sqlx::{PgConnection, PgPool};
use tokio::{
    sync::{Notify, OnceCell},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    config::{OutboxSettings, PubSubSettings},
    health::HealthCheck,
};

/// Version of the event contract, sent as the `schema_version` attribute.
pub const SCHEMA_VERSION: &str = "1";

/// `schema_version` of the Go service's messages ([`LegacyEvent`]), published only
/// when `EVENTS_FORMAT` is `legacy` or `both`; every other row is published when it
/// is `v1` or `both`.
pub const LEGACY_SCHEMA_VERSION: &str = "legacy";

/// An event to publish, written in the transaction of the change that causes it.
/// The feature that owns the change builds it; the outbox knows no feature.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The `event_type` attribute.
    pub event_type: &'static str,
    /// What the event is about; its events are published in order (the ordering key).
    pub aggregate_id: Uuid,
    /// The message data (proto3 JSON of the event).
    pub payload: serde_json::Value,
}

/// A message of the Go service's contract: its data is sent byte for byte (the Go
/// shape fixes the key order) with its own attributes instead of this service's
/// (the relay adds only `event_id`, for de-duplication).
#[derive(Debug, Clone)]
pub struct LegacyEvent {
    /// Kept in the row, for operators and logs; not sent.
    pub event_type: &'static str,
    /// The ordering key: the messages of one aggregate are published in order.
    pub aggregate_id: Uuid,
    /// The message data: JSON, exactly as it is to be sent.
    pub data: Vec<u8>,
    /// The message's attributes.
    pub attributes: Vec<(&'static str, String)>,
}

/// Writes Go-contract messages in the caller's transaction with one statement, and
/// wakes the relay on commit.
pub(crate) async fn enqueue_legacy(
    conn: &mut PgConnection,
    events: &[LegacyEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let types: Vec<String> = events.iter().map(|e| e.event_type.to_string()).collect();
    let aggregates: Vec<Uuid> = events.iter().map(|e| e.aggregate_id).collect();
    let payloads: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_slice(&e.data))
        .collect::<Result<_, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let data: Vec<Vec<u8>> = events.iter().map(|e| e.data.clone()).collect();
    let attributes: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::Value::Object(
                e.attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.as_str())))
                    .collect(),
            )
        })
        .collect();
    sqlx::query!(
        "INSERT INTO outbox (event_type, aggregate_id, payload, data, attributes, schema_version, trace_context)
         SELECT t, a, p, d, at, $6, $7
         FROM UNNEST($1::text[], $2::uuid[], $3::jsonb[], $4::bytea[], $5::jsonb[]) AS u(t, a, p, d, at)",
        &types,
        &aggregates,
        &payloads,
        &data,
        &attributes,
        LEGACY_SCHEMA_VERSION,
        crate::telemetry::current_traceparent(),
    )
    .execute(&mut *conn)
    .await?;
    notify(conn).await
}

/// Writes `event` in the caller's transaction and wakes the relay on commit.
pub(crate) async fn enqueue(conn: &mut PgConnection, event: &NewEvent) -> Result<(), sqlx::Error> {
    enqueue_all(conn, std::slice::from_ref(event)).await
}

/// Writes many events in the caller's transaction with one statement (the SpaceX
/// sync cancels thousands of tickets at once) and wakes the relay on commit. Every
/// row is labelled with this release's [`SCHEMA_VERSION`].
pub(crate) async fn enqueue_all(
    conn: &mut PgConnection,
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let types: Vec<String> = events.iter().map(|e| e.event_type.to_string()).collect();
    let aggregates: Vec<Uuid> = events.iter().map(|e| e.aggregate_id).collect();
    let payloads: Vec<serde_json::Value> = events.iter().map(|e| e.payload.clone()).collect();
    // The trace of the request writing the events: their publish joins it.
    sqlx::query!(
        "INSERT INTO outbox (event_type, aggregate_id, payload, schema_version, trace_context)
         SELECT t, a, p, $4, $5 FROM UNNEST($1::text[], $2::uuid[], $3::jsonb[]) AS u(t, a, p)",
        &types,
        &aggregates,
        &payloads,
        SCHEMA_VERSION,
        crate::telemetry::current_traceparent(),
    )
    .execute(&mut *conn)
    .await?;
    notify(conn).await
}

/// `NOTIFY outbox`: delivered when the transaction commits, once per transaction.
pub async fn notify(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify('outbox', '')")
        .execute(conn)
        .await?;
    Ok(())
}

/// What the relay uses: the database, its settings, Pub/Sub's, and the `origin`
/// attribute (the application's name).
#[derive(Clone)]
pub struct OutboxDeps {
    pub pool: PgPool,
    pub settings: OutboxSettings,
    pub pubsub: PubSubSettings,
    pub origin: String,
}

/// The outbox relay of one instance: its liveness checks, then its tasks.
pub struct Outbox {
    deps: OutboxDeps,
    /// The relay's own pool, which its liveness check shares: a saturated API pool
    /// neither stalls the relay nor fails `/liveness`.
    pool: PgPool,
    /// Set once the Pub/Sub client is built; the Pub/Sub check reads it.
    pubsub: Arc<OnceCell<Arc<publisher::PubSubPublisher>>>,
}

impl Outbox {
    pub fn new(deps: OutboxDeps) -> Outbox {
        Outbox {
            pool: relay_pool(&deps.pool),
            deps,
            pubsub: Arc::new(OnceCell::new()),
        }
    }

    /// The `/liveness` entries: the backlog, and Pub/Sub when it is enabled.
    pub fn checks(&self) -> Vec<Arc<dyn HealthCheck>> {
        let mut checks: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(relay::BacklogCheck {
            pool: self.pool.clone(),
            threshold: self.deps.settings.backlog_threshold,
            max_age: self.deps.settings.backlog_max_age,
        })];
        if self.deps.pubsub.enabled {
            checks.push(Arc::new(publisher::PubSubCheck(self.pubsub.clone())));
        }
        checks
    }

    /// Starts the relay and its listener, unless `OUTBOX_RELAY_ENABLED=false`.
    /// Pub/Sub when `PUBSUB_ENABLED`, else the log.
    pub fn start(self, shutdown: CancellationToken) -> Vec<(&'static str, JoinHandle<()>)> {
        let Outbox { deps, pool, pubsub } = self;
        if !deps.settings.relay_enabled {
            tracing::info!("outbox relay disabled (OUTBOX_RELAY_ENABLED=false)");
            return Vec::new();
        }
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(relay::listen(pool.clone(), wake.clone(), shutdown.clone()));
        let worker = tokio::spawn(async move {
            let publisher: Arc<dyn publisher::Publisher> = if deps.pubsub.enabled {
                let Some(client) = connect_pubsub(&deps.pubsub, &shutdown).await else {
                    return;
                };
                let _ = pubsub.set(client.clone());
                client
            } else {
                Arc::new(publisher::LogPublisher)
            };
            let config = relay::RelayConfig::new(&deps.settings, &deps.pubsub, deps.origin);
            relay::Relay::new(pool, publisher, config)
                .run(wake, shutdown)
                .await
        });
        vec![("outbox listener", listener), ("outbox relay", worker)]
    }
}

/// The relay's own small pool: requests cannot starve it, and its bookkeeping
/// commits without waiting for the WAL flush (`synchronous_commit=off`). A crash of
/// PostgreSQL can then lose at most a lease (the row is claimed again) or a
/// "published" mark (the event is published again, a duplicate consumers drop by
/// `event_id`); bookings and their events keep the server's durability.
fn relay_pool(pool: &PgPool) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options([("synchronous_commit", "off")]);
    sqlx::postgres::PgPoolOptions::new()
        // The listener, the relay, and one spare (the backlog check uses it too).
        .max_connections(3)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy_with(options)
}

/// Builds the Pub/Sub clients, retrying until it works or shutdown begins.
async fn connect_pubsub(
    settings: &PubSubSettings,
    shutdown: &CancellationToken,
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
