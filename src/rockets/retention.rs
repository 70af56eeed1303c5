//! Retention: rocket messages received longer ago than `ROCKET_MESSAGE_RETENTION`
//! are deleted, in batches, by a worker started with the writer.
//!
//! A rocket's state never needs its messages again: the `rockets` row holds the
//! whole [`Summary`](super::state::Summary) (each "lowest/highest-numbered" value
//! with the number that set it, the speed delta, the count and the last number and
//! time), and every later message is merged into that row alone. Deleting messages
//! therefore changes no state, and no derived value (speed, status, missing
//! messages) is computed from them.
//!
//! What the messages still give is duplicate detection: the primary key on
//! (channel, message number) is what makes a resend a no-op. A resend that arrives
//! after its original was deleted would be stored and counted again, so the
//! retention must stay far longer than any sender retries (30 days by default;
//! rockets resend within seconds).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// Messages deleted per statement: short transactions that never hold many locks.
pub const BATCH: i64 = 5000;
/// Time between two rounds of deletion.
const INTERVAL: Duration = Duration::from_secs(600);

/// Deletes at most `limit` messages received before `cutoff`; returns how many.
pub(crate) async fn delete_batch(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        r#"DELETE FROM rocket_messages
           WHERE (channel, message_number) IN (
               SELECT channel, message_number FROM rocket_messages
               WHERE received_at < $1
               LIMIT $2)"#,
        cutoff,
        limit
    )
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// One round: deletes every message received before `cutoff`, [`BATCH`] at a
/// time, and stops early (between batches) when `stop` fires. Returns how many.
pub async fn step(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    stop: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    while !stop.is_cancelled() {
        let deleted = delete_batch(pool, cutoff, BATCH).await?;
        total += deleted;
        if deleted < BATCH as u64 {
            break;
        }
    }
    Ok(total)
}

/// Steps every [`INTERVAL`] until `stop`. A failed round is logged and tried
/// again at the next one.
pub async fn run(pool: PgPool, clock: Clock, retention: Duration, stop: CancellationToken) {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    loop {
        let cutoff = clock
            .now()
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        match step(&pool, cutoff, &stop).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, %cutoff, "old rocket messages deleted"),
            Err(error) => tracing::warn!(%error, "deleting old rocket messages failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
    tracing::debug!("rocket retention stopped");
}
