//! gRPC `RocketService`: converts requests into domain values, reads the store,
//! converts the rockets back. The HTTP routes call the same methods.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use tokio::sync::{broadcast::error::RecvError, mpsc};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    api::{convert, error::ApiError, ApiState},
    proto,
    rockets::{
        list::ListQuery,
        store::{self, Rocket},
        RocketError,
    },
};

/// Implementation of `spacet.v1.RocketService`.
#[derive(Clone)]
pub struct RocketApi {
    state: ApiState,
}

/// Parses a channel field (a UUID).
pub fn channel(field: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw.trim())
        .map_err(|_| ApiError::field(field, format!("{raw:?} is not a UUID")))
}

impl RocketApi {
    pub fn new(state: ApiState) -> RocketApi {
        RocketApi { state }
    }

    /// One rocket, or NOT_FOUND.
    pub async fn get(&self, raw_channel: &str) -> Result<Rocket, ApiError> {
        let channel = channel("channel", raw_channel)?;
        store::get(&self.state.pool, channel)
            .await?
            .ok_or_else(|| RocketError::NotFound(channel).into())
    }

    /// One page and the cursor of the next.
    pub async fn list(
        &self,
        req: &proto::ListRocketsRequest,
    ) -> Result<(Vec<Rocket>, Option<String>), ApiError> {
        let query = ListQuery::parse(req).map_err(ApiError::InvalidArgument)?;
        let (rockets, last) = store::list(&self.state.pool, &query).await?;
        Ok((rockets, query.next_cursor(last)))
    }
}

impl From<&Rocket> for proto::Rocket {
    fn from(r: &Rocket) -> proto::Rocket {
        proto::Rocket {
            channel: r.channel.to_string(),
            r#type: r.rocket_type.clone().unwrap_or_default(),
            speed: r.speed,
            mission: r.mission.clone().unwrap_or_default(),
            status: r.status.as_str().to_string(),
            explosion_reason: r.explosion_reason.clone().unwrap_or_default(),
            launched_at: r.launched_at.map(convert::timestamp),
            updated_at: Some(convert::timestamp(r.updated_at)),
            last_message_number: r.last_message_number,
            last_message_time: Some(convert::timestamp(r.last_message_time)),
            missing_messages: r.missing_messages,
            messages_received: r.messages_received,
            launch_speed: r.launch_speed.unwrap_or_default(),
        }
    }
}

type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<proto::Rocket, Status>> + Send>>;

#[tonic::async_trait]
impl proto::rocket_service_server::RocketService for RocketApi {
    async fn list_rockets(
        &self,
        request: Request<proto::ListRocketsRequest>,
    ) -> Result<Response<proto::ListRocketsResponse>, Status> {
        let (rockets, next) = self.list(request.get_ref()).await?;
        Ok(Response::new(proto::ListRocketsResponse {
            rockets: rockets.iter().map(proto::Rocket::from).collect(),
            next_cursor: next.unwrap_or_default(),
        }))
    }

    async fn get_rocket(
        &self,
        request: Request<proto::GetRocketRequest>,
    ) -> Result<Response<proto::Rocket>, Status> {
        let rocket = self.get(&request.get_ref().channel).await?;
        Ok(Response::new(proto::Rocket::from(&rocket)))
    }

    type WatchRocketsStream = WatchStream;

    async fn watch_rockets(
        &self,
        request: Request<proto::WatchRocketsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let req = request.into_inner();
        let only = match req.channel.trim() {
            "" => None,
            raw => Some(channel("channel", raw)?),
        };
        // Subscribe before reading the snapshot, so no change falls in between.
        let changes = self.state.rockets.subscribe();
        let snapshot = if req.include_current {
            store::list(&self.state.pool, &ListQuery::all(only))
                .await
                .map_err(ApiError::from)?
                .0
        } else {
            Vec::new()
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(forward(self.state.clone(), only, snapshot, changes, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Feeds one WatchRockets stream until the client goes away or shutdown begins.
///
/// Every item is a whole state, and `messages_received` grows with every change,
/// so a state older than one already sent is skipped: the snapshot and the feed
/// may overlap, and a resync after lagging resends only what moved.
async fn forward(
    state: ApiState,
    only: Option<Uuid>,
    snapshot: Vec<Rocket>,
    mut changes: tokio::sync::broadcast::Receiver<Arc<Rocket>>,
    tx: mpsc::Sender<Result<proto::Rocket, Status>>,
) {
    let mut sent: HashMap<Uuid, i64> = HashMap::new();
    let mut send = |rocket: &Rocket| {
        let newer = sent
            .get(&rocket.channel)
            .is_none_or(|&received| rocket.messages_received > received);
        let wanted = only.is_none_or(|c| c == rocket.channel);
        (newer && wanted).then(|| {
            sent.insert(rocket.channel, rocket.messages_received);
            proto::Rocket::from(rocket)
        })
    };
    for rocket in &snapshot {
        if let Some(item) = send(rocket) {
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
        }
    }
    loop {
        let batch = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tx.closed() => return,
            change = changes.recv() => match change {
                Ok(rocket) => vec![rocket],
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "watch subscriber lagged, resending current states");
                    match store::list(&state.pool, &ListQuery::all(only)).await {
                        Ok((rockets, _)) => rockets.into_iter().map(Arc::new).collect(),
                        Err(error) => {
                            let _ = tx.send(Err(ApiError::from(error).into())).await;
                            return;
                        }
                    }
                }
                Err(RecvError::Closed) => return,
            },
        };
        for rocket in batch {
            if let Some(item) = send(&rocket) {
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
        }
    }
}
