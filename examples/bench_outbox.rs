//! Outbox relay benchmark through the real Pub/Sub emulator.
//!
//! ```text
//! cargo run --release --example bench_outbox -- --rate 200 --seconds 20 --burst 2000
//! ```
//!
//! Starts the emulator (or uses `PUBSUB_EMULATOR_HOST`), a durable embedded
//! PostgreSQL (or `PG_DSN`) and the real service with Pub/Sub on, then:
//! 1. latency: books tickets over gRPC at a steady rate and reports, per booking,
//!    the time from its commit to the publish acknowledgement: `published_at` (set
//!    by the relay after Pub/Sub acknowledged) minus `created_at` of the outbox row
//!    (inserted just before the booking commits), and minus the moment the client
//!    got its answer (after the commit);
//! 2. throughput: inserts a burst of events at once and reports events/s published
//!    while the relay drains it, and the process's memory before and after.
//!
//! First, as a baseline measured in the same run (the machine is shared and noisy),
//! the same publisher without database or relay: one publish at a time, and batches
//! of the relay's size.

#[path = "../tests/api/pubsub_emulator.rs"]
#[allow(dead_code)]
mod pubsub_emulator;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use chrono::TimeZone as _;
use clap::Parser;
use spacet::{
    app::App,
    clock::Clock,
    config::{Database, Settings},
    embedded_pg::EmbeddedPostgres,
    outbox::publisher::{OutgoingMessage, Publisher as _},
    proto::{space_t_service_client::SpaceTServiceClient, BookingRequest, Destination, Gender},
};
use sqlx::PgPool;

#[derive(Parser)]
struct Args {
    /// Bookings per second in the latency phase.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Length of the latency phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Events inserted at once in the throughput phase. Every event has its own
    /// ordering key (the ticket id), and the emulator keeps state per key: bursts
    /// of tens of thousands make the emulator itself, not the relay, use up both
    /// cores of a small machine.
    #[arg(long, default_value_t = 2_000)]
    burst: i64,
    /// Service instances (relays) over the one database.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// NOTIFICATIONS_BATCH_SIZE_MAX.
    #[arg(long, default_value_t = 100)]
    batch: u32,
}

