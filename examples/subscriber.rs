//! Prints every SpaceT ticket event, one JSON line each: an example consumer of the
//! event contract (see docs/events.md).
//!
//! ```text
//! PUBSUB_EMULATOR_HOST=localhost:8085 cargo run --example subscriber
//! ```
//!
//! Settings (environment): `PUBSUB_EMULATOR_HOST` (host:port of the emulator; unset
//! means Google Cloud with Application Default Credentials), `PUBSUB_PROJECT_ID`
//! (`spacet`), `PUBSUB_LAUNCHES_TOPIC` (`launches`), `PUBSUB_SUBSCRIPTION`
//! (`spacet-events-printer`). The subscription is created if missing, with message
//! ordering on; on the emulator the topic is too, so this can start before the
//! service. If the emulator restarts (and forgets both), they are created again.
//!
//! Tracing: each line has the `trace_id` of the message's `traceparent` attribute
//! (the trace of the booking that caused the event). With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, each message is also handled in a consumer
//! span, child of that context, exported over OTLP like the service's spans.

use std::time::Duration;

use anyhow::Context as _;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_gax::{
    error::rpc::Code, options::RequestOptionsBuilder as _, retry_policy::NeverRetry,
};
use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin, TopicAdmin};
use serde_json::{json, Value};

struct Config {
    emulator: Option<String>,
    project: String,
    topic: String,
    subscription: String,
}

fn setting(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Log lines on stderr: stdout holds only the events.
    let telemetry = spacet::telemetry::init_with(&spacet::telemetry::LogOptions {
        level: setting("LOG_LEVEL", "warn"),
        format: spacet::config::LogFormat::Pretty,
        service_name: "spacet-subscriber".into(),
        service_version: env!("CARGO_PKG_VERSION").into(),
        gcp_project: None,
        to_stderr: true,
    })?;
    let result = run().await;
    telemetry.shutdown();
    result
}

async fn run() -> anyhow::Result<()> {
    let config = Config {
        emulator: std::env::var("PUBSUB_EMULATOR_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty()),
        project: setting("PUBSUB_PROJECT_ID", "spacet"),
        topic: setting("PUBSUB_LAUNCHES_TOPIC", "launches"),
        subscription: setting("PUBSUB_SUBSCRIPTION", "spacet-events-printer"),
    };
    let topic = format!("projects/{}/topics/{}", config.project, config.topic);
    let subscription = format!(
        "projects/{}/subscriptions/{}",
        config.project, config.subscription
    );

    let mut topics = TopicAdmin::builder();
    let mut subscriptions = SubscriptionAdmin::builder();
    let mut subscriber = Subscriber::builder();
    if let Some(host) = &config.emulator {
        let endpoint = format!("http://{host}");
        topics = topics
            .with_endpoint(&endpoint)
            .with_credentials(Anonymous::new().build());
        subscriptions = subscriptions
            .with_endpoint(&endpoint)
            .with_credentials(Anonymous::new().build());
        subscriber = subscriber
            .with_endpoint(&endpoint)
            .with_credentials(Anonymous::new().build());
    }
    let topics = topics.build().await.context("building the topic client")?;
    let subscriptions = subscriptions
        .build()
        .await
        .context("building the subscription client")?;
    let subscriber = subscriber
        .build()
        .await
        .context("building the subscriber")?;

    let mut delay = Duration::from_millis(500);
    loop {
        // Until Pub/Sub answers (the emulator may start after us). One bounded
        // attempt each: the clients' default retries wait up to a minute.
        let ready = async {
            if config.emulator.is_some() {
                ignore_exists(
                    topics
                        .create_topic()
                        .set_name(&topic)
                        .with_retry_policy(NeverRetry)
                        .with_attempt_timeout(Duration::from_secs(5))
                        .send()
                        .await,
                )?;
            }
            ignore_exists(
                subscriptions
                    .create_subscription()
                    .set_name(&subscription)
                    .set_topic(&topic)
                    .set_ack_deadline_seconds(30)
                    .set_enable_message_ordering(true)
                    .with_retry_policy(NeverRetry)
                    .with_attempt_timeout(Duration::from_secs(5))
                    .send()
                    .await,
            )
        };
        let ready = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ready = ready => ready,
        };
        if let Err(error) = ready {
            eprintln!("subscriber: Pub/Sub not ready ({error}); retrying in {delay:?}");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
            continue;
        }
        delay = Duration::from_millis(500);
        eprintln!("subscriber: reading {subscription}");

        let mut stream = subscriber.subscribe(&subscription).build();
        loop {
            let next = tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    stream.shutdown_token().shutdown().await;
                    return Ok(());
                }
                next = stream.next() => next,
            };
            match next {
                Some(Ok((message, handler))) => {
                    let span = consumer_span(&message, &topic);
                    let _entered = span.enter();
                    println!("{}", describe(&message));
                    // A consumer that acts on events de-duplicates by event_id here:
                    // delivery is at least once.
                    handler.ack();
                }
                Some(Err(error)) => {
                    eprintln!("subscriber: stream failed ({error}); reconnecting");
                    break;
                }
                None => break,
            }
        }
    }
}

/// The trace context the message carries (`traceparent`, `tracestate` attributes).
fn trace_context(message: &google_cloud_pubsub::model::Message) -> Option<opentelemetry::Context> {
    let traceparent = message.attributes.get("traceparent")?;
    let tracestate = message.attributes.get("tracestate").map(String::as_str);
    Some(spacet::telemetry::remote_context(traceparent, tracestate))
}

/// The consumer span of one message, child of the context it carries (exported
/// only with an OTLP endpoint).
fn consumer_span(message: &google_cloud_pubsub::model::Message, topic: &str) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::info_span!(
        "receive",
        otel.name = format!("receive {topic}").as_str(),
        otel.kind = "consumer",
        messaging.system = "gcp_pubsub",
        messaging.operation.type = "receive",
        messaging.destination.name = topic,
        messaging.message.id = message.message_id.as_str(),
    );
    if let Some(parent) = trace_context(message) {
        let _ = span.set_parent(parent);
    }
    span
}

/// One output line: the attributes, the ordering key, the trace id and the event.
fn describe(message: &google_cloud_pubsub::model::Message) -> Value {
    use opentelemetry::trace::TraceContextExt as _;
    let attr = |k: &str| message.attributes.get(k).cloned().unwrap_or_default();
    let trace_id = trace_context(message)
        .map(|cx| cx.span().span_context().clone())
        .filter(|sc| sc.is_valid())
        .map(|sc| sc.trace_id().to_string());
    let data = serde_json::from_slice::<Value>(&message.data)
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&message.data)));
    json!({
        "event_id": attr("event_id"),
        "event_type": attr("event_type"),
        "origin": attr("origin"),
        "schema_version": attr("schema_version"),
        "ticket": message.ordering_key,
        "message_id": message.message_id,
        "publish_time": message.publish_time,
        "trace_id": trace_id,
        "data": data,
    })
}

fn ignore_exists<T>(result: google_cloud_pubsub::Result<T>) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.status().map(|s| s.code) == Some(Code::AlreadyExists) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
