//! Booking and cancelling tickets. The use cases — [`book`], [`cancel`],
//! [`get`], [`list_tickets`] and [`schedule::launchpad_schedule`] — take a
//! [`Requester`] and the request's fields, and decide everything: who may act on
//! whose tickets ([`TicketScope`], the owner rule), rate limits, parsing, limits
//! and the outcome metrics. The edges (`api`) only decode, call and encode.
//!
//! The rules are enforced by the database's constraints (see
//! `migrations/0001_bookings.sql`); this module maps their violations to the
//! domain errors clients can act on.

pub mod domain;
pub mod events;
pub mod legacy;
pub mod list;
pub mod schedule;

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use tonic_types::FieldViolation;
use tracing::Instrument as _;
use uuid::Uuid;

pub use domain::*;

use crate::{
    auth::{Forbidden, RateLimit, RateLimited, Requester, Role},
    clock::Clock,
    config::EventsFormat,
    launchpads::{self, Availability, LaunchpadStatus},
    outbox,
};

/// Why a booking or cancellation was refused.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error("ticket {0} not found")]
    TicketNotFound(TicketId),
    #[error("launchpad {pad} is taken on {day} by a flight to {taken_by}; book {taken_by} or another day")]
    LaunchpadDayTaken {
        pad: String,
        day: NaiveDate,
        taken_by: Destination,
    },
    #[error("{destination} is already flown from launchpad {pad} on {flown_on}, in the same week as {day}; choose another destination or week")]
    DestinationUsedThisWeek {
        pad: String,
        day: NaiveDate,
        destination: Destination,
        flown_on: NaiveDate,
    },
    #[error("the flight to {destination} from launchpad {pad} on {day} is full ({seats} seats)")]
    FlightFull {
        pad: String,
        day: NaiveDate,
        destination: Destination,
        seats: i32,
    },
    #[error(
        "SpaceX launches {launch} from launchpad {pad} on {day}; choose another day or launchpad"
    )]
    SpacexConflict {
        pad: String,
        day: NaiveDate,
        launch: String,
    },
    #[error("launchpad {pad} is {status}; only active launchpads can be booked")]
    LaunchpadInactive {
        pad: String,
        status: LaunchpadStatus,
    },
    #[error("idempotency key {0:?} was already used for a different booking")]
    IdempotencyKeyReused(String),
    #[error("the passenger already holds {limit} active tickets, the most one passenger may; cancel one or wait until one has flown")]
    ActiveTicketLimit { limit: i64 },
    /// Fields of the request are invalid; every one is named.
    #[error("invalid request: {} invalid field(s)", .0.len())]
    Invalid(Vec<FieldViolation>),
    #[error("launchpad {0} not found")]
    LaunchpadNotFound(String),
    /// The requester lacks a role (or books for another passenger).
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

crate::metrics::label_set! {
    /// How a booking attempt ended: the `outcome` label of `spacet_bookings_total`.
    /// The refusals a passenger can act on are named as their error reasons.
    pub enum BookingOutcome {
        Confirmed = "confirmed",
        Replayed = "replayed",
        Invalid = "invalid",
        IdempotencyConflict = "idempotency_conflict",
        Error = "error",
        LaunchpadDayTaken = "LAUNCHPAD_DAY_TAKEN",
        DestinationUsedThisWeek = "DESTINATION_USED_THIS_WEEK",
        FlightFull = "FLIGHT_FULL",
        SpacexConflict = "SPACEX_CONFLICT",
        LaunchpadInactive = "LAUNCHPAD_INACTIVE",
        ActiveTicketLimit = "ACTIVE_TICKET_LIMIT",
    }
}

impl BookingOutcome {
    /// The outcome of a booking attempt that got as far as parsing.
    pub fn of(result: &Result<Booked, BookingError>) -> BookingOutcome {
        use BookingError as E;
        match result {
            Ok(booked) if booked.replayed => BookingOutcome::Replayed,
            Ok(_) => BookingOutcome::Confirmed,
            Err(error) => match error {
                E::Invalid(_) => BookingOutcome::Invalid,
                E::IdempotencyKeyReused(_) => BookingOutcome::IdempotencyConflict,
                E::LaunchpadDayTaken { .. } => BookingOutcome::LaunchpadDayTaken,
                E::DestinationUsedThisWeek { .. } => BookingOutcome::DestinationUsedThisWeek,
                E::FlightFull { .. } => BookingOutcome::FlightFull,
                E::SpacexConflict { .. } => BookingOutcome::SpacexConflict,
                E::LaunchpadInactive { .. } => BookingOutcome::LaunchpadInactive,
                E::ActiveTicketLimit { .. } => BookingOutcome::ActiveTicketLimit,
                E::TicketNotFound(_)
                | E::LaunchpadNotFound(_)
                | E::Forbidden(_)
                | E::RateLimited(_)
                | E::Database(_) => BookingOutcome::Error,
            },
        }
    }
}

