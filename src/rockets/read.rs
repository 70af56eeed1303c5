//! Reading rockets: one rocket with its gaps, a page of the list, a page of a
//! rocket's history. The gRPC methods and the HTTP routes (plain and `/v1`) all
//! call these.

use sqlx::PgPool;
use tonic_types::FieldViolation;
use uuid::Uuid;

use super::{
    list::ListQuery,
    store::{self, NumberRange, Rocket, StoredMessage},
};
use crate::proto;

/// History page size when none is asked for, and the largest.
const HISTORY_PAGE: i64 = 100;
const HISTORY_PAGE_MAX: i64 = 1000;

/// Why a read found nothing or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Fields of the request are invalid; every one is named.
    #[error("invalid request: {} invalid field(s)", .0.len())]
    Invalid(Vec<FieldViolation>),
    #[error("no message was received from channel {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Parses a channel field (a UUID).
pub fn channel(field: &str, raw: &str) -> Result<Uuid, FieldViolation> {
    Uuid::try_parse(raw.trim())
        .map_err(|_| FieldViolation::new(field, format!("{raw:?} is not a UUID")))
}

/// One rocket and its missing ranges (the first
/// [`store::MISSING_RANGES_CAP`]), or NOT_FOUND.
pub async fn rocket(
    pool: &PgPool,
    raw_channel: &str,
) -> Result<(Rocket, Vec<NumberRange>), ReadError> {
    let channel = channel("channel", raw_channel).map_err(|v| ReadError::Invalid(vec![v]))?;
    let rocket = store::get(pool, channel)
        .await?
        .ok_or(ReadError::NotFound(channel))?;
    // The state row counts the missing numbers: none, no scan (a complete
    // rocket of 100,000 messages costs ~120 ms of index scan otherwise).
    if rocket.missing_messages == 0 {
        return Ok((rocket, Vec::new()));
    }
    let ranges = store::missing_ranges(pool, rocket.channel, store::MISSING_RANGES_CAP).await?;
    Ok((rocket, ranges))
}

/// One page of rockets and the cursor of the next.
pub async fn rockets(
    pool: &PgPool,
    req: &proto::ListRocketsRequest,
) -> Result<(Vec<Rocket>, Option<String>), ReadError> {
    let query = ListQuery::parse(req).map_err(ReadError::Invalid)?;
    let (rockets, last) = store::list(pool, &query).await?;
    Ok((rockets, query.next_cursor(last)))
}

/// One page of a rocket's stored messages and the `after` of the next page;
/// NOT_FOUND when no message of the channel was ever stored.
pub async fn history(
    pool: &PgPool,
    req: &proto::ListRocketMessagesRequest,
) -> Result<(Vec<StoredMessage>, Option<i64>), ReadError> {
    let channel = channel("channel", &req.channel);
    let mut violations = Vec::new();
    if req.after < 0 {
        violations.push(FieldViolation::new("after", "must be 0 or more"));
    }
    if req.page_size < 0 {
        violations.push(FieldViolation::new("page_size", "must be 0 or more"));
    }
    let channel = match (channel, violations.is_empty()) {
        (Ok(channel), true) => channel,
        (channel, _) => {
            violations.extend(channel.err());
            return Err(ReadError::Invalid(violations));
        }
    };
    let size = match req.page_size {
        0 => HISTORY_PAGE,
        n => i64::from(n).min(HISTORY_PAGE_MAX),
    };
    let mut page = store::messages(pool, channel, req.after, size + 1).await?;
    if page.is_empty() && store::get(pool, channel).await?.is_none() {
        return Err(ReadError::NotFound(channel));
    }
    let next = (page.len() as i64 > size).then(|| {
        page.truncate(size as usize);
        page.last().map_or(req.after, |m| m.number)
    });
    Ok((page, next))
}
