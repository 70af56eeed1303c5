//! Listing tickets: keyset pagination on (created_at, id), oldest first, so a
//! page boundary never skips or repeats a ticket, however deep, while tickets are
//! booked and cancelled.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use tonic_types::FieldViolation;
use uuid::Uuid;

use super::{Destination, Ticket, TicketScope, TicketStatus, TICKET_COLUMNS};

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

/// A parsed ListBookings request. Every filter given must match. The text
/// filters are the Go service's: case-insensitive substrings.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: i64,
    pub after: Option<Cursor>,
    /// Substring of the first name, any case.
    pub first_name: Option<String>,
    /// Substring of the last name, any case.
    pub last_name: Option<String>,
    /// Substring of the launchpad id, any case (resolved against the launchpads).
    pub launchpad: Option<String>,
    /// The ticket's destination is one of these.
    pub destinations: Option<Vec<Destination>>,
    /// The ticket's status is one of these.
    pub statuses: Option<Vec<TicketStatus>>,
    pub launch_from: Option<NaiveDate>,
    pub launch_to: Option<NaiveDate>,
    /// Only this owner's tickets (a passenger's own list, or an agent's filter).
    pub owner: Option<String>,
    /// The lowered first names `first_name` can match, when [`resolve`] found
    /// few (a substring too short for a trigram).
    pub first_names: Option<Vec<String>>,
    /// The same for `last_name`.
    pub last_names: Option<Vec<String>>,
}

/// The destinations whose name contains `text`, any case, with `_` or a space
/// between words (`moon`, `Asteroid Belt`, `belt`), as the Go service matched them.
pub(crate) fn destinations_matching(text: &str) -> Vec<Destination> {
    let wanted = text.trim().to_lowercase().replace(' ', "_");
    Destination::ALL
        .into_iter()
        .filter(|d| d.as_str().to_lowercase().contains(&wanted))
        .collect()
}

/// The statuses named by `text`, any case: the Go service's `scheduled` and
/// `cancelled`, and this service's `CONFIRMED` and `CANCELLED` (a substring of a
/// name matches, as in the Go service).
pub(crate) fn statuses_matching(text: &str) -> Vec<TicketStatus> {
    let wanted = text.trim().to_lowercase();
    [
        (TicketStatus::Confirmed, ["scheduled", "confirmed"]),
        (TicketStatus::Cancelled, ["cancelled", "canceled"]),
    ]
    .into_iter()
    .filter(|(_, names)| names.iter().any(|n| n.contains(&wanted)))
    .map(|(status, _)| status)
    .collect()
}

/// Keeps the values in both sets, when both are given.
pub fn both<T: PartialEq>(a: Option<Vec<T>>, b: Option<Vec<T>>) -> Option<Vec<T>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.into_iter().filter(|x| b.contains(x)).collect()),
        (a, b) => a.or(b),
    }
}

/// The fields of a ListBookings request, before parsing (the edge fills them
/// from its message: an enum number or a timestamp it could not read is an
/// `Err` that says why).
#[derive(Debug, Clone, Default)]
pub struct ListFields {
    pub limit: i32,
    pub cursor: String,
    /// An agent's filter on the owner (a passenger lists its own tickets).
    pub owner: String,
    pub destination_id: Option<Result<Destination, String>>,
    pub ticket_status: Option<Result<TicketStatus, String>>,
    pub launch_date_from: Option<Result<DateTime<Utc>, String>>,
    pub launch_date_to: Option<Result<DateTime<Utc>, String>>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub launchpad_id: Option<String>,
    pub destination: Option<String>,
    pub status: Option<String>,
}

