//! Booking benchmark (issues 3 and 4): bookings/s and latency percentiles for 32
//! concurrent gRPC clients, the same load through the HTTP gateway, pgbench running
//! the booking transaction's SQL on the same database in the same run, and
//! requests/s for `GET /v1/bookings?limit=20`.
//!
//! `cargo run --release --example bench_booking [-- SECONDS]`
//!
//! Starts its own PostgreSQL (embedded, fsync off so that the figures show the
//! service's cost rather than the disk's) and the service in-process on free ports.

use std::{
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::{Datelike, Days, NaiveDate};
use spacet::{
    app::App,
    booking::Destination as DomainDestination,
    clock::Clock,
    config::{Database, Settings},
    embedded_pg::EmbeddedPostgres,
    proto::{self, space_t_service_client::SpaceTServiceClient},
};

const CLIENTS: usize = 32;
const PADS: [&str; 3] = [
    "5e9e4502f509094188566f88",
    "5e9e4501f509094ba4566f84",
    "5e9e4502f509092b78566f87",
];
const DAYS: u64 = 700;

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2049, 1, 4).unwrap() // a Monday
}

/// The i-th (pad, day, destination): each weekday has its own destination, so a
/// pad's week never repeats one.
fn slot(i: usize) -> (&'static str, NaiveDate, DomainDestination) {
    let pad = PADS[i % PADS.len()];
    let day = first_day() + Days::new((i / PADS.len()) as u64 % DAYS);
    let destination = DomainDestination::ALL[day.weekday().num_days_from_monday() as usize];
    (pad, day, destination)
}

fn request(i: usize) -> proto::BookingRequest {
    let (pad, day, destination) = slot(i);
    proto::BookingRequest {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        gender: proto::Gender::Female as i32,
        birthday: Some(spacet::api::convert::day_timestamp(
            NaiveDate::from_ymd_opt(1990, 12, 1).unwrap(),
        )),
        launchpad_id: pad.into(),
        launch_date: Some(spacet::api::convert::day_timestamp(day)),
        destination_id: proto::Destination::from(destination) as i32,
        request_id: String::new(),
        owner: String::new(),
    }
}

struct Figures {
    label: String,
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }
    fn print(&self) {
        println!(
            "{:<34} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} ops, {} errors, {:.1} s)",
            self.label,
            self.rate(),
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.ops,
            self.errors,
            self.elapsed.as_secs_f64()
        );
    }
}

