//! The change feed as streams: [`Rockets::watch`] (`WatchRockets`: a snapshot,
//! then the changes) and [`Rockets::follow`] (the event stream: a replay since a
//! position, then the changes). Each stream takes one of the
//! `ROCKETS_MAX_WATCHERS` slots for its life. The edges only encode the items.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::{
    broadcast::{
        self,
        error::{RecvError, TryRecvError},
    },
    mpsc, OwnedSemaphorePermit,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    list::{ListQuery, Sort, SortKey},
    store::Rocket,
    Rockets,
};

/// Rockets read per snapshot query.
pub const SNAPSHOT_PAGE: i64 = 500;
/// Items a stream holds for a slow client before the snapshot waits for it.
const STREAM_BUFFER: usize = 64;
/// How long the closing error waits for a slow client to make room for it.
const FAIL_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Events held for a slow client before the event stream waits for it.
const EVENTS_BUFFER: usize = 64;
/// Rockets replayed per query on resumption.
const REPLAY_PAGE: i64 = 500;

/// Every slot is taken: `max` streams are open (`ROCKETS_MAX_WATCHERS`).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{max} rocket streams are open, the most this server serves")]
pub struct NoSlot {
    pub max: usize,
}

/// Why a [`Rockets::watch`] stream ends with an error (its last item).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The stream fell this many changes behind the feed.
    #[error("the stream fell {0} changes behind")]
    Lagged(u64),
    /// Reading the snapshot failed.
    #[error(transparent)]
    Read(#[from] sqlx::Error),
}

impl Rockets {
    /// A WatchRockets stream of rocket states: with `include_current`, every
    /// current state first (of `only`, or of every rocket), then every change,
    /// until the client goes away or `shutdown` fires. `Err(NoSlot)` when
    /// `ROCKETS_MAX_WATCHERS` streams are open.
    pub fn watch(
        &self,
        only: Option<Uuid>,
        include_current: bool,
        shutdown: CancellationToken,
    ) -> Result<mpsc::Receiver<Result<Arc<Rocket>, WatchError>>, NoSlot> {
        let Some(slot) = self.watch_slot() else {
            let max = self.inner.settings.max_watchers;
            tracing::warn!(max, "WatchRockets refused: every slot is taken");
            return Err(NoSlot { max });
        };
        // Subscribe before reading the snapshot, so no change falls in between.
        let changes = self.subscribe();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let watch = Watch {
            rockets: self.clone(),
            shutdown,
            only,
            changes,
            tx,
            recent: Default::default(),
            paged_up_to: None,
            _slot: slot,
        };
        tokio::spawn(watch.run(include_current));
        Ok(rx)
    }

    /// The event stream of rocket states: with `since`, the current state of
    /// every rocket changed at or after it (less a margin) first, then every
    /// change, until the client goes away, lags, a read fails or `shutdown`
    /// fires. `Err(NoSlot)` when `ROCKETS_MAX_WATCHERS` streams are open.
    ///
    /// The feed is subscribed before the replay is read, so nothing falls in
    /// between. The margin (twice `ROCKETS_WRITE_TIMEOUT`, at least 5 s) covers
    /// the writers taking "now" before they commit: a change stamped earlier can
    /// commit after one stamped later that the client already saw. So a client
    /// gets, after a dropped connection, at least the latest state of every
    /// rocket that changed meanwhile (some states twice).
    pub(crate) fn follow(
        &self,
        since: Option<DateTime<Utc>>,
        shutdown: CancellationToken,
    ) -> Result<mpsc::Receiver<Arc<Rocket>>, NoSlot> {
        let Some(slot) = self.watch_slot() else {
            let max = self.inner.settings.max_watchers;
            tracing::warn!(max, "rocket event stream refused: every slot is taken");
            return Err(NoSlot { max });
        };
        let changes = self.subscribe();
        let (tx, rx) = mpsc::channel(EVENTS_BUFFER);
        let rockets = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = rockets.replay_then_follow(since, changes, &tx) => {}
                _ = shutdown.cancelled() => {}
                _ = tx.closed() => {}
            }
        });
        Ok(rx)
    }

    /// The replay since `since` (if any), then the change feed, into `tx`;
    /// returns when the client went away, lagged, or a read failed.
    async fn replay_then_follow(
        &self,
        since: Option<DateTime<Utc>>,
        mut changes: broadcast::Receiver<Arc<Rocket>>,
        tx: &mpsc::Sender<Arc<Rocket>>,
    ) {
        if let Some(since) = since {
            let margin = (self.inner.settings.write_timeout * 2).max(Duration::from_secs(5));
            let from = since
                - chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX)
                - chrono::Duration::microseconds(1);
            let mut query = ListQuery {
                sort: Sort::UpdatedAt,
                descending: false,
                status: None,
                rocket_type: None,
                mission: None,
                channel: None,
                limit: Some(REPLAY_PAGE),
                // Strictly after (from, nil): every state updated at or after `from`.
                after: Some(SortKey {
                    sort: Sort::UpdatedAt,
                    descending: false,
                    key: from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    channel: Uuid::nil(),
                }),
            };
            loop {
                let (page, next) = match self.snapshot_page(&query).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(%error, "rocket event replay failed; the stream ends");
                        return;
                    }
                };
                for rocket in page {
                    if tx.send(Arc::new(rocket)).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(key) => query.after = Some(key),
                    None => break,
                }
            }
        }
        // Lagged or closed: the stream ends and the client resumes with a replay.
        while let Ok(rocket) = changes.recv().await {
            if tx.send(rocket).await.is_err() {
                return;
            }
        }
    }
}

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
/// [`WatchError::Lagged`] ("call WatchRockets again with include_current"):
/// resending every state to a client that cannot keep up would only make it fall
/// behind again.
struct Watch {
    rockets: Rockets,
    shutdown: CancellationToken,
    only: Option<Uuid>,
    changes: broadcast::Receiver<Arc<Rocket>>,
    tx: mpsc::Sender<Result<Arc<Rocket>, WatchError>>,
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
                _ = self.shutdown.cancelled() => return,
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
            let (rockets, next) = match self.rockets.snapshot_page(&query).await {
                Ok(page) => page,
                Err(error) => {
                    self.fail(WatchError::Read(error)).await;
                    return Err(End::Stop);
                }
            };
            self.recent.swap(0, 1);
            self.recent[0].clear();
            for rocket in rockets {
                self.paged_up_to = Some(Some(rocket.channel));
                self.recent[0].insert(rocket.channel, rocket.messages_received);
                self.send(Arc::new(rocket)).await?;
            }
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
                self.fail(WatchError::Lagged(missed)).await;
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
        self.send(rocket).await
    }

    async fn send(&self, rocket: Arc<Rocket>) -> Result<(), End> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(End::Stop),
            sent = self.tx.send(Ok(rocket)) => sent.map_err(|_| End::Stop),
        }
    }

    /// Ends the stream with `error`, waiting a little for room in its buffer.
    async fn fail(&self, error: WatchError) {
        let _ = tokio::time::timeout(FAIL_SEND_TIMEOUT, self.tx.send(Err(error))).await;
    }
}
