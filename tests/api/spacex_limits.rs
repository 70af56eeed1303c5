//! A hostile or broken SpaceX cannot blow up memory or wrongly cancel tickets: the
//! answer is read with a byte cap and a launch cap, the whole exchange with a
//! timeout, and a sync that would cancel too many tickets or free every blocked
//! day is held until an admin confirms it.
//!
//! The large and endless bodies come from a small hand-written fake (below), not
//! from wiremock: wiremock keeps a whole body in memory (and copies it per answer),
//! which would put 100 MB in this process whatever the client does and make the
//! peak-RSS figure meaningless. This fake writes its body as it goes, so the
//! process's memory shows what the client kept.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use spacet::proto::TriggerSyncRequest;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

use crate::helpers::{assert_body_unavailable, assert_unavailable, pads, poll, TestApp};

const LAUNCHPADS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/spacex/launchpads.json"
);
/// Launches per page of the fake (the client asks for 100).
const PER_PAGE: usize = 100;
const MIB: u64 = 1024 * 1024;

/// What the fake answers to `POST /launches/query`.
#[derive(Clone)]
enum Answer {
    /// These launches, 100 to a page.
    Launches(Vec<Value>),
    /// A chunked body of this many bytes (no `Content-Length`).
    Huge(usize),
    /// A chunked body that never ends, as fast as the client reads.
    Endless,
    /// A chunked body that never ends, 64 bytes every 100 ms.
    Slow,
}

/// A fake SpaceX v4 API under `/v4` that streams its answers.
struct StreamingSpaceX {
    url: String,
    answer: Arc<Mutex<Answer>>,
    queries: Arc<AtomicUsize>,
}

impl StreamingSpaceX {
    async fn start(answer: Answer) -> StreamingSpaceX {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v4", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(answer));
        let queries = Arc::new(AtomicUsize::new(0));
        let (shared, counter) = (answer.clone(), queries.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, counter) = (shared.clone(), counter.clone());
                // A write error is the client hanging up (it cut the body): done.
                tokio::spawn(async move {
                    let _ = serve(stream, answer, counter).await;
                });
            }
        });
        StreamingSpaceX {
            url,
            answer,
            queries,
        }
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

async fn serve(
    mut stream: TcpStream,
    answer: Arc<Mutex<Answer>>,
    queries: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request: Value =
        serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    if head.starts_with("GET /v4/launchpads ") {
        let body = std::fs::read(LAUNCHPADS)?;
        return write_whole(&mut stream, &body).await;
    }
    if !head.starts_with("POST /v4/launches/query ") {
        return stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    }
    queries.fetch_add(1, Ordering::Relaxed);
    let answer = answer.lock().unwrap().clone();
    match answer {
        Answer::Launches(launches) => {
            let page = request["options"]["page"].as_u64().unwrap_or(1) as usize;
            let pages = launches.len().div_ceil(PER_PAGE).max(1);
            let docs: Vec<&Value> = launches
                .iter()
                .skip((page - 1) * PER_PAGE)
                .take(PER_PAGE)
                .collect();
            let body = json!({
                "docs": docs, "totalDocs": launches.len(), "limit": PER_PAGE,
                "totalPages": pages, "page": page, "hasNextPage": page < pages,
            });
            write_whole(&mut stream, body.to_string().as_bytes()).await
        }
        Answer::Huge(total) => {
            stream_body(&mut stream, Some(total), Duration::ZERO, 64 * 1024).await
        }
        Answer::Endless => stream_body(&mut stream, None, Duration::ZERO, 64 * 1024).await,
        Answer::Slow => stream_body(&mut stream, None, Duration::from_millis(100), 64).await,
    }
}

async fn write_whole(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await
}