/// Starts every [`BookingOutcome`] of `spacet_bookings_total` at zero.
pub(crate) fn declare_metrics() {
    for outcome in BookingOutcome::ALL {
        crate::metrics::BOOKINGS.with_label_values(&[outcome.as_str()]);
    }
}

/// Whose tickets a requester acts on: the owner rule of every ticket use case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TicketScope {
    /// Every ticket (agents, admins, trusted requesters); books for the
    /// passenger it names, or for no one.
    All,
    /// The tickets this passenger owns; books for itself only.
    Owner(String),
}

impl TicketScope {
    /// Agents, admins and trusted requesters act on every ticket, a passenger on
    /// its own; any other role on none.
    pub fn of(requester: &Requester) -> Result<TicketScope, Forbidden> {
        match requester.require(&[Role::Passenger, Role::Agent, Role::Admin])? {
            Some(p) if !(p.has(Role::Agent) || p.has(Role::Admin)) => {
                Ok(TicketScope::Owner(p.subject.clone()))
            }
            _ => Ok(TicketScope::All),
        }
    }

    /// The owner the scope is limited to (`None`: every ticket).
    pub fn owner(&self) -> Option<&str> {
        match self {
            TicketScope::All => None,
            TicketScope::Owner(owner) => Some(owner),
        }
    }

    /// The owner of a new ticket: a passenger books for itself; the others for
    /// the passenger they name (or no one: the ticket is then visible to agents
    /// only).
    fn owner_of_new_ticket(self, named: Option<String>) -> Result<Option<String>, Forbidden> {
        match self {
            TicketScope::All => Ok(named),
            TicketScope::Owner(own) if named.as_ref().is_some_and(|n| *n != own) => {
                Err(Forbidden {
                    message: "a passenger books for itself; naming another passenger needs the role agent or admin".into(),
                    roles: vec![Role::Agent, Role::Admin],
                })
            }
            TicketScope::Owner(own) => Ok(Some(own)),
        }
    }
}

/// A passenger named by an agent (`owner` of a booking or a list filter): a
/// token subject, or `None` when blank.
fn owner_field(field: &str, raw: &str) -> Result<Option<String>, FieldViolation> {
    let owner = raw.trim();
    if owner.is_empty() {
        Ok(None)
    } else if owner.chars().count() > 255 || owner.chars().any(char::is_control) {
        Err(FieldViolation::new(
            field,
            "must be a token subject: at most 255 characters, no control characters",
        ))
    } else {
        Ok(Some(owner.to_string()))
    }
}

/// Books a seat for `requester` — for itself, or, for an agent, admin or
/// trusted requester, for the passenger `fields.owner` names — once the owner
/// rule, the rate limit (`BOOKING_RATE_LIMIT`) and every field allow it; counts
/// the outcome in `spacet_bookings_total`.
pub async fn book(
    pool: &PgPool,
    clock: &Clock,
    requester: &Requester,
    fields: BookingFields,
    limits: BookingLimits<'_>,
) -> Result<Booked, BookingError> {
    let scope = TicketScope::of(requester)?;
    let named = owner_field("owner", &fields.owner).map_err(|v| BookingError::Invalid(vec![v]))?;
    let owner = scope.owner_of_new_ticket(named)?;
    let booked_by = requester
        .principal()
        .map(|p| p.subject.clone())
        .unwrap_or_default();
    limits.rate.check(requester)?;
    let pad = launchpads::find(pool, &fields.launchpad_id).await?;
    let result = match NewBooking::parse(fields, pad.as_ref(), clock.now()) {
        Ok(parsed) => {
            let booking = NewBooking {
                owner,
                booked_by,
                ..parsed
            };
            store_booking(pool, &booking, limits).await
        }
        Err(violations) => Err(BookingError::Invalid(violations)),
    };
    crate::metrics::BOOKINGS
        .with_label_values(&[BookingOutcome::of(&result).as_str()])
        .inc();
    if let Ok(booked) = &result {
        if !booked.replayed {
            tracing::info!(ticket = %booked.ticket.id, pad = %booked.ticket.launchpad_id, day = %booked.ticket.launch_day, "ticket booked");
        }
    }
    result
}

