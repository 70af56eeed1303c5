//! The relay: claims due outbox rows, publishes them outside any transaction, and
//! records the outcome. Several relays (one per replica) share the work: a claim
//! takes rows with `FOR UPDATE SKIP LOCKED` and leases them (`claimed_until`), so
//! each event is published once unless a relay dies or stalls past its lease.
//!
//! Times in the outbox (due times, leases, backoff, retention) come from the
//! database clock, the one its column defaults use and every replica shares.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::publisher::{FailureKind, OutgoingMessage, PublishError, Publisher};
use crate::{
    config::{EventsFormat, OutboxSettings, PubSubSettings},
    health::{CheckResult, HealthCheck},
    metrics,
};

/// The channel `enqueue` notifies when its transaction commits.
pub const CHANNEL: &str = "outbox";

/// The claim statement: `$1` is the batch size, `$2` the lease in milliseconds.
/// Public so that tests can check its plan; the relay runs the same file through
/// `query_file_as!`, checked at build time.
///
/// Only each ticket's earliest waiting event can be claimed, and that test comes
/// before the `LIMIT`: events held back behind an earlier one (in backoff, or
/// leased by another relay) are passed over instead of filling the batch. Taking
/// the batch first and filtering it afterwards stalled the relay for good once a
/// batch's worth of cancellations, due since they were written, sorted ahead of
/// their own bookings in backoff (issue 14).
///
/// The plan walks `outbox_due` in order and stops at the `LIMIT`; the head test is
/// a correlated `min()` over `outbox_pending_by_ticket`, one index probe per due
/// row it passes, whatever the statistics say (an anti-join here took a second per
/// claim on a fresh 20 000-row backlog). A claim costs one probe per held-back due
/// event ahead of the batch: about 15 ms for 10 000.
pub const CLAIM_SQL: &str = include_str!("claim.sql");

/// [`CLAIM_SQL`] as a query checked at build time: the macro reads the same file.
macro_rules! claim_query {
    ($batch_size:expr, $lease_ms:expr) => {
        sqlx::query_file_as!(Claimed, "src/outbox/claim.sql", $batch_size, $lease_ms)
    };
}

/// What one [`Relay::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    /// Rows claimed (leased) for publishing.
    pub claimed: usize,
    pub published: usize,
    /// Failed publishes, parked ones included.
    pub failed: usize,
    /// Rows parked after their last allowed attempt.
    pub parked: usize,
    /// Published rows deleted after the retention.
    pub deleted: u64,
    /// Rows of a contract `EVENTS_FORMAT` does not publish, marked done unsent.
    pub discarded: usize,
}

/// Relay settings, taken from the outbox and Pub/Sub settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub batch_size: i64,
    pub interval: Duration,
    pub max_attempts: i32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub retention: Duration,
    /// How long a claim holds rows: longer than the longest publish.
    pub lease: Duration,
    /// The `origin` attribute.
    pub origin: String,
    /// Which contracts are published (`EVENTS_FORMAT`).
    pub events_format: EventsFormat,
    /// The topic's short name, for the publish spans.
    pub topic: String,
}

impl RelayConfig {
    pub fn new(outbox: &OutboxSettings, pubsub: &PubSubSettings, origin: String) -> RelayConfig {
        RelayConfig {
            batch_size: outbox.batch_size_max,
            interval: outbox.interval,
            max_attempts: outbox.max_attempts,
            backoff: outbox.retry_backoff,
            backoff_max: outbox.retry_backoff_max,
            retention: outbox.retention,
            lease: pubsub.publish_timeout * 2 + Duration::from_secs(30),
            origin,
            events_format: outbox.events_format,
            topic: pubsub.topic.clone(),
        }
    }
}

/// A claimed row.
#[derive(Debug)]
struct Claimed {
    id: i64,
    event_type: String,
    aggregate_id: Uuid,
    payload: serde_json::Value,
    schema_version: String,
    /// Set for a Go-contract message: its attributes instead of the standard ones.
    attributes: Option<serde_json::Value>,
    /// Set for a Go-contract message: its data, byte for byte.
    data: Option<Vec<u8>>,
    /// The `traceparent` of the request that wrote the event.
    trace_context: Option<String>,
}

