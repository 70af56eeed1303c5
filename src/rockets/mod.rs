//! Rocket telemetry: rockets post out-of-order, at-least-once messages about their
//! state changes (`POST /messages`); the service stores each message once, keeps
//! every rocket's state exact whatever the arrival order, and serves it over HTTP
//! and gRPC (including a stream of changes).
//!
//! - [`post`]: the use case of a posted message (who may post, the outcome
//!   metrics), over [`Rockets::ingest`];
//! - [`message`]: the message contract and its validation;
//! - [`state`]: the state as a pure, order-independent fold of the messages;
//! - [`writer`]: group commit of concurrent messages;
//! - [`store`]: the SQL, the list query included; [`list`]: list requests, sorts
//!   and cursors (no SQL: the store depends on it, never the reverse);
//! - [`read`]: one rocket, a page of rockets, a page of a rocket's history;
//! - [`watch`]: the change feed as streams (`WatchRockets`, the event stream);
//! - [`retention`]: deletes old messages, never a rocket's state.
//!
//! The HTTP and gRPC edges live in `api`: they decode, call these and encode.
//!
//! Bounds: a message waits at most `ROCKETS_WRITE_TIMEOUT` for the writer (queueing
//! and commit), then gets UNAVAILABLE; at most `ROCKETS_MAX_WATCHERS` change-feed
//! subscribers ([`Rockets::watch_slot`]).

pub mod list;
pub mod message;
pub mod read;
pub mod retention;
pub mod state;
pub mod store;
pub mod watch;
pub mod writer;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Forbidden, Requester, Role},
    clock::Clock,
    config::RocketSettings,
};
use message::Message;
use store::Rocket;
use writer::{Job, Outcome, Sink, Writer};

/// State changes kept for slow WatchRockets subscribers before they lag (and are closed).
pub const CHANGES_CAPACITY: usize = 4096;
/// Snapshot pages read at once, whatever the number of watchers: they wait for
/// each other rather than take the API's pool (and time out acquiring from it).
const SNAPSHOT_READS: usize = 2;

/// Why a message was not stored or a rocket not found.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RocketError {
    #[error("message {number} of channel {channel} was already received with another payload; the first one is kept")]
    Conflict { channel: Uuid, number: i64 },
    #[error("no message was received from channel {0}")]
    NotFound(Uuid),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

crate::metrics::label_set! {
    /// How a posted message ended: the `outcome` label of
    /// `spacet_rocket_messages_total`.
    pub enum MessageOutcome {
        Stored = "stored",
        Duplicate = "duplicate",
        Conflict = "conflict",
        Invalid = "invalid",
        Error = "error",
    }
}

/// Starts every [`MessageOutcome`] of `spacet_rocket_messages_total` at zero.
pub(crate) fn declare_metrics() {
    for outcome in MessageOutcome::ALL {
        crate::metrics::ROCKET_MESSAGES.with_label_values(&[outcome.as_str()]);
    }
}

/// A message taken: whose and what became of it (stored, or a duplicate of one
/// stored before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    pub channel: Uuid,
    pub number: i64,
    pub outcome: Outcome,
}

