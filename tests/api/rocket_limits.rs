//! Rocket telemetry stays bounded: WatchRockets pages its snapshot and caps its
//! subscribers, a stuck writer answers 503 within ROCKETS_WRITE_TIMEOUT without
//! losing or doubling a message, retention deletes old messages and no state, and
//! a hopeless message gets a short list of violations.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use chrono::{Duration as Span, TimeZone, Utc};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use spacet::proto::{self, rocket_service_client::RocketServiceClient};
use sqlx::{Connection, Executor, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{
    assert_body_reason, assert_reason, body_retry_delay, grpc_channel, poll, TestApp,
};

fn message(channel: Uuid, number: i64, kind: &str, body: Value) -> Value {
    let time = Utc.with_ymd_and_hms(2022, 2, 2, 18, 0, 0).unwrap() + Span::seconds(number);
    json!({
        "metadata": {
            "channel": channel.to_string(),
            "messageNumber": number,
            "messageTime": time.to_rfc3339(),
            "messageType": kind,
        },
        "message": body,
    })
}

fn launched(channel: Uuid, speed: i64) -> Value {
    message(
        channel,
        1,
        "RocketLaunched",
        json!({"type": "Falcon-9", "launchSpeed": speed, "mission": "ARTEMIS"}),
    )
}

fn faster(channel: Uuid, number: i64, by: i64) -> Value {
    message(channel, number, "RocketSpeedIncreased", json!({ "by": by }))
}

/// This process's resident set and its peak, in MiB (the app runs in-process).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// ---------------------------------------------------------------- WatchRockets

/// Old code read the whole table per subscriber: 200 × 100,000 rows would be
/// gigabytes. Paged, a subscriber holds one page (500 rockets) at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_watchers_of_a_hundred_thousand_rockets_stay_small_and_the_next_is_refused() {
    const ROCKETS: i64 = 100_000;
    const WATCHERS: usize = 200;
    const BOUND_MIB: f64 = 256.0;
    let app = TestApp::spawn().await;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO rockets (channel, launch_number, rocket_type, launch_speed, launched_at,
             speed_delta, mission_number, mission, last_message_number, last_message_time,
             messages_received, created_at, updated_at)
         SELECT md5(i::text)::uuid, 1, 'Falcon-9', 1000 + i, now(), i % 100, 1, 'ARTEMIS',
             1, now(), 1, now(), now()
         FROM generate_series(1, $1::int8) AS i",
    )
    .bind(ROCKETS)
    .execute(&app.pool)
    .await
    .expect("rockets inserted");
    println!("inserted {ROCKETS} rockets in {:?}", started.elapsed());

    let (rss_before, _) = rss_mib();
    // GRPC_MAX_CONCURRENT_STREAMS limits streams per connection: spread them.
    let channels: Vec<_> = join_all((0..6).map(|_| grpc_channel(app.grpc_port))).await;
    let started = Instant::now();
    // The last stream, read to its end below, has a connection of its own: the
    // unread streams fill their connections' flow-control window.
    let mut streams = join_all((0..WATCHERS).map(|i| {
        let channel = if i == WATCHERS - 1 { 5 } else { i % 4 };
        let mut client = RocketServiceClient::new(channels[channel].clone());
        async move {
            let mut stream = client
                .watch_rockets(proto::WatchRocketsRequest {
                    channel: String::new(),
                    include_current: true,
                })
                .await
                .expect("a watcher within the cap is accepted")
                .into_inner();
            let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("the snapshot starts within 30 s")
                .expect("stream ok")
                .expect("a first rocket");
            (stream, first.channel)
        }
    }))
    .await;
    println!(
        "{WATCHERS} watchers got their first rocket in {:?}",
        started.elapsed()
    );
    let (rss_during, peak) = rss_mib();
    println!(
        "RSS before {rss_before:.1} MiB, with {WATCHERS} watchers {rss_during:.1} MiB \
         (+{:.1} MiB, bound {BOUND_MIB} MiB), process peak {peak:.1} MiB",
        rss_during - rss_before
    );
    assert!(
        rss_during - rss_before < BOUND_MIB,
        "RSS grew by {:.1} MiB",
        rss_during - rss_before
    );

    let refused = RocketServiceClient::new(channels[4].clone())
        .watch_rockets(proto::WatchRocketsRequest {
            channel: String::new(),
            include_current: true,
        })
        .await
        .expect_err("the 201st watcher is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert_reason(&refused, "TOO_MANY_STREAMS");
    assert!(
        tonic_types::StatusExt::get_details_retry_info(&refused).is_some(),
        "{refused:?}"
    );

    // One watcher reads its whole snapshot: every rocket once, in pages.
    let started = Instant::now();
    let (mut stream, first) = streams.pop().unwrap();
    let mut seen = HashSet::with_capacity(ROCKETS as usize);
    seen.insert(first);
    while seen.len() < ROCKETS as usize {
        let rocket = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the snapshot goes on")
            .expect("stream ok")
            .expect("stream open");
        assert!(seen.insert(rocket.channel), "a rocket sent twice");
    }
    println!(
        "one watcher read all {} rockets in {:?} (RSS {:.1} MiB)",
        seen.len(),
        started.elapsed(),
        rss_mib().0
    );
    drop(stream);

    // Its slot is free again.
    let client = RocketServiceClient::new(channels[4].clone());
    let admitted = poll(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            client
                .watch_rockets(proto::WatchRocketsRequest {
                    channel: String::new(),
                    include_current: false,
                })
                .await
                .is_ok()
        }
    })
    .await;
    assert!(admitted, "a slot is freed when a stream ends");
    drop(streams);
}

