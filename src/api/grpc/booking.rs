//! The gRPC `SpaceTService`: converts proto requests into domain values, calls the
//! booking functions, converts the results back. The HTTP gateway calls these same
//! methods in-process.

use chrono::{Days, NaiveDate};
use tonic::{Request, Response, Status};

use crate::{
    api::{
        auth::{Caller, TicketScope},
        convert,
        error::{ApiError, Reason},
        ApiState,
    },
    auth::Role,
    booking::{
        self,
        list::{self, ListQuery},
        schedule::{self, DEFAULT_WINDOW_DAYS, MAX_WINDOW_DAYS},
        BookingFields, NewBooking, TicketId, TicketStatus,
    },
    proto::{self, space_t_service_server::SpaceTService},
    spacex,
};

/// gRPC metadata key carrying an idempotency key (the `Idempotency-Key` HTTP header).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Implementation of `spacet.v1.SpaceTService`.
#[derive(Clone)]
pub struct BookingApi {
    pub state: ApiState,
}

type RpcResult<T> = Result<Response<T>, Status>;

/// A passenger named by an agent (`owner` of a booking or a list filter).
fn owner_field(field: &str, raw: &str) -> Result<Option<String>, ApiError> {
    let owner = raw.trim();
    if owner.is_empty() {
        Ok(None)
    } else if owner.chars().count() > 255 || owner.chars().any(char::is_control) {
        Err(ApiError::field(
            field,
            "must be a token subject: at most 255 characters, no control characters",
        ))
    } else {
        Ok(Some(owner.to_string()))
    }
}

/// The owner a query is limited to: a passenger's own tickets, everyone's for
/// the others.
fn scope_owner(scope: &TicketScope) -> Option<&str> {
    match scope {
        TicketScope::All => None,
        TicketScope::Owner(owner) => Some(owner),
    }
}

fn ticket_id(raw: &str) -> Result<TicketId, ApiError> {
    TicketId::parse("id", raw).map_err(|v| ApiError::InvalidArgument(vec![v]))
}

fn parse_day(field: &str, raw: &str) -> Result<Option<NaiveDate>, tonic_types::FieldViolation> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(raw).map(|t| t.naive_utc().date()))
        .map_err(|_| {
            tonic_types::FieldViolation::new(field, format!("{raw:?} is not a date (YYYY-MM-DD)"))
        })?;
    booking::check_day(day)
        .map(Some)
        .map_err(|e| tonic_types::FieldViolation::new(field, e))
}

