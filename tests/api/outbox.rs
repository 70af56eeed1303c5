//! The outbox relay against the real Pub/Sub emulator and a real subscriber.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use serde_json::Value;
use spacet::{
    clock::Clock,
    outbox::{
        publisher::LogPublisher,
        relay::{Relay, RelayConfig, CLAIM_SQL},
    },
    proto::{self, Destination},
};
use uuid::Uuid;

use crate::{
    helpers::{fresh_database, pads, poll, test_now, test_settings, TestApp},
    pubsub_emulator::{unique_project, Emulator, Gate, Received, Rest},
};

const TOPIC: &str = "launches";
const SUBSCRIPTION: &str = "test-sub";

/// Settings overrides, owned.
#[derive(Clone, Default)]
struct Env(Vec<(&'static str, String)>);

impl Env {
    fn pubsub(host: &str, project: &str) -> Env {
        Env::default()
            .with("PUBSUB_ENABLED", "true")
            .with("PUBSUB_EMULATOR_HOST", host)
            .with("PUBSUB_PROJECT_ID", project)
            .with("PUBSUB_LAUNCHES_TOPIC", TOPIC)
    }

    fn with(mut self, key: &'static str, value: &str) -> Env {
        self.0.push((key, value.to_string()));
        self
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// Outbox rows: (id, event_type, ticket), by id.
async fn outbox_rows(pool: &sqlx::PgPool) -> Vec<(i64, String, Uuid)> {
    sqlx::query_as("SELECT id, event_type, aggregate_id FROM outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn unpublished(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .await
}

/// Polls until every event is published or `deadline` passes.
async fn all_published_within(app: &TestApp, deadline: Duration) -> bool {
    poll(deadline, || async { unpublished(app).await == 0 }).await
}

/// Creates the topic and the ordered subscription the tests read.
async fn create_topic_and_subscription(rest: &Rest) {
    rest.create_topic(TOPIC).await;
    rest.create_subscription(SUBSCRIPTION, TOPIC).await;
}

/// A project of its own on `emulator` with the topic and subscription the tests
/// read, and its REST client.
async fn subscribed_project(emulator: &Emulator) -> (String, Rest) {
    let project = unique_project();
    let rest = emulator.rest(&project);
    create_topic_and_subscription(&rest).await;
    (project, rest)
}

/// Writes an event of `ticket` directly, and wakes the relay; returns its id.
async fn write_event(app: &TestApp, event_type: &str, ticket: Uuid) -> i64 {
    let id = sqlx::query_scalar(
        "INSERT INTO outbox (event_type, aggregate_id, payload) VALUES ($1, $2, '{}') RETURNING id",
    )
    .bind(event_type)
    .bind(ticket)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('outbox', '')")
        .execute(&app.pool)
        .await
        .unwrap();
    id
}

async fn is_parked(app: &TestApp, event: i64) -> bool {
    sqlx::query_scalar("SELECT parked_at IS NOT NULL FROM outbox WHERE id = $1")
        .bind(event)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn liveness(app: &TestApp) -> Value {
    app.get_json("/liveness").await.1
}

/// Books `n` tickets concurrently, on 2049-03-02 (Mars, same flight).
async fn book(app: &TestApp, n: usize) -> Vec<proto::Ticket> {
    let requests = (0..n).map(|_| app.book_ok(pads::KSC_39A, "2049-03-02", Destination::Mars));
    futures::future::join_all(requests).await
}

/// Asserts that, per ordering key, events first arrived in event id order.
/// Delivery is at least once: a redelivered event (consumers drop it by
/// `event_id`) is not a new arrival.
fn assert_ordered_per_ticket(messages: &[Received]) {
    let mut last: HashMap<&str, i64> = HashMap::new();
    let mut seen: HashSet<i64> = HashSet::new();
    for m in messages {
        let id = m.event_id();
        if !seen.insert(id) {
            continue;
        }
        if let Some(previous) = last.insert(&m.ordering_key, id) {
            assert!(
                previous < id,
                "ticket {}: event {id} arrived after {previous}",
                m.ordering_key
            );
        }
    }
}

#[tokio::test]
async fn booked_and_cancelled_events_arrive_in_order_with_the_ticket_and_the_attributes() {
    let emulator = Emulator::shared().await;
    let (project, rest) = subscribed_project(emulator).await;
    let app = TestApp::spawn_with(&Env::pubsub(&emulator.host(), &project).pairs()).await;

    let booked = book(&app, 1).await.remove(0);
    app.cancel(&booked.id).await.unwrap();
    let cancelled = app.ticket(&booked.id).await.unwrap();

    let messages = rest
        .pull_at_least(SUBSCRIPTION, 2, Duration::from_secs(30))
        .await;
    assert_eq!(messages.len(), 2, "{messages:#?}");
    let rows = outbox_rows(&app.pool).await;
    assert_eq!(rows.len(), 2);

    let (first, second) = (&messages[0], &messages[1]);
    for (message, (id, event_type, _)) in messages.iter().zip(&rows) {
        assert_eq!(message.attr("event_id"), id.to_string());
        assert_eq!(message.attr("event_type"), event_type);
        assert_eq!(message.attr("origin"), "spacet");
        assert_eq!(message.attr("schema_version"), "1");
        assert_eq!(message.attributes.len(), 4, "{:?}", message.attributes);
        assert_eq!(message.ordering_key, booked.id);
    }
    assert_eq!(first.attr("event_type"), "TicketBooked");
    assert_eq!(second.attr("event_type"), "TicketCancelled");
    let event: proto::TicketBooked = serde_json::from_value(first.data.clone()).unwrap();
    assert_eq!(event.ticket.as_ref(), Some(&booked));
    let event: proto::TicketCancelled = serde_json::from_value(second.data.clone()).unwrap();
    assert_eq!(event.ticket.as_ref(), Some(&cancelled));
    assert_eq!(event.reason(), proto::CancellationReason::UserRequested);
    assert_eq!(cancelled.ticket_status(), proto::TicketStatus::Cancelled);

    assert!(all_published_within(&app, Duration::from_secs(5)).await);
    let checks = liveness(&app).await;
    assert_eq!(checks["checks"]["pubsub"]["status"], "healthy", "{checks}");
    assert_eq!(checks["checks"]["outbox"]["status"], "healthy", "{checks}");
}

#[tokio::test]
async fn every_event_written_while_pubsub_is_down_arrives_after_the_emulator_restarts() {
    let mut emulator = Emulator::start().await;
    // The app reaches the emulator through a gate, so that the restarted emulator
    // gets its topic and subscription back before the relay can publish to it:
    // Pub/Sub drops what is published while no subscription exists.
    let gate = Gate::open_to(emulator.port()).await;
    let (project, rest) = subscribed_project(&emulator).await;
    let env = Env::pubsub(&gate.host(), &project)
        .with("PUBSUB_PUBLISH_TIMEOUT", "1s")
        .with("OUTBOX_RETRY_BACKOFF", "200ms")
        .with("OUTBOX_RETRY_BACKOFF_MAX", "1s")
        .with("NOTIFICATIONS_MAX_ATTEMPTS", "2");
    let app = TestApp::spawn_with(&env.pairs()).await;

    let a = book(&app, 1).await.remove(0);
    let before = rest
        .pull_at_least(SUBSCRIPTION, 1, Duration::from_secs(30))
        .await;
    assert_eq!(before.len(), 1);

    gate.close();
    emulator.stop().await;
    let b = book(&app, 1).await.remove(0);
    let c = book(&app, 1).await.remove(0);
    app.cancel(&a.id).await.unwrap();
    app.cancel(&b.id).await.unwrap();
    // Every new event is tried, fails, and waits; none is parked, whatever the
    // number of attempts: an outage is not the event's fault.
    let tried = poll(Duration::from_secs(30), || async {
        // B's cancellation waits behind B's booking: it may not have been tried.
        let failed = app.count(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND attempts >= 3 AND last_error IS NOT NULL",
        )
        .await;
        failed >= 3
    })
    .await;
    assert!(
        tried,
        "the relay did not retry the events while Pub/Sub was down"
    );
    let parked = app
        .count("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")
        .await;
    assert_eq!(parked, 0);
    let checks = liveness(&app).await;
    assert_eq!(
        checks["status"], "healthy",
        "Pub/Sub down must not fail liveness: {checks}"
    );
    assert_eq!(checks["checks"]["pubsub"]["status"], "degraded", "{checks}");
    assert_eq!(checks["checks"]["outbox"]["pending"], 4, "{checks}");

    emulator.restart().await;
    assert!(
        !rest.topic_exists(TOPIC).await,
        "a restarted emulator starts empty"
    );
    create_topic_and_subscription(&rest).await;
    gate.open().await;

    let expected: HashSet<i64> = outbox_rows(&app.pool)
        .await
        .iter()
        .map(|r| r.0)
        .skip(1)
        .collect();
    let mut received: Vec<Received> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let all_arrived = loop {
        received.extend(rest.pull(SUBSCRIPTION).await);
        let ids: HashSet<i64> = received.iter().map(Received::event_id).collect();
        if expected.is_subset(&ids) {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<i64> = received.iter().map(Received::event_id).collect();
    assert!(
        all_arrived,
        "expected events {expected:?}, received {ids:?}"
    );
    assert_ordered_per_ticket(&received);
    let tickets: HashSet<&str> = received.iter().map(|m| m.ordering_key.as_str()).collect();
    assert_eq!(
        tickets,
        HashSet::from([a.id.as_str(), b.id.as_str(), c.id.as_str()])
    );

    assert!(all_published_within(&app, Duration::from_secs(10)).await);
    let healthy = poll(Duration::from_secs(10), || async {
        liveness(&app).await["checks"]["pubsub"]["status"] == "healthy"
    })
    .await;
    assert!(healthy, "{}", liveness(&app).await);
}

#[tokio::test]
async fn the_relay_recreates_the_topic_a_restarted_emulator_lost() {
    let mut emulator = Emulator::start().await;
    let project = unique_project();
    let rest = emulator.rest(&project);
    let env = Env::pubsub(&emulator.host(), &project)
        .with("OUTBOX_RETRY_BACKOFF", "100ms")
        .with("OUTBOX_RETRY_BACKOFF_MAX", "500ms");
    let app = TestApp::spawn_with(&env.pairs()).await;
    // On the emulator, the relay creates its topic at start.
    assert!(poll(Duration::from_secs(10), || rest.topic_exists(TOPIC)).await);

    emulator.restart().await;
    assert!(!rest.topic_exists(TOPIC).await);
    book(&app, 1).await;
    // The publish fails with NOT_FOUND, the relay re-creates the topic and retries.
    assert!(all_published_within(&app, Duration::from_secs(20)).await);
    assert!(rest.topic_exists(TOPIC).await);

    rest.create_subscription(SUBSCRIPTION, TOPIC).await;
    let ticket = book(&app, 1).await.remove(0);
    let received = rest
        .pull_at_least(SUBSCRIPTION, 1, Duration::from_secs(20))
        .await;
    assert!(
        received.iter().any(|m| m.ordering_key == ticket.id),
        "{received:#?}"
    );
}

#[tokio::test]
async fn two_instances_over_one_database_publish_each_event_once() {
    let emulator = Emulator::shared().await;
    let (project, rest) = subscribed_project(emulator).await;
    // Small batches, so that both relays claim while the other publishes.
    let env = Env::pubsub(&emulator.host(), &project).with("NOTIFICATIONS_BATCH_SIZE_MAX", "5");
    let db = fresh_database().await;
    let one = TestApp::spawn_on(&db, &env.pairs(), Clock::fixed(test_now())).await;
    let two = TestApp::spawn_on(&db, &env.pairs(), Clock::fixed(test_now())).await;

    let (tickets_one, tickets_two) = tokio::join!(book(&one, 20), book(&two, 20));
    let cancellations = tickets_one
        .iter()
        .take(10)
        .map(|t| two.cancel(&t.id))
        .chain(tickets_two.iter().take(10).map(|t| one.cancel(&t.id)));
    futures::future::try_join_all(cancellations).await.unwrap();

    let rows = outbox_rows(&one.pool).await;
    assert_eq!(rows.len(), 60);
    assert!(
        all_published_within(&one, Duration::from_secs(30)).await,
        "not every event was published"
    );
    // Every publish is acknowledged before its row is marked, so everything either
    // relay sent is in the subscription by now.
    let received = rest
        .pull_at_least(SUBSCRIPTION, 60, Duration::from_secs(30))
        .await;
    let mut extra = rest.pull(SUBSCRIPTION).await;
    extra.retain(|m| !received.iter().any(|r| r.message_id == m.message_id));
    let mut per_event: HashMap<i64, usize> = HashMap::new();
    for m in received.iter().chain(&extra) {
        *per_event.entry(m.event_id()).or_default() += 1;
    }
    let duplicates: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "published more than once: {duplicates:?}"
    );
    let expected: HashSet<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(per_event.keys().copied().collect::<HashSet<_>>(), expected);
    assert_ordered_per_ticket(&received);
}

#[tokio::test]
async fn a_poisoned_event_is_parked_without_holding_back_the_others() {
    let emulator = Emulator::shared().await;
    let (project, rest) = subscribed_project(emulator).await;
    let env = Env::pubsub(&emulator.host(), &project)
        .with("NOTIFICATIONS_MAX_ATTEMPTS", "3")
        .with("OUTBOX_RETRY_BACKOFF", "1s")
        .with("OUTBOX_RETRY_BACKOFF_MAX", "1s");
    let app = TestApp::spawn_with(&env.pairs()).await;

    // An event Pub/Sub refuses: its event_type attribute is over the 1024 bytes
    // Pub/Sub accepts.
    let poisoned_ticket = Uuid::new_v4();
    let poisoned = write_event(&app, &"X".repeat(2000), poisoned_ticket).await;
    let attempts_of = |id: i64| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT attempts FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(
        poll(Duration::from_secs(10), || async {
            attempts_of(poisoned).await >= 1
        })
        .await
    );
    // While it waits for its next attempt, a later event of the same ticket: due at
    // once, but it must wait, since events of one ticket go out in order.
    let behind = write_event(&app, "TicketCancelled", poisoned_ticket).await;

    let tickets = book(&app, 5).await;
    let ids: HashSet<String> = tickets.iter().map(|t| t.id.clone()).collect();
    let all_booked = |received: &[Received]| {
        let keys: HashSet<&str> = received.iter().map(|m| m.ordering_key.as_str()).collect();
        ids.iter().all(|id| keys.contains(id.as_str()))
    };
    let mut received = rest
        .pull_until(SUBSCRIPTION, Duration::from_secs(30), all_booked)
        .await;
    assert!(
        all_booked(&received),
        "the other events were held back: {received:#?}"
    );

    let parked = poll(Duration::from_secs(30), || is_parked(&app, poisoned)).await;
    assert!(parked, "the poisoned event was not parked");
    let (attempts, last_error, published): (i32, String, bool) = sqlx::query_as(
        "SELECT attempts, last_error, published_at IS NOT NULL FROM outbox WHERE id = $1",
    )
    .bind(poisoned)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 3);
    assert!(last_error.contains("event_type"), "{last_error}");
    assert!(!published);

    // Once the poisoned event is parked, the later event of its ticket goes out.
    if !received.iter().any(|m| m.event_id() == behind) {
        received.extend(
            rest.pull_until(SUBSCRIPTION, Duration::from_secs(30), |more| {
                more.iter().any(|m| m.event_id() == behind)
            })
            .await,
        );
    }
    assert!(
        received.iter().any(|m| m.event_id() == behind),
        "the later event never arrived"
    );
    let in_order: bool = sqlx::query_scalar(
        "SELECT (SELECT parked_at FROM outbox WHERE id = $1) <= (SELECT published_at FROM outbox WHERE id = $2)",
    )
    .bind(poisoned)
    .bind(behind)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        in_order,
        "the later event of the poisoned ticket went out before it was parked"
    );

    let checks = liveness(&app).await;
    assert_eq!(checks["checks"]["outbox"]["status"], "degraded", "{checks}");
    assert_eq!(checks["checks"]["outbox"]["parked"], 1, "{checks}");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("spacet_outbox_parked_total"), "{metrics}");
}

#[tokio::test]
async fn the_relay_wakes_on_notify_and_listens_again_after_losing_its_connection() {
    // The fallback poll is an hour away: only a notification can wake the relay.
    let app = TestApp::spawn_with(&[("NOTIFICATIONS_INTERVAL", "1h")]).await;
    book(&app, 1).await;
    assert!(all_published_within(&app, Duration::from_secs(10)).await);

    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(terminated, vec![true], "one listener connection");

    book(&app, 1).await;
    assert!(
        all_published_within(&app, Duration::from_secs(10)).await,
        "the relay did not wake after its listener connection was killed"
    );
    let listening = poll(Duration::from_secs(10), || async {
        let n = app.count(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        )
        .await;
        n == 1
    })
    .await;
    assert!(listening);
}

#[tokio::test]
async fn published_events_are_deleted_after_the_retention_and_parked_ones_are_kept() {
    let app = TestApp::spawn_with(&[
        ("OUTBOX_RETENTION", "1ms"),
        ("NOTIFICATIONS_MAX_ATTEMPTS", "1"),
    ])
    .await;
    // An event Pub/Sub refuses (its event_type attribute is too long): parked at once.
    let parked = write_event(&app, &"X".repeat(2000), Uuid::new_v4()).await;
    assert!(poll(Duration::from_secs(10), || is_parked(&app, parked)).await);

    book(&app, 1).await;
    let deleted = poll(Duration::from_secs(10), || async {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox")
            .fetch_all(&app.pool)
            .await
            .unwrap();
        ids == vec![parked]
    })
    .await;
    assert!(
        deleted,
        "the published event was not deleted, or the parked one was"
    );
}

#[tokio::test]
async fn relays_stepped_concurrently_claim_each_event_once() {
    let app = TestApp::spawn_with(&[("OUTBOX_RELAY_ENABLED", "false")]).await;
    let settings = test_settings(&app.db, &[("NOTIFICATIONS_BATCH_SIZE_MAX", "25")]);
    let config = RelayConfig::new(
        &settings.outbox,
        &settings.pubsub,
        settings.app_name.clone(),
    );
    book(&app, 3).await;

    let mut relay = Relay::new(app.pool.clone(), Arc::new(LogPublisher), config.clone());
    let report = relay.step().await.unwrap();
    assert_eq!((report.claimed, report.published, report.failed), (3, 3, 0));
    let report = relay.step().await.unwrap();
    assert_eq!(report.claimed, 0);

    sqlx::query(
        "INSERT INTO outbox (event_type, aggregate_id, payload)
         SELECT 'TicketBooked', md5(random()::text)::uuid, '{}' FROM generate_series(1, 400)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let relays = (0..4).map(|_| {
        let mut relay = Relay::new(app.pool.clone(), Arc::new(LogPublisher), config.clone());
        tokio::spawn(async move {
            let mut published = 0;
            loop {
                let report = relay.step().await.unwrap();
                if report.claimed == 0 {
                    return published;
                }
                published += report.published;
            }
        })
    });
    let published: Vec<usize> = futures::future::try_join_all(relays).await.unwrap();
    assert_eq!(
        published.iter().sum::<usize>(),
        400,
        "per relay: {published:?}"
    );
    assert_eq!(unpublished(&app).await, 0);
}

/// Per ticket, the event types in the order they first arrived (a redelivered
/// event counts once: consumers de-duplicate by `event_id`).
fn event_types_per_ticket(messages: &[Received]) -> HashMap<String, Vec<String>> {
    let mut seen = HashSet::new();
    let mut per_ticket: HashMap<String, Vec<String>> = HashMap::new();
    for m in messages {
        if seen.insert(m.event_id()) {
            per_ticket
                .entry(m.ordering_key.clone())
                .or_default()
                .push(m.attr("event_type").to_string());
        }
    }
    per_ticket
}

#[tokio::test]
async fn cancellations_written_behind_failing_bookings_do_not_stall_the_relay_after_an_outage() {
    let mut emulator = Emulator::start().await;
    // As above: the restarted emulator gets its topic and subscription back before
    // the relay can reach it.
    let gate = Gate::open_to(emulator.port()).await;
    let (project, rest) = subscribed_project(&emulator).await;
    // Fewer due events per batch than there are tickets waiting: the cancellations,
    // due since they were written, sort ahead of their own bookings in backoff.
    let env = Env::pubsub(&gate.host(), &project)
        .with("NOTIFICATIONS_BATCH_SIZE_MAX", "2")
        .with("PUBSUB_PUBLISH_TIMEOUT", "2s")
        .with("OUTBOX_RETRY_BACKOFF", "200ms")
        .with("OUTBOX_RETRY_BACKOFF_MAX", "500ms");
    let app = TestApp::spawn_with(&env.pairs()).await;

    gate.close();
    emulator.stop().await;
    // Four tickets on four pads and days: four ordering keys, four flights.
    let mut tickets = Vec::new();
    for (pad, day) in [
        (pads::KSC_39A, "2049-03-02"),
        (pads::CCSFS_40, "2049-03-03"),
        (pads::VAFB_4E, "2049-03-04"),
        (pads::KSC_39A, "2049-03-10"),
    ] {
        tickets.push(app.book_ok(pad, day, Destination::Mars).await);
    }
    let bookings_failed = poll(Duration::from_secs(20), || async {
        let failed = app
            .count(
                "SELECT count(*) FROM outbox
                 WHERE event_type = 'TicketBooked' AND attempts >= 1 AND last_error IS NOT NULL
                   AND claimed_until IS NULL",
            )
            .await;
        failed == 4
    })
    .await;
    assert!(
        bookings_failed,
        "the bookings were not tried while Pub/Sub was down"
    );

    for ticket in &tickets {
        app.cancel(&ticket.id).await.unwrap();
    }
    // Each booking fails again after the cancellations were written, so its next
    // attempt comes after them: every cancellation is due before its booking.
    let retried = poll(Duration::from_secs(20), || async {
        let behind = app
            .count(
                "SELECT count(*) FROM outbox
                 WHERE event_type = 'TicketBooked' AND claimed_until IS NULL
                   AND next_attempt_at > (SELECT max(created_at) FROM outbox WHERE event_type = 'TicketCancelled')",
            )
            .await;
        behind == 4
    })
    .await;
    assert!(
        retried,
        "the relay stopped retrying the bookings once their cancellations were written"
    );

    emulator.restart().await;
    create_topic_and_subscription(&rest).await;
    gate.open().await;

    let expected: HashSet<i64> = outbox_rows(&app.pool).await.iter().map(|r| r.0).collect();
    assert_eq!(expected.len(), 8);
    let received = rest
        .pull_until(SUBSCRIPTION, Duration::from_secs(30), |all| {
            let ids: HashSet<i64> = all.iter().map(Received::event_id).collect();
            expected.is_subset(&ids)
        })
        .await;
    let ids: HashSet<i64> = received.iter().map(Received::event_id).collect();
    assert_eq!(
        ids,
        expected,
        "events missing after the outage; unpublished: {}",
        unpublished(&app).await
    );
    let per_ticket = event_types_per_ticket(&received);
    assert_eq!(per_ticket.len(), 4, "{per_ticket:?}");
    for ticket in &tickets {
        assert_eq!(
            per_ticket[&ticket.id],
            ["TicketBooked", "TicketCancelled"],
            "ticket {}",
            ticket.id
        );
    }
}

/// EXPLAIN ANALYZE of the relay's claim, rolled back: the plan's lines.
async fn explain_claim(pool: &sqlx::PgPool, batch_size: i64) -> Vec<String> {
    let mut tx = pool.begin().await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {CLAIM_SQL}"
    ))
    .bind(batch_size)
    .bind(60_000f64)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    plan
}

/// Asserts the claim's plan walks the due index in order and probes each row's
/// ticket through the index, whatever the statistics: no scan of the whole
/// backlog, no sort, no hash or anti-join.
fn assert_claim_plan_is_index_driven(plan: &[String]) {
    let text = plan.join("\n");
    assert!(text.contains("Index Scan using outbox_due"), "{text}");
    assert!(text.contains("outbox_pending_by_ticket"), "{text}");
    for bad in ["Seq Scan", "Sort", "Hash", "Anti Join", "Materialize"] {
        assert!(!text.contains(bad), "{bad} in the claim's plan:\n{text}");
    }
}

fn execution_time(plan: &[String]) -> &str {
    plan.iter()
        .find_map(|l| l.strip_prefix("Execution Time: "))
        .unwrap_or("?")
}

#[tokio::test]
async fn a_claim_passes_over_ten_thousand_blocked_events_to_the_claimable_ones() {
    let app = TestApp::spawn_with(&[("OUTBOX_RELAY_ENABLED", "false")]).await;
    let settings = test_settings(&app.db, &[("NOTIFICATIONS_BATCH_SIZE_MAX", "10")]);
    let config = RelayConfig::new(
        &settings.outbox,
        &settings.pubsub,
        settings.app_name.clone(),
    );
    // 10 000 tickets whose first event waits an hour in backoff, each with a later
    // event due since an hour ago: due first, and not claimable.
    sqlx::query(
        "INSERT INTO outbox (event_type, aggregate_id, payload, attempts, last_error, next_attempt_at)
         SELECT 'TicketBooked', md5('blocked' || i)::uuid, '{}', 1, 'unavailable', now() + interval '1 hour'
         FROM generate_series(1, 10000) AS i",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // 10 more whose first event is leased by another relay.
    sqlx::query(
        "INSERT INTO outbox (event_type, aggregate_id, payload, attempts, next_attempt_at, claimed_until)
         SELECT 'TicketBooked', md5('leased' || i)::uuid, '{}', 1, now() - interval '2 hours', now() + interval '1 hour'
         FROM generate_series(1, 10) AS i",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_type, aggregate_id, payload, next_attempt_at)
         SELECT 'TicketCancelled', aggregate_id, '{}', now() - interval '1 hour'
         FROM outbox ORDER BY id",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // Claimable: three tickets with one due event, two with two due events (only
    // the first of each goes in a batch).
    let free: Vec<(i64, Uuid)> = sqlx::query_as(
        "INSERT INTO outbox (event_type, aggregate_id, payload)
         SELECT 'TicketBooked', md5('free' || i)::uuid, '{}' FROM generate_series(1, 5) AS i
         RETURNING id, aggregate_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let seconds: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO outbox (event_type, aggregate_id, payload)
         SELECT 'TicketCancelled', md5('free' || i)::uuid, '{}' FROM generate_series(4, 5) AS i
         RETURNING id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 20_027);

    // The plan, before and after the statistics exist.
    let fresh = explain_claim(&app.pool, config.batch_size).await;
    assert_claim_plan_is_index_driven(&fresh);
    sqlx::query("ANALYZE outbox")
        .execute(&app.pool)
        .await
        .unwrap();
    let analyzed = explain_claim(&app.pool, config.batch_size).await;
    assert_claim_plan_is_index_driven(&analyzed);
    println!(
        "claim over 10 010 blocked tickets: {} without statistics, {} with\n{}",
        execution_time(&fresh),
        execution_time(&analyzed),
        analyzed.join("\n")
    );

    let published_ids = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT id FROM outbox WHERE published_at IS NOT NULL ORDER BY id",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap()
    };
    let mut relay = Relay::new(app.pool.clone(), Arc::new(LogPublisher), config);
    let started = std::time::Instant::now();
    let report = relay.step().await.unwrap();
    println!(
        "first step (cleanup, backlog, claim, publish): {:?}",
        started.elapsed()
    );
    assert_eq!((report.claimed, report.published), (5, 5), "{report:?}");
    let heads: Vec<i64> = free.iter().map(|r| r.0).collect();
    assert_eq!(published_ids().await, heads);

    // The later events of the two tickets are claimable now, and nothing else.
    let started = std::time::Instant::now();
    let report = relay.step().await.unwrap();
    println!("second step (claim, publish): {:?}", started.elapsed());
    assert_eq!((report.claimed, report.published), (2, 2), "{report:?}");
    let mut expected = heads.clone();
    expected.extend(&seconds);
    assert_eq!(published_ids().await, expected);
    let started = std::time::Instant::now();
    let report = relay.step().await.unwrap();
    println!("third step (claims nothing): {:?}", started.elapsed());
    assert_eq!(report.claimed, 0, "{report:?}");
}
