//! SpaceX sync against a fake SpaceX (wiremock) fed the recorded v4 answers with
//! their dates moved from 2022 to 2049.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use spacet::{
    proto::{Destination, GetLaunchpadScheduleRequest, TriggerSyncRequest},
    spacex::{self, SkipReason},
};
use tonic::Code;
use wiremock::{
    matchers::{body_partial_json, method, path},
    Mock, MockServer, ResponseTemplate,
};

use crate::helpers::{
    assert_body_unavailable, assert_unavailable, booking_request, pads, poll, StatusDetails,
    TestApp,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/spacex");

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The recorded `GET /launchpads` answer.
fn recorded_launchpads() -> Value {
    fixture("launchpads.json")
}

/// A launch document in the recorded full shape (links, cores, fairings…) with the
/// given fields; `date_unix` and `date_local` agree with `date_utc`.
fn launch(id: &str, name: &str, pad: &str, date_utc: &str, precision: &str) -> Value {
    let mut doc = fixture("launches_query_page41_limit5.json")["docs"][0].clone();
    let at: DateTime<Utc> = date_utc.parse().unwrap();
    let zone: chrono_tz::Tz = recorded_launchpads()
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == pad)
        .map(|p| p["timezone"].as_str().unwrap().parse().unwrap())
        .unwrap_or(chrono_tz::UTC);
    let fields = json!({
        "id": id, "name": name, "launchpad": pad,
        "date_utc": at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "date_unix": at.timestamp(),
        "date_local": at.with_timezone(&zone).to_rfc3339(),
        "date_precision": precision, "upcoming": true,
    });
    doc.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    doc
}

/// The 12 recorded upcoming launches of SpaceX's final data, moved to 2049. Among
/// them on CCSFS SLC 40: Hotbird 13G `2049-11-03T03:24Z` (hour: November 2nd at the
/// Cape), Galaxy 31 & 32 `2049-11-08` (day), SES-18 & 19 `2049-11` (month); on
/// KSC LC 39A: Viasat-3 `2049-12` (month).
pub(crate) fn upcoming_2049() -> Vec<Value> {
    fixture("upcoming_final_state_summary.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap().to_string();
            launch(
                &s("id"),
                &s("name"),
                &s("launchpad"),
                &s("date_utc").replace("2022-", "2049-"),
                &s("date_precision"),
            )
        })
        .collect()
}

const HOTBIRD_13G: &str = "633f71dd0531f07b4fdf59c1";
const GALAXY_31: &str = "633f71a90531f07b4fdf59be";
const EUTELSAT_10B: &str = "633f71b60531f07b4fdf59bf";

fn without(launches: &[Value], id: &str) -> Vec<Value> {
    launches.iter().filter(|l| l["id"] != id).cloned().collect()
}

fn replaced(launches: &[Value], id: &str, change: impl Fn(&mut Value)) -> Vec<Value> {
    let mut launches = launches.to_vec();
    for l in launches.iter_mut().filter(|l| l["id"] == id) {
        change(l);
    }
    launches
}

/// A fake SpaceX v4 API under `/v4`.
pub(crate) struct FakeSpaceX {
    server: MockServer,
}

/// Launches per page of the fake (SpaceX caps `limit` the same way).
const PER_PAGE: usize = 5;

impl FakeSpaceX {
    pub(crate) async fn start() -> FakeSpaceX {
        FakeSpaceX {
            server: MockServer::start().await,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/v4", self.server.uri())
    }

    /// Serves the recorded launchpads and these launches, 5 to a page.
    pub(crate) async fn serve(&self, launches: &[Value]) {
        self.server.reset().await;
        self.serve_launchpads(recorded_launchpads()).await;
        self.serve_launches(launches, Duration::ZERO).await;
    }

    async fn serve_launchpads(&self, launchpads: Value) {
        Mock::given(method("GET"))
            .and(path("/v4/launchpads"))
            .respond_with(ResponseTemplate::new(200).set_body_json(launchpads))
            .mount(&self.server)
            .await;
    }

    async fn serve_launches(&self, launches: &[Value], delay: Duration) {
        let pages = launches.len().div_ceil(PER_PAGE).max(1);
        for page in 1..=pages {
            let docs: Vec<Value> = launches
                .iter()
                .skip((page - 1) * PER_PAGE)
                .take(PER_PAGE)
                .cloned()
                .collect();
            Mock::given(method("POST"))
                .and(path("/v4/launches/query"))
                .and(body_partial_json(
                    json!({"query": {"upcoming": true}, "options": {"page": page}}),
                ))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(envelope(docs, page, pages, launches.len()))
                        .set_delay(delay),
                )
                .mount(&self.server)
                .await;
        }
    }