// ---------------------------------------------------------------- stuck writer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_gets_503_in_time_and_resends_are_stored_once() {
    const ROCKETS: usize = 10;
    const CHANGES: i64 = 4;
    let timeout = Duration::from_secs(2);
    let app = TestApp::spawn_with(&[("ROCKETS_WRITE_TIMEOUT", "2s")]).await;
    let channels: Vec<Uuid> = (0..ROCKETS).map(|_| Uuid::new_v4()).collect();
    for c in &channels {
        let (status, body) = app.post_json("/messages", &launched(*c, 500)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Another session holds the rocket tables for 8 s.
    let mut locker = PgConnection::connect_with(&app.db).await.unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker
        .execute("LOCK TABLE rocket_messages, rockets IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let locked_at = Instant::now();
    let release = tokio::spawn(async move {
        // The fault lasts 8 s: this sleep is the fault, not a wait for a result.
        tokio::time::sleep(Duration::from_secs(8)).await;
        locker.execute("COMMIT").await.unwrap();
        locker.close().await.unwrap();
        Instant::now()
    });

    let bodies: Vec<Value> = channels
        .iter()
        .flat_map(|c| (2..2 + CHANGES).map(move |n| faster(*c, n, 10 * n)))
        .collect();
    let answers = join_all(bodies.iter().map(|body| async {
        let started = Instant::now();
        let (status, answer) = app.post_json("/messages", body).await;
        (status, answer, started.elapsed())
    }))
    .await;
    let mut latencies: Vec<Duration> = answers.iter().map(|(_, _, t)| *t).collect();
    latencies.sort();
    println!(
        "{} posts during the lock: p50 {:?}, p99 {:?}, max {:?} (deadline {timeout:?})",
        answers.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    for (status, answer, elapsed) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert_body_reason(answer, "MESSAGE_NOT_STORED");
        assert_eq!(body_retry_delay(answer).as_deref(), Some("1s"), "{answer}");
        assert!(
            *elapsed < timeout + Duration::from_millis(1500),
            "answered after {elapsed:?}"
        );
    }

    // Readiness sees the stalled writer while the lock lasts.
    let stalled = poll(Duration::from_secs(5), || async {
        app.client
            .get(app.url("/readiness"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert!(
        stalled && locked_at.elapsed() < Duration::from_secs(8),
        "readiness reported the stall"
    );

    let released_at = release.await.unwrap();
    let ready = poll(Duration::from_secs(15), || async {
        app.client
            .get(app.url("/readiness"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(ready, "ready again after the lock");
    println!("ready again {:?} after the release", released_at.elapsed());

    // Resent: each is stored once (201 if the timed-out batch did not commit,
    // 200 if it did), and a second resend is a duplicate.
    for round in 0..2 {
        let answers = join_all(bodies.iter().map(|body| app.post_json("/messages", body))).await;
        let created = answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count();
        for (status, answer) in &answers {
            assert!(status.is_success(), "{status} {answer}");
            if round == 1 {
                assert_eq!(*status, StatusCode::OK, "{answer}");
            }
        }
        println!(
            "resend round {round}: {created} stored, {} duplicates",
            answers.len() - created
        );
    }
    let stored = app.count("SELECT count(*) FROM rocket_messages").await;
    assert_eq!(stored, (ROCKETS as i64) * (1 + CHANGES));
    let expected_speed = 500 + (2..2 + CHANGES).map(|n| 10 * n).sum::<i64>();
    for c in &channels {
        let (status, rocket) = app.get_json(&format!("/rockets/{c}")).await;
        assert_eq!(status, 200);
        assert_eq!(rocket["speed"], expected_speed, "{rocket}");
        assert_eq!(rocket["messagesReceived"], 1 + CHANGES, "{rocket}");
        assert_eq!(rocket["missingMessages"], 0, "{rocket}");
    }
}

// ---------------------------------------------------------------- retention

#[tokio::test]
async fn retention_deletes_old_messages_and_keeps_every_state() {
    let app = TestApp::spawn().await;
    let channels: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for c in &channels {
        for body in [launched(*c, 700), faster(*c, 2, 30)] {
            let (status, answer) = app.post_json("/messages", &body).await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        }
    }
    // 40 days later, two more messages per rocket.
    app.clock.set(app.clock.now() + Span::days(40));
    for c in &channels {
        for body in [faster(*c, 3, 5), faster(*c, 4, 7)] {
            let (status, answer) = app.post_json("/messages", &body).await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        }
    }
    let mut before = Vec::new();
    for c in &channels {
        before.push(app.get_json(&format!("/rockets/{c}")).await.1);
    }

    let cutoff = app.clock.now() - Span::days(30);
    let deleted = spacet::rockets::retention::step(&app.pool, cutoff, &CancellationToken::new())
        .await
        .expect("retention step");
    println!("retention deleted {deleted} messages");
    assert_eq!(deleted, 2 * channels.len() as u64);
    assert_eq!(
        app.count("SELECT count(*) FROM rocket_messages").await,
        2 * channels.len() as i64
    );
    assert_eq!(
        app.count("SELECT count(*) FROM rocket_messages WHERE message_number < 3")
            .await,
        0
    );
    for (c, before) in channels.iter().zip(&before) {
        let (status, after) = app.get_json(&format!("/rockets/{c}")).await;
        assert_eq!(status, 200);
        assert_eq!(&after, before, "the state did not change");
        assert_eq!(after["speed"], 742);
        assert_eq!(after["messagesReceived"], 4);
    }
    // Nothing left to delete: a second round is a no-op.
    let again = spacet::rockets::retention::step(&app.pool, cutoff, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again, 0);
}

// ---------------------------------------------------------------- validation

#[tokio::test]
async fn a_message_with_a_hundred_problems_gets_twenty_one_violations() {
    let app = TestApp::spawn().await;
    let mut body = faster(Uuid::new_v4(), 1, 5);
    for i in 0..100 {
        body["message"][format!("unknown{i}")] = json!(i);
    }
    let (status, answer) = app.post_json("/messages", &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_body_reason(&answer, "FIELD_VIOLATIONS");
    let violations = answer["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .expect("a BadRequest detail")["fieldViolations"]
        .as_array()
        .unwrap()
        .clone();
    println!(
        "100 problems → {} violations, last: {}",
        violations.len(),
        violations.last().unwrap()
    );
    assert_eq!(violations.len(), 21);
    assert_eq!(
        violations.last().unwrap()["description"],
        "and 80 more violations"
    );
}

// ---------------------------------------------------------------- shutdown

/// Before, the writer stopped when shutdown began and every later message opened
/// a database connection of its own. Now the writer serves through the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_during_the_shutdown_drain_go_through_the_writer() {
    const SENDERS: usize = 40;
    let app = TestApp::spawn_with(&[("SHUTDOWN_DRAIN_DELAY", "3s")]).await;
    let database = app.db.get_database().unwrap().to_string();
    let observer = sqlx::PgPool::connect_with(app.db.clone()).await.unwrap();
    let c = Uuid::new_v4();
    let (status, _) = app.post_json("/messages", &launched(c, 100)).await;
    assert_eq!(status, StatusCode::CREATED);

    let bodies: Vec<Value> = (0..SENDERS as i64).map(|i| faster(c, i + 2, 1)).collect();
    // Samples the app's backends while the messages are sent.
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn({
        let (observer, sampling) = (observer.clone(), sampling.clone());
        async move {
            let mut peak = 0;
            while !sampling.is_cancelled() {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&database)
                .fetch_one(&observer)
                .await
                .unwrap();
                peak = peak.max(n);
            }
            peak
        }
    });
    app.begin_shutdown();
    let started = Instant::now();
    let answers = join_all(bodies.iter().map(|body| app.post_json("/messages", body))).await;
    let elapsed = started.elapsed();
    sampling.cancel();
    let peak = sampler.await.unwrap();
    println!(
        "{SENDERS} messages during the drain answered in {elapsed:?}; at most {peak} backends of the app meanwhile"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "answered during the drain"
    );
    for (status, answer) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{answer}");
    }
    // The pool (PG_POOL_MAX 10) and the writer, and no connection per message.
    assert!(peak <= 11, "{peak} backends");
    let received: i64 =
        sqlx::query_scalar("SELECT messages_received FROM rockets WHERE channel = $1")
            .bind(c)
            .fetch_one(&observer)
            .await
            .unwrap();
    assert_eq!(received, 1 + SENDERS as i64);
    app.stop().await.expect("clean stop");
}

/// The paged snapshot and the changes that race with it: every rocket is sent,
/// no state older than one already sent, and each ends on its final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_snapshot_racing_with_changes_never_goes_back_in_time() {
    const ROCKETS: i64 = 2_000;
    const MOVING: usize = 20;
    const CHANGES: i64 = 15;
    let app = TestApp::spawn().await;
    let channels: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO rockets (channel, speed_delta, last_message_number, last_message_time,
             messages_received, created_at, updated_at)
         SELECT md5(i::text)::uuid, 0, 1, now(), 1, now(), now()
         FROM generate_series(1, $1::int8) AS i
         RETURNING channel",
    )
    .bind(ROCKETS)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // Rockets spread over the pages, changed while the snapshot is read.
    let moving: Vec<Uuid> = channels
        .iter()
        .step_by(channels.len() / MOVING)
        .copied()
        .collect();
    let mut stream = RocketServiceClient::new(app.channel().await)
        .watch_rockets(proto::WatchRocketsRequest {
            channel: String::new(),
            include_current: true,
        })
        .await
        .unwrap()
        .into_inner();
    let writers = join_all(moving.iter().map(|c| async {
        for n in 2..2 + CHANGES {
            let (status, answer) = app.post_json("/messages", &faster(*c, n, 1)).await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        }
    }));
    let reader = async {
        let mut last: std::collections::HashMap<String, i64> = Default::default();
        let done = |last: &std::collections::HashMap<String, i64>| {
            last.len() == ROCKETS as usize
                && moving
                    .iter()
                    .all(|c| last.get(&c.to_string()) == Some(&(1 + CHANGES)))
        };
        let mut items = 0;
        while !done(&last) {
            let rocket = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .expect("the stream goes on")
                .expect("stream ok")
                .expect("stream open");
            items += 1;
            let previous = last.insert(rocket.channel.clone(), rocket.messages_received);
            assert!(
                previous.is_none_or(|p| p < rocket.messages_received),
                "{} went from {previous:?} to {}",
                rocket.channel,
                rocket.messages_received
            );
        }
        items
    };
    let (_, items) = tokio::join!(writers, reader);
    println!(
        "{items} items for {ROCKETS} rockets and {} changes",
        MOVING as i64 * CHANGES
    );
}
