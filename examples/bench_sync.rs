//! Benchmark: one SpaceX sync of 200 upcoming launches colliding with 10,000 booked
//! tickets, fetch + apply and apply alone.
//!
//! ```text
//! cargo run --release --example bench_sync [-- --runs 5]
//! ```
//!
//! Starts its own throwaway PostgreSQL (system binaries, like the tests) and a fake
//! SpaceX (wiremock) serving 200 launches in the recorded v4 document shape, two
//! pages of 100. The database holds 400 flights with 50 tickets each on the three
//! active pads: 200 flights (10,000 tickets) on the days the launches take, 200
//! (10,000 tickets) on other days that must be left alone. Each run restores the
//! bookings, empties the SpaceX tables and the outbox, `VACUUM ANALYZE`s, then times
//! one forced sync; a sync with nothing to change is timed after it.
//! `BENCH_LOG=spacet::spacex=debug` shows the time of each cancellation statement.

use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use spacet::{clock::Clock, config::Settings, embedded_pg::EmbeddedPostgres, spacex::SyncDeps};
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::{
    matchers::{body_partial_json, method, path},
    Mock, MockServer, ResponseTemplate,
};

const PADS: [&str; 3] = [
    "5e9e4502f509094188566f88", // KSC LC 39A
    "5e9e4501f509094ba4566f84", // CCSFS SLC 40
    "5e9e4502f509092b78566f87", // VAFB SLC 4E
];
const DESTINATIONS: [&str; 7] = [
    "MARS",
    "MOON",
    "PLUTO",
    "ASTEROID_BELT",
    "EUROPA",
    "TITAN",
    "GANYMEDE",
];
const FLIGHTS: usize = 400;
const TICKETS_PER_FLIGHT: i32 = 50;
const PAGE: usize = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);

    if let Ok(filter) = std::env::var("BENCH_LOG") {
        spacet::telemetry::init(&filter, spacet::config::LogFormat::Pretty);
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("pg");
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data, true)).await??;

    // Flights: one per pad and day from 2049-01-01, the destination by weekday so
    // that no week repeats one; every other flight is under a SpaceX launch.
    let first_day = NaiveDate::from_ymd_opt(2049, 1, 1).unwrap();
    let flights: Vec<(Uuid, &str, NaiveDate, &str)> = (0..FLIGHTS)
        .map(|i| {
            let day = first_day + chrono::Days::new((i / PADS.len()) as u64);
            let destination = DESTINATIONS[day.weekday().num_days_from_monday() as usize];
            (Uuid::now_v7(), PADS[i % PADS.len()], day, destination)
        })
        .collect();
    let template: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/spacex/launches_query_page41_limit5.json"
    ))?)?;
    let launches: Vec<Value> = flights
        .iter()
        .step_by(2)
        .enumerate()
        .map(|(n, (_, pad, day, _))| {
            // 15:00 UTC is the same day at every one of these pads.
            let at = Utc.from_utc_datetime(&day.and_hms_opt(15, 0, 0).unwrap());
            let mut doc = template["docs"][0].clone();
            let fields = json!({
                "id": format!("{:024x}", 0x6400_0000u64 + n as u64),
                "name": format!("Starlink bench-{n}"),
                "launchpad": pad,
                "date_utc": at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                "date_unix": at.timestamp(),
                "date_precision": "hour",
                "upcoming": true,
            });
            doc.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            doc
        })
        .collect();
    let colliding_tickets = launches.len() * TICKETS_PER_FLIGHT as usize;

    let spacex = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v4/launchpads"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/spacex/launchpads.json"
            ))?),
        )
        .mount(&spacex)
        .await;
    let pages = launches.len().div_ceil(PAGE);
    for page in 1..=pages {
        let docs: Vec<Value> = launches
            .iter()
            .skip((page - 1) * PAGE)
            .take(PAGE)
            .cloned()
            .collect();
        Mock::given(method("POST"))
            .and(path("/v4/launches/query"))
            .and(body_partial_json(json!({"options": {"page": page}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "docs": docs, "totalDocs": launches.len(), "limit": PAGE, "totalPages": pages,
                "page": page, "hasNextPage": page < pages,
                "nextPage": if page < pages { json!(page + 1) } else { Value::Null },
            })))
            .mount(&spacex)
            .await;
    }

    let url = format!("{}/v4", spacex.uri());
    let env = [
        ("SPACEX_API_URL", url.as_str()),
        ("SPACEX_ALLOW_HTTP", "true"),
        ("SPACEX_MAX_CANCELLATIONS", "20000"),
    ];
    let settings = Settings::load(None, |k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    })?;
    // The sync alone: a pool, a clock, its settings and a shutdown token.
    let state = SyncDeps {
        pool: PgPoolOptions::new()
            .max_connections(4)
            .connect_with(pg.connect_options())
            .await?,
        clock: Clock::fixed(Utc.with_ymd_and_hms(2048, 6, 1, 12, 0, 0).unwrap()),
        settings: settings.spacex,
        shutdown: CancellationToken::new(),
        forced: Default::default(),
    };
    spacet::db::migrate(&state.pool).await?;

    sqlx::query(
        "INSERT INTO flights (id, launchpad_id, launch_day, destination, seats, seats_booked)
         SELECT id, pad, day, destination, 100, $5
         FROM UNNEST($1::uuid[], $2::text[], $3::date[], $4::text[]) AS f(id, pad, day, destination)",
    )
    .bind(flights.iter().map(|f| f.0).collect::<Vec<_>>())
    .bind(flights.iter().map(|f| f.1).collect::<Vec<_>>())
    .bind(flights.iter().map(|f| f.2).collect::<Vec<_>>())
    .bind(flights.iter().map(|f| f.3).collect::<Vec<_>>())
    .bind(TICKETS_PER_FLIGHT)
    .execute(&state.pool)
    .await?;
    sqlx::query(
        "INSERT INTO tickets (id, flight_id, first_name, last_name, gender, birthday, launchpad_id, launch_day, destination)
         SELECT gen_random_uuid(), f.id, 'Ada', 'Lovelace ' || n, 'FEMALE', DATE '1990-12-01',
                f.launchpad_id, f.launch_day, f.destination
         FROM flights f CROSS JOIN generate_series(1, $1) AS n",
    )
    .bind(TICKETS_PER_FLIGHT)
    .execute(&state.pool)
    .await?;
    println!(
        "bench_sync: {} launches (hour precision) over {} flights; {} of {} tickets collide; {} runs",
        launches.len(),
        FLIGHTS,
        colliding_tickets,
        FLIGHTS * TICKETS_PER_FLIGHT as usize,
        runs
    );

    let mut totals = Vec::new();
    let mut applies = Vec::new();
    let mut idle = Vec::new();
    for run in 1..=runs {
        for statement in [
            "UPDATE tickets SET status = 'CONFIRMED', cancellation_reason = NULL",
            "UPDATE flights SET status = 'scheduled', cancellation_reason = NULL, seats_booked = 50",
            "DELETE FROM spacex_launches",
            "DELETE FROM sync_state",
            "DELETE FROM outbox",
            "VACUUM ANALYZE",
        ] {
            sqlx::query(statement).execute(&state.pool).await?;
        }
        let started = Instant::now();
        let report = spacet::spacex::sync_now(&state)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let wall = started.elapsed();
        anyhow::ensure!(
            report.tickets_cancelled as usize == colliding_tickets
                && report.flights_cancelled as usize == launches.len(),
            "unexpected report: {report:?}"
        );
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&state.pool)
            .await?;
        anyhow::ensure!(events as usize == colliding_tickets, "{events} outbox rows");

        let started = Instant::now();
        let again = spacet::spacex::sync_now(&state)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let unchanged = started.elapsed();
        anyhow::ensure!(again.tickets_cancelled == 0 && again.launches_updated == 0);

        let apply = report.apply_duration;
        println!(
            "run {run}: fetch+apply {:>7.1} ms (apply {:>7.1} ms, fetch {:>6.1} ms), {} tickets and {} flights cancelled; unchanged re-sync {:>6.1} ms",
            ms(wall),
            ms(apply),
            ms(wall.saturating_sub(apply)),
            report.tickets_cancelled,
            report.flights_cancelled,
            ms(unchanged)
        );
        totals.push(wall);
        applies.push(apply);
        idle.push(unchanged);
    }
    println!(
        "median of {runs}: fetch+apply {:.1} ms, apply alone {:.1} ms, unchanged re-sync {:.1} ms (min fetch+apply {:.1} ms, max {:.1} ms)",
        ms(median(&mut totals)),
        ms(median(&mut applies)),
        ms(median(&mut idle)),
        ms(*totals.iter().min().unwrap()),
        ms(*totals.iter().max().unwrap()),
    );

    state.pool.close().await;
    tokio::task::spawn_blocking(move || drop(pg)).await?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}
