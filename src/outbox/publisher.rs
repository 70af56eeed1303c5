//! Where the relay sends events: Google Cloud Pub/Sub, or the log when Pub/Sub is
//! off. One small trait, two implementations.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_gax::{
    error::rpc::Code,
    options::RequestOptionsBuilder as _,
    retry_policy::{NeverRetry, RetryPolicyExt as _},
};
use google_cloud_pubsub::{
    client::{BasePublisher, Publisher as TopicPublisher, TopicAdmin},
    model::Message,
    retry_policy::RetryableErrors,
};
use serde_json::json;

use crate::{
    config::PubSubSettings,
    health::{CheckResult, HealthCheck},
};

/// One event, ready to go out.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The outbox row id, also the `event_id` attribute.
    pub event_id: i64,
    pub event_type: String,
    /// The ticket id: events of one ticket are delivered in order.
    pub ordering_key: String,
    /// The event in proto3 JSON.
    pub data: bytes::Bytes,
    pub attributes: Vec<(String, String)>,
}

/// Pub/Sub's limits on one message (https://cloud.google.com/pubsub/quotas#resource_limits).
/// The emulator enforces none of them, and real Pub/Sub answers some with a timeout
/// rather than INVALID_ARGUMENT, so they are checked before sending.
pub mod limits {
    /// Data plus attributes.
    pub const MESSAGE_BYTES: usize = 10_000_000;
    pub const ATTRIBUTES: usize = 100;
    pub const ATTRIBUTE_KEY_BYTES: usize = 256;
    pub const ATTRIBUTE_VALUE_BYTES: usize = 1024;
    pub const ORDERING_KEY_BYTES: usize = 1024;
}

impl OutgoingMessage {
    /// Refuses, as [`FailureKind::Rejected`], a message Pub/Sub would refuse.
    pub(crate) fn check_limits(&self) -> Result<(), PublishError> {
        let reject = |why: String| Err(PublishError::rejected(why));
        if self.data.is_empty() && self.attributes.is_empty() {
            return reject("the message has neither data nor attributes".into());
        }
        if self.attributes.len() > limits::ATTRIBUTES {
            return reject(format!(
                "{} attributes, more than the {} Pub/Sub accepts",
                self.attributes.len(),
                limits::ATTRIBUTES
            ));
        }
        let mut size = self.data.len();
        for (key, value) in &self.attributes {
            size += key.len() + value.len();
            if key.is_empty() || key.len() > limits::ATTRIBUTE_KEY_BYTES || key.starts_with("goog")
            {
                return reject(format!(
                    "attribute key {:?} is empty, longer than {} bytes or starts with \"goog\"",
                    truncate(key, 64),
                    limits::ATTRIBUTE_KEY_BYTES
                ));
            }
            if value.len() > limits::ATTRIBUTE_VALUE_BYTES {
                return reject(format!(
                    "attribute {key} is {} bytes long, more than the {} Pub/Sub accepts",
                    value.len(),
                    limits::ATTRIBUTE_VALUE_BYTES
                ));
            }
        }
        if self.ordering_key.len() > limits::ORDERING_KEY_BYTES {
            return reject(format!(
                "the ordering key is {} bytes long, more than {}",
                self.ordering_key.len(),
                limits::ORDERING_KEY_BYTES
            ));
        }
        if size > limits::MESSAGE_BYTES {
            return reject(format!(
                "the message is {size} bytes, more than the {} Pub/Sub accepts",
                limits::MESSAGE_BYTES
            ));
        }
        Ok(())
    }
}

/// Why a publish failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The message itself was refused (it breaks a limit, or the server answered
    /// INVALID_ARGUMENT): retrying cannot help, so the event is parked once it has
    /// used its attempts.
    Rejected,
    /// Anything else: Pub/Sub down or slow, topic missing, credentials, an earlier
    /// event of the same ticket failed. Retried with backoff for as long as it
    /// takes, so that an outage never parks events.
    Unavailable,
}

/// A failed publish of one message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PublishError {
    pub kind: FailureKind,
    pub message: String,
}

