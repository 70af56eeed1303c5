//! `spacet.v1.SpaceTService`: one adapter per RPC — the caller becomes a
//! [`Requester`](crate::auth::Requester), the proto request the feature's
//! fields; the use case decides; its answer becomes proto. The gRPC service
//! ([`BookingApi`]) and the HTTP gateway (`api::http::gateway::RPCS`) call these
//! same adapters.

use tonic::{metadata::MetadataMap, Request, Response, Status};

use crate::{
    api::{auth::Caller, convert, error::ApiError, ApiState},
    booking::{
        self,
        list::ListFields,
        schedule::{self, ScheduleDay, ScheduleFields},
        BookingFields, TicketStatus,
    },
    launchpads,
    proto::{self, space_t_service_server::SpaceTService},
    spacex,
};

/// gRPC metadata key carrying an idempotency key (the `Idempotency-Key` HTTP header).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `LaunchBooking`: see [`booking::book`].
pub async fn launch_booking(
    state: ApiState,
    request: Request<proto::BookingRequest>,
) -> Result<proto::Ticket, ApiError> {
    let requester = Caller::of(&request).into_requester()?;
    let header_key = idempotency_key(request.metadata());
    let fields = booking_fields(request.into_inner(), header_key);
    let limits = state.booking_limits();
    let booked = booking::book(&state.pool, &state.clock, &requester, fields, limits).await?;
    Ok(proto::Ticket::from(&booked.ticket))
}

/// `CancelBooking`: see [`booking::cancel`].
pub async fn cancel_booking(
    state: ApiState,
    request: Request<proto::TicketId>,
) -> Result<proto::TicketId, ApiError> {
    let requester = Caller::of(&request).into_requester()?;
    let ticket = booking::cancel(&state.pool, &requester, &request.get_ref().id).await?;
    Ok(proto::TicketId {
        id: ticket.id.to_string(),
    })
}

/// `ListBookings`: see [`booking::list_tickets`].
pub async fn list_bookings(
    state: ApiState,
    request: Request<proto::ListTicketsRequest>,
) -> Result<proto::ListTicketsResponse, ApiError> {
    let requester = Caller::of(&request).into_requester()?;
    let fields = ListFields::from(request.into_inner());
    let (tickets, next) = booking::list_tickets(&state.pool, &requester, fields).await?;
    Ok(proto::ListTicketsResponse {
        tickets: tickets.iter().map(proto::Ticket::from).collect(),
        next_cursor: next.map(|c| c.encode()).unwrap_or_default(),
    })
}

/// `GetBooking`: see [`booking::get`].
pub async fn get_booking(
    state: ApiState,
    request: Request<proto::TicketId>,
) -> Result<proto::Ticket, ApiError> {
    let requester = Caller::of(&request).into_requester()?;
    let ticket = booking::get(&state.pool, &requester, &request.get_ref().id).await?;
    Ok(proto::Ticket::from(&ticket))
}

/// `ListLaunchpads`: every launchpad, for any valid token.
pub async fn list_launchpads(
    state: ApiState,
    request: Request<proto::ListLaunchpadsRequest>,
) -> Result<proto::ListLaunchpadsResponse, ApiError> {
    Caller::of(&request).authenticated()?;
    let pads = launchpads::all(&state.pool).await?;
    Ok(proto::ListLaunchpadsResponse {
        launchpads: pads.iter().map(launchpad_proto).collect(),
    })
}

/// `GetLaunchpadSchedule`: see [`schedule::launchpad_schedule`]; for any valid token.
pub async fn get_launchpad_schedule(
    state: ApiState,
    request: Request<proto::GetLaunchpadScheduleRequest>,
) -> Result<proto::LaunchpadSchedule, ApiError> {
    Caller::of(&request).authenticated()?;
    let req = request.into_inner();
    let fields = ScheduleFields {
        id: req.id,
        from: req.from,
        to: req.to,
    };
    let (pad, days) = schedule::launchpad_schedule(&state.pool, &state.clock, fields).await?;
    Ok(proto::LaunchpadSchedule {
        launchpad: Some(launchpad_proto(&pad)),
        days: days.into_iter().map(schedule_day).collect(),
    })
}

/// `TriggerSync`: see [`spacex::trigger`].
pub async fn trigger_sync(
    state: ApiState,
    request: Request<proto::TriggerSyncRequest>,
) -> Result<proto::SyncReport, ApiError> {
    let requester = Caller::of(&request).into_requester()?;
    let confirm = request.get_ref().confirm;
    let report = spacex::trigger(&state.sync, &requester, confirm, &state.limits.sync).await?;
    Ok(proto::SyncReport::from(&report))
}

