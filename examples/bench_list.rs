//! List benchmark (issues 16 and 21): `GET /v1/bookings` pages over 999,900
//! tickets, with every filter (issue 21's table) and the Go service's substring
//! filters, next to the unfiltered first page, in one run.
//!
//! `cargo run --release --example bench_list [-- REQUESTS_PER_CASE]`
//!
//! Starts its own PostgreSQL (embedded, fsync off) and the service in-process on
//! free ports, seeds 9,999 flights × 100 tickets with SQL (`generate_series`),
//! `ANALYZE`s, then sends each case's request sequentially from one client
//! (after a warm-up) and prints p50/p99 and the ratio of p99 to the first page's.

use std::time::{Duration, Instant};

use spacet::{
    app::App,
    clock::Clock,
    config::{Database, Settings},
    embedded_pg::EmbeddedPostgres,
};

/// Flights on three pads, one a day, each weekday its own destination; 100 tickets
/// each, booked in launch-day order (created_at follows launch_day, as when
/// tickets are booked shortly before their flights). Names are built from
/// syllables (about 8,000 last names); one ticket in 100,000 is "Zyxwvut" (a rare
/// name); one flight in 100 is cancelled whole (1 % of the tickets), so most days
/// have no cancelled ticket.
const SEED: &str = r#"
INSERT INTO flights (id, launchpad_id, launch_day, destination, seats, seats_booked)
SELECT gen_random_uuid(), pad, day::date,
       (ARRAY['MARS','MOON','PLUTO','ASTEROID_BELT','EUROPA','TITAN','GANYMEDE'])[extract(isodow FROM day)::int],
       100, 100
FROM unnest(ARRAY['5e9e4502f509094188566f88','5e9e4501f509094ba4566f84','5e9e4502f509092b78566f87']) AS pad,
     generate_series(DATE '2050-01-03', DATE '2050-01-03' + 3332, interval '1 day') AS day;

WITH f AS (
  SELECT id, launchpad_id, launch_day, destination,
         row_number() OVER (ORDER BY launch_day, launchpad_id) - 1 AS k
  FROM flights
),
t AS (
  SELECT f.*, f.k * 100 + s AS i FROM f, generate_series(0, 99) AS s
)
INSERT INTO tickets (id, flight_id, first_name, last_name, gender, birthday, launchpad_id,
                     launch_day, destination, status, cancellation_reason, created_at, updated_at)
SELECT gen_random_uuid(), t.id,
       (ARRAY['Ada','Grace','Alan','Katherine','Yuri','Valentina','Neil','Sally','Mae','Chris',
              'Tim','Peggy','John','Eileen','Buzz','Mary','Gene','Helen','Jim','Judith'])[1 + (t.i * 7919) % 20],
       CASE WHEN t.i % 100000 = 7 THEN 'Zyxwvut'
            ELSE initcap((ARRAY['ka','lo','mi','ne','ro','sa','ti','vo','be','da','ge','hu','ja','ko','lu','ma','no','pe','ri','su'])[1 + (t.i * 31) % 20]
                      || (ARRAY['ven','lan','son','ter','mer','vik','dor','bel','nis','rak','tov','zen','wel','kin','mar','pol','ros','tan','ler','fin'])[1 + (t.i * 17) % 20]
                      || (ARRAY['','a','o','e','i','u','ez','ov','en','er','is','as','ut','ic','ar','el','um','ix','ay','ot'])[1 + (t.i * 13) % 20])
       END,
       'FEMALE', DATE '1950-01-01' + (t.i % 18000)::int, t.launchpad_id, t.launch_day, t.destination,
       CASE WHEN t.k % 100 = 42 THEN 'CANCELLED' ELSE 'CONFIRMED' END,
       CASE WHEN t.k % 100 = 42 THEN 'USER_REQUESTED' END,
       TIMESTAMPTZ '2026-01-01 00:00:00Z' + t.i * interval '1 millisecond',
       TIMESTAMPTZ '2026-01-01 00:00:00Z' + t.i * interval '1 millisecond'
FROM t;

-- What bookings keep: each flight's first booking time.
UPDATE flights f SET first_booked_at = t.first
FROM (SELECT flight_id, min(created_at) AS first FROM tickets GROUP BY flight_id) t
WHERE t.flight_id = f.id;
"#;

