//! Group commit: HTTP handlers hand their message to the writer tasks through a
//! bounded channel and wait for the answer; a writer stores everything that queued
//! up meanwhile in one statement (one transaction, one WAL flush) and answers each
//! handler only after COMMIT. A full channel makes handlers wait (backpressure),
//! at most `ROCKETS_WRITE_TIMEOUT` (see `Rockets::ingest`); nothing is ever
//! answered as stored before it is durable.
//!
//! A writer owns its database connection rather than borrowing one from a pool:
//! sqlx's pool sends a `Sync` round trip to the server when a connection is taken
//! (`test_before_acquire`) and another when it is given back, so a batch through the
//! pool cost three round trips instead of one (at concurrency 3, 2,841 → 3,869
//! messages/s once they were gone). A batch that fails because the connection was
//! lost (the server restarted, the network dropped it) is retried once on a new
//! connection; had it committed after all, the retry finds its messages stored and
//! answers them as duplicates: 2xx either way, with the same effect.
//!
//! After taking what is queued, the writer waits briefly for the senders its last
//! batch answered ([`Writer::gather`]): with three senders, batches went from 1.38
//! to 3.00 messages, the database's CPU per message from 136 µs to 87 µs, and
//! throughput to 4,024 messages/s.
//!
//! One writer task ([`WRITERS`]) drains the queue. Two were tried (one committing
//! while the other gathers the next batch): on two cores they made single-message
//! batches and spent more CPU per message for no more throughput. The statement
//! locks rows in key order, so more writers could not deadlock should a bigger
//! machine want them (a deadlock or serialization error is retried all the same).

use std::{collections::HashSet, sync::Arc};

use sqlx::{postgres::PgConnectOptions, Connection, PgConnection};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    message::Message,
    store::{self, Rocket, Stored},
    Busy, RocketError,
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
/// Longest a writer waits for the senders it expects back (see [`Writer::gather`]).
const GATHER_MAX: std::time::Duration = std::time::Duration::from_millis(2);
/// How long opening the writer's connection may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// What the writer needs besides its queue.
#[derive(Clone)]
pub struct Sink {
    /// How to open a writer connection.
    pub options: PgConnectOptions,
    pub clock: Clock,
    pub changes: broadcast::Sender<Arc<Rocket>>,
}

/// A writer's database connection: opened when first needed, dropped when it fails
/// for any reason other than an error the server reported (which leaves it usable).
pub type Conn = Option<PgConnection>;

impl Sink {
    /// Opens a writer connection, within [`CONNECT_TIMEOUT`].
    async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options))
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the database timed out",
                )))
            })
    }

    /// Writes `messages` through `conn`, opening it first if needed. Returns the
    /// result and whether the failure, if any, is a connection that was lost
    /// (opened before, not by this call), worth one retry on a new connection:
    /// a new connection that fails is not retried, so a database that is down
    /// is answered at once.
    async fn write(
        &self,
        conn: &mut Conn,
        messages: &[&Message],
    ) -> (Result<store::Written, sqlx::Error>, bool) {
        let reused = conn.is_some();
        let connection = match conn {
            Some(connection) => connection,
            None => match self.connect().await {
                Ok(connection) => conn.insert(connection),
                Err(error) => return (Err(error), false),
            },
        };
        let result = store::write(connection, messages, self.clock.now()).await;
        let Err(error) = &result else {
            return (result, false);
        };
        // An error the server reported about the statement leaves the connection
        // usable; any other error, or the server ending the session (57P01 after
        // pg_terminate_backend or a shutdown), leaves it unusable.
        let unavailable = crate::db::is_unavailable(error);
        if unavailable || !matches!(error, sqlx::Error::Database(_)) {
            *conn = None;
        }
        (result, unavailable && reused)
    }

    /// Writes `jobs` through `conn` and answers them. Returns the jobs to try again
    /// in the next batch: those whose (channel, number) repeats an earlier job of the
    /// same batch (they will be found as duplicates or conflicts), those of a batch
    /// rolled back by a deadlock or serialization failure, and those of a batch
    /// whose connection was lost.
    pub async fn commit(&self, conn: &mut Conn, jobs: Vec<Job>) -> Vec<Job> {
        let mut seen = HashSet::with_capacity(jobs.len());
        let (batch, mut later): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|job| seen.insert((job.message.channel, job.message.number)));
        let messages: Vec<&Message> = batch.iter().map(|job| &job.message).collect();
        let started = std::time::Instant::now();
        let (result, lost) = self.write(conn, &messages).await;
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
            Err(error) if lost || is_transient(&error) => {
                tracing::warn!(%error, messages = batch.len(), connection_lost = lost, "batch not stored, retrying it");
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
                    later.extend(Box::pin(self.commit(conn, vec![job])).await);
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
    crate::db::classify(error) == crate::db::Failure::Conflict
}

/// The queue all writers take from.
pub type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

/// A writer task's state: the shared queue, its connection and its jobs carried
/// over to its next batch.
pub struct Writer {
    sink: Sink,
    queue: Queue,
    conn: Conn,
    carried: Vec<Job>,
    /// Senders seen at the last answer: jobs answered plus jobs queued then.
    expected: usize,
    /// How long the last commit took.
    last_commit: std::time::Duration,
    /// Since when the jobs in hand wait (readiness reads it).
    busy: Busy,
}

impl Writer {
    pub fn new(sink: Sink, queue: Queue, busy: Busy) -> Writer {
        Writer {
            sink,
            queue,
            conn: None,
            carried: Vec::new(),
            expected: 1,
            last_commit: std::time::Duration::ZERO,
            busy,
        }
    }