/// Why a posted message was not taken. `E` is why the edge could not read its
/// body, passed back as it came.
#[derive(Debug, thiserror::Error)]
pub enum PostError<E> {
    /// Only telemetry (and trusted requesters) post messages.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// The edge could not read the body.
    #[error("the message body could not be read")]
    Unreadable(E),
    /// The message breaks its contract; every violation is named.
    #[error("invalid message: {} invalid field(s)", .0.len())]
    Invalid(Vec<tonic_types::FieldViolation>),
    #[error(transparent)]
    Rocket(#[from] RocketError),
}

/// `POST /messages`: stores one message from telemetry (or a trusted
/// requester); `body` is the message as JSON, or why the edge could not read
/// it. Counts the outcome in `spacet_rocket_messages_total`.
pub async fn post<E>(
    rockets: &Rockets,
    requester: &Requester,
    body: Result<serde_json::Value, E>,
) -> Result<Posted, PostError<E>> {
    requester.require(&[Role::Telemetry])?;
    let count = |outcome: MessageOutcome| {
        crate::metrics::ROCKET_MESSAGES
            .with_label_values(&[outcome.as_str()])
            .inc()
    };
    let message = match body {
        Err(unreadable) => {
            count(MessageOutcome::Invalid);
            return Err(PostError::Unreadable(unreadable));
        }
        Ok(body) => Message::parse(&body).map_err(|violations| {
            count(MessageOutcome::Invalid);
            PostError::Invalid(violations)
        })?,
    };
    let (channel, number) = (message.channel, message.number);
    match rockets.ingest(message).await {
        Ok(outcome) => {
            count(match outcome {
                Outcome::Stored => MessageOutcome::Stored,
                Outcome::Duplicate => MessageOutcome::Duplicate,
            });
            Ok(Posted {
                channel,
                number,
                outcome,
            })
        }
        Err(error) => {
            if let RocketError::Conflict { .. } = error {
                tracing::warn!(%channel, number, "conflicting duplicate refused, the first message is kept");
                count(MessageOutcome::Conflict);
            } else {
                count(MessageOutcome::Error);
            }
            Err(error.into())
        }
    }
}

/// The rocket telemetry of one app: the writer's queue and the change feed.
#[derive(Clone)]
pub struct Rockets {
    inner: Arc<Inner>,
}

struct Inner {
    queue: mpsc::Sender<Job>,
    /// Taken by [`Rockets::start`] when the writer starts.
    receiver: Mutex<Option<mpsc::Receiver<Job>>>,
    sink: Sink,
    writer_started: AtomicBool,
    settings: RocketSettings,
    /// For the retention worker.
    pool: sqlx::PgPool,
    /// One permit per WatchRockets stream.
    watchers: Arc<Semaphore>,
    /// One permit per snapshot page being read.
    snapshot_reads: Semaphore,
    /// When the writer's unfinished work began (see [`Busy`]).
    busy: Busy,
}

/// When the writer took work it has not yet committed, as microseconds since
/// `epoch` plus one; 0 while it has nothing in hand. Read by readiness, so a
/// plain atomic rather than a lock.
#[derive(Clone)]
pub struct Busy {
    epoch: Instant,
    since: Arc<AtomicU64>,
}

impl Busy {
    fn new() -> Busy {
        Busy {
            epoch: Instant::now(),
            since: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Work taken: starts the clock unless it already runs.
    pub fn start(&self) {
        let now = self.epoch.elapsed().as_micros() as u64 + 1;
        let _ = self
            .since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Everything taken was answered.
    pub fn idle(&self) {
        self.since.store(0, Ordering::Release);
    }

    /// How long the writer has held uncommitted work.
    fn for_how_long(&self) -> Option<Duration> {
        match self.since.load(Ordering::Acquire) {
            0 => None,
            since => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_micros(since - 1)),
            ),
        }
    }
}

impl Rockets {
    /// Creates the queue and the change feed; [`Rockets::start`] starts the writer.
    ///
    /// The writer has a connection of its own (the API's pool is not starved by a
    /// burst of messages, nor the writer by slow reads), with generic plans: its one
    /// statement is planned once per connection instead of at every batch, which
    /// halves the database's work per batch.
    pub fn new(pool: &sqlx::PgPool, clock: Clock, settings: RocketSettings) -> Rockets {
        let base = pool.connect_options();
        // Named so that operators see it apart in pg_stat_activity.
        let name = format!(
            "{} rocket writer",
            base.get_application_name().unwrap_or("spacet")
        );
        let options = (*base)
            .clone()
            .application_name(&name)
            .options([("plan_cache_mode", "force_generic_plan")]);
        let (queue, receiver) = mpsc::channel(writer::QUEUE_CAPACITY);
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        Rockets {
            inner: Arc::new(Inner {
                queue,
                receiver: Mutex::new(Some(receiver)),
                sink: Sink {
                    options,
                    clock,
                    changes,
                },
                writer_started: AtomicBool::new(false),
                watchers: Arc::new(Semaphore::new(settings.max_watchers)),
                snapshot_reads: Semaphore::new(SNAPSHOT_READS),
                settings,
                pool: pool.clone(),
                busy: Busy::new(),
            }),
        }
    }