    /// Requests received for `path` (under `/v4`).
    async fn requests(&self, to: &str) -> usize {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == format!("/v4{to}"))
            .count()
    }
}

/// The mongoose-paginate envelope, as in the recorded page 41 of 41.
fn envelope(docs: Vec<Value>, page: usize, pages: usize, total: usize) -> Value {
    json!({
        "docs": docs,
        "totalDocs": total,
        "offset": (page - 1) * PER_PAGE,
        "limit": PER_PAGE,
        "totalPages": pages,
        "page": page,
        "pagingCounter": (page - 1) * PER_PAGE + 1,
        "hasPrevPage": page > 1,
        "hasNextPage": page < pages,
        "prevPage": if page > 1 { json!(page - 1) } else { Value::Null },
        "nextPage": if page < pages { json!(page + 1) } else { Value::Null },
    })
}

/// An app whose SpaceX is `fake`; the schedule stays off unless `extra` turns it on.
async fn app_with(fake: &FakeSpaceX, extra: &[(&str, &str)]) -> TestApp {
    let url = fake.url();
    let mut settings = vec![
        ("SPACEX_API_URL", url.as_str()),
        ("SPACEX_RETRY_BACKOFF", "10ms"),
        ("SPACEX_TIMEOUT", "5s"),
    ];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings).await
}

/// A second instance over `first`'s database and clock, whose SpaceX is `fake`.
async fn replica(first: &TestApp, fake: &FakeSpaceX) -> TestApp {
    let url = fake.url();
    let settings = [
        ("SPACEX_API_URL", url.as_str()),
        ("SPACEX_RETRY_BACKOFF", "10ms"),
    ];
    TestApp::spawn_on(&first.db, &settings, first.clock.clone()).await
}

/// `POST /v1/admin/sync`; returns the HTTP status and the JSON body.
async fn sync_over_http(app: &TestApp) -> (StatusCode, Value) {
    app.post_json("/v1/admin/sync", &json!({})).await
}

async fn blocked_day(app: &TestApp, launch: &str) -> Option<NaiveDate> {
    sqlx::query_scalar("SELECT blocked_day FROM spacex_launches WHERE id = $1 AND upcoming")
        .bind(launch)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
        .flatten()
}

const CONFIRMED: i32 = spacet::proto::TicketStatus::Confirmed as i32;
const CANCELLED: i32 = spacet::proto::TicketStatus::Cancelled as i32;
const SPACEX_CONFLICT: i32 = spacet::proto::CancellationReason::SpacexConflict as i32;

