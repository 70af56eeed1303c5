//! Listing tickets: keyset pagination on (created_at, id), oldest first, so a
//! page boundary never skips or repeats a ticket, however deep, while tickets are
//! booked and cancelled.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use tonic_types::FieldViolation;
use uuid::Uuid;

use super::{Destination, Ticket, TicketStatus, TICKET_COLUMNS};

/// Page size when the request gives none.
pub const DEFAULT_LIMIT: i64 = 20;
/// Largest page; larger requests are lowered to it.
pub const MAX_LIMIT: i64 = 100;

/// Position after the last ticket of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// Opaque, URL-safe encoding.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "v1|{}|{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    /// Decodes [`Cursor::encode`]'s text, checked whole: a time outside years
    /// 1–9999 (which PostgreSQL may not hold) is not a cursor we wrote.
    pub fn decode(raw: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.split('|');
        if parts.next()? != "v1" {
            return None;
        }
        let created_at = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)
            .filter(|t| super::check_day(t.date_naive()).is_ok())?;
        let id = Uuid::parse_str(parts.next()?).ok()?;
        parts.next().is_none().then_some(Cursor { created_at, id })
    }
}

/// A parsed ListBookings request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: i64,
    pub after: Option<Cursor>,
    pub first_name_prefix: Option<String>,
    pub last_name_prefix: Option<String>,
    pub launchpad_id: Option<String>,
    pub destination: Option<Destination>,
    pub status: Option<TicketStatus>,
    pub launch_from: Option<NaiveDate>,
    pub launch_to: Option<NaiveDate>,
}

impl ListQuery {
    /// Checks the paging fields; the filters come already typed from the edge.
    pub fn page(limit: i32, cursor: &str) -> Result<(i64, Option<Cursor>), Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let limit = match limit {
            0 => DEFAULT_LIMIT,
            l if l < 0 => {
                violations.push(FieldViolation::new("limit", "must not be negative"));
                DEFAULT_LIMIT
            }
            l => i64::from(l).min(MAX_LIMIT),
        };
        let after = if cursor.trim().is_empty() {
            None
        } else {
            let decoded = Cursor::decode(cursor);
            if decoded.is_none() {
                violations.push(FieldViolation::new(
                    "cursor",
                    "is not a cursor returned by ListBookings",
                ));
            }
            decoded
        };
        if violations.is_empty() {
            Ok((limit, after))
        } else {
            Err(violations)
        }
    }
}

/// One page and the cursor of the next (none on the last page).
pub async fn list(
    pool: &PgPool,
    query: &ListQuery,
) -> Result<(Vec<Ticket>, Option<Cursor>), sqlx::Error> {
    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE true"));
    if let Some(after) = query.after {
        sql.push(" AND (created_at, id) > (")
            .push_bind(after.created_at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    if let Some(prefix) = &query.first_name_prefix {
        sql.push(" AND lower(first_name) LIKE ")
            .push_bind(like_prefix(prefix));
    }
    if let Some(prefix) = &query.last_name_prefix {
        sql.push(" AND lower(last_name) LIKE ")
            .push_bind(like_prefix(prefix));
    }
    if let Some(pad) = &query.launchpad_id {
        sql.push(" AND launchpad_id = ").push_bind(pad.clone());
    }
    if let Some(destination) = query.destination {
        sql.push(" AND destination = ")
            .push_bind(destination.as_str());
    }
    if let Some(status) = query.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(from) = query.launch_from {
        sql.push(" AND launch_day >= ").push_bind(from);
    }
    if let Some(to) = query.launch_to {
        sql.push(" AND launch_day <= ").push_bind(to);
    }
    sql.push(" ORDER BY created_at, id LIMIT ")
        .push_bind(query.limit + 1);
    let mut tickets: Vec<Ticket> = sql.build_query_as().fetch_all(pool).await?;
    let next = if tickets.len() as i64 > query.limit {
        tickets.truncate(query.limit as usize);
        tickets.last().map(|t| Cursor {
            created_at: t.created_at,
            id: t.id,
        })
    } else {
        None
    };
    Ok((tickets, next))
}

/// A LIKE pattern matching strings that start with `prefix`, case-insensitively.
fn like_prefix(prefix: &str) -> String {
    let escaped = prefix
        .trim()
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_garbage_is_refused() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_900_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "xyz",
            "djF8MXwy",
            "!!!",
            &URL_SAFE_NO_PAD.encode("v2|1|x"),
            // Years -10000, 0 and 10000: chrono has them, the service does not.
            &URL_SAFE_NO_PAD.encode(format!("v1|-377705116800000000|{}", c.id)),
            &URL_SAFE_NO_PAD.encode(format!("v1|-62162035200000000|{}", c.id)),
            &URL_SAFE_NO_PAD.encode(format!("v1|253402300800000000|{}", c.id)),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
        assert!(c
            .encode()
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'));
    }

    #[test]
    fn limits_are_defaulted_capped_and_checked() {
        assert_eq!(ListQuery::page(0, "").unwrap().0, DEFAULT_LIMIT);
        assert_eq!(ListQuery::page(500, "").unwrap().0, MAX_LIMIT);
        assert!(ListQuery::page(-1, "").is_err());
        assert!(ListQuery::page(5, "nope").is_err());
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(like_prefix("O_N%"), "o\\_n\\%%");
    }
}