    /// Stores a message, durably, before returning `Ok`. Waits for the writer at
    /// most `ROCKETS_WRITE_TIMEOUT` (queueing and commit together), then answers
    /// UNAVAILABLE: nothing is acknowledged that was not committed. A message whose
    /// commit comes after that deadline is simply stored, and its resend is then a
    /// duplicate.
    pub(crate) async fn ingest(&self, message: Message) -> Result<Outcome, RocketError> {
        if !self.inner.writer_started.load(Ordering::Acquire) {
            return Err(RocketError::Unavailable(
                "the service is starting; send the message again".into(),
            ));
        }
        let timeout = self.inner.settings.write_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let (channel, number) = (message.channel, message.number);
        let (job, answer) = Job::new(message);
        let too_slow = || {
            tracing::warn!(%channel, number, ?timeout, "rocket message not stored in time");
            RocketError::Unavailable(format!(
                "the message was not stored within {timeout:?}; send it again (a resend is answered as a duplicate if it was stored meanwhile)"
            ))
        };
        match tokio::time::timeout_at(deadline, self.inner.queue.send(job)).await {
            Ok(Ok(())) => {}
            // Never queued: dropped with this future.
            Err(_) => return Err(too_slow()),
            // The writer stops only after the servers have drained: a message
            // arriving later is not written on a connection of its own.
            Ok(Err(_)) => {
                return Err(RocketError::Unavailable(
                    "the service is shutting down; send the message again".into(),
                ))
            }
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(answer) => answer.unwrap_or_else(|_| Err(writer::writer_gone(channel, number))),
            Err(_) => Err(too_slow()),
        }
    }

    /// True when the writer has held work for longer than `ROCKETS_WRITE_TIMEOUT`
    /// without committing it (a locked table, a database that does not answer):
    /// every message would time out, so readiness reports it. Cheap: one atomic read.
    pub(crate) fn is_stalled(&self) -> bool {
        self.inner
            .busy
            .for_how_long()
            .is_some_and(|held| held > self.inner.settings.write_timeout)
    }

    /// One page of a snapshot (`query.limit` rockets at most). At most
    /// [`SNAPSHOT_READS`] pages are read at once: the others wait their turn.
    pub(crate) async fn snapshot_page(
        &self,
        query: &list::ListQuery,
    ) -> Result<(Vec<Rocket>, Option<list::SortKey>), sqlx::Error> {
        let _turn = self
            .inner
            .snapshot_reads
            .acquire()
            .await
            .expect("the semaphore is never closed");
        store::list(&self.inner.pool, query).await
    }

    /// A WatchRockets slot, held for the life of the stream, or `None` when
    /// `ROCKETS_MAX_WATCHERS` streams are open.
    pub(crate) fn watch_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.watchers.clone().try_acquire_owned().ok()
    }

    /// The change feed: the new state of every rocket a batch changed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Rocket>> {
        self.inner.sink.changes.subscribe()
    }
}

impl Rockets {
    /// Starts the writers and the retention worker (once the database is
    /// migrated). The writers stop when `stop` fires, after answering every
    /// message queued: the app fires it once the servers have drained, so that
    /// requests still in flight at shutdown go through the writer too. Starting
    /// twice starts nothing.
    pub fn start(&self, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(receiver) = self.inner.receiver.lock().unwrap().take() else {
            return Vec::new();
        };
        let queue = Arc::new(tokio::sync::Mutex::new(receiver));
        let mut tasks: Vec<_> = (0..writer::WRITERS)
            .map(|_| {
                let writer = Writer::new(
                    self.inner.sink.clone(),
                    queue.clone(),
                    self.inner.busy.clone(),
                );
                tokio::spawn(writer.run(stop.clone()))
            })
            .collect();
        tasks.push(tokio::spawn(retention::run(
            self.inner.pool.clone(),
            self.inner.sink.clock.clone(),
            self.inner.settings.message_retention,
            stop,
        )));
        self.inner.writer_started.store(true, Ordering::Release);
        tasks
    }
}
