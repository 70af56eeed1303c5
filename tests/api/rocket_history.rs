//! A rocket's history (`GET /rockets/{channel}/messages`, its /v1 and gRPC forms)
//! and its missing message numbers as ranges.

use std::{cell::Cell, collections::BTreeSet};

use chrono::{Duration as Seconds, TimeZone, Utc};
use futures::{stream, StreamExt};
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{json, Value};
use spacet::{proto, proto::rocket_service_client::RocketServiceClient};
use uuid::Uuid;

use crate::helpers::{assert_body_reason, body_retry_delay, error_fields, TestApp};

/// Message `number` of `channel`: a launch for 1, speed changes otherwise.
fn message(channel: Uuid, number: i64) -> Value {
    let time = Utc.with_ymd_and_hms(2022, 2, 2, 18, 0, 0).unwrap() + Seconds::seconds(number);
    let (kind, body) = match number {
        1 => (
            "RocketLaunched",
            json!({"type": "Falcon-9", "launchSpeed": 500, "mission": "ARTEMIS"}),
        ),
        n if n % 3 == 0 => ("RocketSpeedDecreased", json!({ "by": n })),
        n => ("RocketSpeedIncreased", json!({ "by": n })),
    };
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

/// Posts the numbers in the order given, a few at once (so they also arrive out
/// of order at the writer), each must be answered 2xx.
async fn post_all(app: &TestApp, channel: Uuid, numbers: &[i64]) {
    stream::iter(numbers)
        .map(|&n| async move {
            let (status, body) = app.post_json("/messages", &message(channel, n)).await;
            assert!(status.is_success(), "{status} {body} for message {n}");
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
}

/// Every number of the plain history, through pages of `page_size`.
async fn history(app: &TestApp, channel: Uuid, page_size: i64) -> Vec<i64> {
    let mut numbers = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = app
            .get_json(&format!(
                "/rockets/{channel}/messages?after={after}&pageSize={page_size}"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        let items = page["messages"].as_array().unwrap();
        assert!(items.len() as i64 <= page_size, "{page}");
        numbers.extend(items.iter().map(|m| m["number"].as_i64().unwrap()));
        match page["nextAfter"].as_i64() {
            Some(next) => after = next,
            None => return numbers,
        }
    }
}

/// The runs of numbers in 1..max(stored) that are not stored.
fn complement(stored: &BTreeSet<i64>) -> Vec<(i64, i64)> {
    let mut ranges = Vec::new();
    let mut expected = 1;
    for &n in stored {
        if n > expected {
            ranges.push((expected, n - 1));
        }
        expected = n + 1;
    }
    ranges
}

fn plain_ranges(rocket: &Value) -> Vec<(i64, i64)> {
    rocket["missingRanges"]
        .as_array()
        .unwrap_or_else(|| panic!("no missingRanges in {rocket}"))
        .iter()
        .map(|r| (r["from"].as_i64().unwrap(), r["to"].as_i64().unwrap()))
        .collect()
}

/// Random sets of numbers, each sent once or more, in random order: the history
/// lists each stored number once, in order, and the missing ranges are exactly
/// the numbers below the highest that were never sent (plain JSON and gRPC).
#[test]
fn history_and_missing_ranges_are_exact_under_disorder_and_duplicates() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(TestApp::spawn());
    let grpc = rt.block_on(async { RocketServiceClient::new(app.channel().await) });
    // Numbers up to 120, each sent 1 to 3 times, the whole shuffled.
    let sends =
        proptest::collection::btree_map(1i64..=120, 1usize..=3, 1..40).prop_flat_map(|copies| {
            let all: Vec<i64> = copies
                .iter()
                .flat_map(|(&n, &k)| std::iter::repeat_n(n, k))
                .collect();
            Just(all).prop_shuffle()
        });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // The runner takes a `Fn`: counted through cells.
    let (cases, posted) = (Cell::new(0), Cell::new(0));
    runner
        .run(&sends, |numbers| {
            let channel = Uuid::new_v4();
            let stored: BTreeSet<i64> = numbers.iter().copied().collect();
            let expected_ranges = complement(&stored);
            let (listed, plain, grpc_ranges, small_pages) = rt.block_on(async {
                post_all(&app, channel, &numbers).await;
                let listed = history(&app, channel, 1000).await;
                let small_pages = history(&app, channel, 7).await;
                let (status, rocket) = app.get_json(&format!("/rockets/{channel}")).await;
                assert_eq!(status, 200, "{rocket}");
                let rocket_grpc = grpc
                    .clone()
                    .get_rocket(proto::GetRocketRequest {
                        channel: channel.to_string(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let grpc_ranges: Vec<(i64, i64)> = rocket_grpc
                    .missing_ranges
                    .iter()
                    .map(|r| (r.from, r.to))
                    .collect();
                (listed, plain_ranges(&rocket), grpc_ranges, small_pages)
            });
            let want: Vec<i64> = stored.iter().copied().collect();
            prop_assert_eq!(&listed, &want);
            prop_assert_eq!(&small_pages, &want);
            prop_assert_eq!(&plain, &expected_ranges);
            prop_assert_eq!(&grpc_ranges, &expected_ranges);
            cases.set(cases.get() + 1);
            posted.set(posted.get() + numbers.len());
            Ok(())
        })
        .unwrap();
    println!(
        "history property: {} cases, {} messages posted (duplicates included)",
        cases.get(),
        posted.get()
    );
    rt.block_on(app.stop()).unwrap();
}

/// The /v1 and gRPC forms: proto3 JSON with the payload's fields, paged with
/// `nextAfter`; NOT_FOUND for a channel never heard of; the ranges are capped.
#[tokio::test]
async fn history_pages_through_the_gateway_and_grpc_and_the_ranges_are_capped() {
    let app = TestApp::spawn().await;
    let channel = Uuid::new_v4();
    post_all(&app, channel, &[1, 3, 6]).await;

    let (status, page) = app
        .get_json(&format!("/v1/rockets/{channel}/messages?pageSize=2"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["nextAfter"], "3", "{page}");
    let first = &page["messages"][0];
    assert_eq!(first["number"], "1", "{page}");
    assert_eq!(first["type"], "ROCKET_MESSAGE_TYPE_LAUNCHED", "{page}");
    assert_eq!(first["rocketType"], "Falcon-9", "{page}");
    assert_eq!(first["launchSpeed"], "500", "{page}");
    assert_eq!(first["mission"], "ARTEMIS", "{page}");
    assert_eq!(first["time"], "2022-02-02T18:00:01Z", "{page}");
    assert_eq!(page["messages"][1]["by"], "3", "{page}");
    assert_eq!(
        page["messages"][1]["type"],
        "ROCKET_MESSAGE_TYPE_SPEED_DECREASED"
    );

    let mut grpc = RocketServiceClient::new(app.channel().await);
    let last = grpc
        .list_rocket_messages(proto::ListRocketMessagesRequest {
            channel: channel.to_string(),
            after: 3,
            page_size: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.next_after, 0, "the last page");
    assert_eq!(last.messages.len(), 1);
    assert_eq!((last.messages[0].number, last.messages[0].by), (6, 6));
    assert_eq!(
        last.messages[0].r#type(),
        proto::RocketMessageType::SpeedDecreased
    );

    // The plain form keeps the payload as received.
    let (_, plain) = app.get_json(&format!("/rockets/{channel}/messages")).await;
    assert_eq!(plain["messages"][2]["message"], json!({"by": 6}), "{plain}");
    assert_eq!(plain["nextAfter"], Value::Null, "{plain}");

    let (status, rocket) = app.get_json(&format!("/v1/rockets/{channel}")).await;
    assert_eq!(status, 200, "{rocket}");
    assert_eq!(
        rocket["missingRanges"],
        json!([{"from": "2", "to": "2"}, {"from": "4", "to": "5"}]),
        "{rocket}"
    );

    let unknown = Uuid::new_v4();
    let (status, body) = app.get_json(&format!("/rockets/{unknown}/messages")).await;
    assert_eq!(status, 404, "{body}");
    assert_body_reason(&body, "ROCKET_NOT_FOUND");
    let (status, body) = app
        .get_json(&format!("/v1/rockets/{channel}/messages?after=-1"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_fields(&body), ["after"]);

    // 150 gaps: the first 100 are listed, missingMessages counts them all.
    let gappy = Uuid::new_v4();
    let odd: Vec<i64> = (0..=150).map(|i| 2 * i + 1).collect();
    post_all(&app, gappy, &odd).await;
    let (_, rocket) = app.get_json(&format!("/rockets/{gappy}")).await;
    let ranges = plain_ranges(&rocket);
    assert_eq!(ranges.len(), 100, "{rocket}");
    assert_eq!(ranges[0], (2, 2));
    assert_eq!(ranges[99], (200, 200));
    assert_eq!(rocket["missingMessages"], 150, "{rocket}");
    app.stop().await.unwrap();
}

/// An open event stream: its response, and the text not yet split into events.
struct Events {
    response: reqwest::Response,
    pending: String,
}

impl Events {
    /// Opens `/rockets/events` (or another path), resuming after `last_id` if given.
    async fn open(app: &TestApp, path: &str, last_id: Option<&str>) -> reqwest::Response {
        let mut request = app
            .client
            .get(app.url(path))
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        request.send().await.unwrap()
    }

    /// The next event (id, rocket JSON), skipping keep-alive comments; `None` when
    /// none comes before the deadline.
    async fn next(&mut self, deadline: tokio::time::Instant) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                match id {
                    Some(id) => return Some((id, serde_json::from_str(&data).unwrap())),
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.pending.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Reads events until every channel of `want` was seen with at least that
    /// many messages received; returns the last event id. Panics at the deadline.
    async fn until(&mut self, want: &[(Uuid, i64)]) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut seen = std::collections::HashMap::new();
        let mut last = String::new();
        while want
            .iter()
            .any(|(c, n)| seen.get(&c.to_string()).is_none_or(|got| got < n))
        {
            let Some((id, rocket)) = self.next(deadline).await else {
                panic!("no event for {want:?} in time; seen {seen:?}");
            };
            let channel = rocket["channel"].as_str().unwrap().to_string();
            let received = rocket["messagesReceived"].as_i64().unwrap();
            let best = seen.entry(channel).or_insert(received);
            *best = (*best).max(received);
            last = id;
        }
        last
    }
}

/// Live changes arrive as events; after a dropped connection, a reconnection
/// with `Last-Event-ID` gets the latest state of every rocket that changed in
/// between; and the streams are bounded by ROCKETS_MAX_WATCHERS.
#[tokio::test]
async fn rocket_events_resume_after_a_dropped_connection_without_losing_a_change() {
    let app = TestApp::spawn_with(&[("ROCKETS_MAX_WATCHERS", "1")]).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());

    let response = Events::open(&app, "/rockets/events", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    let mut events = Events {
        response,
        pending: String::new(),
    };
    // The single slot is taken.
    let refused = Events::open(&app, "/v1/rockets:watch", None).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_body_reason(&body, "TOO_MANY_STREAMS");
    assert_eq!(body_retry_delay(&body).as_deref(), Some("1s"), "{body}");

    post_all(&app, a, &[1]).await;
    let last_id = events.until(&[(a, 1)]).await;
    drop(events);

    // Changed while nobody listens.
    post_all(&app, a, &[2, 3]).await;
    post_all(&app, b, &[1]).await;

    // The slot comes back once the server notices the client went away.
    // (At the latest at the next keep-alive comment, 15 s, a write fails.)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let resumed = loop {
        let response = Events::open(&app, "/v1/rockets:watch", Some(&last_id)).await;
        if response.status() == 200 {
            break response;
        }
        assert_eq!(response.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped stream's slot was never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let mut events = Events {
        response: resumed,
        pending: String::new(),
    };
    events.until(&[(a, 3), (b, 1)]).await;
    // And it follows live changes after the replay.
    post_all(&app, b, &[2]).await;
    events.until(&[(b, 2)]).await;
    drop(events);

    let (status, body) = app.get_json("/rockets/events").await;
    assert_eq!(status, 400, "without Accept: text/event-stream: {body}");
    assert_eq!(error_fields(&body), ["Accept"]);
    app.stop().await.unwrap();
}