/// `{"docs":[` then launch documents, chunk after chunk, up to `total` bytes or
/// forever; only one chunk is ever in memory.
async fn stream_body(
    stream: &mut TcpStream,
    total: Option<usize>,
    pause: Duration,
    chunk_size: usize,
) -> std::io::Result<()> {
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await?;
    let doc = launch(
        0,
        pads::KSC_39A,
        NaiveDate::from_ymd_opt(2050, 1, 1).unwrap(),
    )
    .to_string()
        + ",";
    let mut data = b"{\"docs\":[".to_vec();
    while data.len() < chunk_size {
        data.extend_from_slice(doc.as_bytes());
    }
    data.truncate(chunk_size);
    let mut sent = 0;
    while total.is_none_or(|t| sent < t) {
        let frame = [format!("{:x}\r\n", data.len()).as_bytes(), &data, b"\r\n"].concat();
        stream.write_all(&frame).await?;
        sent += data.len();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    stream.write_all(b"0\r\n\r\n").await
}

/// A launch document with the fields the client reads, at 15:00 UTC (the same
/// local day at every American pad).
fn launch(n: u64, pad: &str, day: NaiveDate) -> Value {
    let at = Utc.from_utc_datetime(&day.and_hms_opt(15, 0, 0).unwrap());
    json!({
        "id": format!("{:024x}", 0x6400_0000u64 + n),
        "name": format!("Starlink limits-{n}"),
        "launchpad": pad,
        "date_utc": at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "date_precision": "hour",
        "upcoming": true,
    })
}

const ACTIVE_PADS: [&str; 3] = [pads::KSC_39A, pads::CCSFS_40, pads::VAFB_4E];
const DESTINATIONS: [&str; 7] = [
    "MARS",
    "MOON",
    "PLUTO",
    "ASTEROID_BELT",
    "EUROPA",
    "TITAN",
    "GANYMEDE",
];

/// Seeds `flights` full flights of 100 tickets with SQL (one per pad and day from
/// 2049-01-01, the destination by weekday so no week repeats one); returns each
/// flight's pad and day.
async fn seed_full_flights(app: &TestApp, flights: usize) -> Vec<(&'static str, NaiveDate)> {
    let first = NaiveDate::from_ymd_opt(2049, 1, 1).unwrap();
    let rows: Vec<(&str, NaiveDate, &str)> = (0..flights)
        .map(|i| {
            let day = first + chrono::Days::new((i / ACTIVE_PADS.len()) as u64);
            let destination = DESTINATIONS[day.weekday().num_days_from_monday() as usize];
            (ACTIVE_PADS[i % ACTIVE_PADS.len()], day, destination)
        })
        .collect();
    sqlx::query(
        "INSERT INTO flights (id, launchpad_id, launch_day, destination, seats, seats_booked)
         SELECT gen_random_uuid(), pad, day, destination, 100, 100
         FROM UNNEST($1::text[], $2::date[], $3::text[]) AS f(pad, day, destination)",
    )
    .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tickets (id, flight_id, first_name, last_name, gender, birthday, launchpad_id, launch_day, destination)
         SELECT gen_random_uuid(), f.id, 'Ada', 'Lovelace ' || n, 'FEMALE', DATE '1990-12-01',
                f.launchpad_id, f.launch_day, f.destination
         FROM flights f CROSS JOIN generate_series(1, 100) AS n",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    rows.into_iter().map(|(pad, day, _)| (pad, day)).collect()
}

/// The value of one series on `/metrics` (0 when absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A field of `/proc/self/status`, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix(" kB")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

async fn spacex_liveness(app: &TestApp) -> Value {
    app.get_json("/liveness").await.1["checks"]["spacex"].clone()
}

async fn confirmed_tickets(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM tickets WHERE status = 'CONFIRMED'")
        .await
}

const BYTES_CUT: &str = "spacet_spacex_response_limit_total{limit=\"bytes\"}";
const TIMED_OUT: &str = "spacet_spacex_response_limit_total{limit=\"time\"}";
const HELD: &str = "spacet_spacex_sync_runs_total{result=\"held\"}";

#[tokio::test]
async fn a_hostile_spacex_cancels_nothing_and_a_held_sync_applies_once_confirmed() {
    // Five launches in 2050 block five days on which nobody flies.
    let anchors: Vec<Value> = (0..5)
        .map(|n| {
            let day = NaiveDate::from_ymd_opt(2050, 3, 1).unwrap() + chrono::Days::new(n);
            launch(100_000 + n, pads::KSC_39A, day)
        })
        .collect();
    let fake = StreamingSpaceX::start(Answer::Launches(anchors.clone())).await;
    let app = TestApp::spawn_with(&[
        ("SPACEX_API_URL", fake.url.as_str()),
        // The schedule runs once at start-up (the anchors), then not again here.
        ("SPACEX_SYNC_ENABLED", "true"),
        ("ORCHESTRATOR_INTERVAL", "100h"),
        ("SPACEX_TIMEOUT", "2s"),
        ("SPACEX_RETRIES", "0"),
    ])
    .await;
    let synced = poll(Duration::from_secs(20), || async {
        spacex_liveness(&app).await["status"] == "healthy"
    })
    .await;
    assert!(synced, "{}", spacex_liveness(&app).await);
    let flights = seed_full_flights(&app, 100).await;
    assert_eq!(confirmed_tickets(&app).await, 10_000);
    let mut grpc = app.grpc().await;

    // 1. 100 MB, then an endless body: cut at SPACEX_MAX_RESPONSE_BYTES (16 MiB).
    // Resetting the peak RSS ("5" to clear_refs) measures this part alone.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = proc_status_kib("VmRSS:");
    for (answer, what) in [
        (Answer::Huge(100 * MIB as usize), "100 MB"),
        (Answer::Endless, "endless"),
    ] {
        fake.answer(answer);
        let cuts = metric(&app, BYTES_CUT).await;
        let status = grpc
            .trigger_sync(TriggerSyncRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
        assert_unavailable(&status, "SPACEX_UNAVAILABLE");
        assert!(
            status.message().contains("larger than 16777216 bytes"),
            "{what}: {}",
            status.message()
        );
        let liveness = spacex_liveness(&app).await;
        assert_eq!(liveness["status"], "degraded", "{what}: {liveness}");
        assert!(
            liveness["last_error"]
                .as_str()
                .unwrap()
                .contains("SPACEX_MAX_RESPONSE_BYTES"),
            "{what}: {liveness}"
        );
        assert!(metric(&app, BYTES_CUT).await > cuts, "{what}");
        assert_eq!(confirmed_tickets(&app).await, 10_000, "{what}");
    }
    let peak = proc_status_kib("VmHWM:");
    let growth_mib = peak.saturating_sub(rss_before) as f64 / 1024.0;
    println!(
        "spacex limits: peak RSS {:.1} MiB (VmHWM{}), RSS before {:.1} MiB, growth {growth_mib:.1} MiB while SpaceX sent 100 MB and an endless body",
        peak as f64 / 1024.0,
        if reset { ", reset before" } else { ", since the process started" },
        rss_before as f64 / 1024.0,
    );
    // Reading either body whole would take more than 100 MiB; the cap keeps one
    // answer of 16 MiB at most. 64 MiB leaves room for the other tests of this
    // process running meanwhile.
    if reset {
        assert!(growth_mib < 64.0, "peak RSS grew by {growth_mib:.1} MiB");
    } else {
        assert!(peak < 512 * 1024, "peak RSS {peak} KiB");
    }

    // 2. A slow endless body: cut by SPACEX_TIMEOUT.
    fake.answer(Answer::Slow);
    let timeouts = metric(&app, TIMED_OUT).await;
    let status = grpc
        .trigger_sync(TriggerSyncRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_unavailable(&status, "SPACEX_UNAVAILABLE");
    assert!(
        status.message().contains("no answer within 2s"),
        "{}",
        status.message()
    );
    let liveness = spacex_liveness(&app).await;
    assert!(
        liveness["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within 2s"),
        "{liveness}"
    );
    assert!(metric(&app, TIMED_OUT).await > timeouts);
    assert_eq!(confirmed_tickets(&app).await, 10_000);

    // 3. A consistent answer that would cancel all 10,000 tickets: held.
    let mut doomsday = anchors.clone();
    doomsday.extend(
        flights
            .iter()
            .enumerate()
            .map(|(n, (pad, day))| launch(n as u64, pad, *day)),
    );
    fake.answer(Answer::Launches(doomsday));
    let held = metric(&app, HELD).await;
    let report = grpc
        .trigger_sync(TriggerSyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!report.applied, "{report:?}");
    assert_eq!(report.skipped_reason, "held");
    assert_eq!(report.tickets_to_cancel, 10_000);
    assert_eq!(report.flights_to_cancel, 100);
    assert_eq!(report.tickets_cancelled, 0);
    assert!(
        report
            .held_reason
            .contains("SPACEX_MAX_CANCELLATIONS (500)"),
        "{}",
        report.held_reason
    );
    assert_eq!(confirmed_tickets(&app).await, 10_000);
    assert_eq!(
        app.count("SELECT count(*) FROM spacex_launches").await,
        5,
        "nothing of a held sync is written"
    );
    let liveness = spacex_liveness(&app).await;
    assert_eq!(liveness["status"], "degraded", "{liveness}");
    assert_eq!(liveness["held"], true, "{liveness}");
    assert!(liveness["last_error"]
        .as_str()
        .unwrap()
        .contains("10000 tickets"));
    assert!(metric(&app, HELD).await > held);

    // 4. An empty but consistent answer while we block five days: held.
    fake.answer(Answer::Launches(Vec::new()));
    let held = metric(&app, HELD).await;
    let (status, report) = app.post_json("/v1/admin/sync", &json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], false);
    assert_eq!(report["skippedReason"], "held");
    assert!(
        report["heldReason"]
            .as_str()
            .unwrap()
            .contains("free all 5 days"),
        "{report}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM spacex_launches WHERE upcoming")
            .await,
        5
    );
    let liveness = spacex_liveness(&app).await;
    assert!(
        liveness["last_error"]
            .as_str()
            .unwrap()
            .contains("free all 5 days"),
        "{liveness}"
    );
    assert!(metric(&app, HELD).await > held);
    assert_eq!(confirmed_tickets(&app).await, 10_000);

    // 5. The admin confirms: the large cancellation applies.
    fake.answer(Answer::Launches(
        anchors
            .into_iter()
            .chain(
                flights
                    .iter()
                    .enumerate()
                    .map(|(n, (pad, day))| launch(n as u64, pad, *day)),
            )
            .collect(),
    ));
    let report = grpc
        .trigger_sync(TriggerSyncRequest { confirm: true })
        .await
        .unwrap()
        .into_inner();
    assert!(report.applied, "{report:?}");
    assert_eq!(report.tickets_cancelled, 10_000);
    assert_eq!(report.flights_cancelled, 100);
    assert_eq!(confirmed_tickets(&app).await, 0);
    let liveness = spacex_liveness(&app).await;
    assert_eq!(liveness["status"], "healthy", "{liveness}");
    println!(
        "spacex limits: {} launch queries served; confirmed sync cancelled {} tickets in {:.0} ms (apply {:.0} ms)",
        fake.queries.load(Ordering::Relaxed),
        report.tickets_cancelled,
        report.duration_seconds * 1000.0,
        report.apply_duration_seconds * 1000.0
    );
}

#[tokio::test]
async fn concurrent_forced_syncs_fetch_once_and_share_the_report() {
    let spacex = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v4/launchpads"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(std::fs::read_to_string(LAUNCHPADS).unwrap()),
        )
        .mount(&spacex)
        .await;
    let docs: Vec<Value> = (0..3)
        .map(|n| {
            launch(
                n,
                pads::CCSFS_40,
                NaiveDate::from_ymd_opt(2049, 5, 1 + n as u32).unwrap(),
            )
        })
        .collect();
    Mock::given(method("POST"))
        .and(path("/v4/launches/query"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"docs": docs, "totalDocs": 3, "hasNextPage": false}))
                // Long enough for every request to arrive while the first fetches.
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&spacex)
        .await;
    let url = format!("{}/v4", spacex.uri());
    let app = TestApp::spawn_with(&[("SPACEX_API_URL", url.as_str())]).await;

    let empty = json!({});
    let reports =
        futures::future::join_all((0..5).map(|_| app.post_json("/v1/admin/sync", &empty))).await;
    for (status, report) in &reports {
        assert_eq!(*status, 200, "{report}");
        assert_eq!(report["applied"], true, "{report}");
        assert_eq!(report["launchesAdded"], 3, "the same report: {report}");
    }
    let joined = reports.iter().filter(|(_, r)| r["joined"] == true).count();
    let requests = spacex.received_requests().await.unwrap();
    let queries = requests
        .iter()
        .filter(|r| r.url.path() == "/v4/launches/query")
        .count();
    println!("single flight: 5 forced syncs at once, {joined} joined, {queries} launch queries");
    assert_eq!(joined, 4);
    assert_eq!(queries, 1);
}

