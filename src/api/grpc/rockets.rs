//! gRPC `RocketService`: converts requests into domain values, reads the store,
//! converts the rockets back. The HTTP routes call the same methods.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use tokio::sync::{
    broadcast::{
        self,
        error::{RecvError, TryRecvError},
    },
    mpsc, OwnedSemaphorePermit,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    api::{
        auth::{read_rockets, Caller},
        convert,
        error::{self, ApiError, Reason},
        ApiState,
    },
    proto,
    rockets::{
        list::ListQuery,
        message::MessageType,
        state::Status as RocketState,
        store::{self, NumberRange, Rocket, StoredMessage},
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

    /// One rocket and its missing ranges (the first
    /// [`store::MISSING_RANGES_CAP`]), or NOT_FOUND.
    pub async fn get_with_gaps(
        &self,
        raw_channel: &str,
    ) -> Result<(Rocket, Vec<NumberRange>), ApiError> {
        let rocket = self.get(raw_channel).await?;
        // The state row counts the missing numbers: none, no scan (a complete
        // rocket of 100,000 messages costs ~120 ms of index scan otherwise).
        if rocket.missing_messages == 0 {
            return Ok((rocket, Vec::new()));
        }
        let ranges =
            store::missing_ranges(&self.state.pool, rocket.channel, store::MISSING_RANGES_CAP)
                .await?;
        Ok((rocket, ranges))
    }

    /// One page of a rocket's stored messages and the `after` of the next page;
    /// NOT_FOUND when no message of the channel was ever stored.
    pub async fn history(
        &self,
        req: &proto::ListRocketMessagesRequest,
    ) -> Result<(Vec<StoredMessage>, Option<i64>), ApiError> {
        let channel = channel("channel", &req.channel);
        let mut violations = Vec::new();
        if req.after < 0 {
            violations.push(("after", "must be 0 or more"));
        }
        if req.page_size < 0 {
            violations.push(("page_size", "must be 0 or more"));
        }
        let channel = match (channel, violations.is_empty()) {
            (Ok(channel), true) => channel,
            (channel, _) => {
                let mut all: Vec<_> = violations
                    .into_iter()
                    .map(|(f, d)| tonic_types::FieldViolation::new(f, d))
                    .collect();
                if let Err(ApiError::InvalidArgument(v)) = channel {
                    all.extend(v);
                }
                return Err(ApiError::InvalidArgument(all));
            }
        };
        let size = match req.page_size {
            0 => HISTORY_PAGE,
            n => i64::from(n).min(HISTORY_PAGE_MAX),
        };
        let mut page = store::messages(&self.state.pool, channel, req.after, size + 1).await?;
        if page.is_empty() && store::get(&self.state.pool, channel).await?.is_none() {
            return Err(RocketError::NotFound(channel).into());
        }
        let next = (page.len() as i64 > size).then(|| {
            page.truncate(size as usize);
            page.last().map_or(req.after, |m| m.number)
        });
        Ok((page, next))
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

/// History page size when none is asked for, and the largest.
const HISTORY_PAGE: i64 = 100;
const HISTORY_PAGE_MAX: i64 = 1000;

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

#[tonic::async_trait]
impl proto::rocket_service_server::RocketService for RocketApi {
    async fn list_rockets(
        &self,
        request: Request<proto::ListRocketsRequest>,
    ) -> Result<Response<proto::ListRocketsResponse>, Status> {
        read_rockets(&Caller::of(&request), &self.state)?;
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
        read_rockets(&Caller::of(&request), &self.state)?;
        let (rocket, ranges) = self.get_with_gaps(&request.get_ref().channel).await?;
        Ok(Response::new(proto::Rocket {
            missing_ranges: ranges.iter().map(proto::MessageRange::from).collect(),
            ..proto::Rocket::from(&rocket)
        }))
    }

    async fn list_rocket_messages(
        &self,
        request: Request<proto::ListRocketMessagesRequest>,
    ) -> Result<Response<proto::ListRocketMessagesResponse>, Status> {
        read_rockets(&Caller::of(&request), &self.state)?;
        let (messages, next) = self.history(request.get_ref()).await?;
        Ok(Response::new(proto::ListRocketMessagesResponse {
            messages: messages
                .iter()
                .map(proto::RocketMessageRecord::from)
                .collect(),
            next_after: next.unwrap_or_default(),
        }))
    }

    type WatchRocketsStream = WatchStream;

    /// Refused RESOURCE_EXHAUSTED beyond `ROCKETS_MAX_WATCHERS` open streams.
    async fn watch_rockets(
        &self,
        request: Request<proto::WatchRocketsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        read_rockets(&Caller::of(&request), &self.state)?;
        let req = request.into_inner();
        let only = match req.channel.trim() {
            "" => None,
            raw => Some(channel("channel", raw)?),
        };
        let Some(slot) = self.state.rockets.watch_slot() else {
            let max = self.state.settings.rockets.max_watchers;
            tracing::warn!(max, "WatchRockets refused: every slot is taken");
            return Err(error::status(
                Reason::TooManyStreams,
                format!("{max} WatchRockets streams are open, the most this server serves (ROCKETS_MAX_WATCHERS); try again later"),
            ));
        };
        // Subscribe before reading the snapshot, so no change falls in between.
        let changes = self.state.rockets.subscribe();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let watch = Watch {
            state: self.state.clone(),
            only,
            changes,
            tx,
            recent: Default::default(),
            paged_up_to: None,
            _slot: slot,
        };
        tokio::spawn(watch.run(req.include_current));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Rockets read per snapshot query.
pub const SNAPSHOT_PAGE: i64 = 500;
/// Items a stream holds for a slow client before the snapshot waits for it.
const STREAM_BUFFER: usize = 64;
/// How long the closing status waits for a slow client to make room for it.
const FAIL_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One WatchRockets stream: the snapshot (paged), then the change feed, until the
/// client goes away or shutdown begins.
///
/// Memory stays bounded whatever the number of rockets: the snapshot is read
/// [`SNAPSHOT_PAGE`] rockets at a time (keyset on the channel) and the next page
/// is read only once the client has taken the previous one (the stream's buffer
/// is small), and the only per-stream map holds the last two pages.
///
/// Every item is a whole state, and `messages_received` grows with every change,
/// so a state older than one already sent is skipped. Between pages the feed is
/// drained: a change of a rocket not yet paged is dropped (the page that reads it
/// will see that state or a newer one: a change is committed before it is
/// broadcast), and a change of a rocket already paged is sent unless the snapshot
/// row sent was as new. Rows are compared with the last two pages only: a change
/// received later than one full page after its rocket's row was broadcast after
/// that row was read, so it is newer.
///
/// At most two pages are read at once across all streams (`Rockets::snapshot_page`),
/// so watchers never take more than two of the API's pooled connections.
///
/// A subscriber that falls more than the feed's capacity behind is closed with
/// ABORTED ("call WatchRockets again with include_current"): resending every
/// state to a client that cannot keep up would only make it fall behind again.
struct Watch {
    state: ApiState,
    only: Option<Uuid>,
    changes: broadcast::Receiver<Arc<Rocket>>,
    tx: mpsc::Sender<Result<proto::Rocket, Status>>,
    /// `messages_received` of the snapshot rows of the last two pages.
    recent: [HashMap<Uuid, i64>; 2],
    /// While the snapshot runs: the last channel paged (`Some(None)`: none yet).
    paged_up_to: Option<Option<Uuid>>,
    /// Frees the stream's slot when it ends.
    _slot: OwnedSemaphorePermit,
}

/// Why a stream ends.
enum End {
    /// The client went away, shutdown began, or an error was sent.
    Stop,
}

impl Watch {
    async fn run(mut self, include_current: bool) {
        if include_current && self.snapshot().await.is_err() {
            return;
        }
        loop {
            let change = tokio::select! {
                _ = self.state.shutdown.cancelled() => return,
                _ = self.tx.closed() => return,
                change = self.changes.recv() => change,
            };
            if self.handle(change).await.is_err() {
                return;
            }
        }
    }

    /// Pages through the current states, draining the feed between pages.
    async fn snapshot(&mut self) -> Result<(), End> {
        self.paged_up_to = Some(None);
        let mut query = ListQuery::all(self.only);
        query.limit = Some(SNAPSHOT_PAGE);
        loop {
            let (rockets, next) = match self.state.rockets.snapshot_page(&query).await {
                Ok(page) => page,
                Err(error) => {
                    self.fail(ApiError::from(error).into()).await;
                    return Err(End::Stop);
                }
            };
            self.recent.swap(0, 1);
            self.recent[0].clear();
            for rocket in &rockets {
                self.paged_up_to = Some(Some(rocket.channel));
                self.recent[0].insert(rocket.channel, rocket.messages_received);
                self.send(rocket).await?;
            }
            drop(rockets);
            loop {
                match self.changes.try_recv() {
                    Err(TryRecvError::Empty) => break,
                    Ok(change) => self.handle(Ok(change)).await?,
                    Err(TryRecvError::Lagged(missed)) => {
                        self.handle(Err(RecvError::Lagged(missed))).await?
                    }
                    Err(TryRecvError::Closed) => self.handle(Err(RecvError::Closed)).await?,
                }
            }
            match next {
                Some(key) => query.after = Some(key),
                None => break,
            }
        }
        self.paged_up_to = None;
        Ok(())
    }

    /// One item of the feed.
    async fn handle(&mut self, change: Result<Arc<Rocket>, RecvError>) -> Result<(), End> {
        let rocket = match change {
            Ok(rocket) => rocket,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "watch subscriber lagged; closing its stream");
                self.fail(error::status(
                    Reason::StreamLagged,
                    format!("this stream fell {missed} changes behind; call WatchRockets again with include_current to resynchronise"),
                ))
                .await;
                return Err(End::Stop);
            }
            Err(RecvError::Closed) => return Err(End::Stop),
        };
        if self.only.is_some_and(|c| c != rocket.channel) {
            return Ok(());
        }
        if let Some(paged) = self.paged_up_to {
            if paged.is_none_or(|last| rocket.channel > last) {
                // A page still to come reads this state or a newer one.
                return Ok(());
            }
        }
        for recent in &mut self.recent {
            if let Some(sent) = recent.get_mut(&rocket.channel) {
                if rocket.messages_received <= *sent {
                    return Ok(());
                }
                *sent = rocket.messages_received;
            }
        }
        self.send(&rocket).await
    }

    async fn send(&self, rocket: &Rocket) -> Result<(), End> {
        tokio::select! {
            _ = self.state.shutdown.cancelled() => Err(End::Stop),
            sent = self.tx.send(Ok(proto::Rocket::from(rocket))) => sent.map_err(|_| End::Stop),
        }
    }

    /// Ends the stream with `status`, waiting a little for room in its buffer.
    async fn fail(&self, status: Status) {
        let _ = tokio::time::timeout(FAIL_SEND_TIMEOUT, self.tx.send(Err(status))).await;
    }
}