/// One ticket of the requester's [`TicketScope`] (another's is not found, so
/// its existence does not leak).
pub async fn get(pool: &PgPool, requester: &Requester, id: &str) -> Result<Ticket, BookingError> {
    let scope = TicketScope::of(requester)?;
    let id = ticket_id(id)?;
    get_ticket(pool, id, scope.owner()).await
}

/// Cancels a ticket of the requester's [`TicketScope`] (see [`cancel_ticket`]).
pub async fn cancel(
    pool: &PgPool,
    requester: &Requester,
    id: &str,
) -> Result<Ticket, BookingError> {
    let scope = TicketScope::of(requester)?;
    let id = ticket_id(id)?;
    cancel_ticket(pool, id, scope.owner()).await
}

/// One page of the tickets of the requester's [`TicketScope`] that match the
/// filters, and the cursor of the next page.
pub(crate) async fn list_tickets(
    pool: &PgPool,
    requester: &Requester,
    fields: list::ListFields,
) -> Result<(Vec<Ticket>, Option<list::Cursor>), BookingError> {
    let scope = TicketScope::of(requester)?;
    let query = list::ListQuery::parse(fields, &scope).map_err(BookingError::Invalid)?;
    Ok(list::list(pool, &query).await?)
}

fn ticket_id(raw: &str) -> Result<TicketId, BookingError> {
    TicketId::parse("id", raw).map_err(|v| BookingError::Invalid(vec![v]))
}

/// A ticket as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Ticket {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub gender: Gender,
    pub birthday: NaiveDate,
    pub launchpad_id: String,
    pub launch_day: NaiveDate,
    pub destination: Destination,
    pub status: TicketStatus,
    pub cancellation_reason: Option<CancellationReason>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The passenger the ticket belongs to (none for tickets booked before
    /// authentication, or with it off and no passenger named).
    pub owner: Option<String>,
}

/// Columns of [`Ticket`], for the SQL [`list`] assembles at run time.
pub const TICKET_COLUMNS: &str = "id, first_name, last_name, gender, birthday, launchpad_id, launch_day, destination, status, cancellation_reason, created_at, updated_at, owner";

/// `sqlx::query_as!(Ticket, ...)` with the columns of [`Ticket`] between `$head`
/// and `$tail`, so that every static ticket query is checked at build time
/// against one column list (the text enums decoded by type override).
macro_rules! query_ticket {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Ticket,
            $head
                + r#" id, first_name, last_name, gender AS "gender: Gender", birthday, launchpad_id, launch_day,
                      destination AS "destination: Destination", status AS "status: TicketStatus",
                      cancellation_reason AS "cancellation_reason: CancellationReason", created_at, updated_at, owner "#
                + $tail
            $(, $arg)*
        )
    };
}

/// The outcome of a booking.
#[derive(Debug)]
pub struct Booked {
    pub ticket: Ticket,
    /// True when an earlier booking with the same idempotency key was returned.
    pub replayed: bool,
}

/// What a booking is held to besides the launchpad rules.
#[derive(Debug, Clone, Copy)]
pub struct BookingLimits<'a> {
    pub seats_per_flight: i32,
    /// Active (confirmed, launch day from today on) tickets one owner may hold.
    pub max_active_tickets_per_owner: i64,
    /// Bookings per principal and minute.
    pub rate: &'a RateLimit,
}