/// A pad (KSC LC 39A), a day with 300 tickets and no cancelled one, in the middle
/// of the table, and the last 30 of the seeded days.
const CASES: &[(&str, &str)] = &[
    ("first page, no filter", "limit=20"),
    (
        "a cursor 900,000 tickets deep",
        "limit=20&cursor=CURSOR_900K",
    ),
    (
        "launchpadId (whole id)",
        "limit=20&launchpadId=5e9e4502f509094188566f88",
    ),
    (
        "launchpadId + launchDateFrom (mid-table)",
        "limit=20&launchpadId=5e9e4502f509094188566f88&launchDateFrom=2054-07-01T00:00:00Z",
    ),
    (
        "launchpadId + launchDateFrom (last 30 days)",
        "limit=20&launchpadId=5e9e4502f509094188566f88&launchDateFrom=2059-01-19T00:00:00Z",
    ),
    (
        "launchDateFrom + launchDateTo, one day",
        "limit=20&launchDateFrom=2054-07-01T00:00:00Z&launchDateTo=2054-07-01T00:00:00Z",
    ),
    (
        "launchpadId + one day",
        "limit=20&launchpadId=5e9e4502f509094188566f88&launchDateFrom=2054-07-01T00:00:00Z&launchDateTo=2054-07-01T00:00:00Z",
    ),
    (
        "launchDateFrom + launchDateTo, 7 days",
        "limit=20&launchDateFrom=2054-07-01T00:00:00Z&launchDateTo=2054-07-07T00:00:00Z",
    ),
    (
        "launchDateFrom + launchDateTo, 31 days",
        "limit=20&launchDateFrom=2054-07-01T00:00:00Z&launchDateTo=2054-07-31T00:00:00Z",
    ),
    ("ticketStatus=CANCELLED (1 %)", "limit=20&ticketStatus=CANCELLED"),
    (
        "status=CANCELLED, one day with none",
        "limit=20&status=CANCELLED&launchDateFrom=2054-07-01T00:00:00Z&launchDateTo=2054-07-01T00:00:00Z",
    ),
    (
        "status=CANCELLED + pad + day, none",
        "limit=20&status=CANCELLED&launchpadId=5e9e4502f509094188566f88&launchDateFrom=2054-07-01T00:00:00Z&launchDateTo=2054-07-01T00:00:00Z",
    ),
    (
        "Go: destination=moon&status=scheduled",
        "limit=20&destination=moon&status=scheduled&_=1",
    ),
    ("Go: status=cancelled (1 %)", "limit=20&status=cancelled"),
    (
        "Go: launchpad_id substring",
        "limit=20&launchpad_id=f509094188",
    ),
    ("Go: last_name common substring", "limit=20&last_name=son"),
    (
        "Go: last_name rare (10 tickets)",
        "limit=20&last_name=zyxwv",
    ),
    ("Go: first_name=ada", "limit=20&first_name=ada"),
    (
        "Go: last_name rare + first_name",
        "limit=20&last_name=zyxwv&first_name=een",
    ),
    ("Go: last_name 2 letters, common", "limit=20&last_name=ma"),
    ("Go: last_name 2 letters, no match", "limit=20&last_name=qq"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    spacet::telemetry::init("warn", spacet::config::LogFormat::Pretty);
    let dir = tempfile::tempdir()?;
    let pg = EmbeddedPostgres::start(&dir.path().join("data"), true)?;
    let env = [
        ("HTTP_PORT", "0"),
        ("GRPC_PORT", "0"),
        ("ROCKETS_PORT", "0"),
        ("BIND_ADDRESS", "127.0.0.1"),
        ("LOG_LEVEL", "error"),
        ("SPACEX_SYNC_ENABLED", "false"),
        // Without tokens, as the Go service's clients: the service's own work is measured, not JWT checks.
        ("AUTH_MODE", "none"),
    ];
    let mut settings = Settings::load(None, |k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })?;
    settings.database = Database::External(Box::new(pg.connect_options()));
    let app = App::build(settings, Clock::fixed(chrono::Utc::now())).await?;
    let http_port = app.http_port();
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http_port}");
    while http
        .get(format!("{base}/readiness"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The seed runs longer than the service's PG_STATEMENT_TIMEOUT: its own pool.
    let pool = sqlx::PgPool::connect_with(pg.connect_options()).await?;
    let started = Instant::now();
    sqlx::raw_sql(SEED).execute(&pool).await?;
    // VACUUM cannot run in the seed's (implicit) transaction.
    for table in ["VACUUM ANALYZE flights", "VACUUM ANALYZE tickets"] {
        sqlx::raw_sql(table).execute(&pool).await?;
    }
    let tickets: i64 = sqlx::query_scalar!("SELECT count(*) AS \"n!\" FROM tickets")
        .fetch_one(&pool)
        .await?;
    println!(
        "seeded {tickets} tickets in {:.1} s (SQL, generate_series, then VACUUM ANALYZE)",
        started.elapsed().as_secs_f64()
    );

    println!(
        "SpaceT list benchmark: one client, {requests} sequential requests per case, limit 20"
    );
    let deep = sqlx::query!(
        "SELECT created_at, id FROM tickets ORDER BY created_at, id OFFSET 900000 LIMIT 1"
    )
    .fetch_one(&pool)
    .await?;
    let deep = spacet::booking::list::Cursor {
        created_at: deep.created_at,
        id: deep.id,
    }
    .encode();
    let mut first_p99 = None;
    for (label, query) in CASES {
        let query = query.replace("CURSOR_900K", &deep);
        let url = format!("{base}/v1/bookings?{query}");
        let mut found = 0;
        for _ in 0..requests.div_ceil(10) {
            let response = http.get(&url).send().await?;
            anyhow::ensure!(response.status() == 200, "{query}: {}", response.status());
            let body: serde_json::Value = response.json().await?;
            found = body["tickets"].as_array().map_or(0, Vec::len);
        }
        let mut latencies = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            let response = http.get(&url).send().await?;
            let status = response.status();
            response.bytes().await?;
            anyhow::ensure!(status == 200, "{query}: {status}");
            latencies.push(t.elapsed());
        }
        latencies.sort();
        let at = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let p99 = at(0.99);
        let base_p99 = *first_p99.get_or_insert(p99);
        println!(
            "{label:<40} p50 {:>8.2} ms  p99 {:>8.2} ms  p99/first page {:>6.1}  ({found} on the page)",
            ms(at(0.50)),
            ms(p99),
            p99.as_secs_f64() / base_p99.as_secs_f64(),
        );
    }
    shutdown.cancel();
    server.await??;
    Ok(())
}