impl PublishError {
    pub(crate) fn rejected(message: impl Into<String>) -> PublishError {
        PublishError {
            kind: FailureKind::Rejected,
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> PublishError {
        PublishError {
            kind: FailureKind::Unavailable,
            message: message.into(),
        }
    }
}

/// Sends events somewhere.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// `pubsub` or `log`, for logs.
    fn name(&self) -> &'static str;

    /// Publishes `messages` concurrently, preserving their order per ordering key,
    /// and returns one result per message, in the same order: the server's message
    /// id, or why it failed. Bounded in time: never waits for Pub/Sub forever.
    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Vec<Result<String, PublishError>>;
}

/// Writes each event to the log, for development (`PUBSUB_ENABLED=false`).
#[derive(Debug, Default)]
pub struct LogPublisher;

#[async_trait::async_trait]
impl Publisher for LogPublisher {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Vec<Result<String, PublishError>> {
        messages
            .into_iter()
            .map(|m| {
                // The payload holds names and birthdays, which no log line may.
                tracing::info!(
                    event_id = m.event_id,
                    event_type = %m.event_type,
                    ordering_key = %m.ordering_key,
                    bytes = m.data.len(),
                    "event published to the log"
                );
                Ok(m.event_id.to_string())
            })
            .collect()
    }
}

/// A fresh publisher handle after this many messages. The crate keeps a batching
/// actor per ordering key for the life of a `Publisher` (about 9 KB each, measured;
/// its TODO #4012) and our keys are ticket ids, so a handle that lived forever would
/// grow without bound. Dropping the handle frees them; the connection is shared.
const MESSAGES_PER_HANDLE: usize = 1000;

/// Extra time the outer timeout allows beyond the client's own retry time limit,
/// which normally ends the publish first.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// Publishes to a Pub/Sub topic with the official client.
pub struct PubSubPublisher {
    base: BasePublisher,
    admin: TopicAdmin,
    topic: String,
    on_emulator: bool,
    timeout: Duration,
    handle: Mutex<(TopicPublisher, usize)>,
}

impl PubSubPublisher {
    /// Builds the clients: the emulator at `http://$PUBSUB_EMULATOR_HOST` with
    /// anonymous credentials, otherwise Pub/Sub with Application Default
    /// Credentials. Does not contact Pub/Sub, except to create the topic on the
    /// emulator (best effort, bounded).
    pub async fn connect(settings: &PubSubSettings) -> anyhow::Result<PubSubPublisher> {
        let topic = format!("projects/{}/topics/{}", settings.project_id, settings.topic);
        // The time limit bounds the retries and each attempt's deadline: the
        // default policy keeps retrying for ten minutes while the server is down.
        let retry = RetryableErrors.with_time_limit(settings.publish_timeout);
        let mut base = BasePublisher::builder().with_retry_policy(retry);
        let mut admin = TopicAdmin::builder();
        if let Some(host) = &settings.emulator_host {
            let endpoint = format!("http://{host}");
            base = base
                .with_endpoint(&endpoint)
                .with_credentials(Anonymous::new().build());
            admin = admin
                .with_endpoint(&endpoint)
                .with_credentials(Anonymous::new().build());
        }
        let base = base.build().await?;
        let admin = admin.build().await?;
        let handle = Self::new_handle(&base, &topic);
        let publisher = PubSubPublisher {
            base,
            admin,
            topic,
            on_emulator: settings.emulator_host.is_some(),
            timeout: settings.publish_timeout,
            handle: Mutex::new((handle, 0)),
        };
        if publisher.on_emulator {
            if let Err(error) = publisher.ensure_topic().await {
                tracing::warn!(topic = %publisher.topic, %error, "could not create the topic on the emulator yet");
            }
        }
        Ok(publisher)
    }

    fn new_handle(base: &BasePublisher, topic: &str) -> TopicPublisher {
        base.publisher(topic)
            // One message per request: our messages rarely share an ordering key,
            // so waiting to batch only adds latency, and a refused message must not
            // take the others of its ticket down with it.
            .set_message_count_threshold(1)
            .build()
    }

    /// The full topic name, `projects/P/topics/T`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Creates the topic unless it exists. One attempt, bounded.
    pub(crate) async fn ensure_topic(&self) -> Result<(), google_cloud_pubsub::Error> {
        let created = self
            .admin
            .create_topic()
            .set_name(&self.topic)
            .with_retry_policy(NeverRetry)
            .with_attempt_timeout(Duration::from_secs(2))
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(topic = %self.topic, "topic created");
                Ok(())
            }
            Err(e) if e.status().map(|s| s.code) == Some(Code::AlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether Pub/Sub answers for our topic. One attempt, bounded.
    pub(crate) async fn check_topic(&self) -> Result<(), google_cloud_pubsub::Error> {
        self.admin
            .get_topic()
            .set_topic(&self.topic)
            .with_retry_policy(NeverRetry)
            .with_attempt_timeout(Duration::from_secs(1))
            .send()
            .await
            .map(|_| ())
    }

    /// The current handle, replaced after [`MESSAGES_PER_HANDLE`] messages.
    fn handle_for(&self, messages: usize) -> TopicPublisher {
        let mut guard = self.handle.lock().expect("publisher handle lock");
        if guard.1 >= MESSAGES_PER_HANDLE {
            // Dropping the old handle lets its actors finish anything in flight.
            *guard = (Self::new_handle(&self.base, &self.topic), 0);
        }
        guard.1 += messages;
        guard.0.clone()
    }
}

#[async_trait::async_trait]
impl Publisher for PubSubPublisher {
    fn name(&self) -> &'static str {
        "pubsub"
    }