    /// The next batch: the jobs carried over, then whatever is queued, then (see
    /// [`Writer::gather`]) the jobs of senders expected back. Waits for the first
    /// job when there is none. Cancel-safe: jobs taken from the queue are kept in
    /// `carried` until the batch is complete.
    async fn take(&mut self) -> Option<Vec<Job>> {
        let shared = self.queue.clone();
        if self.carried.is_empty() {
            // Holds the queue while waiting: the other writers are busy committing
            // or waiting for this one to let go.
            let mut queue = shared.lock().await;
            if queue.recv_many(&mut self.carried, MAX_BATCH).await == 0 {
                return None;
            }
            self.gather(&mut queue).await;
        } else if let Ok(mut queue) = shared.try_lock() {
            // Never wait for the queue with jobs in hand: another writer may hold it
            // while it waits for new messages.
            while self.carried.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => self.carried.push(job),
                    Err(_) => break,
                }
            }
            self.gather(&mut queue).await;
        }
        Some(std::mem::take(&mut self.carried))
    }

    /// Waits a little for the senders the last batch answered. A sender that gets
    /// its answer usually sends its next message within a fraction of a commit; without
    /// this wait the writer commits whatever has arrived, so with three senders
    /// batches alternate between one and two messages (measured 1.38 per batch):
    /// two commits where one would do. The writer expects as many jobs as there
    /// were senders at its last answer (jobs answered plus jobs queued then) and
    /// waits for them at most as long as its last commit took, capped at
    /// [`GATHER_MAX`]: a wait never costs more than the commit it saves. A single
    /// sender never waits, and a sender that leaves costs one wait.
    async fn gather(&mut self, queue: &mut mpsc::Receiver<Job>) {
        let wanted = self.expected.min(MAX_BATCH);
        let deadline = tokio::time::Instant::now() + self.last_commit.min(GATHER_MAX);
        while self.carried.len() < wanted {
            let more = wanted - self.carried.len();
            match tokio::time::timeout_at(deadline, queue.recv_many(&mut self.carried, more)).await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Steps until `stop`. Then closes the queue (handlers that come later get
    /// UNAVAILABLE), answers everything already queued, and returns. A write in
    /// progress is never cancelled.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut closed = false;
        loop {
            let jobs = tokio::select! {
                biased;
                _ = stop.cancelled(), if !closed => {
                    self.queue.lock().await.close();
                    closed = true;
                    continue;
                }
                jobs = self.take() => jobs,
            };
            let Some(jobs) = jobs else { break };
            let (taken, started) = (jobs.len(), std::time::Instant::now());
            self.busy.start();
            self.carried = self.sink.commit(&mut self.conn, jobs).await;
            self.last_commit = started.elapsed();
            if self.carried.is_empty() {
                self.busy.idle();
            }
            let queued = self.queue.try_lock().map_or(0, |queue| queue.len());
            self.expected = taken - self.carried.len() + queued;
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
        tracing::debug!("rocket writer stopped");
    }
}

/// The answer for a message that could not be handed to the writer or whose
/// writer went away before answering.
pub(crate) fn writer_gone(channel: Uuid, number: i64) -> RocketError {
    tracing::error!(%channel, number, "the rocket writer stopped before answering");
    RocketError::Unavailable("the service is restarting; send the message again".into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio::time::{Duration, Instant};

    use super::*;

    fn job(number: i64) -> Job {
        let body = json!({
            "metadata": {
                "channel": "193270a9-c9cf-404a-8f83-838e71d9ae67",
                "messageNumber": number,
                "messageTime": "2022-02-02T19:39:05.86337+01:00",
                "messageType": "RocketSpeedIncreased"
            },
            "message": { "by": 100 }
        });
        Job::new(Message::parse(&body).expect("a valid message")).0
    }

    /// A writer over a queue, with no database (these tests never commit).
    fn writer(expected: usize) -> (Writer, mpsc::Sender<Job>) {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let sink = Sink {
            options: PgConnectOptions::new(),
            clock: Clock::system(),
            changes: broadcast::channel(1).0,
        };
        let mut writer = Writer::new(
            sink,
            Arc::new(tokio::sync::Mutex::new(receiver)),
            Busy::new(),
        );
        writer.expected = expected;
        writer.last_commit = GATHER_MAX;
        (writer, queue)
    }

    #[tokio::test(start_paused = true)]
    async fn the_senders_expected_back_join_the_batch() {
        let (mut writer, queue) = writer(3);
        queue.send(job(1)).await.unwrap();
        let late = queue.clone();
        tokio::spawn(async move {
            late.send(job(2)).await.unwrap();
            late.send(job(3)).await.unwrap();
        });
        let batch = writer.take().await.unwrap();
        assert_eq!(batch.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_that_does_not_come_back_costs_at_most_one_commit_time() {
        let (mut writer, queue) = writer(3);
        queue.send(job(1)).await.unwrap();
        let started = Instant::now();
        let batch = writer.take().await.unwrap();
        assert_eq!(batch.len(), 1);
        let waited = started.elapsed();
        assert!(
            waited >= GATHER_MAX && waited < GATHER_MAX + Duration::from_millis(2),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_sender_never_waits() {
        let (mut writer, queue) = writer(1);
        queue.send(job(1)).await.unwrap();
        let started = Instant::now();
        assert_eq!(writer.take().await.unwrap().len(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_gathered_before_shutdown_are_kept_for_the_next_batch() {
        let (mut writer, queue) = writer(3);
        queue.send(job(1)).await.unwrap();
        queue.send(job(2)).await.unwrap();
        // Cancelled while waiting for the third sender, as `run` does at shutdown.
        let cancelled = tokio::time::timeout(Duration::from_micros(10), writer.take()).await;
        assert!(cancelled.is_err());
        drop(queue);
        assert_eq!(writer.take().await.unwrap().len(), 2);
        assert!(writer.take().await.is_none());
    }
}