impl BookingApi {
    async fn launch_booking_inner(
        &self,
        request: Request<proto::BookingRequest>,
    ) -> Result<proto::Ticket, ApiError> {
        let caller = Caller::of(&request);
        let principal = caller.require(&[Role::Passenger, Role::Agent, Role::Admin])?;
        let named = owner_field("owner", &request.get_ref().owner)?;
        // A passenger books for itself; agents, admins and trusted callers may name
        // the passenger (or no one: the ticket is then visible to agents only).
        let owner = match principal {
            Some(p) if !(p.has(Role::Agent) || p.has(Role::Admin)) => {
                if named.as_ref().is_some_and(|n| *n != p.subject) {
                    return Err(ApiError::refused(
                        Reason::RoleRequired,
                        "a passenger books for itself; naming another passenger needs the role agent or admin",
                    )
                    .with("roles", "agent,admin"));
                }
                Some(p.subject.clone())
            }
            _ => named,
        };
        let booked_by = principal.map(|p| p.subject.clone()).unwrap_or_default();
        self.state.limits.booking(principal)?;
        let header_key = request
            .metadata()
            .get(IDEMPOTENCY_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = request.into_inner();
        let pad = booking::find_pad(&self.state.pool, &req.launchpad_id).await?;
        let fields = BookingFields {
            first_name: req.first_name,
            last_name: req.last_name,
            gender: convert::gender(req.gender),
            birthday: req.birthday.as_ref().map(convert::from_timestamp),
            launchpad_id: req.launchpad_id,
            launch_date: req.launch_date.as_ref().map(convert::from_timestamp),
            destination: convert::destination(req.destination_id),
            request_id: req.request_id,
            idempotency_key_header: header_key,
        };
        let outcome = NewBooking::parse(fields, pad.as_ref(), self.state.clock.now())
            .map(|parsed| NewBooking {
                owner,
                booked_by,
                ..parsed
            })
            .map_err(ApiError::InvalidArgument);
        let limits = booking::BookingLimits {
            seats_per_flight: self.state.settings.seats_per_flight,
            max_active_tickets_per_owner: self.state.settings.auth.max_active_tickets_per_passenger,
        };
        let result = match outcome {
            Ok(new_booking) => booking::book(&self.state.pool, &new_booking, limits)
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        let label = match &result {
            Ok(booked) if booked.replayed => "replayed",
            Ok(_) => "confirmed",
            Err(e) if e.code() == tonic::Code::FailedPrecondition => e.reason().as_str(),
            Err(ApiError::InvalidArgument(_)) => "invalid",
            Err(e) if e.reason() == Reason::IdempotencyKeyReused => "idempotency_conflict",
            Err(_) => "error",
        };
        crate::metrics::BOOKINGS.with_label_values(&[label]).inc();
        let booked = result?;
        if !booked.replayed {
            tracing::info!(ticket = %booked.ticket.id, pad = %booked.ticket.launchpad_id, day = %booked.ticket.launch_day, "ticket booked");
        }
        Ok(proto::Ticket::from(&booked.ticket))
    }

    async fn list_bookings_inner(
        &self,
        scope: TicketScope,
        req: proto::ListTicketsRequest,
    ) -> Result<proto::ListTicketsResponse, ApiError> {
        let owner = match &scope {
            TicketScope::Owner(owner) => Some(owner.clone()),
            TicketScope::All => owner_field("owner", req.owner.as_deref().unwrap_or(""))?,
        };
        let mut violations = Vec::new();
        let (limit, after) = ListQuery::page(req.limit, req.cursor.as_deref().unwrap_or(""))
            .unwrap_or_else(|v| {
                violations.extend(v);
                (0, None)
            });
        let destination_id = match req.destination_id {
            None => None,
            Some(n) => match convert::destination(n) {
                Some(d) => Some(vec![d]),
                None => {
                    violations.push(tonic_types::FieldViolation::new(
                        "destination_id",
                        format!("{n} is not a destination"),
                    ));
                    None
                }
            },
        };
        let ticket_status = match req.ticket_status.map(proto::TicketStatus::try_from) {
            None | Some(Ok(proto::TicketStatus::Unspecified)) => None,
            Some(Ok(proto::TicketStatus::Confirmed)) => Some(vec![TicketStatus::Confirmed]),
            Some(Ok(proto::TicketStatus::Cancelled)) => Some(vec![TicketStatus::Cancelled]),
            Some(Err(_)) => {
                violations.push(tonic_types::FieldViolation::new(
                    "ticket_status",
                    "is not CONFIRMED or CANCELLED",
                ));
                None
            }
        };
        let mut day = |field: &str, t: &Option<proto::Timestamp>| match t
            .as_ref()
            .map(convert::from_timestamp)
        {
            None => None,
            Some(Ok(t)) => Some(t.date_naive()),
            Some(Err(e)) => {
                violations.push(tonic_types::FieldViolation::new(field, e));
                None
            }
        };
        let launch_from = day("launch_date_from", &req.launch_date_from);
        let launch_to = day("launch_date_to", &req.launch_date_to);
        let mut text = |field: &str, value: Option<String>| {
            let value = value?.trim().to_string();
            if value.chars().any(char::is_control) {
                violations.push(tonic_types::FieldViolation::new(
                    field,
                    "must not contain control characters",
                ));
                None
            } else if value.chars().count() > 100 {
                violations.push(tonic_types::FieldViolation::new(
                    field,
                    "must be at most 100 characters",
                ));
                None
            } else {
                Some(value).filter(|v| !v.is_empty())
            }
        };
        let first_name = text("first_name", req.first_name);
        let last_name = text("last_name", req.last_name);
        let launchpad = text("launchpad_id", req.launchpad_id);
        let destination = text("destination", req.destination);
        let status = text("status", req.status);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        let query = ListQuery {
            limit,
            after,
            first_name,
            last_name,
            launchpad,
            destinations: list::both(
                destination.as_deref().map(list::destinations_matching),
                destination_id,
            ),
            statuses: list::both(
                status.as_deref().map(list::statuses_matching),
                ticket_status,
            ),
            launch_from,
            launch_to,
            owner,
            ..ListQuery::default()
        };
        let (tickets, next) = booking::list::list(&self.state.pool, &query).await?;
        Ok(proto::ListTicketsResponse {
            tickets: tickets.iter().map(proto::Ticket::from).collect(),
            next_cursor: next.map(|c| c.encode()).unwrap_or_default(),
        })
    }

    async fn schedule_inner(
        &self,
        req: proto::GetLaunchpadScheduleRequest,
    ) -> Result<proto::LaunchpadSchedule, ApiError> {
        let pad = match booking::is_launchpad_id(req.id.trim()) {
            true => schedule::launchpad(&self.state.pool, req.id.trim()).await?,
            false => {
                return Err(ApiError::field(
                    "id",
                    format!("{:?} is not a launchpad id", req.id),
                ))
            }
        }
        .ok_or_else(|| {
            ApiError::refused(
                Reason::LaunchpadNotFound,
                format!("launchpad {} not found", req.id.trim()),
            )
            .with("launchpad_id", req.id.trim())
        })?;
        let now = self.state.clock.now();
        let mut violations = Vec::new();
        let from = parse_day("from", &req.from).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        let to = parse_day("to", &req.to).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        // Both ends stay within years 1–9999: the default window is cut at the last day.
        let from = from.unwrap_or_else(|| {
            let today = now.with_timezone(&pad.tz()).date_naive();
            today.checked_add_days(Days::new(1)).unwrap_or(today)
        });
        let to = to.unwrap_or_else(|| {
            from.checked_add_days(Days::new(DEFAULT_WINDOW_DAYS - 1))
                .map_or(booking::LAST_DAY, |day| day.min(booking::LAST_DAY))
        });
        if violations.is_empty() {
            if to < from {
                violations.push(tonic_types::FieldViolation::new(
                    "to",
                    "must not be before from",
                ));
            } else if (to - from).num_days() + 1 > MAX_WINDOW_DAYS {
                violations.push(tonic_types::FieldViolation::new(
                    "to",
                    format!("the window must be at most {MAX_WINDOW_DAYS} days"),
                ));
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        let days = schedule::schedule(&self.state.pool, &pad, from, to, now).await?;
        Ok(proto::LaunchpadSchedule {
            launchpad: Some(launchpad_proto(&pad)),
            days: days
                .into_iter()
                .map(|d| proto::ScheduleDay {
                    date: d.date.to_string(),
                    flight: d.flight.map(|f| proto::Flight {
                        destination_id: proto::Destination::from(f.destination) as i32,
                        seats_booked: f.seats_booked,
                        seats_left: f.seats_left,
                    }),
                    spacex_launches: d
                        .spacex
                        .into_iter()
                        // `date_precision` stays filled for the clients that read it.
                        .map(
                            #[allow(deprecated)]
                            |l| proto::SpaceXLaunch {
                                tentative: l.blocked_day.is_none(),
                                id: l.id,
                                name: l.name,
                                date_utc: Some(convert::timestamp(l.date_utc)),
                                date_precision: l.date_precision.as_str().to_string(),
                                precision: convert::date_precision(l.date_precision) as i32,
                            },
                        )
                        .collect(),
                    free_destinations: d
                        .free_destinations
                        .into_iter()
                        .map(|dest| proto::Destination::from(dest) as i32)
                        .collect(),
                    bookable: d.bookable,
                })
                .collect(),
        })
    }
}

fn launchpad_proto(pad: &schedule::Launchpad) -> proto::Launchpad {
    proto::Launchpad {
        id: pad.id.clone(),
        name: pad.name.clone(),
        full_name: pad.full_name.clone(),
        locality: pad.locality.clone(),
        region: pad.region.clone(),
        timezone: pad.timezone.as_str().to_string(),
        status: pad.status.as_str().to_string(),
        bookable: pad.status.is_bookable(),
    }
}

#[tonic::async_trait]
impl SpaceTService for BookingApi {
    async fn launch_booking(
        &self,
        request: Request<proto::BookingRequest>,
    ) -> RpcResult<proto::Ticket> {
        Ok(Response::new(self.launch_booking_inner(request).await?))
    }

    async fn cancel_booking(
        &self,
        request: Request<proto::TicketId>,
    ) -> RpcResult<proto::TicketId> {
        let scope = Caller::of(&request).tickets()?;
        let id = ticket_id(&request.get_ref().id)?;
        booking::cancel(&self.state.pool, id, scope_owner(&scope))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(proto::TicketId { id: id.to_string() }))
    }

    async fn list_bookings(
        &self,
        request: Request<proto::ListTicketsRequest>,
    ) -> RpcResult<proto::ListTicketsResponse> {
        let scope = Caller::of(&request).tickets()?;
        Ok(Response::new(
            self.list_bookings_inner(scope, request.into_inner())
                .await?,
        ))
    }

    async fn get_booking(&self, request: Request<proto::TicketId>) -> RpcResult<proto::Ticket> {
        let scope = Caller::of(&request).tickets()?;
        let id = ticket_id(&request.get_ref().id)?;
        let ticket = booking::get(&self.state.pool, id, scope_owner(&scope))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(proto::Ticket::from(&ticket)))
    }

    async fn list_launchpads(
        &self,
        request: Request<proto::ListLaunchpadsRequest>,
    ) -> RpcResult<proto::ListLaunchpadsResponse> {
        Caller::of(&request).authenticated()?;
        let pads = schedule::launchpads(&self.state.pool)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(proto::ListLaunchpadsResponse {
            launchpads: pads.iter().map(launchpad_proto).collect(),
        }))
    }

    async fn get_launchpad_schedule(
        &self,
        request: Request<proto::GetLaunchpadScheduleRequest>,
    ) -> RpcResult<proto::LaunchpadSchedule> {
        Caller::of(&request).authenticated()?;
        Ok(Response::new(
            self.schedule_inner(request.into_inner()).await?,
        ))
    }

    async fn trigger_sync(
        &self,
        request: Request<proto::TriggerSyncRequest>,
    ) -> RpcResult<proto::SyncReport> {
        let caller = Caller::of(&request);
        let principal = caller.require(&[Role::Admin])?;
        self.state.limits.sync(principal)?;
        let report = if request.into_inner().confirm {
            spacex::sync_confirmed(&self.state.sync).await
        } else {
            spacex::sync_now(&self.state.sync).await
        }
        .map_err(ApiError::from)?;
        Ok(Response::new(proto::SyncReport::from(&report)))
    }
}