/// Publishes outbox rows. [`Relay::step`] does one round; [`Relay::run`] loops.
pub struct Relay {
    pool: PgPool,
    publisher: Arc<dyn Publisher>,
    config: RelayConfig,
    last_cleanup: Option<Instant>,
}

impl Relay {
    pub fn new(pool: PgPool, publisher: Arc<dyn Publisher>, config: RelayConfig) -> Relay {
        Relay {
            pool,
            publisher,
            config,
            last_cleanup: None,
        }
    }

    /// One round: deletes expired published rows and measures the backlog (at most
    /// once per interval), claims a batch of due rows, publishes them, records the
    /// outcomes.
    #[tracing::instrument(skip_all, fields(publisher = self.publisher.name()))]
    pub async fn step(&mut self) -> Result<StepReport, sqlx::Error> {
        let mut report = StepReport::default();
        if self
            .last_cleanup
            .is_none_or(|at| at.elapsed() >= self.config.interval)
        {
            report.deleted = self.delete_expired().await?;
            // Keeps the backlog gauge fresh without waiting for a liveness probe.
            backlog(&self.pool).await?;
            self.last_cleanup = Some(Instant::now());
        }

        let mut rows = self.claim().await?;
        report.claimed = rows.len();
        if rows.is_empty() {
            return Ok(report);
        }
        rows.sort_by_key(|r| r.id);

        // Booking writes its per-ticket events whatever EVENTS_FORMAT says (it does
        // not know it); the relay publishes the contracts the format selects and
        // marks the others done unsent, so they neither pile up nor hold later
        // events back.
        let (rows, discarded): (Vec<Claimed>, Vec<Claimed>) = rows
            .into_iter()
            .partition(|row| publishes(self.config.events_format, &row.schema_version));
        if !discarded.is_empty() {
            let ids: Vec<i64> = discarded.iter().map(|r| r.id).collect();
            self.mark_published(&ids).await?;
            report.discarded = ids.len();
            tracing::debug!(
                discarded = ids.len(),
                events_format = ?self.config.events_format,
                "events of a contract EVENTS_FORMAT does not publish marked done unsent"
            );
        }
        if rows.is_empty() {
            return Ok(report);
        }

        // A message that breaks Pub/Sub's limits is not sent: it fails as rejected.
        let mut outcomes: Vec<(i64, Result<String, PublishError>)> = Vec::new();
        let mut to_send = Vec::new();
        let mut spans = Vec::new();
        for row in &rows {
            let mut message = self.message(row);
            let span = self.publish_span(row, &mut message);
            match message.check_limits() {
                Ok(()) => {
                    to_send.push(message);
                    spans.push(span);
                }
                Err(error) => {
                    fail_span(&span, &error);
                    outcomes.push((row.id, Err(error)));
                }
            }
        }
        let ids: Vec<i64> = to_send.iter().map(|m| m.event_id).collect();
        let results = self.publisher.publish(to_send).await;
        for (span, result) in spans.iter().zip(&results) {
            match result {
                Ok(id) => {
                    span.record("messaging.message.id", id.as_str());
                }
                Err(error) => fail_span(span, error),
            }
        }
        drop(spans);
        outcomes.extend(ids.into_iter().zip(results));

        let published: Vec<i64> = outcomes
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(id, _)| *id)
            .collect();
        let failed: Vec<(i64, &PublishError)> = outcomes
            .iter()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| (*id, e)))
            .collect();
        report.published = published.len();
        report.failed = failed.len();

        self.mark_published(&published).await?;
        metrics::OUTBOX_PUBLISHED.inc_by(published.len() as u64);
        if !failed.is_empty() {
            metrics::OUTBOX_FAILED.inc_by(failed.len() as u64);
            let (first_id, first_error) = failed[0];
            tracing::warn!(
                failed = failed.len(),
                published = published.len(),
                first_event_id = first_id,
                first_error = %first_error,
                "publishing failed; the events will be retried"
            );
            report.parked = self.mark_failed(&failed).await?;
        }
        Ok(report)
    }

    /// The producer span of one publish, in the trace of the request that wrote
    /// the event (a trace of its own when none was stored); its context goes into
    /// the message's `traceparent` and `tracestate` attributes. Without an
    /// exporter no span is made, and a stored `traceparent` is passed on as is.
    /// Go-contract messages keep their own attributes.
    fn publish_span(&self, row: &Claimed, message: &mut OutgoingMessage) -> tracing::Span {
        let own_attributes = row.attributes.is_some();
        if !crate::telemetry::otel_enabled() {
            if let (Some(traceparent), false) = (&row.trace_context, own_attributes) {
                message
                    .attributes
                    .push(("traceparent".into(), traceparent.clone()));
            }
            return tracing::Span::none();
        }
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let span = tracing::info_span!(
            "publish",
            otel.name = format!("send {}", self.config.topic).as_str(),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "gcp_pubsub",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = self.config.topic.as_str(),
            messaging.message.id = tracing::field::Empty,
            messaging.gcp_pubsub.message.ordering_key = message.ordering_key.as_str(),
            event_id = row.id,
            event_type = row.event_type.as_str(),
            error = tracing::field::Empty,
        );
        let parent = row
            .trace_context
            .as_deref()
            .map(|traceparent| crate::telemetry::remote_context(traceparent, None))
            .unwrap_or_default();
        let _ = span.set_parent(parent);
        if !own_attributes {
            message
                .attributes
                .extend(crate::telemetry::context_pairs(&span));
        }
        span
    }

    fn message(&self, row: &Claimed) -> OutgoingMessage {
        let data = match &row.data {
            Some(data) => data.clone(),
            None => serde_json::to_vec(&row.payload).expect("a JSON value serialises"),
        };
        let mut attributes = vec![("event_id".to_string(), row.id.to_string())];
        match row.attributes.as_ref().and_then(|a| a.as_object()) {
            // The row's own attributes (values are strings; anything else is sent
            // as its JSON text rather than dropped).
            Some(own) => attributes.extend(own.iter().map(|(k, v)| {
                let value = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                (k.clone(), value)
            })),
            None => attributes.extend([
                ("event_type".into(), row.event_type.clone()),
                ("origin".into(), self.config.origin.clone()),
                ("schema_version".into(), row.schema_version.clone()),
            ]),
        }
        OutgoingMessage {
            event_id: row.id,
            event_type: row.event_type.clone(),
            ordering_key: row.aggregate_id.to_string(),
            data: data.into(),
            attributes,
        }
    }

    /// Leases up to a batch of due rows, oldest due first, in one short statement
    /// ([`CLAIM_SQL`]). A row is passed over while an earlier event of its ticket waits (in
    /// backoff, leased by another relay, or in this batch): events of a ticket go
    /// out in order, and a batch holds at most one event per ticket.
    async fn claim(&self) -> Result<Vec<Claimed>, sqlx::Error> {
        claim_query!(self.config.batch_size, self.config.lease.as_millis() as f64)
            .fetch_all(&self.pool)
            .await
    }

    /// Records the publishes. Retried a few times: a row published but not marked
    /// is published again when its lease ends.
    async fn mark_published(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut delay = Duration::from_millis(50);
        for attempt in 1.. {
            let result = sqlx::query!(
                "UPDATE outbox SET published_at = now(), claimed_until = NULL WHERE id = ANY($1)",
                ids,
            )
            .execute(&self.pool)
            .await;
            match result {
                Ok(_) => return Ok(()),
                Err(error) if attempt < 5 => {
                    tracing::warn!(%error, attempt, "could not mark events published; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => return Err(error),
            }
        }
        unreachable!()
    }

    /// Records failures: error, next attempt after an exponential backoff with
    /// jitter, and parking for a rejected event out of attempts. Returns how many
    /// were parked.
    async fn mark_failed(&self, failed: &[(i64, &PublishError)]) -> Result<usize, sqlx::Error> {
        let ids: Vec<i64> = failed.iter().map(|(id, _)| *id).collect();
        // PostgreSQL text cannot hold NUL.
        let errors: Vec<String> = failed
            .iter()
            .map(|(_, e)| e.message.replace('\0', ""))
            .collect();
        let rejected: Vec<bool> = failed
            .iter()
            .map(|(_, e)| e.kind == FailureKind::Rejected)
            .collect();
        // `f.error` comes from the array (never NULL here) and `parked` is computed:
        // PostgreSQL cannot tell they are not NULL.
        let parked: Vec<(i64, String, Uuid, i32, String)> = sqlx::query!(
            r#"UPDATE outbox o SET
                 last_error = f.error,
                 claimed_until = NULL,
                 next_attempt_at = now() + least($2::float8, $1::float8 * power(2, least(o.attempts - 1, 40)))
                                           * (0.5 + random() / 2) * interval '1 millisecond',
                 parked_at = CASE WHEN f.rejected AND o.attempts >= $3 THEN now() END
             FROM unnest($4::bigint[], $5::text[], $6::bool[]) AS f(id, error, rejected)
             WHERE o.id = f.id
             RETURNING o.id, o.event_type, o.aggregate_id, o.attempts, f.error AS "error!", o.parked_at IS NOT NULL AS "parked!""#,
            self.config.backoff.as_millis() as f64,
            self.config.backoff_max.as_millis() as f64,
            self.config.max_attempts,
            &ids,
            &errors,
            &rejected,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .filter(|row| row.parked)
        .map(|row| (row.id, row.event_type, row.aggregate_id, row.attempts, row.error))
        .collect();
        for (id, event_type, ticket, attempts, error) in &parked {
            tracing::error!(
                event_id = id,
                event_type = %super::publisher::truncate(event_type, 64),
                ticket = %ticket,
                attempts,
                error = %error,
                "event parked: Pub/Sub refuses it; it stays in the outbox for an operator"
            );
        }
        metrics::OUTBOX_PARKED.inc_by(parked.len() as u64);
        Ok(parked.len())
    }

    /// Deletes published rows older than the retention, in chunks.
    async fn delete_expired(&self) -> Result<u64, sqlx::Error> {
        const CHUNK: i64 = 5000;
        let mut deleted = 0;
        for _ in 0..20 {
            let n = sqlx::query!(
                "DELETE FROM outbox WHERE id IN (
                     SELECT id FROM outbox
                     WHERE published_at < now() - $1 * interval '1 millisecond'
                     LIMIT $2)",
                self.config.retention.as_millis() as f64,
                CHUNK,
            )
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += n;
            if n < CHUNK as u64 {
                break;
            }
        }
        Ok(deleted)
    }

    /// Steps until `shutdown`: again at once while a full batch went out, otherwise
    /// when `wake` fires (a NOTIFY) or after the interval. A step in progress
    /// finishes (every publish in it is bounded).
    pub async fn run(mut self, wake: Arc<Notify>, shutdown: CancellationToken) {
        tracing::info!(publisher = self.publisher.name(), "outbox relay started");
        while !shutdown.is_cancelled() {
            match self.step().await {
                Ok(report) => {
                    if report.claimed > 0 || report.deleted > 0 {
                        tracing::debug!(?report, "outbox relay step");
                    }
                    if report.claimed as i64 >= self.config.batch_size
                        && report.published + report.discarded > 0
                    {
                        continue;
                    }
                }
                Err(error) => tracing::warn!(%error, "outbox relay step failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
        tracing::info!("outbox relay stopped");
    }
}

/// Marks a publish span failed.
fn fail_span(span: &tracing::Span, error: &PublishError) {
    if !span.is_disabled() {
        span.record("otel.status_code", "ERROR");
        span.record("error", error.message.as_str());
    }
}

/// Whether `format` publishes events written with `schema_version`: the Go
/// service's messages under `legacy` and `both`, every other event under `v1` and
/// `both` (a newer release's versions included: never dropped for being unknown).
pub fn publishes(format: EventsFormat, schema_version: &str) -> bool {
    if schema_version == super::LEGACY_SCHEMA_VERSION {
        format.publishes_legacy()
    } else {
        format.publishes_v1()
    }
}

/// Listens on the `outbox` channel and wakes the relay on every notification.
/// Reconnects when the connection drops, and then wakes the relay too, since
/// notifications sent meanwhile are lost.
pub async fn listen(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            } => connected,
        };
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "outbox listener cannot connect");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        wake.notify_one();
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) => {
                    tracing::warn!("outbox listener lost its connection; reconnected");
                    wake.notify_one();
                }
                Err(error) => {
                    tracing::warn!(%error, "outbox listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// The outbox backlog: unpublished events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Waiting to be published (parked ones excluded).
    pub pending: i64,
    /// Parked: refused by Pub/Sub after every attempt.
    pub parked: i64,
    /// Age of the oldest pending event.
    pub oldest_age: Option<Duration>,
}

/// Measures the backlog and updates the backlog gauge.
pub async fn backlog(pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    // count(*) is never NULL; the age is NULL when nothing is pending.
    let row = sqlx::query!(
        r#"SELECT count(*) AS "count!", extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_s
           FROM outbox WHERE published_at IS NULL AND parked_at IS NULL"#,
    )
    .fetch_one(pool)
    .await?;
    let (pending, oldest_age_s) = (row.count, row.oldest_age_s);
    let parked = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM outbox WHERE parked_at IS NOT NULL AND published_at IS NULL"#,
    )
    .fetch_one(pool)
    .await?;
    metrics::OUTBOX_BACKLOG.set(pending + parked);
    Ok(Backlog {
        pending,
        parked,
        oldest_age: oldest_age_s.map(|s| Duration::from_secs_f64(s.max(0.0))),
    })
}

/// `/liveness` check: degraded when the backlog is larger or older than the
/// thresholds, or when events are parked.
pub struct BacklogCheck {
    pub pool: PgPool,
    pub threshold: i64,
    pub max_age: Duration,
}

#[async_trait::async_trait]
impl HealthCheck for BacklogCheck {
    fn name(&self) -> &'static str {
        "outbox"
    }

    async fn check(&self) -> CheckResult {
        let backlog = match backlog(&self.pool).await {
            Ok(backlog) => backlog,
            Err(error) => {
                tracing::warn!(%error, "liveness: outbox backlog check failed");
                return CheckResult::degraded(
                    json!({"error": "the backlog could not be measured"}),
                );
            }
        };
        let age = backlog.oldest_age.unwrap_or_default();
        let details = json!({
            "pending": backlog.pending,
            "parked": backlog.parked,
            "oldest_pending_age_seconds": (age.as_secs_f64() * 1000.0).round() / 1000.0,
        });
        let mut problems = Vec::new();
        if backlog.pending > self.threshold {
            problems.push(format!(
                "{} events waiting, more than {} (OUTBOX_BACKLOG_THRESHOLD)",
                backlog.pending, self.threshold
            ));
        }
        if age > self.max_age {
            problems.push(format!(
                "the oldest event has waited {}s, more than {:?} (OUTBOX_BACKLOG_MAX_AGE)",
                age.as_secs(),
                self.max_age
            ));
        }
        if backlog.parked > 0 {
            problems.push(format!(
                "{} events parked after repeated refusals",
                backlog.parked
            ));
        }
        if problems.is_empty() {
            CheckResult::healthy(details)
        } else {
            let mut details = details;
            details["problems"] = json!(problems);
            CheckResult::degraded(details)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests check the plan of [`CLAIM_SQL`]; the relay must run that very text.
    #[test]
    fn claim_query_runs_claim_sql() {
        let query = claim_query!(1i64, 1.0f64);
        assert_eq!(sqlx::Execute::sql(&query), CLAIM_SQL);
    }

    #[test]
    fn events_format_selects_contracts_and_never_drops_an_unknown_version() {
        use crate::outbox::{LEGACY_SCHEMA_VERSION, SCHEMA_VERSION};
        let cases = [
            (EventsFormat::V1, SCHEMA_VERSION, true),
            (EventsFormat::V1, LEGACY_SCHEMA_VERSION, false),
            (EventsFormat::V1, "2", true),
            (EventsFormat::Legacy, SCHEMA_VERSION, false),
            (EventsFormat::Legacy, "2", false),
            (EventsFormat::Legacy, LEGACY_SCHEMA_VERSION, true),
            (EventsFormat::Both, SCHEMA_VERSION, true),
            (EventsFormat::Both, LEGACY_SCHEMA_VERSION, true),
        ];
        for (format, version, expected) in cases {
            assert_eq!(publishes(format, version), expected, "{format:?} {version}");
        }
    }
}
