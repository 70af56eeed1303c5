//! `EVENTS_FORMAT`: the Go service's `BookingsCancelled` message, this service's
//! per-ticket events, or both, as a subscriber on the real Pub/Sub emulator receives
//! them after a SpaceX sync (a fake SpaceX) cancels booked tickets.

use std::{collections::HashMap, time::Duration};

use base64::Engine as _;
use serde_json::{json, Value};
use spacet::proto::Destination;
use uuid::Uuid;
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

use crate::{
    helpers::{pads, poll, TestApp},
    pubsub_emulator::{unique_project, Emulator},
};

const TOPIC: &str = "launches";
const SUBSCRIPTION: &str = "legacy-sub";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/spacex");
/// The day the fake SpaceX launch blocks at CCSFS SLC 40 (day precision: the UTC
/// date as written).
const BLOCKED_DAY: &str = "2049-11-08";

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()).unwrap()
}

/// A fake SpaceX whose only upcoming launch takes CCSFS SLC 40 on [`BLOCKED_DAY`].
async fn fake_spacex() -> MockServer {
    let server = MockServer::start().await;
    let mut launch = fixture("launches_query_page41_limit5.json")["docs"][0].clone();
    launch.as_object_mut().unwrap().extend(
        json!({
            "id": "633f71a90531f07b4fdf59be", "name": "Galaxy 31 & 32",
            "launchpad": pads::CCSFS_40,
            "date_utc": format!("{BLOCKED_DAY}T00:00:00.000Z"),
            "date_unix": chrono::NaiveDate::parse_from_str(BLOCKED_DAY, "%Y-%m-%d")
                .unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp(),
            "date_local": format!("{BLOCKED_DAY}T00:00:00-05:00"),
            "date_precision": "day", "upcoming": true,
        })
        .as_object()
        .unwrap()
        .clone(),
    );
    Mock::given(method("GET"))
        .and(path("/v4/launchpads"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("launchpads.json")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v4/launches/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "docs": [launch], "totalDocs": 1, "offset": 0, "limit": 5, "totalPages": 1,
            "page": 1, "pagingCounter": 1, "hasPrevPage": false, "hasNextPage": false,
            "prevPage": null, "nextPage": null,
        })))
        .mount(&server)
        .await;
    server
}

