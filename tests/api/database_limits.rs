//! A hung or overloaded database: the probes keep answering through their own
//! pool, and requests that run into the server-side limits (`statement_timeout`,
//! `lock_timeout`) or an overloaded server end UNAVAILABLE with retry advice —
//! never INTERNAL.

use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use serde_json::{json, Value};
use spacet::{
    api::error::ApiError,
    proto::{Destination, TicketId},
};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::helpers::{
    assert_body_reason, assert_body_unavailable, assert_reason, assert_unavailable, body_reason,
    fresh_database, pads, poll, TestApp,
};

/// Sessions of the app's database waiting for a lock.
async fn waiting_on_a_lock(watcher: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(watcher)
    .await
    .expect("pg_stat_activity")
}

/// The `google.rpc.RetryInfo` delay in a grpc-gateway JSON error body.
fn retry_delay(body: &Value) -> Option<&str> {
    body["details"]
        .as_array()?
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")?["retryDelay"]
        .as_str()
}

/// How a request blocked behind the lock ended.
#[derive(Debug)]
enum Ended {
    Http {
        status: u16,
        retry_after: Option<String>,
        body: Value,
    },
    Grpc(tonic::Status),
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test]
async fn probes_answer_within_a_second_while_every_api_connection_waits_on_a_lock() {
    let statement_timeout = Duration::from_secs(3);
    let app = TestApp::spawn_with(&[
        ("PG_POOL_MAX", "3"),
        ("PG_STATEMENT_TIMEOUT", "3s"),
        ("PG_LOCK_TIMEOUT", "30s"),
    ])
    .await;
    let ticket = app
        .book_ok(pads::KSC_39A, "2049-12-01", Destination::Mars)
        .await;

    // Every connection of the API's pool carries the limits.
    for (setting, expected) in [
        ("statement_timeout", "3s"),
        ("lock_timeout", "30s"),
        ("idle_in_transaction_session_timeout", "30s"),
    ] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(value, expected, "{setting}");
    }

    // Another session locks the tickets: every read of them waits. A third one
    // watches (inside a transaction, pg_stat_activity would not change).
    let watcher = PgPool::connect_with(app.db.clone()).await.unwrap();
    let mut locker = PgConnection::connect_with(&app.db).await.unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker
        .execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    // Seven requests for three connections: three wait on the lock, the others
    // for a connection.
    let started = Instant::now();
    let mut requests: Vec<JoinHandle<(Duration, Ended)>> = Vec::new();
    for i in 0..6 {
        let (client, url) = (
            app.client.clone(),
            if i % 3 == 2 {
                app.url(&format!("/v1/bookings/{}", ticket.id))
            } else {
                app.url("/v1/bookings")
            },
        );
        requests.push(tokio::spawn(async move {
            let response = client.get(url).send().await.expect("the app answers");
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = response.json().await.expect("a JSON body");
            (
                started.elapsed(),
                Ended::Http {
                    status,
                    retry_after,
                    body,
                },
            )
        }));
    }
    let mut grpc = app.grpc().await;
    let id = ticket.id.clone();
    requests.push(tokio::spawn(async move {
        let answer = grpc.get_booking(TicketId { id }).await;
        let status = answer.expect_err("the ticket cannot be read while locked");
        (started.elapsed(), Ended::Grpc(status))
    }));

    let saturated = poll(Duration::from_secs(10), || async {
        waiting_on_a_lock(&watcher).await >= 3
    })
    .await;
    assert!(saturated, "three requests never waited on the lock");

    // The probes, while every API connection is held.
    let (mut healthz, mut readiness) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let at = Instant::now();
        let (status, _) = app.get_json("/healthz").await;
        healthz.push(at.elapsed());
        assert_eq!(status, 200);

        let at = Instant::now();
        let (status, body) = app.get_json("/readiness").await;
        readiness.push(at.elapsed());
        assert_eq!(status, 200, "{body}");
    }
    // Still saturated: the probes were measured while the pool was full.
    let still_waiting = waiting_on_a_lock(&watcher).await;
    for (name, latencies) in [("/healthz", &mut healthz), ("/readiness", &mut readiness)] {
        latencies.sort();
        println!(
            "{name} with the API pool saturated: n={} p50={:?} p99={:?} max={:?}",
            latencies.len(),
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            latencies.last().unwrap()
        );
    }
    assert!(
        still_waiting >= 3,
        "the requests stopped waiting while the probes were measured"
    );
    for (name, latencies) in [("/healthz", &healthz), ("/readiness", &readiness)] {
        let slowest = *latencies.last().unwrap();
        assert!(
            slowest < Duration::from_secs(1),
            "{name} took {slowest:?} with the API pool saturated"
        );
    }
    // The liveness report's database check goes through the probes' pool too.
    let at = Instant::now();
    let (_, body) = app.get_json("/liveness").await;
    println!(
        "/liveness with the API pool saturated: {:?}, checks {}",
        at.elapsed(),
        body["checks"]
    );
    assert_eq!(body["checks"]["database"]["status"], "healthy", "{body}");

    // Every blocked request ends at the statement timeout (or waiting for a
    // connection, at the pool's acquire timeout): UNAVAILABLE with retry advice.
    for request in requests {
        let (elapsed, ended) = tokio::time::timeout(Duration::from_secs(30), request)
            .await
            .expect("a blocked request ends within 30 s")
            .unwrap();
        assert!(elapsed >= statement_timeout, "ended early: {ended:?}");
        match ended {
            Ended::Http {
                status,
                retry_after,
                body,
            } => {
                println!(
                    "HTTP request ended after {elapsed:?}: {status} {}",
                    body["message"]
                );
                assert_eq!(status, 503, "{body}");
                assert_eq!(body["code"], 14, "{body}");
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(retry_delay(&body), Some("1s"), "{body}");
                // Its statement timed out, or it found no free connection in time.
                let reason = body_reason(&body);
                assert!(
                    matches!(
                        reason.as_deref(),
                        Some("DATABASE_TIMEOUT" | "DATABASE_OVERLOADED")
                    ),
                    "{body}"
                );
            }
            Ended::Grpc(status) => {
                println!(
                    "gRPC request ended after {elapsed:?}: {:?} {}",
                    status.code(),
                    status.message()
                );
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                let retry = status.get_details_retry_info().expect("RetryInfo");
                assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
                let reason = status.get_details_error_info().map(|i| i.reason);
                assert!(
                    matches!(
                        reason.as_deref(),
                        Some("DATABASE_TIMEOUT" | "DATABASE_OVERLOADED")
                    ),
                    "{status:?}"
                );
            }
        }
    }

    // The lock gone, the service reads again.
    locker.execute("ROLLBACK").await.unwrap();
    let (status, body) = app.get_json(&format!("/v1/bookings/{}", ticket.id)).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_booking_that_waits_longer_than_the_lock_timeout_is_unavailable_and_stores_nothing() {
    let app = TestApp::spawn_with(&[("PG_LOCK_TIMEOUT", "1s")]).await;
    let booking = json!({"firstName":"Ada","lastName":"Lovelace","gender":"FEMALE",
        "birthday":"1990-12-01T00:00:00Z","launchpadId":pads::KSC_39A,
        "launchDate":"2049-12-01T00:00:00Z","destinationId":"MARS"});

    let mut locker = PgConnection::connect_with(&app.db).await.unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker
        .execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let response = app
        .client
        .post(app.url("/v1/bookings"))
        .json(&booking)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: Value = response.json().await.unwrap();
    println!("booking behind a lock ended after {elapsed:?}: {status} {body}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.unwrap(), "1");
    assert_eq!(retry_delay(&body), Some("1s"), "{body}");
    assert_body_unavailable(&body, "DATABASE_TIMEOUT");
    locker.execute("ROLLBACK").await.unwrap();

    // The flight it opened rolled back with it.
    assert_eq!(app.count("SELECT count(*) FROM tickets").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM flights").await, 0);
    let (status, body) = app.post_json("/v1/bookings", &booking).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn database_failures_map_to_unavailable_with_retry_advice_or_to_internal() {
    let db = fresh_database().await;
    let mut conn = PgConnection::connect_with(&db).await.unwrap();
    // (SQLSTATE, expected reason): real server errors, raised with that code.
    let table = [
        ("53300", "DATABASE_OVERLOADED"),  // too_many_connections
        ("53100", "DATABASE_OVERLOADED"),  // disk_full
        ("53200", "DATABASE_OVERLOADED"),  // out_of_memory
        ("57014", "DATABASE_TIMEOUT"),     // query_canceled (statement_timeout)
        ("55P03", "DATABASE_TIMEOUT"),     // lock_not_available (lock_timeout)
        ("40P01", "TRANSACTION_CONFLICT"), // deadlock_detected
        ("40001", "TRANSACTION_CONFLICT"), // serialization_failure
        ("57P01", "DATABASE_UNAVAILABLE"), // admin_shutdown
        ("08006", "DATABASE_UNAVAILABLE"), // connection_failure
        ("23505", "INTERNAL"),             // unique_violation nobody mapped
        ("P0001", "INTERNAL"),             // raise_exception
    ];
    for (sqlstate, expected) in table {
        let sql =
            format!("DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '{sqlstate}'; END $$");
        let error = conn.execute(sql.as_str()).await.expect_err("raised");
        assert_eq!(
            error.as_database_error().and_then(|e| e.code()).as_deref(),
            Some(sqlstate)
        );
        // Raised twice: once answered over gRPC, once over HTTP.
        let again = conn.execute(sql.as_str()).await.expect_err("raised");
        check_mapping(
            sqlstate,
            [ApiError::database(error), ApiError::database(again)],
            expected,
        )
        .await;
    }
    check_mapping(
        "pool acquire timeout",
        [sqlx::Error::PoolTimedOut, sqlx::Error::PoolTimedOut].map(ApiError::database),
        "DATABASE_OVERLOADED",
    )
    .await;
}

/// Checks one error over gRPC (code, reason, RetryInfo) and over HTTP (status,
/// Retry-After, body), and prints the row.
async fn check_mapping(what: &str, [error, same]: [ApiError; 2], reason: &str) {
    let status = tonic::Status::from(error);
    assert_reason(&status, reason);
    let expected = if reason == "INTERNAL" {
        Code::Internal
    } else {
        Code::Unavailable
    };
    assert_eq!(status.code(), expected, "{what}: {status:?}");
    let retry = status.get_details_retry_info();
    let response = same.into_response();
    let http = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_body_reason(&body, reason);
    println!(
        "{what:>20} → {:?} {reason} / HTTP {http} / Retry-After {retry_after:?} / {:?}",
        status.code(),
        status.message()
    );
    if expected == Code::Unavailable {
        assert_eq!(
            retry.and_then(|r| r.retry_delay),
            Some(Duration::from_secs(1)),
            "{what}"
        );
        assert_eq!(http, 503, "{what}");
        assert_eq!(retry_after.as_deref(), Some("1"), "{what}");
        assert_eq!(retry_delay(&body), Some("1s"), "{what}: {body}");
        assert!(!status.message().contains("boom"), "cause not sent: {what}");
    } else {
        assert!(retry.is_none(), "{what}");
        assert_eq!(http, 500, "{what}");
        assert_eq!(retry_after, None, "{what}");
        assert_eq!(body["message"], "internal error", "{what}");
    }
}

#[tokio::test]
async fn a_booking_rolled_back_by_a_deadlock_is_retried_once_then_unavailable() {
    let app = TestApp::spawn().await;
    // A trigger stands in for the concurrent transaction: it fails the first
    // `failures` ticket inserts with 40P01. The sequence counts the attempts
    // (nextval survives the rollback).
    for statement in [
        "CREATE TABLE injected (failures int NOT NULL)",
        "INSERT INTO injected VALUES (1)",
        "CREATE SEQUENCE ticket_attempts",
        "CREATE FUNCTION inject_deadlock() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('ticket_attempts') <= (SELECT failures FROM injected) THEN
             RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01';
           END IF;
           RETURN NEW;
         END $$",
        "CREATE TRIGGER inject_deadlock BEFORE INSERT ON tickets
         FOR EACH ROW EXECUTE FUNCTION inject_deadlock()",
    ] {
        app.pool.execute(statement).await.unwrap();
    }
    let attempts = || app.count("SELECT last_value FROM ticket_attempts");

    // One deadlock: the retry books.
    app.book_ok(pads::KSC_39A, "2049-12-01", Destination::Mars)
        .await;
    assert_eq!(attempts().await, 2);
    assert_eq!(app.count("SELECT count(*) FROM tickets").await, 1);

    // Deadlocks every time: two attempts, then UNAVAILABLE with retry advice.
    app.pool
        .execute("UPDATE injected SET failures = 1000")
        .await
        .unwrap();
    let status = app
        .book_err(pads::KSC_39A, "2049-12-15", Destination::Mars)
        .await;
    println!(
        "booking deadlocked twice: {:?} {}",
        status.code(),
        status.message()
    );
    assert_unavailable(&status, "TRANSACTION_CONFLICT");
    assert_eq!(attempts().await, 4, "retried exactly once");
    assert_eq!(app.count("SELECT count(*) FROM tickets").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM flights WHERE launch_day = '2049-12-15'")
            .await,
        0
    );
    app.stop().await.unwrap();
}