const PROJECT: &str = "bench";
const TOPIC: &str = "launches";
const SUBSCRIPTION: &str = "bench-sub";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    spacet::telemetry::init("warn", spacet::config::LogFormat::Pretty);

    let _emulator;
    let pubsub_host = match std::env::var("PUBSUB_EMULATOR_HOST") {
        Ok(host) if !host.is_empty() => host,
        _ => {
            let emulator = pubsub_emulator::Emulator::start().await;
            let host = emulator.host();
            _emulator = emulator;
            host
        }
    };
    let rest = pubsub_emulator::Rest::new(&pubsub_host, PROJECT);
    rest.create_topic(TOPIC).await;
    // A subscriber exists, so the emulator stores and fans out every message as it
    // would in production; nobody reads it during the run.
    rest.create_subscription(SUBSCRIPTION, TOPIC).await;

    let _pg;
    let dsn = match std::env::var("PG_DSN") {
        Ok(dsn) if !dsn.is_empty() => dsn,
        _ => {
            let dir = tempfile::tempdir()?;
            let data = dir.path().join("data");
            let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data, false))
                .await??;
            let o = pg.connect_options();
            let dsn = format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                o.get_port()
            );
            _pg = (pg, dir);
            dsn
        }
    };

    let env: Vec<(String, String)> = [
        ("HTTP_PORT", "0"),
        ("GRPC_PORT", "0"),
        ("BIND_ADDRESS", "127.0.0.1"),
        ("LOG_LEVEL", "warn"),
        ("SPACEX_SYNC_ENABLED", "false"),
        // Without tokens, as the Go service's clients: the service's own work is measured, not JWT checks.
        ("AUTH_MODE", "none"),
        ("SEATS_PER_FLIGHT", "1000000"),
        ("PUBSUB_ENABLED", "true"),
        ("PUBSUB_EMULATOR_HOST", &pubsub_host),
        ("PUBSUB_PROJECT_ID", PROJECT),
        ("PUBSUB_LAUNCHES_TOPIC", TOPIC),
        ("NOTIFICATIONS_BATCH_SIZE_MAX", &args.batch.to_string()),
        ("PG_DSN", &dsn),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = Settings::load(None, |k| {
        env.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    })?;
    let clock = Clock::fixed(chrono::Utc.with_ymd_and_hms(2048, 6, 1, 12, 0, 0).unwrap());
    let mut apps = Vec::new();
    for _ in 0..args.replicas {
        let app = App::build(settings.clone(), clock.clone()).await?;
        let grpc_port = app.grpc_port();
        let http_port = app.http_port();
        let pool = app.pool().clone();
        let stop = app.shutdown_token();
        let handle = tokio::spawn(app.run_until_stopped());
        wait_ready(http_port).await?;
        apps.push((grpc_port, pool, stop, handle));
    }
    let pool: PgPool = apps[0].1.clone();
    let Database::External(_) = &settings.database else {
        unreachable!("PG_DSN is set")
    };
    println!(
        "setup: {} replica(s), batch {}, emulator {pubsub_host}, PostgreSQL durable (fsync on), {} CPUs, CPU pressure {}",
        args.replicas,
        args.batch,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_pressure()
    );

    // ---- 0. baseline: the same publisher, no database, no relay ----
    // Its own topic, with a subscription too, so that the emulator does the same work.
    let mut baseline = settings.pubsub.clone();
    baseline.topic = "baseline".into();
    rest.create_topic(&baseline.topic).await;
    rest.create_subscription("baseline-sub", &baseline.topic)
        .await;
    let direct = spacet::outbox::publisher::PubSubPublisher::connect(&baseline).await?;
    let mut round_trips = Vec::new();
    for i in 0..300 {
        let started = Instant::now();
        let result = direct
            .publish(vec![message(-1 - i, &sample_payload())])
            .await;
        result.into_iter().next().expect("one result")?;
        round_trips.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let direct_rate = direct_throughput(&direct, args.burst, args.batch as i64).await?;
    println!("baseline (publisher alone, no database, no relay):");
    println!("  one publish at a time: {}", summary(&mut round_trips));
    println!(
        "  {} messages in batches of {} (distinct ordering keys): {direct_rate:.0} messages/s; CPU pressure {}",
        args.burst,
        args.batch,
        cpu_pressure()
    );

    // ---- 1. latency under a steady booking load ----
    let mut clients = Vec::new();
    for (grpc_port, ..) in &apps {
        clients.push(SpaceTServiceClient::connect(format!("http://127.0.0.1:{grpc_port}")).await?);
    }
    let total = args.rate as u64 * args.seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let answered = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let mut client = clients[i as usize % clients.len()].clone();
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let ticket = client.launch_booking(request()).await?.into_inner();
            let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
            answered.lock().unwrap().push((ticket.id, at));
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let offered = total as f64 / started.elapsed().as_secs_f64();
    wait_published(&pool, Duration::from_secs(120)).await?;
    let rows: Vec<(String, f64, f64)> = sqlx::query_as(
        "SELECT aggregate_id::text, extract(epoch FROM created_at)::float8, extract(epoch FROM published_at)::float8
         FROM outbox WHERE event_type = 'TicketBooked'",
    )
    .fetch_all(&pool)
    .await?;
    let answered: std::collections::HashMap<String, f64> =
        answered.lock().unwrap().iter().cloned().collect();
    let mut from_insert: Vec<f64> = rows.iter().map(|(_, c, p)| (p - c) * 1000.0).collect();
    let mut from_answer: Vec<f64> = rows
        .iter()
        .filter_map(|(id, _, p)| answered.get(id).map(|a| (p - a) * 1000.0))
        .collect();
    println!(
        "latency: {} bookings at {offered:.0}/s over gRPC",
        rows.len()
    );
    println!(
        "  outbox insert (just before commit) -> publish acknowledged: {}",
        summary(&mut from_insert)
    );
    println!(
        "  booking answered to the client (after commit) -> publish acknowledged: {}",
        summary(&mut from_answer)
    );
    println!("  CPU pressure {}", cpu_pressure());

    // ---- 2. throughput: a burst, drained ----
    let rss_before = rss_kb();
    let payload: serde_json::Value = sqlx::query_scalar("SELECT payload FROM outbox LIMIT 1")
        .fetch_one(&pool)
        .await?;
    let first_burst_id: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) + 1 FROM outbox")
        .fetch_one(&pool)
        .await?;
    let inserting = Instant::now();
    let mut inserted = 0;
    while inserted < args.burst {
        let n = (args.burst - inserted).min(1000);
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO outbox (event_type, aggregate_id, payload)
             SELECT 'TicketBooked', md5(random()::text || g)::uuid, $1 FROM generate_series(1, $2) g",
        )
        .bind(&payload)
        .bind(n)
        .execute(&mut *tx)
        .await?;
        spacet::outbox::notify(&mut tx).await?;
        tx.commit().await?;
        inserted += n;
    }
    let insert_time = inserting.elapsed();
    wait_published(&pool, Duration::from_secs(600)).await?;
    let drained = inserting.elapsed();
    let (first_created, last_published, p10, p90): (f64, f64, f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM min(created_at))::float8, extract(epoch FROM max(published_at))::float8,
                extract(epoch FROM percentile_disc(0.1) WITHIN GROUP (ORDER BY published_at))::float8,
                extract(epoch FROM percentile_disc(0.9) WITHIN GROUP (ORDER BY published_at))::float8
         FROM outbox WHERE id >= $1",
    )
    .bind(first_burst_id)
    .fetch_one(&pool)
    .await?;
    let rss_after = rss_kb();
    println!(
        "throughput: {} events inserted in {:.2} s, all published {:.2} s after the first insert",
        args.burst,
        insert_time.as_secs_f64(),
        drained.as_secs_f64()
    );
    println!(
        "  {:.0} events/s overall (first insert -> last acknowledgement), {:.0} events/s sustained (10th to 90th percentile of publishes)",
        args.burst as f64 / (last_published - first_created),
        args.burst as f64 * 0.8 / (p90 - p10)
    );
    // The baseline again, right after: the machine's load moves within minutes.
    let direct_after = direct_throughput(&direct, args.burst, args.batch as i64).await?;
    println!(
        "  baseline again right after: {direct_after:.0} messages/s; relay/baseline ratio {:.2} (against the mean of both baselines)",
        args.burst as f64 * 0.8 / (p90 - p10) / ((direct_rate + direct_after) / 2.0)
    );
    println!(
        "  process RSS {} MB before the burst, {} MB after; CPU pressure {}",
        rss_before / 1024,
        rss_after / 1024,
        cpu_pressure()
    );

    let sample = rest.pull(SUBSCRIPTION).await;
    if let Some(m) = sample.first() {
        println!(
            "sample message: ordering_key={} attributes={} data={}",
            m.ordering_key,
            serde_json::to_string(&m.attributes)?,
            serde_json::to_string_pretty(&m.data)?
        );
    }

    for (_, _, stop, handle) in apps {
        stop.cancel();
        let _ = handle.await;
    }
    Ok(())
}