    async fn publish(&self, messages: Vec<OutgoingMessage>) -> Vec<Result<String, PublishError>> {
        let publisher = self.handle_for(messages.len());
        let limit = self.timeout + TIMEOUT_GRACE;
        // `publish` queues each message at once, in our order, so the per-key
        // order is the order of `messages`; the futures only wait for the answers.
        let pending: Vec<_> = messages
            .iter()
            .map(|m| {
                let sent = publisher.publish(
                    Message::new()
                        .set_data(m.data.clone())
                        .set_attributes(m.attributes.iter().cloned())
                        .set_ordering_key(m.ordering_key.clone()),
                );
                tokio::time::timeout(limit, sent)
            })
            .collect();
        let answers = futures::future::join_all(pending).await;

        let mut topic_missing = false;
        let mut results = Vec::with_capacity(answers.len());
        for (message, answer) in messages.iter().zip(answers) {
            let result = match answer {
                Ok(Ok(id)) => Ok(id),
                Ok(Err(error)) => {
                    let error = classify(&error);
                    topic_missing |= error.1;
                    Err(error.0)
                }
                // Rare: the time limit above normally ends the publish first. The
                // message may still go out later; consumers de-duplicate by event_id.
                Err(_) => Err(PublishError::unavailable(format!(
                    "no answer from Pub/Sub within {limit:?}"
                ))),
            };
            if result.is_err() {
                // Any failure pauses the ordering key in the client until resumed;
                // the relay decides when to retry, and holds later events back.
                publisher.resume_publish(message.ordering_key.clone());
            }
            results.push(result);
        }
        if topic_missing && self.on_emulator {
            // A restarted emulator has lost its topics.
            match self.ensure_topic().await {
                Ok(()) => {
                    tracing::warn!(topic = %self.topic, "the emulator had lost the topic: re-created")
                }
                Err(error) => {
                    tracing::warn!(topic = %self.topic, %error, "could not re-create the topic")
                }
            }
        }
        results
    }
}

/// Maps a client error to ours; the flag says the topic does not exist.
fn classify(error: &google_cloud_pubsub::error::PublishError) -> (PublishError, bool) {
    use google_cloud_pubsub::error::PublishError as E;
    match error {
        E::Rpc(e) => {
            let text = truncate(&e.to_string(), 1000);
            match e.status().map(|s| s.code) {
                Some(Code::InvalidArgument) => (PublishError::rejected(text), false),
                Some(Code::NotFound) => (PublishError::unavailable(text), true),
                _ => (PublishError::unavailable(text), false),
            }
        }
        E::OrderingKeyPaused => (
            PublishError::unavailable("held back: an earlier event of this ticket failed"),
            false,
        ),
        other => (PublishError::unavailable(other.to_string()), false),
    }
}

/// `s` cut to at most `max` bytes, marked with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `/liveness` check: Pub/Sub answers for the topic. Degraded, not unhealthy, when
/// it does not: the outbox holds the events meanwhile, and restarting the service
/// would not bring Pub/Sub back.
pub struct PubSubCheck(pub Arc<tokio::sync::OnceCell<Arc<PubSubPublisher>>>);

#[async_trait::async_trait]
impl HealthCheck for PubSubCheck {
    fn name(&self) -> &'static str {
        "pubsub"
    }

    async fn check(&self) -> CheckResult {
        let Some(publisher) = self.0.get() else {
            return CheckResult::degraded(json!({"error": "the Pub/Sub client is not built yet"}));
        };
        match publisher.check_topic().await {
            Ok(()) => CheckResult::healthy(json!({"topic": publisher.topic()})),
            Err(e) if e.status().map(|s| s.code) == Some(Code::NotFound) => CheckResult::degraded(
                json!({"topic": publisher.topic(), "error": "the topic does not exist"}),
            ),
            Err(error) => {
                tracing::warn!(%error, "liveness: Pub/Sub check failed");
                CheckResult::degraded(
                    json!({"topic": publisher.topic(), "error": "Pub/Sub does not answer"}),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> OutgoingMessage {
        OutgoingMessage {
            event_id: 1,
            event_type: "TicketBooked".into(),
            ordering_key: uuid::Uuid::nil().to_string(),
            data: bytes::Bytes::from_static(b"{}"),
            attributes: vec![("event_id".into(), "1".into())],
        }
    }

    #[test]
    fn messages_pubsub_would_refuse_are_rejected_before_sending() {
        assert!(message().check_limits().is_ok());
        let mut long_value = message();
        long_value.attributes.push((
            "event_type".into(),
            "x".repeat(limits::ATTRIBUTE_VALUE_BYTES + 1),
        ));
        let mut goog = message();
        goog.attributes.push(("googfoo".into(), "x".into()));
        let mut huge = message();
        huge.data = vec![b' '; limits::MESSAGE_BYTES + 1].into();
        let mut empty = message();
        empty.data.clear();
        empty.attributes.clear();
        for bad in [long_value, goog, huge, empty] {
            let error = bad.check_limits().unwrap_err();
            assert_eq!(error.kind, FailureKind::Rejected, "{error}");
        }
    }
}
