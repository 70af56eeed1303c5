//! The challenge's program against the rockets port (`ROCKETS_PORT`): a sender
//! that behaves like `rockets launch` (a new connection per message, no token, the
//! message sent again until it gets a 2xx, messages out of order and duplicated)
//! gets every rocket exact; that port serves `POST /messages` and nothing else.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::{Duration as Millis, TimeZone, Utc};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Value};
use spacet::{app::App, clock::Clock};
use sqlx::{Connection, Executor, PgConnection};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use uuid::Uuid;

use crate::helpers::{free_port, fresh_database, poll, test_now, test_settings, TestApp};

const ROCKETS: usize = 30;
const MESSAGES_PER_ROCKET: i64 = 100;
const SENDERS: usize = 3;

/// One `POST path` on a connection of its own, as the challenge's program sends it
/// (`Connection: close`, no token): the status and the body, or `None` when the
/// connection failed.
async fn post_once(port: u16, path: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// A rocket's messages and the state its messages make, computed in number order.
struct Rocket {
    channel: Uuid,
    bodies: Vec<Vec<u8>>,
    expected: Value,
}

fn rocket(rng: &mut StdRng) -> Rocket {
    let channel = Uuid::new_v4();
    let start = Utc.with_ymd_and_hms(2022, 2, 2, 18, 0, 0).unwrap();
    let explodes = rng.random_bool(0.3);
    let launch_speed: i64 = rng.random_range(100..2000);
    let (mut speed, mut mission) = (launch_speed, "ARTEMIS".to_string());
    let mut reason = Value::Null;
    let mut bodies = Vec::new();
    for number in 1..=MESSAGES_PER_ROCKET {
        let (kind, message) = if number == 1 {
            (
                "RocketLaunched",
                json!({"type": "Falcon-9", "launchSpeed": launch_speed, "mission": mission}),
            )
        } else if number == MESSAGES_PER_ROCKET && explodes {
            reason = json!("ENGINE_FAILURE");
            ("RocketExploded", json!({"reason": reason}))
        } else {
            let by: i64 = rng.random_range(1..500);
            match rng.random_range(0..10) {
                0..=3 => {
                    speed += by;
                    ("RocketSpeedIncreased", json!({ "by": by }))
                }
                4..=7 => {
                    speed -= by;
                    ("RocketSpeedDecreased", json!({ "by": by }))
                }
                _ => {
                    mission = ["APOLLO", "GEMINI", "LUNA"][rng.random_range(0..3)].to_string();
                    ("RocketMissionChanged", json!({ "newMission": mission }))
                }
            }
        };
        let time = (start + Millis::milliseconds(number * 500)).to_rfc3339();
        bodies.push(
            serde_json::to_vec(&json!({
                "metadata": {
                    "channel": channel,
                    "messageNumber": number,
                    "messageTime": time,
                    "messageType": kind,
                },
                "message": message,
            }))
            .unwrap(),
        );
    }
    Rocket {
        channel,
        bodies,
        expected: json!({
            "type": "Falcon-9",
            "launchSpeed": launch_speed,
            "speed": speed,
            "mission": mission,
            "status": if explodes { "exploded" } else { "launched" },
            "explosionReason": reason,
            "lastMessageNumber": MESSAGES_PER_ROCKET,
            "messagesReceived": MESSAGES_PER_ROCKET,
            "missingMessages": 0,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_challenge_sender_gets_every_rocket_exact_through_the_rockets_port() {
    let port = free_port();
    let app = TestApp::spawn_with(&[
        ("ROCKETS_PORT", &port.to_string()),
        ("ROCKETS_WRITE_TIMEOUT", "1s"),
    ])
    .await;
    // The messages table locked: the first messages wait past ROCKETS_WRITE_TIMEOUT
    // and get 503, are sent again, and are stored once the lock is gone (those
    // committed after their 503 are answered 200 on the resend).
    let mut locker = PgConnection::connect_with(&app.db).await.unwrap();
    locker
        .execute("BEGIN; LOCK TABLE rocket_messages IN EXCLUSIVE MODE")
        .await
        .unwrap();

    let mut rng = StdRng::seed_from_u64(20);
    let rockets: Vec<Rocket> = (0..ROCKETS).map(|_| rocket(&mut rng)).collect();
    // Interleaved and shuffled across rockets, 5 % sent twice.
    let mut order: Vec<(usize, usize)> = rockets
        .iter()
        .enumerate()
        .flat_map(|(r, rocket)| (0..rocket.bodies.len()).map(move |i| (r, i)))
        .collect();
    let duplicates: Vec<(usize, usize)> = order
        .iter()
        .filter(|_| rng.random_bool(0.05))
        .copied()
        .collect();
    order.extend(duplicates);
    order.shuffle(&mut rng);
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        order
            .iter()
            .map(|&(r, i)| rockets[r].bodies[i].clone())
            .collect(),
    );

    let (next, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (next, bodies, refused) = (next.clone(), bodies.clone(), refused.clone());
            tokio::spawn(async move {
                // (requests, resent after a 503, failures other than 503)
                let (mut requests, mut resent, mut errors) = (0u64, 0u64, Vec::new());
                while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let give_up = Instant::now() + Duration::from_secs(30);
                    loop {
                        requests += 1;
                        match post_once(port, "/messages", body).await {
                            Some((status, _)) if (200..300).contains(&status) => break,
                            Some((503, _)) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            other => errors.push(format!("{other:?}")),
                        }
                        assert!(Instant::now() < give_up, "a message is refused for 30 s");
                        resent += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                (requests, resent, errors)
            })
        })
        .collect();
    let refused_some = poll(Duration::from_secs(20), || async {
        refused.load(Ordering::Relaxed) >= SENDERS
    })
    .await;
    locker.execute("COMMIT").await.unwrap();
    assert!(refused_some, "messages waiting on a locked table get 503");
    let (mut requests, mut resent, mut errors) = (0, 0, Vec::new());
    for sender in senders {
        let (r, s, e) = sender.await.expect("sender");
        requests += r;
        resent += s;
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    println!(
        "{} messages ({} with duplicates) in {requests} requests, {resent} resent, in {elapsed:.2?}: {:.0} requests/s",
        ROCKETS as i64 * MESSAGES_PER_ROCKET,
        bodies.len(),
        requests as f64 / elapsed.as_secs_f64()
    );
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(resent >= SENDERS as u64, "refused messages are sent again");

    // Read back through the main port.
    for rocket in &rockets {
        let (status, served) = app.get_json(&format!("/rockets/{}", rocket.channel)).await;
        assert_eq!(status, 200, "{served}");
        for (field, want) in rocket.expected.as_object().unwrap() {
            assert_eq!(&served[field], want, "{field} of {served}");
        }
    }
    assert_eq!(
        app.count("SELECT count(*) FROM rocket_messages").await,
        ROCKETS as i64 * MESSAGES_PER_ROCKET
    );
}

#[tokio::test]
async fn the_rockets_port_serves_post_messages_and_nothing_else() {
    let port = free_port();
    let app = TestApp::spawn_with(&[("ROCKETS_PORT", &port.to_string())]).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let not_found = json!({"code": 5, "message": "Not Found", "details": []});
    let channel = Uuid::new_v4();
    for path in [
        "/rockets".to_string(),
        format!("/rockets/{channel}"),
        "/v1/rockets".to_string(),
        "/v1/bookings".to_string(),
        "/readiness".to_string(),
        "/metrics".to_string(),
    ] {
        let response = client.get(url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "GET {path}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            not_found,
            "GET {path}"
        );
    }
    let response = client
        .post(url("/v1/bookings"))
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(response.unwrap().status(), 404, "POST /v1/bookings");
    let response = client.get(url("/messages")).send().await.unwrap();
    assert_eq!(response.status(), 405, "GET /messages");

    // The same validation as the HTTP port: every problem named, nothing stored.
    let (status, answer) = post_once(port, "/messages", br#"{"metadata": {}}"#)
        .await
        .expect("an answer");
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("metadata.channel"), "{answer}");
    assert_eq!(app.count("SELECT count(*) FROM rocket_messages").await, 0);
}

#[tokio::test]
async fn the_rockets_port_closes_idle_connections() {
    let port = free_port();
    let _app = TestApp::spawn_with(&[
        ("ROCKETS_PORT", &port.to_string()),
        ("HTTP_IDLE_TIMEOUT", "1s"),
        ("HTTP_HEADER_TIMEOUT", "1s"),
    ])
    .await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("an idle connection is closed within 10 s");
    // Closed (EOF or reset), after the timeout rather than at once.
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_taken_rockets_port_fails_the_start_naming_rockets_port_and_0_turns_it_off() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let db = fresh_database().await;
    let error = match App::build(
        test_settings(&db, &[("ROCKETS_PORT", &port)]),
        Clock::fixed(test_now()),
    )
    .await
    {
        Ok(_) => panic!("the app built on a taken port"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("ROCKETS_PORT"), "{error}");
    assert!(error.contains(&port), "{error}");

    let app = App::build(test_settings(&db, &[]), Clock::fixed(test_now()))
        .await
        .expect("app builds");
    assert_eq!(app.rockets_port(), None, "ROCKETS_PORT=0 binds nothing");
}