/// Messages/s of the publisher alone, `total` messages in batches of `batch`.
async fn direct_throughput(
    direct: &spacet::outbox::publisher::PubSubPublisher,
    total: i64,
    batch: i64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut sent = 0i64;
    while sent < total {
        let n = (total - sent).min(batch);
        let messages = (0..n)
            .map(|i| message(-(sent + i) - 1000, &sample_payload()))
            .collect();
        for result in direct.publish(messages).await {
            result?;
        }
        sent += n;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// A TicketBooked payload as the service writes it.
fn sample_payload() -> bytes::Bytes {
    bytes::Bytes::from_static(br#"{"ticket":{"birthday":"1990-12-01T00:00:00+00:00","cancellationReason":"CANCELLATION_REASON_UNSPECIFIED","createdAt":"2026-11-22T06:19:12.509368+00:00","destinationId":"MARS","firstName":"Ada","gender":"FEMALE","id":"01a201e8-a0fd-744e-a61c-2abd4ac700bd","lastName":"Lovelace","launchDate":"2049-03-02T00:00:00+00:00","launchpadId":"5e9e4502f509094188566f88","status":"CONFIRMED","updatedAt":"2026-11-22T06:19:12.509368+00:00"}}"#)
}

/// A message shaped like the relay's, with its own ordering key.
fn message(id: i64, data: &bytes::Bytes) -> OutgoingMessage {
    OutgoingMessage {
        event_id: id,
        event_type: "BenchBaseline".into(),
        ordering_key: uuid::Uuid::new_v4().to_string(),
        data: data.clone(),
        attributes: vec![
            ("event_id".into(), id.to_string()),
            ("event_type".into(), "BenchBaseline".into()),
            ("origin".into(), "bench".into()),
            ("schema_version".into(), "1".into()),
        ],
    }
}

/// `/proc/pressure/cpu` "some" averages: the share of time runnable work waited
/// for a CPU (other engineers build on this machine).
fn cpu_pressure() -> String {
    std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.trim_start_matches("some ").to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn request() -> BookingRequest {
    let day = |y, m, d| {
        spacet::api::convert::day_timestamp(chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap())
    };
    BookingRequest {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        gender: Gender::Female as i32,
        birthday: Some(day(1990, 12, 1)),
        launchpad_id: "5e9e4502f509094188566f88".into(),
        launch_date: Some(day(2049, 3, 2)),
        destination_id: Destination::Mars as i32,
        request_id: String::new(),
        owner: String::new(),
    }
}

async fn wait_ready(http_port: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{http_port}/readiness");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the service was not ready within 60 s")
}

async fn wait_published(pool: &PgPool, at_most: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + at_most;
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(pool)
                .await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{left} events still unpublished after {at_most:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `median X ms, p99 Y ms, max Z ms`.
fn summary(values: &mut [f64]) -> String {
    if values.is_empty() {
        return "no data".into();
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let at =
        |q: f64| values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1];
    format!(
        "median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
        at(0.5),
        at(0.9),
        at(0.99),
        values[values.len() - 1],
        values.len()
    )
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .context("reading VmRSS")
        .unwrap_or(0)
}
