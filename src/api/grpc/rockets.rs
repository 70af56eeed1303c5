//! `spacet.v1.RocketService`: one adapter per RPC — authenticate, call the
//! rockets feature's reads ([`read`]) or its change feed ([`Rockets::watch`]),
//! encode in proto. The HTTP gateway calls the unary adapters too
//! (`api::http::gateway::RPCS`).
//!
//! [`Rockets::watch`]: crate::rockets::Rockets::watch

use std::pin::Pin;

use futures::StreamExt;
use tonic::{Request, Response, Status};

use crate::{
    api::{
        auth::{read_rockets, Caller},
        convert,
        error::{self, ApiError, Reason},
        ApiState,
    },
    proto,
    rockets::{
        message::MessageType,
        read,
        state::Status as RocketState,
        store::{NumberRange, Rocket, StoredMessage},
        watch::{NoSlot, WatchError},
    },
};

/// `ListRockets`: see [`read::rockets`].
pub async fn list_rockets(
    state: ApiState,
    request: Request<proto::ListRocketsRequest>,
) -> Result<proto::ListRocketsResponse, ApiError> {
    read_rockets(&Caller::of(&request), &state)?;
    let (rockets, next) = read::rockets(&state.pool, request.get_ref()).await?;
    Ok(proto::ListRocketsResponse {
        rockets: rockets.iter().map(proto::Rocket::from).collect(),
        next_cursor: next.unwrap_or_default(),
    })
}

/// `GetRocket`: see [`read::rocket`].
pub async fn get_rocket(
    state: ApiState,
    request: Request<proto::GetRocketRequest>,
) -> Result<proto::Rocket, ApiError> {
    read_rockets(&Caller::of(&request), &state)?;
    let (rocket, ranges) = read::rocket(&state.pool, &request.get_ref().channel).await?;
    Ok(proto::Rocket {
        missing_ranges: ranges.iter().map(proto::MessageRange::from).collect(),
        ..proto::Rocket::from(&rocket)
    })
}

/// `ListRocketMessages`: see [`read::history`].
pub async fn list_rocket_messages(
    state: ApiState,
    request: Request<proto::ListRocketMessagesRequest>,
) -> Result<proto::ListRocketMessagesResponse, ApiError> {
    read_rockets(&Caller::of(&request), &state)?;
    let (messages, next) = read::history(&state.pool, request.get_ref()).await?;
    Ok(proto::ListRocketMessagesResponse {
        messages: messages
            .iter()
            .map(proto::RocketMessageRecord::from)
            .collect(),
        next_after: next.unwrap_or_default(),
    })
}

/// `WatchRockets`: see [`Rockets::watch`](crate::rockets::Rockets::watch);
/// RESOURCE_EXHAUSTED beyond `ROCKETS_MAX_WATCHERS` open streams.
async fn watch_rockets(
    state: ApiState,
    request: Request<proto::WatchRocketsRequest>,
) -> Result<WatchStream, ApiError> {
    read_rockets(&Caller::of(&request), &state)?;
    let req = request.into_inner();
    let only = match req.channel.trim() {
        "" => None,
        raw => Some(read::channel("channel", raw).map_err(|v| ApiError::InvalidArgument(vec![v]))?),
    };
    let changes = state
        .rockets
        .watch(only, req.include_current, state.shutdown.clone())
        .map_err(|NoSlot { max }| {
            ApiError::refused(
                Reason::TooManyStreams,
                format!("{max} WatchRockets streams are open, the most this server serves (ROCKETS_MAX_WATCHERS); try again later"),
            )
        })?;
    Ok(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(changes).map(|item| match item {
            Ok(rocket) => Ok(proto::Rocket::from(&*rocket)),
            Err(WatchError::Lagged(missed)) => Err(error::status(
                Reason::StreamLagged,
                format!("this stream fell {missed} changes behind; call WatchRockets again with include_current to resynchronise"),
            )),
            Err(WatchError::Read(error)) => Err(ApiError::from(error).into()),
        }),
    ))
}

