//! Rocket telemetry: rockets post out-of-order, at-least-once messages about their
//! state changes (`POST /messages`); the service stores each message once, keeps
//! every rocket's state exact whatever the arrival order, and serves it over HTTP
//! and gRPC (including a stream of changes).
//!
//! - [`message`]: the message contract and its validation;
//! - [`state`]: the state as a pure, order-independent fold of the messages;
//! - [`writer`]: group commit of concurrent messages;
//! - [`store`]: the SQL; [`list`]: sorting and paging.
//!
//! The HTTP and gRPC edges live in `api`.

pub mod list;
pub mod message;
pub mod state;
pub mod store;
pub mod writer;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use message::Message;
use store::Rocket;
use writer::{Job, Outcome, Sink, Writer};

/// State changes kept for slow WatchRockets subscribers before they lag (and resync).
const CHANGES_CAPACITY: usize = 4096;

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
}

impl Rockets {
    /// Creates the queue and the change feed; [`Rockets::start`] starts the writer.
    ///
    /// The writer has a connection of its own (the API's pool is not starved by a
    /// burst of messages, nor the writer by slow reads), with generic plans: its one
    /// statement is planned once per connection instead of at every batch, which
    /// halves the database's work per batch.
    pub fn new(pool: &sqlx::PgPool, clock: Clock) -> Rockets {
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
            }),
        }
    }

    /// Stores a message, durably, before returning `Ok`.
    pub async fn ingest(&self, message: Message) -> Result<Outcome, RocketError> {
        if !self.inner.writer_started.load(Ordering::Acquire) {
            return Err(RocketError::Unavailable(
                "the service is starting; send the message again".into(),
            ));
        }
        let (channel, number) = (message.channel, message.number);
        let (job, answer) = Job::new(message);
        let answer = match self.inner.queue.send(job).await {
            Ok(()) => answer,
            Err(mpsc::error::SendError(job)) => {
                // The writer has stopped (shutdown): write this one directly, with
                // the same code, so that draining requests are still answered.
                let (mut jobs, answer, mut conn) = (vec![job], answer, None);
                while !jobs.is_empty() {
                    jobs = self.inner.sink.commit(&mut conn, jobs).await;
                }
                if let Some(conn) = conn {
                    let _ = sqlx::Connection::close(conn).await;
                }
                answer
            }
        };
        answer
            .await
            .unwrap_or_else(|_| Err(writer::writer_gone(channel, number)))
    }

    /// The change feed: the new state of every rocket a batch changed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Rocket>> {
        self.inner.sink.changes.subscribe()
    }
}

impl Rockets {
    /// Starts the writers (once the database is migrated); they stop when
    /// `shutdown` fires, after the batch in hand. Starting twice starts nothing.
    pub fn start(&self, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(receiver) = self.inner.receiver.lock().unwrap().take() else {
            return Vec::new();
        };
        let queue = Arc::new(tokio::sync::Mutex::new(receiver));
        let writers = (0..writer::WRITERS)
            .map(|_| {
                let writer = Writer::new(self.inner.sink.clone(), queue.clone());
                tokio::spawn(writer.run(shutdown.clone()))
            })
            .collect();
        self.inner.writer_started.store(true, Ordering::Release);
        writers
    }
}