#[tokio::test]
async fn a_launch_on_a_booked_pad_and_day_cancels_the_flight_its_tickets_and_writes_events() {
    let fake = FakeSpaceX::start().await;
    let app = app_with(&fake, &[]).await;
    // Booked before SpaceX announced anything.
    fake.serve(&[]).await;
    let mut doomed = Vec::new();
    for _ in 0..3 {
        // Hotbird 13G, 2049-11-03T03:24Z = 23:24 on the 2nd at the Cape.
        doomed.push(
            app.book_ok(pads::CCSFS_40, "2049-11-02", Destination::Mars)
                .await,
        );
    }
    for _ in 0..2 {
        // Galaxy 31 & 32, day precision: the 8th as written.
        doomed.push(
            app.book_ok(pads::CCSFS_40, "2049-11-08", Destination::Moon)
                .await,
        );
    }
    let spared = vec![
        // The UTC date of Hotbird 13G, but not the Cape's day of it.
        app.book_ok(pads::CCSFS_40, "2049-11-03", Destination::Pluto)
            .await,
        // The evening before Galaxy 31's midnight UTC, at the Cape.
        app.book_ok(pads::CCSFS_40, "2049-11-07", Destination::Titan)
            .await,
        // Another pad, same day.
        app.book_ok(pads::KSC_39A, "2049-11-02", Destination::Mars)
            .await,
    ];

    fake.serve(&upcoming_2049()).await;
    let (status, report) = sync_over_http(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], true);
    assert_eq!(report["launchesSeen"], 12);
    assert_eq!(report["launchesAdded"], 12);
    assert_eq!(report["launchesSkipped"], 0);
    assert_eq!(report["launchpadsAdded"], 0);
    assert_eq!(report["flightsCancelled"], 2);
    assert_eq!(report["ticketsCancelled"], 5);
    assert_eq!(report["skippedReason"], "");
    // Three pages of five were read.
    assert_eq!(fake.requests("/launches/query").await, 3);

    for ticket in &doomed {
        let now = app.ticket(&ticket.id).await.unwrap();
        assert_eq!(now.ticket_status, CANCELLED, "{:?}", ticket.launch_date);
        assert_eq!(now.cancellation_reason, SPACEX_CONFLICT);
    }
    for ticket in &spared {
        assert_eq!(
            app.ticket(&ticket.id).await.unwrap().ticket_status,
            CONFIRMED
        );
    }
    let flights: Vec<(NaiveDate, String, Option<String>, i32)> = sqlx::query_as(
        "SELECT launch_day, status, cancellation_reason, seats_booked FROM flights
         WHERE launchpad_id = $1 ORDER BY launch_day",
    )
    .bind(pads::CCSFS_40)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    assert_eq!(
        flights,
        vec![
            (
                day("2049-11-02"),
                "cancelled".into(),
                Some("SPACEX_CONFLICT".into()),
                0
            ),
            (day("2049-11-03"), "scheduled".into(), None, 1),
            (day("2049-11-07"), "scheduled".into(), None, 1),
            (
                day("2049-11-08"),
                "cancelled".into(),
                Some("SPACEX_CONFLICT".into()),
                0
            ),
        ]
    );

    // One TicketCancelled event per cancelled ticket, with the reason.
    let events: Vec<(uuid::Uuid, Value)> = sqlx::query_as(
        "SELECT aggregate_id, payload FROM outbox WHERE event_type = 'TicketCancelled' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut event_tickets: Vec<String> = events.iter().map(|(id, _)| id.to_string()).collect();
    let mut doomed_ids: Vec<String> = doomed.iter().map(|t| t.id.clone()).collect();
    event_tickets.sort();
    doomed_ids.sort();
    assert_eq!(event_tickets, doomed_ids);
    for (id, payload) in &events {
        assert_eq!(payload["reason"], "SPACEX_CONFLICT");
        assert_eq!(payload["ticket"]["id"], id.to_string());
        assert_eq!(payload["ticket"]["status"], "cancelled");
        assert_eq!(payload["ticket"]["ticketStatus"], "CANCELLED");
        // Timestamps as protojson writes them, in the events too.
        for field in ["launchDate", "birthday", "createdAt", "updatedAt"] {
            let text = payload["ticket"][field].as_str().unwrap();
            assert!(text.ends_with('Z'), "{field}: {text}");
        }
    }

    // A second sync finds nothing more to do.
    let (_, again) = sync_over_http(&app).await;
    assert_eq!(again["applied"], true);
    assert_eq!(again["launchesAdded"], 0);
    assert_eq!(again["launchesUpdated"], 0);
    assert_eq!(again["ticketsCancelled"], 0);
}