/// A message as the subscriber receives it, data as raw bytes.
#[derive(Debug)]
struct Raw {
    data: Vec<u8>,
    attributes: HashMap<String, String>,
    ordering_key: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.data).expect("data is JSON")
    }

    fn event_type(&self) -> String {
        match self.attributes.get("event_type") {
            Some(t) => t.clone(),
            None => self.json()["type"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// Pulls what the emulator holds now for `subscription` and acknowledges it.
async fn pull(host: &str, project: &str, subscription: &str) -> Vec<Raw> {
    let http = reqwest::Client::new();
    let base = format!("http://{host}/v1/projects/{project}/subscriptions/{subscription}");
    let answer: Value = http
        .post(format!("{base}:pull"))
        .json(&json!({"maxMessages": 1000, "returnImmediately": true}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let received = answer["receivedMessages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ack_ids: Vec<&str> = received
        .iter()
        .filter_map(|m| m["ackId"].as_str())
        .collect();
    if !ack_ids.is_empty() {
        http.post(format!("{base}:acknowledge"))
            .json(&json!({"ackIds": ack_ids}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    received
        .iter()
        .map(|m| Raw {
            data: base64::engine::general_purpose::STANDARD
                .decode(m["message"]["data"].as_str().unwrap_or_default())
                .unwrap(),
            attributes: serde_json::from_value(m["message"]["attributes"].clone())
                .unwrap_or_default(),
            ordering_key: m["message"]["orderingKey"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
        .collect()
}

/// What one scenario produced.
struct Outcome {
    app: TestApp,
    messages: Vec<Raw>,
    /// The tickets the sync cancelled, in booking order.
    doomed: Vec<String>,
    /// Tickets booked in all (the doomed ones, one spared, one the passenger cancelled).
    booked: usize,
    emulator_host: String,
    project: String,
}

/// With `EVENTS_FORMAT=format`: books `n` tickets on the day SpaceX will take, one
/// on another day, and one that its passenger cancels; runs a sync that cancels the
/// `n`; waits until the relay has handled every outbox row, then collects every
/// message the subscriber gets.
async fn scenario(format: &str, n: usize) -> Outcome {
    let emulator = Emulator::shared().await;
    let project = unique_project();
    let rest = emulator.rest(&project);
    rest.create_topic(TOPIC).await;
    rest.create_subscription(SUBSCRIPTION, TOPIC).await;
    let spacex = fake_spacex().await;
    let spacex_url = format!("{}/v4", spacex.uri());
    let host = emulator.host();
    let app = TestApp::spawn_with(&[
        ("PUBSUB_ENABLED", "true"),
        ("PUBSUB_EMULATOR_HOST", &host),
        ("PUBSUB_PROJECT_ID", &project),
        ("PUBSUB_LAUNCHES_TOPIC", TOPIC),
        ("EVENTS_FORMAT", format),
        ("SPACEX_API_URL", &spacex_url),
        ("SPACEX_RETRY_BACKOFF", "10ms"),
    ])
    .await;

    let mut doomed = Vec::new();
    for _ in 0..n {
        let ticket = app
            .book_ok(pads::CCSFS_40, BLOCKED_DAY, Destination::Mars)
            .await;
        doomed.push(ticket.id);
    }
    app.book_ok(pads::CCSFS_40, "2049-11-09", Destination::Moon)
        .await;
    let own = app
        .book_ok(pads::KSC_39A, BLOCKED_DAY, Destination::Pluto)
        .await;
    app.cancel(&own.id).await.unwrap();

    let (status, report) = app.post_json("/v1/admin/sync", &json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ticketsCancelled"], n as u64, "{report}");

    let handled = poll(Duration::from_secs(30), || async {
        app.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await
            == 0
    })
    .await;
    assert!(handled, "the relay did not handle every event within 30 s");
    // Every message was accepted by the emulator before its row was marked: drain.
    let mut messages = Vec::new();
    let mut empty_pulls = 0;
    while empty_pulls < 3 {
        let pulled = pull(&host, &project, SUBSCRIPTION).await;
        empty_pulls = if pulled.is_empty() {
            empty_pulls + 1
        } else {
            0
        };
        messages.extend(pulled);
    }
    Outcome {
        app,
        messages,
        doomed,
        booked: n + 2,
        emulator_host: host,
        project,
    }
}

/// The one `BookingsCancelled` message among `messages`, checked against the Go
/// contract byte for byte.
fn assert_go_message(outcome: &Outcome, legacy: &[&Raw], sync_row: Uuid) {
    assert_eq!(legacy.len(), 1, "one message per sync: {legacy:#?}");
    let message = legacy[0];
    let ids: Vec<String> = outcome
        .doomed
        .iter()
        .map(|id| format!("\"{id}\""))
        .collect();
    let expected = format!(
        r#"{{"type":"BookingsCancelled","payload":{{"BookingIDs":[{}]}}}}"#,
        ids.join(",")
    );
    assert_eq!(String::from_utf8_lossy(&message.data), expected);
    let mut keys: Vec<&str> = message.attributes.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["event_id", "origin", "source"],
        "{:?}",
        message.attributes
    );
    assert_eq!(message.attributes["origin"], "spacet-service");
    assert_eq!(message.attributes["source"], "pubsub-notifier");
    assert!(message.attributes["event_id"].parse::<i64>().is_ok());
    // Ordered by the sync's id, which is no ticket's.
    assert_eq!(message.ordering_key, sync_row.to_string());
    assert!(!outcome.doomed.contains(&message.ordering_key));
    println!(
        "legacy message for {} tickets: {} bytes of data",
        outcome.doomed.len(),
        message.data.len()
    );
}

async fn legacy_row(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT aggregate_id FROM outbox WHERE event_type = 'BookingsCancelled'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn count<'a>(messages: impl IntoIterator<Item = &'a Raw>, event_type: &str) -> usize {
    messages
        .into_iter()
        .filter(|m| m.event_type() == event_type)
        .count()
}

#[tokio::test]
async fn legacy_sends_only_the_go_services_one_message_per_sync_with_the_ticket_ids() {
    let outcome = scenario("legacy", 4).await;
    let all: Vec<&Raw> = outcome.messages.iter().collect();
    // Not the bookings, not the passenger's cancellation, not the per-ticket ones.
    assert_go_message(&outcome, &all, legacy_row(&outcome.app).await);
    // Booking wrote its events, marked done unsent; the sync wrote no per-ticket ones.
    let v1_rows = outcome
        .app
        .count(
            "SELECT count(*) FROM outbox WHERE schema_version = '1' AND published_at IS NOT NULL",
        )
        .await;
    assert_eq!(v1_rows as usize, outcome.booked + 1);

    // A sync that cancels nothing sends nothing.
    let (status, report) = outcome.app.post_json("/v1/admin/sync", &json!({})).await;
    assert_eq!(
        (status.as_u16(), &report["ticketsCancelled"]),
        (200, &json!(0))
    );
    assert_eq!(
        outcome
            .app
            .count("SELECT count(*) FROM outbox WHERE event_type = 'BookingsCancelled'")
            .await,
        1
    );
    let later = pull(&outcome.emulator_host, &outcome.project, SUBSCRIPTION).await;
    assert!(later.is_empty(), "{later:#?}");
}

#[tokio::test]
async fn v1_sends_the_per_ticket_events_and_not_the_go_message() {
    let outcome = scenario("v1", 3).await;
    let messages = &outcome.messages;
    assert_eq!(count(messages, "TicketBooked"), outcome.booked);
    // The passenger's cancellation and the sync's three.
    assert_eq!(count(messages, "TicketCancelled"), 1 + outcome.doomed.len());
    assert_eq!(messages.len(), outcome.booked + 1 + outcome.doomed.len());
    for m in messages {
        assert_eq!(m.attributes["schema_version"], "1", "{m:?}");
        assert_eq!(m.attributes["origin"], "spacet", "{m:?}");
    }
    let mut cancelled_by_sync: Vec<String> = messages
        .iter()
        .filter(|m| m.json()["reason"] == "SPACEX_CONFLICT")
        .map(|m| m.ordering_key.clone())
        .collect();
    cancelled_by_sync.sort();
    let mut doomed = outcome.doomed.clone();
    doomed.sort();
    assert_eq!(cancelled_by_sync, doomed);
    // Nothing of the Go contract is written: the outbox is as it always was.
    let legacy = outcome
        .app
        .count("SELECT count(*) FROM outbox WHERE schema_version <> '1'")
        .await;
    assert_eq!(legacy, 0);
}

#[tokio::test]
async fn both_sends_the_per_ticket_events_and_the_go_message() {
    let outcome = scenario("both", 3).await;
    let messages = &outcome.messages;
    let legacy: Vec<&Raw> = messages
        .iter()
        .filter(|m| m.event_type() == "BookingsCancelled")
        .collect();
    assert_go_message(&outcome, &legacy, legacy_row(&outcome.app).await);
    assert_eq!(count(messages, "TicketBooked"), outcome.booked);
    assert_eq!(count(messages, "TicketCancelled"), 1 + outcome.doomed.len());
    assert_eq!(
        messages.len(),
        outcome.booked + 1 + outcome.doomed.len() + 1
    );
}