impl From<&Rocket> for proto::Rocket {
    fn from(r: &Rocket) -> proto::Rocket {
        proto::Rocket {
            channel: r.channel.to_string(),
            r#type: r.rocket_type.clone().unwrap_or_default(),
            speed: r.speed,
            mission: r.mission.clone().unwrap_or_default(),
            status: rocket_status(r.status) as i32,
            explosion_reason: r.explosion_reason.clone().unwrap_or_default(),
            launched_at: r.launched_at.map(convert::timestamp),
            updated_at: Some(convert::timestamp(r.updated_at)),
            last_message_number: r.last_message_number,
            last_message_time: Some(convert::timestamp(r.last_message_time)),
            missing_messages: r.missing_messages,
            messages_received: r.messages_received,
            launch_speed: r.launch_speed.unwrap_or_default(),
            missing_ranges: Vec::new(),
        }
    }
}

impl From<&NumberRange> for proto::MessageRange {
    fn from(r: &NumberRange) -> proto::MessageRange {
        proto::MessageRange {
            from: r.from,
            to: r.to,
        }
    }
}

/// A rocket's status as the proto enum.
fn rocket_status(status: RocketState) -> proto::RocketStatus {
    match status {
        RocketState::Unknown => proto::RocketStatus::Unknown,
        RocketState::Launched => proto::RocketStatus::Launched,
        RocketState::Exploded => proto::RocketStatus::Exploded,
    }
}

/// A stored `messageType` as the proto enum (UNSPECIFIED for a name the store
/// should never hold).
fn message_type(stored: &str) -> proto::RocketMessageType {
    use proto::RocketMessageType as T;
    match MessageType::parse(stored) {
        Some(MessageType::Launched) => T::Launched,
        Some(MessageType::SpeedIncreased) => T::SpeedIncreased,
        Some(MessageType::SpeedDecreased) => T::SpeedDecreased,
        Some(MessageType::Exploded) => T::Exploded,
        Some(MessageType::MissionChanged) => T::MissionChanged,
        None => T::Unspecified,
    }
}

impl From<&StoredMessage> for proto::RocketMessageRecord {
    fn from(m: &StoredMessage) -> proto::RocketMessageRecord {
        let text = |key: &str| {
            m.message
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let number = |key: &str| m.message.get(key).and_then(|v| v.as_i64()).unwrap_or(0);
        proto::RocketMessageRecord {
            number: m.number,
            r#type: message_type(&m.message_type) as i32,
            time: Some(convert::timestamp(m.time)),
            received_at: Some(convert::timestamp(m.received_at)),
            rocket_type: text("type"),
            launch_speed: number("launchSpeed"),
            mission: text("mission"),
            by: number("by"),
            reason: text("reason"),
            new_mission: text("newMission"),
        }
    }
}

type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<proto::Rocket, Status>> + Send>>;

/// Implementation of `spacet.v1.RocketService`: each method is its adapter's
/// answer as a gRPC response.
#[derive(Clone)]
pub struct RocketApi {
    pub state: ApiState,
}

/// An adapter's answer as a gRPC response.
fn reply<T>(answer: Result<T, ApiError>) -> Result<Response<T>, Status> {
    answer.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl proto::rocket_service_server::RocketService for RocketApi {
    async fn list_rockets(
        &self,
        request: Request<proto::ListRocketsRequest>,
    ) -> Result<Response<proto::ListRocketsResponse>, Status> {
        reply(list_rockets(self.state.clone(), request).await)
    }

    async fn get_rocket(
        &self,
        request: Request<proto::GetRocketRequest>,
    ) -> Result<Response<proto::Rocket>, Status> {
        reply(get_rocket(self.state.clone(), request).await)
    }

    async fn list_rocket_messages(
        &self,
        request: Request<proto::ListRocketMessagesRequest>,
    ) -> Result<Response<proto::ListRocketMessagesResponse>, Status> {
        reply(list_rocket_messages(self.state.clone(), request).await)
    }

    type WatchRocketsStream = WatchStream;

    async fn watch_rockets(
        &self,
        request: Request<proto::WatchRocketsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        reply(watch_rockets(self.state.clone(), request).await)
    }
}