#[tokio::test]
async fn plain_http_needs_allow_http_and_a_redirect_to_another_scheme_is_refused() {
    let error = spacet::config::Settings::load(None, |k| {
        (k == "SPACEX_API_URL").then(|| "http://spacex.example/v4".to_string())
    })
    .unwrap_err();
    assert!(error.to_string().contains("SPACEX_API_URL"), "{error}");

    let spacex = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v4/launches/query"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", "https://127.0.0.1:9/v4/launches/query"),
        )
        .mount(&spacex)
        .await;
    Mock::given(method("GET"))
        .and(path("/v4/launchpads"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(std::fs::read_to_string(LAUNCHPADS).unwrap()),
        )
        .mount(&spacex)
        .await;
    let url = format!("{}/v4", spacex.uri());
    let app =
        TestApp::spawn_with(&[("SPACEX_API_URL", url.as_str()), ("SPACEX_RETRIES", "2")]).await;
    let (status, body) = app.post_json("/v1/admin/sync", &json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert_body_unavailable(&body, "SPACEX_UNAVAILABLE");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("refusing a redirect from http to https"),
        "{body}"
    );
    let queries = spacex
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v4/launches/query")
        .count();
    assert_eq!(queries, 1, "a refused redirect is not retried");
}

#[tokio::test]
async fn more_launches_than_spacex_max_launches_apply_nothing() {
    let fake = StreamingSpaceX::start(Answer::Launches(
        (0..5)
            .map(|n| {
                let day = NaiveDate::from_ymd_opt(2049, 6, 1).unwrap() + chrono::Days::new(n);
                launch(n, pads::VAFB_4E, day)
            })
            .collect(),
    ))
    .await;
    let app = TestApp::spawn_with(&[
        ("SPACEX_API_URL", fake.url.as_str()),
        ("SPACEX_MAX_LAUNCHES", "3"),
    ])
    .await;
    const TOO_MANY: &str = "spacet_spacex_response_limit_total{limit=\"launches\"}";
    let refused = metric(&app, TOO_MANY).await;
    let (status, body) = app.post_json("/v1/admin/sync", &json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert_body_unavailable(&body, "SPACEX_UNAVAILABLE");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("more than 3 launches (SPACEX_MAX_LAUNCHES)"),
        "{body}"
    );
    assert_eq!(app.count("SELECT count(*) FROM spacex_launches").await, 0);
    assert!(metric(&app, TOO_MANY).await > refused);
}