/// The `Idempotency-Key` of the metadata, if any.
fn idempotency_key(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A booking request's fields; enum numbers and timestamps the domain cannot
/// read are left for [`booking::NewBooking::parse`] to name.
fn booking_fields(req: proto::BookingRequest, header_key: Option<String>) -> BookingFields {
    BookingFields {
        first_name: req.first_name,
        last_name: req.last_name,
        gender: convert::gender(req.gender),
        birthday: req.birthday.as_ref().map(convert::from_timestamp),
        launchpad_id: req.launchpad_id,
        launch_date: req.launch_date.as_ref().map(convert::from_timestamp),
        destination: convert::destination(req.destination_id),
        request_id: req.request_id,
        idempotency_key_header: header_key,
        owner: req.owner,
    }
}

impl From<proto::ListTicketsRequest> for ListFields {
    fn from(req: proto::ListTicketsRequest) -> ListFields {
        let ticket_status = match req.ticket_status.map(proto::TicketStatus::try_from) {
            None | Some(Ok(proto::TicketStatus::Unspecified)) => None,
            Some(Ok(proto::TicketStatus::Confirmed)) => Some(Ok(TicketStatus::Confirmed)),
            Some(Ok(proto::TicketStatus::Cancelled)) => Some(Ok(TicketStatus::Cancelled)),
            Some(Err(_)) => Some(Err("is not CONFIRMED or CANCELLED".to_string())),
        };
        ListFields {
            limit: req.limit,
            cursor: req.cursor.unwrap_or_default(),
            owner: req.owner.unwrap_or_default(),
            destination_id: req.destination_id.map(|n| {
                convert::destination(n).ok_or_else(|| format!("{n} is not a destination"))
            }),
            ticket_status,
            launch_date_from: req.launch_date_from.as_ref().map(convert::from_timestamp),
            launch_date_to: req.launch_date_to.as_ref().map(convert::from_timestamp),
            first_name: req.first_name,
            last_name: req.last_name,
            launchpad_id: req.launchpad_id,
            destination: req.destination,
            status: req.status,
        }
    }
}

fn launchpad_proto(pad: &launchpads::Launchpad) -> proto::Launchpad {
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

fn schedule_day(d: ScheduleDay) -> proto::ScheduleDay {
    proto::ScheduleDay {
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
    }
}

/// Implementation of `spacet.v1.SpaceTService`: each method is its adapter's
/// answer as a gRPC response.
#[derive(Clone)]
pub struct BookingApi {
    pub state: ApiState,
}

type RpcResult<T> = Result<Response<T>, Status>;

/// An adapter's answer as a gRPC response.
fn reply<T>(answer: Result<T, ApiError>) -> RpcResult<T> {
    answer.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl SpaceTService for BookingApi {
    async fn launch_booking(
        &self,
        request: Request<proto::BookingRequest>,
    ) -> RpcResult<proto::Ticket> {
        reply(launch_booking(self.state.clone(), request).await)
    }

    async fn cancel_booking(
        &self,
        request: Request<proto::TicketId>,
    ) -> RpcResult<proto::TicketId> {
        reply(cancel_booking(self.state.clone(), request).await)
    }

    async fn list_bookings(
        &self,
        request: Request<proto::ListTicketsRequest>,
    ) -> RpcResult<proto::ListTicketsResponse> {
        reply(list_bookings(self.state.clone(), request).await)
    }

    async fn get_booking(&self, request: Request<proto::TicketId>) -> RpcResult<proto::Ticket> {
        reply(get_booking(self.state.clone(), request).await)
    }

    async fn list_launchpads(
        &self,
        request: Request<proto::ListLaunchpadsRequest>,
    ) -> RpcResult<proto::ListLaunchpadsResponse> {
        reply(list_launchpads(self.state.clone(), request).await)
    }

    async fn get_launchpad_schedule(
        &self,
        request: Request<proto::GetLaunchpadScheduleRequest>,
    ) -> RpcResult<proto::LaunchpadSchedule> {
        reply(get_launchpad_schedule(self.state.clone(), request).await)
    }

    async fn trigger_sync(
        &self,
        request: Request<proto::TriggerSyncRequest>,
    ) -> RpcResult<proto::SyncReport> {
        reply(trigger_sync(self.state.clone(), request).await)
    }
}