/// Books one seat, in one transaction with its outbox event.
#[tracing::instrument(name = "book", skip_all, fields(pad = %booking.launchpad_id, day = %booking.launch_day, destination = %booking.destination))]
async fn store_booking(
    pool: &PgPool,
    booking: &NewBooking,
    limits: BookingLimits<'_>,
) -> Result<Booked, BookingError> {
    if let Some(key) = &booking.idempotency_key {
        if let Some(existing) = replay(pool, key, booking).await? {
            return Ok(existing);
        }
    }
    let transaction =
        || book_once(pool, booking, limits).instrument(crate::db::span("INSERT", "tickets"));
    let result = match transaction().await {
        // A deadlock or serialization failure rolled the whole transaction back:
        // run it once more. A second one reaches the client as UNAVAILABLE.
        Err(BookingError::Database(error))
            if crate::db::classify(&error) == crate::db::Failure::Conflict =>
        {
            tracing::warn!(%error, "booking rolled back by a concurrent transaction; retrying once");
            transaction().await
        }
        other => other,
    };
    match result {
        // A concurrent retry with the same key won the race: return its ticket.
        Err(BookingError::Database(sqlx::Error::Database(e)))
            if e.constraint() == Some("tickets_idempotency_scope") =>
        {
            let key = booking.idempotency_key.as_deref().unwrap_or_default();
            replay(pool, key, booking)
                .await?
                .ok_or_else(|| BookingError::IdempotencyKeyReused(key.to_string()))
        }
        other => other,
    }
}

async fn replay(
    pool: &PgPool,
    key: &str,
    booking: &NewBooking,
) -> Result<Option<Booked>, BookingError> {
    // Every keyed ticket has a hash (book_once writes both); a NULL one fails to
    // decode, as a corrupted row should.
    let hash = sqlx::query_scalar!(
        r#"SELECT request_hash AS "request_hash!" FROM tickets WHERE booked_by = $1 AND idempotency_key = $2"#,
        booking.booked_by,
        key
    )
    .fetch_optional(pool)
    .await?;
    match hash {
        None => Ok(None),
        Some(hash) if hash == booking.fingerprint() => {
            let ticket = query_ticket!(
                "SELECT",
                "FROM tickets WHERE booked_by = $1 AND idempotency_key = $2",
                booking.booked_by,
                key
            )
            .fetch_one(pool)
            .await?;
            Ok(Some(Booked {
                ticket,
                replayed: true,
            }))
        }
        Some(_) => Err(BookingError::IdempotencyKeyReused(key.to_string())),
    }
}

async fn book_once(
    pool: &PgPool,
    booking: &NewBooking,
    limits: BookingLimits<'_>,
) -> Result<Booked, BookingError> {
    let mut tx = pool.begin().await?;
    let pad = booking.launchpad_id.as_str();
    let day = booking.launch_day;

    if let Some(owner) = &booking.owner {
        // One owner's bookings run one at a time from here to the commit (a lock
        // on the owner, in a key space of its own), so the count below cannot be
        // raced past the cap by concurrent bookings.
        sqlx::query!(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            OWNER_LOCK_SPACE,
            owner
        )
        .execute(&mut *tx)
        .await?;
        let active = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM tickets
               WHERE owner = $1 AND status = 'CONFIRMED' AND launch_day >= $2"#,
            owner,
            booking.today
        )
        .fetch_one(&mut *tx)
        .await?;
        if active >= limits.max_active_tickets_per_owner {
            return Err(BookingError::ActiveTicketLimit {
                limit: limits.max_active_tickets_per_owner,
            });
        }
    }

    // Holds the pad against a SpaceX sync that would block its day, then looks
    // for a SpaceX launch on it: either the sync sees our flight, or we see its
    // launch (see `launchpads::hold_for_booking`).
    match launchpads::hold_for_booking(&mut tx, pad, day).await? {
        Availability::Free => {}
        Availability::Inactive(status) => {
            return Err(BookingError::LaunchpadInactive {
                pad: pad.to_string(),
                status,
            })
        }
        Availability::SpacexLaunch(launch) => {
            return Err(BookingError::SpacexConflict {
                pad: pad.to_string(),
                day,
                launch,
            })
        }
    }

    let flight_id = take_seat(&mut tx, booking, limits.seats_per_flight).await?;
    let ticket = query_ticket!(
        "INSERT INTO tickets (id, flight_id, first_name, last_name, gender, birthday, launchpad_id, launch_day, destination, idempotency_key, request_hash, owner, booked_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         RETURNING",
        "",
        Uuid::now_v7(),
        flight_id,
        booking.first_name.as_str(),
        booking.last_name.as_str(),
        booking.gender.as_str(),
        booking.birthday,
        pad,
        day,
        booking.destination.as_str(),
        booking.idempotency_key.as_deref(),
        booking.fingerprint(),
        booking.owner.as_deref(),
        booking.booked_by,
    )
    .fetch_one(&mut *tx)
    .await?;
    outbox::enqueue(&mut tx, &events::booked(&ticket)).await?;
    tx.commit().await?;
    Ok(Booked {
        ticket,
        replayed: false,
    })
}