impl ListQuery {
    /// Parses a request within `scope`: a passenger's list is its own tickets
    /// whatever `owner` says; every violation is named (a bad `owner` alone).
    pub fn parse(
        fields: ListFields,
        scope: &TicketScope,
    ) -> Result<ListQuery, Vec<FieldViolation>> {
        let owner = match scope {
            TicketScope::Owner(owner) => Some(owner.clone()),
            TicketScope::All => super::owner_field("owner", &fields.owner).map_err(|v| vec![v])?,
        };
        let mut violations = Vec::new();
        let (limit, after) = ListQuery::page(fields.limit, &fields.cursor).unwrap_or_else(|v| {
            violations.extend(v);
            (0, None)
        });
        let destination_id =
            given(&mut violations, "destination_id", fields.destination_id).map(|d| vec![d]);
        let ticket_status =
            given(&mut violations, "ticket_status", fields.ticket_status).map(|s| vec![s]);
        let launch_from = given(&mut violations, "launch_date_from", fields.launch_date_from)
            .map(|t| t.date_naive());
        let launch_to =
            given(&mut violations, "launch_date_to", fields.launch_date_to).map(|t| t.date_naive());
        let mut text = |field: &str, value: Option<String>| {
            let value = value?.trim().to_string();
            if value.chars().any(char::is_control) {
                violations.push(FieldViolation::new(
                    field,
                    "must not contain control characters",
                ));
                None
            } else if value.chars().count() > 100 {
                violations.push(FieldViolation::new(field, "must be at most 100 characters"));
                None
            } else {
                Some(value).filter(|v| !v.is_empty())
            }
        };
        let first_name = text("first_name", fields.first_name);
        let last_name = text("last_name", fields.last_name);
        let launchpad = text("launchpad_id", fields.launchpad_id);
        let destination = text("destination", fields.destination);
        let status = text("status", fields.status);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(ListQuery {
            limit,
            after,
            first_name,
            last_name,
            launchpad,
            destinations: both(
                destination.as_deref().map(destinations_matching),
                destination_id,
            ),
            statuses: both(status.as_deref().map(statuses_matching), ticket_status),
            launch_from,
            launch_to,
            owner,
            ..ListQuery::default()
        })
    }