#[tokio::test]
async fn a_booking_on_a_day_spacex_launches_from_the_pad_is_refused() {
    let fake = FakeSpaceX::start().await;
    fake.serve(&upcoming_2049()).await;
    let app = app_with(&fake, &[]).await;
    let report = app
        .grpc()
        .await
        .trigger_sync(TriggerSyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(report.applied);

    for (pad, day, launch) in [
        (pads::CCSFS_40, "2049-11-02", "Hotbird 13G"),
        (pads::CCSFS_40, "2049-11-08", "Galaxy 31 (23R) & 32 (17R)"),
        (pads::KSC_39A, "2049-11-01", "USSF-44"),
    ] {
        let status = app.book_err(pad, day, Destination::Europa).await;
        assert_eq!(status.code(), Code::FailedPrecondition, "{day}");
        assert_eq!(status.reason().as_deref(), Some("SPACEX_CONFLICT"));
        assert!(status.message().contains(launch), "{}", status.message());
    }
    app.book_ok(pads::CCSFS_40, "2049-11-03", Destination::Europa)
        .await;
}

#[tokio::test]
async fn a_coarse_date_blocks_nothing_and_shows_as_tentative() {
    let fake = FakeSpaceX::start().await;
    let app = app_with(&fake, &[]).await;
    fake.serve(&[]).await;
    // Viasat-3 (KSC, "2049-12", month) and SES-18 (CCSFS, "2049-11", month) are
    // written as midnight UTC of the 1st: no day is known yet.
    let december_1st = app
        .book_ok(pads::KSC_39A, "2049-12-01", Destination::Mars)
        .await;
    let november_1st = app
        .book_ok(pads::CCSFS_40, "2049-11-01", Destination::Moon)
        .await;

    fake.serve(&upcoming_2049()).await;
    let (_, report) = sync_over_http(&app).await;
    assert_eq!(report["applied"], true);
    assert_eq!(report["ticketsCancelled"], 0);
    assert_eq!(
        app.ticket(&december_1st.id).await.unwrap().ticket_status,
        CONFIRMED
    );
    assert_eq!(
        app.ticket(&november_1st.id).await.unwrap().ticket_status,
        CONFIRMED
    );
    app.book_ok(pads::KSC_39A, "2049-12-02", Destination::Moon)
        .await;

    let schedule = app
        .grpc()
        .await
        .get_launchpad_schedule(GetLaunchpadScheduleRequest {
            id: pads::KSC_39A.into(),
            from: "2049-12-01".into(),
            to: "2049-12-03".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = &schedule.days[0];
    let viasat = first
        .spacex_launches
        .iter()
        .find(|l| l.name == "Viasat-3 & Arcturus")
        .expect("the tentative launch is shown");
    assert!(viasat.tentative);
    assert_eq!(viasat.precision(), spacet::proto::DatePrecision::Month);
    // The deprecated string stays filled for the clients that read it.
    #[allow(deprecated)]
    let old = &viasat.date_precision;
    assert_eq!(old, "month");
    assert!(first.flight.is_some(), "our flight still flies that day");
}

#[tokio::test]
async fn a_launch_spacex_moves_frees_its_old_day_and_blocks_its_new_one() {
    let fake = FakeSpaceX::start().await;
    let launches = upcoming_2049();
    fake.serve(&launches).await;
    let app = app_with(&fake, &[]).await;
    sync_over_http(&app).await;
    assert_eq!(
        blocked_day(&app, HOTBIRD_13G).await.unwrap().to_string(),
        "2049-11-02"
    );
    let refused = app
        .book_err(pads::CCSFS_40, "2049-11-02", Destination::Mars)
        .await;
    assert_eq!(refused.reason().as_deref(), Some("SPACEX_CONFLICT"));
    let on_the_5th = app
        .book_ok(pads::CCSFS_40, "2049-11-05", Destination::Titan)
        .await;
    let on_the_15th = app
        .book_err(pads::CCSFS_40, "2049-11-15", Destination::Mars)
        .await;
    assert_eq!(
        on_the_15th.reason().as_deref(),
        Some("SPACEX_CONFLICT"),
        "Eutelsat 10B"
    );

    // SpaceX slips Hotbird 13G to the 5th and drops Eutelsat 10B from the manifest.
    let moved = replaced(&launches, HOTBIRD_13G, |l| {
        l["date_utc"] = json!("2049-11-05T15:10:00.000Z");
    });
    fake.serve(&without(&moved, EUTELSAT_10B)).await;
    let (_, report) = sync_over_http(&app).await;
    assert_eq!(report["launchesUpdated"], 1, "{report}");
    assert_eq!(report["launchesRemoved"], 1);
    assert_eq!(report["launchesAdded"], 0);
    assert_eq!(report["flightsCancelled"], 1);
    assert_eq!(report["ticketsCancelled"], 1);

    assert_eq!(
        blocked_day(&app, HOTBIRD_13G).await.unwrap().to_string(),
        "2049-11-05"
    );
    assert_eq!(
        app.ticket(&on_the_5th.id).await.unwrap().ticket_status,
        CANCELLED
    );
    app.book_ok(pads::CCSFS_40, "2049-11-02", Destination::Mars)
        .await;
    app.book_ok(pads::CCSFS_40, "2049-11-15", Destination::Mars)
        .await;
    let eutelsat: bool = sqlx::query_scalar("SELECT upcoming FROM spacex_launches WHERE id = $1")
        .bind(EUTELSAT_10B)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!eutelsat, "kept for the record, marked not upcoming");
}

#[tokio::test]
async fn a_malformed_launch_is_skipped_and_what_we_knew_of_it_is_kept() {
    let fake = FakeSpaceX::start().await;
    let launches = upcoming_2049();
    fake.serve(&launches).await;
    let app = app_with(&fake, &[]).await;
    sync_over_http(&app).await;

    // Galaxy 31's date becomes unreadable, a new launch comes without a launchpad,
    // another with a precision SpaceX never used, and one is fine.
    let mut next = replaced(&launches, GALAXY_31, |l| l["date_utc"] = json!("TBD"));
    let mut no_pad = launch(
        "64000000000000000000000a",
        "No pad",
        pads::KSC_39A,
        "2049-11-20T10:00:00Z",
        "hour",
    );
    no_pad["launchpad"] = Value::Null;
    let weekly = launch(
        "64000000000000000000000b",
        "Weekly",
        pads::KSC_39A,
        "2049-11-21T10:00:00Z",
        "week",
    );
    let fine = launch(
        "64000000000000000000000c",
        "Fine",
        pads::VAFB_4E,
        "2049-11-22T18:00:00Z",
        "hour",
    );
    next.extend([no_pad, weekly, fine]);
    fake.serve(&next).await;
    let (status, report) = sync_over_http(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["launchesSeen"], 15);
    assert_eq!(report["launchesSkipped"], 3);
    assert_eq!(report["launchesAdded"], 1);
    assert_eq!(
        report["launchesRemoved"], 0,
        "an unreadable launch is not a removal"
    );
    assert_eq!(
        blocked_day(&app, GALAXY_31).await.unwrap().to_string(),
        "2049-11-08"
    );
    assert_eq!(
        blocked_day(&app, "64000000000000000000000c")
            .await
            .unwrap()
            .to_string(),
        "2049-11-22"
    );
}

#[tokio::test]
async fn a_truncated_or_inconsistent_answer_applies_nothing() {
    let fake = FakeSpaceX::start().await;
    let app = app_with(&fake, &[]).await;
    let launches = upcoming_2049();

    // Page 2 of 3 is cut short: page 1 must not be applied on its own.
    fake.server.reset().await;
    fake.serve_launchpads(recorded_launchpads()).await;
    let page2 = serde_json::to_string(&envelope(launches[5..10].to_vec(), 2, 3, 12)).unwrap();
    Mock::given(method("POST"))
        .and(path("/v4/launches/query"))
        .and(body_partial_json(json!({"options": {"page": 2}})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(page2[..page2.len() / 2].to_string(), "application/json"),
        )
        .with_priority(1)
        .mount(&fake.server)
        .await;
    fake.serve_launches(&launches, Duration::ZERO).await;
    let (status, body) = sync_over_http(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_body_unavailable(&body, "SPACEX_UNAVAILABLE");
    assert!(
        body["message"].as_str().unwrap().contains("page 2"),
        "{body}"
    );
    assert_eq!(app.count("SELECT count(*) FROM spacex_launches").await, 0);
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM sync_state WHERE resource = 'spacex_launches'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(last_error.unwrap().contains("not the expected JSON"));

    // The pages hold fewer launches than SpaceX counts: the data changed while we
    // paged, and a launch we missed would look cancelled.
    fake.server.reset().await;
    fake.serve_launchpads(recorded_launchpads()).await;
    let mut short = envelope(launches[..5].to_vec(), 1, 1, 5);
    short["totalDocs"] = json!(6);
    Mock::given(method("POST"))
        .and(path("/v4/launches/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(short))
        .mount(&fake.server)
        .await;
    let (status, body) = sync_over_http(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_body_unavailable(&body, "SPACEX_UNAVAILABLE");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("changed while paging"));

    // A whole answer applies, and clears the error.
    fake.serve(&launches).await;
    let (status, _) = sync_over_http(&app).await;
    assert_eq!(status, 200);
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM sync_state WHERE resource = 'spacex_launches'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(last_error, None);
}

#[tokio::test]
async fn a_5xx_is_retried_and_then_succeeds() {
    let fake = FakeSpaceX::start().await;
    fake.serve(&upcoming_2049()).await;
    Mock::given(method("POST"))
        .and(path("/v4/launches/query"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let app = app_with(&fake, &[("SPACEX_RETRIES", "2")]).await;
    let (status, report) = sync_over_http(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["launchesAdded"], 12);
    // Two 503s, then the three pages.
    assert_eq!(fake.requests("/launches/query").await, 5);
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let fake = FakeSpaceX::start().await;
    fake.serve_launchpads(recorded_launchpads()).await;
    Mock::given(method("POST"))
        .and(path("/v4/launches/query"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&fake.server)
        .await;
    let app = app_with(&fake, &[("SPACEX_RETRIES", "3")]).await;
    let (status, body) = sync_over_http(&app).await;
    assert_eq!(status, 503);
    assert_body_unavailable(&body, "SPACEX_UNAVAILABLE");
    assert!(body["message"].as_str().unwrap().contains("HTTP 404"));
    assert_eq!(fake.requests("/launches/query").await, 1);
}

/// AIP-193: every UNAVAILABLE carries retry advice, over gRPC as a `RetryInfo`,
/// over HTTP also as `Retry-After` with the same seconds.
#[tokio::test]
async fn a_sync_spacex_refuses_is_unavailable_with_retry_info_and_retry_after() {
    let fake = FakeSpaceX::start().await;
    fake.server.reset().await;
    fake.serve_launchpads(recorded_launchpads()).await;
    Mock::given(method("POST"))
        .and(path("/v4/launches/query"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&fake.server)
        .await;
    let app = app_with(&fake, &[]).await;

    let status = app
        .grpc()
        .await
        .trigger_sync(TriggerSyncRequest::default())
        .await
        .unwrap_err();
    assert_unavailable(&status, "SPACEX_UNAVAILABLE");

    let response = app
        .client
        .post(app.url("/v1/admin/sync"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_body_unavailable(&body, "SPACEX_UNAVAILABLE");
    assert_eq!(
        body["details"][0],
        json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"})
    );
}

#[tokio::test]
async fn a_spacex_that_does_not_answer_in_time_is_retried_then_reported() {
    let fake = FakeSpaceX::start().await;
    fake.server.reset().await;
    fake.serve_launchpads(recorded_launchpads()).await;
    fake.serve_launches(&upcoming_2049(), Duration::from_secs(3))
        .await;
    let app = app_with(
        &fake,
        &[("SPACEX_TIMEOUT", "200ms"), ("SPACEX_RETRIES", "1")],
    )
    .await;
    let started = Instant::now();
    let status = app
        .grpc()
        .await
        .trigger_sync(TriggerSyncRequest::default())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Code::Unavailable);
    assert_unavailable(&status, "SPACEX_UNAVAILABLE");
    assert!(
        status.message().contains("no answer within 200ms"),
        "{}",
        status.message()
    );
    assert_eq!(fake.requests("/launches/query").await, 2);
}

#[tokio::test]
async fn two_instances_syncing_at_the_same_moment_apply_it_once() {
    let fake = FakeSpaceX::start().await;
    let first = app_with(&fake, &[]).await;
    let second = replica(&first, &fake).await;
    fake.serve(&[]).await;
    for _ in 0..4 {
        first
            .book_ok(pads::CCSFS_40, "2049-11-02", Destination::Mars)
            .await;
    }
    // Both fetch at once (SpaceX answers slowly), then both try to apply.
    fake.server.reset().await;
    fake.serve_launchpads(recorded_launchpads()).await;
    fake.serve_launches(&upcoming_2049(), Duration::from_millis(300))
        .await;
    let (a, b) = tokio::join!(spacex::step(&first.sync), spacex::step(&second.sync));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [a.applied(), b.applied()].iter().filter(|x| **x).count(),
        1,
        "{a:?}\n{b:?}"
    );
    let skipped = if a.applied() { &b } else { &a };
    assert!(matches!(
        skipped.skipped,
        Some(SkipReason::Fresh | SkipReason::Locked)
    ));
    let events = first
        .count("SELECT count(*) FROM outbox WHERE event_type = 'TicketCancelled'")
        .await;
    assert_eq!(events, 4);

    // Within the interval, scheduled syncs do not even call SpaceX.
    let calls = fake.requests("/launches/query").await;
    let (a, b) = tokio::join!(spacex::step(&first.sync), spacex::step(&second.sync));
    assert_eq!(a.unwrap().skipped, Some(SkipReason::Fresh));
    assert_eq!(b.unwrap().skipped, Some(SkipReason::Fresh));
    assert_eq!(fake.requests("/launches/query").await, calls);
}

#[tokio::test]
async fn a_replica_whose_fetch_ends_after_another_applied_does_not_apply_again() {
    // Same data, but the second replica's SpaceX answers later: it reaches the
    // apply transaction after the first one has committed, lock free again.
    let (fast, slow) = (FakeSpaceX::start().await, FakeSpaceX::start().await);
    let first = app_with(&fast, &[]).await;
    let second = replica(&first, &slow).await;
    first
        .book_ok(pads::CCSFS_40, "2049-11-02", Destination::Mars)
        .await;
    fast.serve(&upcoming_2049()).await;
    slow.server.reset().await;
    slow.serve_launchpads(recorded_launchpads()).await;
    slow.serve_launches(&upcoming_2049(), Duration::from_millis(700))
        .await;

    let (a, b) = tokio::join!(spacex::step(&first.sync), spacex::step(&second.sync));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.applied(), "{a:?}");
    assert_eq!(a.tickets_cancelled, 1);
    assert_eq!(b.skipped, Some(SkipReason::Fresh), "{b:?}");
    assert!(slow.requests("/launches/query").await > 0, "it did fetch");
    let events = first
        .count("SELECT count(*) FROM outbox WHERE event_type = 'TicketCancelled'")
        .await;
    assert_eq!(events, 1);
}

/// Confirmed tickets on a pad and day an upcoming SpaceX launch blocks.
async fn confirmed_on_blocked_days(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM tickets t
         JOIN spacex_launches s ON s.launchpad_id = t.launchpad_id AND s.blocked_day = t.launch_day
         WHERE s.upcoming AND t.status = 'CONFIRMED'",
    )
    .await
}

#[tokio::test]
async fn bookings_racing_a_sync_never_leave_a_confirmed_ticket_on_a_spacex_day() {
    let fake = FakeSpaceX::start().await;
    let app = app_with(&fake, &[]).await;
    let on_the_2nd = upcoming_2049();
    let elsewhere = replaced(&on_the_2nd, HOTBIRD_13G, |l| {
        l["date_utc"] = json!("2049-11-20T15:00:00.000Z");
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let mut bookers = Vec::new();
    for _ in 0..6 {
        let (stop, grpc) = (stop.clone(), app.grpc().await);
        bookers.push(tokio::spawn(async move {
            let mut grpc = grpc;
            let mut booked = 0;
            while !stop.is_cancelled() {
                let request = booking_request(pads::CCSFS_40, "2049-11-02", Destination::Mars);
                if grpc.launch_booking(request).await.is_ok() {
                    booked += 1;
                }
            }
            booked
        }));
    }
    // SpaceX moves Hotbird 13G onto the bookers' day and away again, 15 times.
    for _ in 0..15 {
        fake.serve(&elsewhere).await;
        sync_over_http(&app).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        fake.serve(&on_the_2nd).await;
        let (status, report) = sync_over_http(&app).await;
        assert_eq!(status, 200, "{report}");
        // Bookings still running: any that passed its check before the sync
        // committed must have been seen and cancelled by it.
        assert_eq!(confirmed_on_blocked_days(&app).await, 0, "{report}");
    }
    stop.cancel();
    let mut booked = 0;
    for booker in bookers {
        booked += booker.await.unwrap();
    }
    assert!(
        booked > 15,
        "the bookers got through between syncs: {booked}"
    );
    assert_eq!(confirmed_on_blocked_days(&app).await, 0);
}

#[tokio::test]
async fn launchpads_are_refreshed_when_older_than_their_max_age() {
    let fake = FakeSpaceX::start().await;
    // SpaceX finished STLS and built a new pad.
    let mut launchpads = recorded_launchpads();
    for pad in launchpads.as_array_mut().unwrap() {
        if pad["id"] == pads::STLS {
            pad["status"] = json!("active");
        }
    }
    let mut new_pad = launchpads[1].clone();
    new_pad["id"] = json!("64aaaaaaaaaaaaaaaaaaaaaa");
    new_pad["name"] = json!("SLC 37");
    new_pad["status"] = json!("under construction");
    launchpads.as_array_mut().unwrap().push(new_pad);
    fake.server.reset().await;
    fake.serve_launchpads(launchpads).await;
    fake.serve_launches(&upcoming_2049(), Duration::ZERO).await;
    let app = app_with(&fake, &[("LAUNCHPADS_MAX_AGE", "24h")]).await;

    let report = spacex::step(&app.sync).await.unwrap();
    assert!(report.applied());
    assert_eq!(report.launchpads_updated, 1);
    assert_eq!(report.launchpads_added, 1);
    let stls: String = sqlx::query_scalar("SELECT status FROM launchpads WHERE id = $1")
        .bind(pads::STLS)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stls, "active");
    app.book_ok(pads::STLS, "2049-07-01", Destination::Mars)
        .await;

    // An hour later the launches are due again, the launchpads are not.
    let start = app.clock.now();
    app.clock.set(start + chrono::Duration::hours(1));
    assert!(spacex::step(&app.sync).await.unwrap().applied());
    assert_eq!(fake.requests("/launchpads").await, 1);
    app.clock.set(start + chrono::Duration::hours(25));
    assert!(spacex::step(&app.sync).await.unwrap().applied());
    assert_eq!(fake.requests("/launchpads").await, 2);
}

#[tokio::test]
async fn an_unreachable_spacex_leaves_the_service_up_and_degraded_until_a_sync_succeeds() {
    let fake = FakeSpaceX::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake.server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake.server)
        .await;
    let app = app_with(
        &fake,
        &[
            ("SPACEX_SYNC_ENABLED", "true"),
            ("ORCHESTRATOR_INTERVAL", "200ms"),
            ("SPACEX_RETRIES", "0"),
        ],
    )
    .await;
    let liveness = || app.get_json("/liveness");
    let degraded = poll(Duration::from_secs(20), || async {
        liveness().await.1["checks"]["spacex"]["status"] == "degraded"
            && liveness().await.1["checks"]["spacex"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("HTTP 503"))
    })
    .await;
    assert!(degraded, "{}", liveness().await.1);
    let (status, body) = liveness().await;
    assert_eq!(status, 200, "degraded does not fail the probe: {body}");
    assert_eq!(body["status"], "healthy");
    assert!(body["checks"]["spacex"]["last_error_age_seconds"].is_number());
    // Serving from the seeded launchpads meanwhile.
    app.book_ok(pads::KSC_39A, "2049-11-01", Destination::Mars)
        .await;

    // SpaceX comes back; the schedule retries on its own.
    fake.serve(&upcoming_2049()).await;
    let healthy = poll(Duration::from_secs(20), || async {
        liveness().await.1["checks"]["spacex"]["status"] == "healthy"
    })
    .await;
    assert!(healthy, "{}", liveness().await.1);
    assert_eq!(app.count("SELECT count(*) FROM spacex_launches").await, 12);
    // USSF-44 took the 1st at KSC from under our flight.
    let cancelled = app
        .count("SELECT count(*) FROM tickets WHERE cancellation_reason = 'SPACEX_CONFLICT'")
        .await;
    assert_eq!(cancelled, 1);
}