/// Takes a seat on the pad and day's flight, opening the flight if there is none.
async fn take_seat(
    conn: &mut PgConnection,
    booking: &NewBooking,
    seats_per_flight: i32,
) -> Result<Uuid, BookingError> {
    let pad = booking.launchpad_id.as_str();
    let day = booking.launch_day;
    // Two rounds at most: if a concurrent booking opened the flight between our
    // look-up and our insert, the second round joins it.
    for _ in 0..3 {
        let flight = sqlx::query!(
            r#"SELECT id, destination AS "destination: Destination", seats, seats_booked FROM flights
               WHERE launchpad_id = $1 AND launch_day = $2 AND status = 'scheduled' FOR UPDATE"#,
            pad,
            day
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|f| (f.id, f.destination, f.seats, f.seats_booked));
        if let Some((id, taken_by, seats, booked)) = flight {
            if taken_by != booking.destination {
                return Err(BookingError::LaunchpadDayTaken {
                    pad: pad.to_string(),
                    day,
                    taken_by,
                });
            }
            if booked >= seats {
                return Err(BookingError::FlightFull {
                    pad: pad.to_string(),
                    day,
                    destination: taken_by,
                    seats,
                });
            }
            sqlx::query!(
                "UPDATE flights SET seats_booked = seats_booked + 1, updated_at = now(),
                        first_booked_at = CASE WHEN first_booked_at IS NOT NULL
                                          THEN least(first_booked_at, clock_timestamp()) END
                 WHERE id = $1",
                id
            )
            .execute(&mut *conn)
            .await?;
            return Ok(id);
        }
        let inserted = sqlx::query_scalar!(
            "INSERT INTO flights (id, launchpad_id, launch_day, destination, seats, seats_booked, first_booked_at)
             VALUES ($1, $2, $3, $4, $5, 1, clock_timestamp())
             ON CONFLICT DO NOTHING RETURNING id",
            Uuid::now_v7(),
            pad,
            day,
            booking.destination.as_str(),
            seats_per_flight
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = inserted {
            return Ok(id);
        }
        // A unique index refused the flight: either the pad and day were just
        // taken (next round joins or refuses) or the destination flies this week.
        let same_week = sqlx::query_scalar!(
            "SELECT launch_day FROM flights
             WHERE launchpad_id = $1 AND week_start = $2 AND destination = $3 AND status = 'scheduled'",
            pad,
            week_start(day),
            booking.destination.as_str()
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(flown_on) = same_week.filter(|d| *d != day) {
            return Err(BookingError::DestinationUsedThisWeek {
                pad: pad.to_string(),
                day,
                destination: booking.destination,
                flown_on,
            });
        }
    }
    Err(BookingError::Database(sqlx::Error::Protocol(
        "flight could not be opened or joined after three rounds".into(),
    )))
}

/// The first key of the two-key advisory locks that serialise one owner's
/// bookings (the second is a hash of the owner).
const OWNER_LOCK_SPACE: i32 = 0x5350_0001;

/// Returns one ticket; with `owner`, only a ticket of that owner (another's is
/// not found, so its existence does not leak).
async fn get_ticket(
    pool: &PgPool,
    id: TicketId,
    owner: Option<&str>,
) -> Result<Ticket, BookingError> {
    query_ticket!(
        "SELECT",
        "FROM tickets WHERE id = $1 AND ($2::text IS NULL OR owner = $2)",
        id.0,
        owner
    )
    .fetch_optional(pool)
    .await?
    .ok_or(BookingError::TicketNotFound(id))
}

/// Cancels a ticket at its holder's request. Cancelling a cancelled ticket changes
/// nothing. The last confirmed ticket of a flight cancels the flight, freeing its
/// day and destination. With `owner`, only a ticket of that owner (another's is
/// not found).
#[tracing::instrument(name = "cancel", skip_all, fields(ticket = %id))]
async fn cancel_ticket(
    pool: &PgPool,
    id: TicketId,
    owner: Option<&str>,
) -> Result<Ticket, BookingError> {
    cancel_in_transaction(pool, id, owner)
        .instrument(crate::db::span("UPDATE", "tickets"))
        .await
}

async fn cancel_in_transaction(
    pool: &PgPool,
    id: TicketId,
    owner: Option<&str>,
) -> Result<Ticket, BookingError> {
    let mut tx = pool.begin().await?;
    let ticket = query_ticket!(
        "SELECT",
        "FROM tickets WHERE id = $1 AND ($2::text IS NULL OR owner = $2) FOR UPDATE",
        id.0,
        owner
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(BookingError::TicketNotFound(id))?;
    if ticket.status == TicketStatus::Cancelled {
        return Ok(ticket);
    }
    let ticket = query_ticket!(
        "UPDATE tickets SET status = 'CANCELLED', cancellation_reason = 'USER_REQUESTED', updated_at = clock_timestamp()
         WHERE id = $1 RETURNING",
        "",
        id.0
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE flights SET seats_booked = seats_booked - 1,
                status = CASE WHEN seats_booked = 1 THEN 'cancelled' ELSE status END,
                cancellation_reason = CASE WHEN seats_booked = 1 THEN 'USER_REQUESTED' ELSE cancellation_reason END,
                updated_at = now()
         WHERE id = (SELECT flight_id FROM tickets WHERE id = $1)",
        id.0
    )
    .execute(&mut *tx)
    .await?;
    outbox::enqueue(
        &mut tx,
        &events::cancelled(&ticket, CancellationReason::UserRequested),
    )
    .await?;
    tx.commit().await?;
    Ok(ticket)
}

/// What [`cancel_flights_blocked_by_spacex`] cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cancelled {
    pub flights: usize,
    pub tickets: usize,
}

/// Cancels, in the caller's transaction (the SpaceX sync's), every scheduled flight
/// on one of the `blocked` pads and days (the days upcoming SpaceX launches block,
/// from today at each pad on: a flight whose day has passed has flown), with its
/// confirmed tickets, and the events `events_format` selects: one
/// `TicketCancelled` per ticket (`SPACEX_CONFLICT`) for `v1`, the Go service's one
/// `BookingsCancelled` message for them all ([`legacy`], ordered by `sync_id`) for
/// `legacy`.
pub(crate) async fn cancel_flights_blocked_by_spacex(
    conn: &mut PgConnection,
    blocked: &[(String, NaiveDate)],
    sync_id: Uuid,
    events_format: EventsFormat,
) -> Result<Cancelled, sqlx::Error> {
    let (pads, days): (Vec<&str>, Vec<NaiveDate>) =
        blocked.iter().map(|(p, d)| (p.as_str(), *d)).unzip();
    let started = Instant::now();
    let flights: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT DISTINCT f.id
         FROM flights f
         JOIN UNNEST($1::text[], $2::date[]) AS blocked(launchpad_id, day)
              ON f.launchpad_id = blocked.launchpad_id AND f.launch_day = blocked.day
         WHERE f.status = 'scheduled'",
        // text[] checks as `&[String]`; the override binds the borrowed names as text[].
        &pads[..] as &[&str],
        &days
    )
    .fetch_all(&mut *conn)
    .await?;
    if flights.is_empty() {
        return Ok(Cancelled::default());
    }
    let found = started.elapsed();
    // Tickets before flights: the order a passenger's cancellation locks them in,
    // so the two cannot deadlock. A ticket cancelled meanwhile is left as it is.
    let mut tickets: Vec<Ticket> = query_ticket!(
        "UPDATE tickets SET status = 'CANCELLED', cancellation_reason = 'SPACEX_CONFLICT',
                updated_at = clock_timestamp()
         WHERE flight_id = ANY($1) AND status = 'CONFIRMED'
         RETURNING",
        "",
        &flights
    )
    .fetch_all(&mut *conn)
    .await?;
    let tickets_done = started.elapsed();
    let cancelled_flights = sqlx::query!(
        "UPDATE flights SET status = 'cancelled', cancellation_reason = 'SPACEX_CONFLICT',
                seats_booked = 0, updated_at = now()
         WHERE id = ANY($1) AND status = 'scheduled'",
        &flights
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // Ids are UUIDv7: the events are written in booking order.
    tickets.sort_by_key(|t| t.id);
    let flights_done = started.elapsed();
    if events_format.publishes_v1() {
        let events: Vec<outbox::NewEvent> = tickets
            .iter()
            .map(|t| events::cancelled(t, CancellationReason::SpacexConflict))
            .collect();
        outbox::enqueue_all(conn, &events).await?;
    }
    if events_format.publishes_legacy() {
        // The Go service's one message for the whole sync, in the same transaction.
        let ids: Vec<Uuid> = tickets.iter().map(|t| t.id).collect();
        outbox::enqueue_legacy(conn, &legacy::bookings_cancelled(sync_id, &ids)).await?;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    tracing::debug!(
        find_ms = ms(found),
        tickets_ms = ms(tickets_done - found),
        flights_ms = ms(flights_done - tickets_done),
        outbox_ms = ms(started.elapsed() - flights_done),
        "spacex sync cancellations"
    );
    Ok(Cancelled {
        flights: cancelled_flights as usize,
        tickets: tickets.len(),
    })
}

/// What [`cancel_flights_blocked_by_spacex`] would cancel now, in the caller's
/// transaction, without changing anything (the SpaceX sync's circuit breaker).
pub(crate) async fn count_flights_blocked_by_spacex(
    conn: &mut PgConnection,
    blocked: &[(String, NaiveDate)],
) -> Result<Cancelled, sqlx::Error> {
    let (pads, days): (Vec<&str>, Vec<NaiveDate>) =
        blocked.iter().map(|(p, d)| (p.as_str(), *d)).unzip();
    let counts = sqlx::query!(
        r#"WITH blocked AS (
               SELECT DISTINCT f.id
               FROM flights f
               JOIN UNNEST($1::text[], $2::date[]) AS blocked(launchpad_id, day)
                    ON f.launchpad_id = blocked.launchpad_id AND f.launch_day = blocked.day
               WHERE f.status = 'scheduled')
           SELECT (SELECT count(*) FROM blocked) AS "flights!",
                  (SELECT count(*) FROM tickets t JOIN blocked b ON t.flight_id = b.id
                   WHERE t.status = 'CONFIRMED') AS "tickets!""#,
        &pads[..] as &[&str],
        &days
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Cancelled {
        flights: counts.flights as usize,
        tickets: counts.tickets as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    fn principal(subject: &str, roles: &[Role]) -> Requester {
        Requester::Principal(Principal {
            subject: subject.into(),
            roles: roles.to_vec(),
        })
    }

    #[test]
    fn each_role_sees_the_tickets_it_may_and_the_rest_is_refused() {
        assert_eq!(
            TicketScope::of(&principal("p", &[Role::Passenger])).unwrap(),
            TicketScope::Owner("p".into())
        );
        assert_eq!(
            TicketScope::of(&principal("a", &[Role::Passenger, Role::Agent])).unwrap(),
            TicketScope::All
        );
        assert_eq!(
            TicketScope::of(&principal("x", &[Role::Admin])).unwrap(),
            TicketScope::All
        );
        assert_eq!(
            TicketScope::of(&Requester::Trusted).unwrap(),
            TicketScope::All
        );
        let denied = TicketScope::of(&principal("t", &[Role::Telemetry])).unwrap_err();
        assert_eq!(denied.roles, [Role::Passenger, Role::Agent, Role::Admin]);
    }

    #[test]
    fn a_passenger_books_for_itself_and_an_agent_for_whom_it_names() {
        let passenger = TicketScope::Owner("p".into());
        assert_eq!(
            passenger.clone().owner_of_new_ticket(None).unwrap(),
            Some("p".into())
        );
        assert_eq!(
            passenger
                .clone()
                .owner_of_new_ticket(Some("p".into()))
                .unwrap(),
            Some("p".into())
        );
        let refused = passenger.owner_of_new_ticket(Some("q".into())).unwrap_err();
        assert_eq!(refused.roles, [Role::Agent, Role::Admin]);
        assert_eq!(
            TicketScope::All
                .owner_of_new_ticket(Some("q".into()))
                .unwrap(),
            Some("q".into())
        );
        assert_eq!(TicketScope::All.owner_of_new_ticket(None).unwrap(), None);
    }
}