    /// Checks the paging fields.
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

/// A field the edge decoded: its value, or `None` with its violation noted.
fn given<T>(
    violations: &mut Vec<FieldViolation>,
    field: &str,
    value: Option<Result<T, String>>,
) -> Option<T> {
    match value? {
        Ok(value) => Some(value),
        Err(e) => {
            violations.push(FieldViolation::new(field, e));
            None
        }
    }
}

/// Day ranges up to this many days are read day by day and merged: each day's
/// tickets come in keyset order from `tickets_day_keyset`/`tickets_pad_day_keyset`,
/// so a page costs one index descent per day plus its rows, wherever the days'
/// tickets sit in the table. Longer or open ranges walk the keyset order.
pub const MERGED_DAYS: i64 = 31;

/// Whether `from..=to` (both given, `from < to`) is short enough to read day by day.
fn merged(from: NaiveDate, to: NaiveDate) -> bool {
    from < to && (to - from).num_days() < MERGED_DAYS
}

/// One page and the cursor of the next (none on the last page).
pub async fn list(
    pool: &PgPool,
    query: &ListQuery,
) -> Result<(Vec<Ticket>, Option<Cursor>), sqlx::Error> {
    tracing::Instrument::instrument(list_page(pool, query), crate::db::span("SELECT", "tickets"))
        .await
}

async fn list_page(
    pool: &PgPool,
    query: &ListQuery,
) -> Result<(Vec<Ticket>, Option<Cursor>), sqlx::Error> {
    let Some((query, pads)) = resolve(pool, query).await? else {
        return Ok((Vec::new(), None));
    };
    let Some(mut sql) = list_sql("", &query, pads) else {
        return Ok((Vec::new(), None));
    };
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

/// What [`list_sql`] needs beyond the request: the launchpad ids `query.launchpad`
/// names; a one-sided launch day range closed at the tickets' first or last
/// launch day when that makes it short enough to merge day by day (a query
/// `launch_day >= from` reads the same rows as `from..=last`); a range too long
/// for that started at its flights' first booking time; and the names a
/// substring too short for a trigram can match. `None` when nothing can match.
pub async fn resolve(
    pool: &PgPool,
    query: &ListQuery,
) -> Result<Option<(ListQuery, Option<Vec<String>>)>, sqlx::Error> {
    // A pad id substring names a few of the (few) launchpads: resolved first, the
    // ticket query filters on whole ids and can use their indexes.
    let pads = match &query.launchpad {
        Some(text) => Some(crate::launchpads::ids_containing(pool, text.trim()).await?),
        None => None,
    };
    let mut query = query.clone();
    query.first_names = names_matching(pool, "first", query.first_name.as_deref()).await?;
    query.last_names = names_matching(pool, "last", query.last_name.as_deref()).await?;
    if [&query.first_names, &query.last_names]
        .iter()
        .any(|names| names.as_ref().is_some_and(Vec::is_empty))
    {
        return Ok(None);
    }
    if query.launch_from.is_some() != query.launch_to.is_some() {
        // Two descents of tickets_day_keyset.
        let days = sqlx::query!(
            r#"SELECT min(launch_day) AS "first?", max(launch_day) AS "last?" FROM tickets"#
        )
        .fetch_one(pool)
        .await?;
        if let (Some(from), Some(to)) = (
            query.launch_from.or(days.first),
            query.launch_to.or(days.last),
        ) {
            if (to - from).num_days() < MERGED_DAYS {
                query.launch_from = Some(from);
                query.launch_to = Some(to);
            }
        }
    }
    // A day, or a range read day by day, is found by its indexes; a longer or
    // open range walks the keyset order, from its flights' first booking.
    let indexed = matches!((query.launch_from, query.launch_to),
        (Some(from), Some(to)) if from == to || merged(from, to));
    if (query.launch_from.is_some() || query.launch_to.is_some()) && !indexed {
        match first_booking_bound(pool, &query, pads.as_deref()).await? {
            Bound::NoFlight => return Ok(None),
            Bound::From(first) => {
                // `(created_at, id) > (first - 1 µs, max)` is `created_at >= first`
                // (timestamps are microseconds).
                let bound = Cursor {
                    created_at: first - chrono::Duration::microseconds(1),
                    id: Uuid::max(),
                };
                if query
                    .after
                    .is_none_or(|after| (after.created_at, after.id) < (bound.created_at, bound.id))
                {
                    query.after = Some(bound);
                }
            }
            Bound::Unknown => {}
        }
    }
    Ok(Some((query, pads)))
}

/// Name substrings of fewer characters than this have no trigram to search by.
const TRIGRAM: usize = 3;
/// Up to this many matching names become an equality filter; more, and the
/// keyset walk meets matches soon enough on its own.
const NAME_EQUALITIES: usize = 1_000;

/// The lowered names of `field` (`first` or `last`) that contain `text`, when
/// `text` is too short for a trigram and they are few; `None` otherwise.
async fn names_matching(
    pool: &PgPool,
    field: &str,
    text: Option<&str>,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    let Some(text) = text.map(|t| t.trim().to_lowercase()) else {
        return Ok(None);
    };
    if text.chars().count() >= TRIGRAM {
        return Ok(None);
    }
    let names = sqlx::query_scalar!(
        "SELECT name FROM ticket_names WHERE field = $1 AND strpos(name, lower($2)) > 0 LIMIT $3",
        field,
        text,
        NAME_EQUALITIES as i64 + 1
    )
    .fetch_all(pool)
    .await?;
    Ok((names.len() <= NAME_EQUALITIES).then_some(names))
}

/// Where the tickets of a launch day range start in the keyset order.
enum Bound {
    /// No flight in the range (of the pads): no ticket can match.
    NoFlight,
    /// No ticket of the range was created before this.
    From(DateTime<Utc>),
    /// A flight of the range has no recorded bound.
    Unknown,
}

/// The least `first_booked_at` of the flights in `query`'s day range (on
/// `pads`, when given): one range scan of a flights index, whose rows are the
/// range's flights (a few per day), not its tickets. A long range whose tickets
/// were all booked late then starts its keyset walk at them instead of walking
/// every ticket booked before.
async fn first_booking_bound(
    pool: &PgPool,
    query: &ListQuery,
    pads: Option<&[String]>,
) -> Result<Bound, sqlx::Error> {
    let (from, to) = (query.launch_from, query.launch_to);
    let row = match pads {
        Some(pads) => {
            sqlx::query!(
                r#"SELECT count(*) AS "flights!", count(first_booked_at) AS "known!", min(first_booked_at) AS first
                   FROM flights
                   WHERE launchpad_id = ANY($1)
                     AND launch_day BETWEEN coalesce($2, '-infinity'::date) AND coalesce($3, 'infinity'::date)"#,
                pads,
                from,
                to
            )
            .fetch_one(pool)
            .await
            .map(|r| (r.flights, r.known, r.first))?
        }
        None => {
            sqlx::query!(
                r#"SELECT count(*) AS "flights!", count(first_booked_at) AS "known!", min(first_booked_at) AS first
                   FROM flights
                   WHERE launch_day BETWEEN coalesce($1, '-infinity'::date) AND coalesce($2, 'infinity'::date)"#,
                from,
                to
            )
            .fetch_one(pool)
            .await
            .map(|r| (r.flights, r.known, r.first))?
        }
    };
    Ok(match row {
        (0, _, _) => Bound::NoFlight,
        (flights, known, Some(first)) if known == flights => Bound::From(first),
        _ => Bound::Unknown,
    })
}

/// The SQL of one page, after `head` (empty, or `EXPLAIN ...`) (`limit + 1` rows, to tell whether another follows), with
/// `pads` the launchpad ids `query.launchpad` resolved to; `None` when a filter
/// matches nothing. [`list`] runs exactly this; the plan test explains it.
pub fn list_sql(
    head: &str,
    query: &ListQuery,
    pads: Option<Vec<String>>,
) -> Option<QueryBuilder<'static, Postgres>> {
    let matches_nothing = pads.as_ref().is_some_and(Vec::is_empty)
        || query.destinations.as_ref().is_some_and(Vec::is_empty)
        || query.statuses.as_ref().is_some_and(Vec::is_empty);
    if matches_nothing {
        return None;
    }
    let rows = query.limit + 1;
    let mut sql = QueryBuilder::new(head);
    match (query.launch_from, query.launch_to) {
        (Some(from), Some(to)) if merged(from, to) => {
            // One ordered index scan per day, at most `rows` each, then the first
            // `rows` of them all.
            sql.push(format!(
                "SELECT {TICKET_COLUMNS} FROM generate_series("
            ))
            .push_bind(from)
            .push("::date, ")
            .push_bind(to)
            .push(format!(
                "::date, interval '1 day') AS d(day) CROSS JOIN LATERAL (SELECT {TICKET_COLUMNS} FROM tickets WHERE launch_day = d.day::date"
            ));
            push_filters(&mut sql, query, pads);
            sql.push(" ORDER BY created_at, id LIMIT ")
                .push_bind(rows)
                .push(") AS t");
        }
        (from, to) => {
            sql.push(format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE true"));
            if from.is_some() && from == to {
                // An equality, not a range: the day's tickets in keyset order.
                sql.push(" AND launch_day = ").push_bind(from);
            } else {
                if let Some(from) = from {
                    sql.push(" AND launch_day >= ").push_bind(from);
                }
                if let Some(to) = to {
                    sql.push(" AND launch_day <= ").push_bind(to);
                }
            }
            push_filters(&mut sql, query, pads);
        }
    }
    sql.push(" ORDER BY created_at, id LIMIT ").push_bind(rows);
    Some(sql)
}

/// The filters other than the launch days, each ` AND ...`.
fn push_filters(
    sql: &mut QueryBuilder<'static, Postgres>,
    query: &ListQuery,
    pads: Option<Vec<String>>,
) {
    if let Some(after) = query.after {
        sql.push(" AND (created_at, id) > (")
            .push_bind(after.created_at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    if let Some(owner) = &query.owner {
        sql.push(" AND owner = ").push_bind(owner.clone());
    }
    if let Some(text) = &query.first_name {
        sql.push(" AND lower(first_name) LIKE lower(")
            .push_bind(like_substring(text))
            .push(")");
    }
    if let Some(text) = &query.last_name {
        sql.push(" AND lower(last_name) LIKE lower(")
            .push_bind(like_substring(text))
            .push(")");
    }
    for (column, names) in [
        ("lower(first_name)", &query.first_names),
        ("lower(last_name)", &query.last_names),
    ] {
        if let Some(names) = names {
            push_any(sql, column, names.clone());
        }
    }
    if let Some(pads) = pads {
        push_any(sql, "launchpad_id", pads);
    }
    if let Some(destinations) = &query.destinations {
        push_any(
            sql,
            "destination",
            destinations
                .iter()
                .map(|d| d.as_str().to_string())
                .collect(),
        );
    }
    if let Some(statuses) = &query.statuses {
        push_any(
            sql,
            "status",
            statuses.iter().map(|s| s.as_str().to_string()).collect(),
        );
    }
}

/// `column = value` for one value (the planner treats it as an equality), or
/// `column = ANY(values)`.
fn push_any(sql: &mut QueryBuilder<'static, Postgres>, column: &str, mut values: Vec<String>) {
    sql.push(format!(" AND {column} "));
    if values.len() == 1 {
        sql.push("= ").push_bind(values.remove(0));
    } else {
        sql.push("= ANY(").push_bind(values).push(")");
    }
}

/// A LIKE pattern matching lowered strings that contain `text`, lowered (LIKE's
/// metacharacters escaped). The query also lowers the pattern with PostgreSQL's
/// `lower`, so both sides agree under any collation.
fn like_substring(text: &str) -> String {
    let escaped = text
        .trim()
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
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
    fn day_ranges_pick_their_shape() {
        let day = |d: &str| Some(d.parse::<NaiveDate>().unwrap());
        let sql = |from, to| {
            let query = ListQuery {
                limit: 20,
                launch_from: from,
                launch_to: to,
                ..ListQuery::default()
            };
            list_sql("", &query, None).unwrap().sql().to_string()
        };
        let one_day = sql(day("2050-01-01"), day("2050-01-01"));
        assert!(one_day.contains("launch_day = $1"), "{one_day}");
        let month = sql(day("2050-01-01"), day("2050-01-31"));
        assert!(month.contains("CROSS JOIN LATERAL"), "{month}");
        assert!(month.contains("launch_day = d.day::date"), "{month}");
        let longer = sql(day("2050-01-01"), day("2050-02-01"));
        assert!(!longer.contains("LATERAL"), "{longer}");
        assert!(
            longer.contains("launch_day >= $1 AND launch_day <= $2"),
            "{longer}"
        );
        let open = sql(day("2050-01-01"), None);
        assert!(
            open.contains("launch_day >= $1") && !open.contains("LATERAL"),
            "{open}"
        );
        let nothing = ListQuery {
            statuses: Some(vec![]),
            ..ListQuery::default()
        };
        assert!(list_sql("", &nothing, None).is_none());
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(like_substring(" O_N%\\ "), "%o\\_n\\%\\\\%");
    }

    #[test]
    fn go_text_filters_match_as_the_go_service_did() {
        use Destination::*;
        assert_eq!(destinations_matching("moon"), vec![Moon]);
        assert_eq!(destinations_matching("MOON"), vec![Moon]);
        assert_eq!(destinations_matching("asteroid belt"), vec![AsteroidBelt]);
        assert_eq!(destinations_matching("Belt"), vec![AsteroidBelt]);
        assert_eq!(destinations_matching("an"), vec![Titan, Ganymede]);
        assert_eq!(destinations_matching("venus"), vec![]);
        assert_eq!(
            statuses_matching("scheduled"),
            vec![TicketStatus::Confirmed]
        );
        assert_eq!(
            statuses_matching("CONFIRMED"),
            vec![TicketStatus::Confirmed]
        );
        assert_eq!(
            statuses_matching("Cancelled"),
            vec![TicketStatus::Cancelled]
        );
        assert_eq!(statuses_matching("canceled"), vec![TicketStatus::Cancelled]);
        assert_eq!(statuses_matching("sched"), vec![TicketStatus::Confirmed]);
        assert_eq!(statuses_matching("booked"), vec![]);
        assert_eq!(
            both(Some(vec![Moon, Mars]), Some(vec![Mars])),
            Some(vec![Mars])
        );
        assert_eq!(both(None, Some(vec![Mars])), Some(vec![Mars]));
        assert_eq!(both::<Destination>(None, None), None);
    }
}