/// Runs `CLIENTS` loops of `op` for `duration`.
async fn drive<F, Fut>(label: &str, duration: Duration, op: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = bool> + Send,
{
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let op = op.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while started.elapsed() < duration {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    if op(client, i).await {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    Figures {
        label: label.into(),
        ops: latencies.len(),
        errors,
        elapsed: started.elapsed(),
        latencies,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir()?;
    let pg = EmbeddedPostgres::start(&dir.path().join("data"), true)?;
    let env = [
        ("HTTP_PORT", "0"),
        ("GRPC_PORT", "0"),
        ("BIND_ADDRESS", "127.0.0.1"),
        ("LOG_LEVEL", "error"),
        ("SPACEX_SYNC_ENABLED", "false"),
        // Without tokens, as the Go service's clients: the service's own work is measured, not JWT checks.
        ("AUTH_MODE", "none"),
        ("SEATS_PER_FLIGHT", "1000000"),
        ("PG_POOL_MAX", "32"),
    ];
    let mut settings = Settings::load(None, |k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })?;
    settings.database = Database::External(Box::new(pg.connect_options()));
    spacet::telemetry::init("error", spacet::config::LogFormat::Pretty);
    let clock = Clock::fixed(chrono::Utc::now());
    let app = App::build(settings, clock).await?;
    let (http_port, grpc_port) = (app.http_port(), app.grpc_port());
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
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
        .connect()
        .await?;
    // Open every flight first, so that all phases book on existing flights.
    let mut client = SpaceTServiceClient::new(channel.clone());
    for i in 0..PADS.len() * DAYS as usize {
        client.launch_booking(request(i)).await?;
    }
    println!("SpaceT booking benchmark: {CLIENTS} concurrent clients, {seconds} s per phase, 2 cores shared by load and service");

    let mut channels = Vec::new();
    for _ in 0..CLIENTS {
        channels.push(
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
                .connect()
                .await?,
        );
    }
    let channels = Arc::new(channels);
    let grpc = drive("gRPC LaunchBooking", duration, move |client, i| {
        let mut c = SpaceTServiceClient::new(channels[client].clone());
        async move { c.launch_booking(request(i)).await.is_ok() }
    })
    .await;
    grpc.print();

    let gateway = {
        let http = http.clone();
        let base = base.clone();
        drive("HTTP POST /v1/bookings", duration, move |_, i| {
            let http = http.clone();
            let url = format!("{base}/v1/bookings");
            async move {
                let body = serde_json::to_vec(&request(i)).unwrap();
                http.post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        })
        .await
    };
    gateway.print();

    let list = {
        let http = http.clone();
        let base = base.clone();
        drive("HTTP GET /v1/bookings?limit=20", duration, move |_, _| {
            let http = http.clone();
            let url = format!("{base}/v1/bookings?limit=20");
            async move { http.get(url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await
    };
    list.print();

    let pgbench = run_pgbench(&pg, seconds)?;
    println!(
        "{:<34} {:>9.0} tx/s   avg {:>7.2} ms  (the booking transaction's SQL, {CLIENTS} clients, prepared)",
        "pgbench booking transaction", pgbench.0, pgbench.1
    );
    println!();
    println!(
        "ratio gRPC / pgbench            {:.2}",
        grpc.rate() / pgbench.0
    );
    println!(
        "ratio HTTP gateway / gRPC       {:.2}",
        gateway.rate() / grpc.rate()
    );
    shutdown.cancel();
    server.await??;
    Ok(())
}

/// pgbench with the statements one booking runs (same tables, same indexes).
fn run_pgbench(pg: &EmbeddedPostgres, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let bin = spacet::embedded_pg::find_binaries().expect("PostgreSQL binaries");
    let pgbench = ["pgbench"]
        .iter()
        .map(|p| bin.join(p))
        .find(|p| p.exists())
        .or_else(|| {
            std::fs::canonicalize(bin.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("pgbench")))
        })
        .expect("pgbench next to initdb");
    let pads = PADS.map(|p| format!("'{p}'")).join(",");
    let script = format!(
        r#"\set n random(1, 3)
\set d random(0, {last})
SELECT status, timezone FROM launchpads WHERE id = (ARRAY[{pads}])[(:n)::int];
BEGIN;
SELECT status FROM launchpads WHERE id = (ARRAY[{pads}])[(:n)::int] FOR KEY SHARE;
SELECT name FROM spacex_launches WHERE launchpad_id = (ARRAY[{pads}])[(:n)::int] AND blocked_day = DATE '2049-01-04' + (:d)::int AND upcoming LIMIT 1;
SELECT id, destination, seats, seats_booked FROM flights WHERE launchpad_id = (ARRAY[{pads}])[(:n)::int] AND launch_day = DATE '2049-01-04' + (:d)::int AND status = 'scheduled' FOR UPDATE;
UPDATE flights SET seats_booked = seats_booked + 1, updated_at = now() WHERE launchpad_id = (ARRAY[{pads}])[(:n)::int] AND launch_day = DATE '2049-01-04' + (:d)::int AND status = 'scheduled';
INSERT INTO tickets (id, flight_id, first_name, last_name, gender, birthday, launchpad_id, launch_day, destination, idempotency_key, request_hash) SELECT gen_random_uuid(), id, 'Ada', 'Lovelace', 'FEMALE', DATE '1990-12-01', launchpad_id, launch_day, destination, NULL, 'Ada|Lovelace|FEMALE|1990-12-01|pad|day|dest' FROM flights WHERE launchpad_id = (ARRAY[{pads}])[(:n)::int] AND launch_day = DATE '2049-01-04' + (:d)::int AND status = 'scheduled' RETURNING id, first_name, last_name, gender, birthday, launchpad_id, launch_day, destination, status, cancellation_reason, created_at, updated_at;
INSERT INTO outbox (event_type, aggregate_id, payload) VALUES ('TicketBooked', gen_random_uuid(), '{{"ticket":{{"id":"00000000-0000-0000-0000-000000000000","firstName":"Ada","lastName":"Lovelace","gender":"FEMALE","birthday":"1990-12-01T00:00:00+00:00","launchpadId":"5e9e4502f509094188566f88","launchDate":"2049-01-04T00:00:00+00:00","destinationId":"MARS","status":"CONFIRMED","cancellationReason":"CANCELLATION_REASON_UNSPECIFIED","createdAt":"2026-11-22T05:43:18.159774+00:00","updatedAt":"2026-11-22T05:43:18.159774+00:00"}}}}'::jsonb);
SELECT pg_notify('outbox', '');
COMMIT;
"#,
        last = DAYS - 1
    );
    let file = std::env::temp_dir().join(format!("spacet-bench-{}.sql", std::process::id()));
    std::fs::write(&file, script)?;
    let out = Command::new(pgbench)
        .args([
            "-h",
            &pg.socket_dir().display().to_string(),
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
            "-n",
            "-M",
            "prepared",
        ])
        .args([
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&file)
        .arg("postgres")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "pgbench failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let latency = text
        .lines()
        .find_map(|l| l.strip_prefix("latency average = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok((tps, latency))
}
