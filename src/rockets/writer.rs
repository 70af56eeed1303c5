//! Group commit: HTTP handlers hand their message to the writer tasks through a
//! bounded channel and wait for the answer; a writer stores everything that queued
//! up meanwhile in one statement (one transaction, one WAL flush) and answers each
//! handler only after COMMIT. A full channel makes handlers wait (backpressure);
//! nothing is ever dropped or answered before it is durable.
//!
//! One writer task ([`WRITERS`]) drains the queue. Two were tried (one committing while the
//! other gathers the next batch): on two cores they made single-message batches
//! and spent more CPU per message (650 µs against 460–520 µs, service and
//! PostgreSQL together) for no more throughput, because a lone writer gathers
//! what arrives during its commit into the next one (1.46 messages per batch at
//! concurrency 3, more as senders grow). The statement locks rows in key order,
//! so more writers could not deadlock should a bigger machine want them (a
//! deadlock or serialization error is retried all the same).

use std::{collections::HashSet, sync::Arc};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    message::Message,
    store::{self, Rocket, Stored},
    RocketError,
};
use crate::clock::Clock;

/// Writer tasks sharing the queue.
pub const WRITERS: usize = 1;
/// Most messages in one statement.
pub const MAX_BATCH: usize = 1000;
/// Messages waiting for the writer before handlers wait to hand theirs over.
pub const QUEUE_CAPACITY: usize = 4096;
/// Batches a message may be retried in after a deadlock or serialization failure.
const MAX_ATTEMPTS: u8 = 5;

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored now and merged into the rocket's state.
    Stored,
    /// The same message was stored before; nothing changed.
    Duplicate,
}

/// One handler's message and where its answer goes.
#[derive(Debug)]
pub struct Job {
    pub message: Message,
    pub reply: oneshot::Sender<Result<Outcome, RocketError>>,
    attempts: u8,
}

impl Job {
    /// A job and the receiver of its answer.
    pub fn new(message: Message) -> (Job, oneshot::Receiver<Result<Outcome, RocketError>>) {
        let (reply, answer) = oneshot::channel();
        (
            Job {
                message,
                reply,
                attempts: 0,
            },
            answer,
        )
    }
}

/// What the writer needs besides its queue; also used by handlers that write
/// directly once the writer has stopped.
#[derive(Clone)]
pub struct Sink {
    pub pool: sqlx::PgPool,
    pub clock: Clock,
    pub changes: broadcast::Sender<Arc<Rocket>>,
}

impl Sink {
    /// Writes `jobs` and answers them. Returns the jobs to try again in the next
    /// batch: those whose (channel, number) repeats an earlier job of the same batch
    /// (they will be found as duplicates or conflicts), and those of a batch rolled
    /// back by a deadlock or serialization failure.
    pub async fn commit(&self, jobs: Vec<Job>) -> Vec<Job> {
        let mut seen = HashSet::with_capacity(jobs.len());
        let (batch, mut later): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|job| seen.insert((job.message.channel, job.message.number)));
        let messages: Vec<&Message> = batch.iter().map(|job| &job.message).collect();
        let started = std::time::Instant::now();
        let result = store::write(&self.pool, &messages, self.clock.now()).await;
        tracing::debug!(
            messages = messages.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "rocket batch written"
        );
        drop(messages);
        match result {
            Ok(written) => {
                for rocket in written.changed {
                    // No subscriber is not an error.
                    let _ = self.changes.send(Arc::new(rocket));
                }
                for (job, outcome) in batch.into_iter().zip(written.outcomes) {
                    let answer = match outcome {
                        Stored::New => Ok(Outcome::Stored),
                        Stored::Duplicate => Ok(Outcome::Duplicate),
                        Stored::Conflict => Err(RocketError::Conflict {
                            channel: job.message.channel,
                            number: job.message.number,
                        }),
                    };
                    let _ = job.reply.send(answer);
                }
            }
            Err(error) if is_transient(&error) => {
                tracing::warn!(%error, messages = batch.len(), "batch rolled back, retrying it");
                for job in batch {
                    if job.attempts + 1 < MAX_ATTEMPTS {
                        later.push(Job {
                            attempts: job.attempts + 1,
                            ..job
                        });
                    } else {
                        let _ = job.reply.send(Err(RocketError::Unavailable(
                            "the message could not be stored; send it again".into(),
                        )));
                    }
                }
            }
            Err(error) if batch.len() > 1 && !crate::db::is_unavailable(&error) => {
                // One bad message must not fail its neighbours: write them one by one.
                tracing::warn!(%error, messages = batch.len(), "batch failed, writing its messages one by one");
                for job in batch {
                    later.extend(Box::pin(self.commit(vec![job])).await);
                }
            }
            Err(error) => {
                let unavailable = crate::db::is_unavailable(&error);
                tracing::error!(%error, messages = batch.len(), "storing rocket messages failed");
                for job in batch {
                    let answer = if unavailable {
                        RocketError::Unavailable("the database is not reachable".into())
                    } else {
                        RocketError::Internal(format!("storing the message failed: {error}"))
                    };
                    let _ = job.reply.send(Err(answer));
                }
            }
        }
        later
    }
}

/// A deadlock or serialization failure: the transaction rolled back and can
/// simply run again.
fn is_transient(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("40P01" | "40001")))
}

/// The queue all writers take from.
pub type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

/// A writer task's state: the shared queue and its jobs carried over to its next batch.
pub struct Writer {
    sink: Sink,
    queue: Queue,
    carried: Vec<Job>,
}

impl Writer {
    pub fn new(sink: Sink, queue: Queue) -> Writer {
        Writer {
            sink,
            queue,
            carried: Vec::new(),
        }
    }

    /// Waits for at least one job, takes everything queued (up to [`MAX_BATCH`]),
    /// writes it and answers. Returns how many jobs it took, or `None` once the
    /// queue is closed and empty and nothing is carried over.
    pub async fn step(&mut self) -> Option<usize> {
        let jobs = self.take().await?;
        let taken = jobs.len();
        self.carried = self.sink.commit(jobs).await;
        Some(taken)
    }

    /// The next batch: the jobs carried over, then whatever is queued. Waits only
    /// when there is nothing at all. Cancel-safe.
    async fn take(&mut self) -> Option<Vec<Job>> {
        let mut jobs = std::mem::take(&mut self.carried);
        if jobs.is_empty() {
            // Holds the queue while waiting: the other writers are busy committing
            // or waiting for this one to let go.
            let mut queue = self.queue.lock().await;
            if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                return None;
            }
        } else if let Ok(mut queue) = self.queue.try_lock() {
            // Never wait for the queue with jobs in hand: another writer may hold it
            // while it waits for new messages.
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        Some(jobs)
    }

    /// Steps until shutdown. Then closes the queue (handlers that come later write
    /// directly), answers everything already queued, and returns. A write in
    /// progress is never cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut closed = false;
        loop {
            let jobs = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !closed => {
                    self.queue.lock().await.close();
                    closed = true;
                    continue;
                }
                jobs = self.take() => jobs,
            };
            let Some(jobs) = jobs else { break };
            self.carried = self.sink.commit(jobs).await;
        }
        tracing::debug!("rocket writer stopped");
    }
}

/// The answer for a message that could not be handed to the writer or whose
/// writer went away before answering.
pub fn writer_gone(channel: Uuid, number: i64) -> RocketError {
    tracing::error!(%channel, number, "the rocket writer stopped before answering");
    RocketError::Unavailable("the service is restarting; send the message again".into())
}
