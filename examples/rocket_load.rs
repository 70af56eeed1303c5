//! Load generator for `POST /messages`, behaving like the rockets test program:
//! N rockets, M messages each, interleaved, some delivered out of order and some
//! more than once, sent by C concurrent senders over a new HTTP connection per
//! message, each message sent again until it gets a 2xx. Then it reads every
//! rocket back (`GET /rockets/{channel}`) and compares it with the state it
//! computes itself, walking each rocket's messages in number order.
//!
//! With `--ceiling`, the same load is first sent, in the same run, to a storage-free
//! server of the same stack started in this process on its own runtime (the
//! service's accept loop `spacet::api::serve::serve_http` and axum, parsing each
//! message with the service's `Message::parse` and answering 201 with the service's
//! body), and the ratio of the service's messages/s to that ceiling is printed.
//!
//! ```text
//! cargo run --release --example rocket_load -- --url http://127.0.0.1:8088 \
//!     --read-url http://127.0.0.1:8080 --rockets 40 --messages-per-rocket 2500 \
//!     --concurrency 3 --ceiling --pid $(pgrep -n spacet)
//! ```
//! Exit status 1 when a message could not be stored or a state is wrong.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{http::StatusCode, response::IntoResponse, Json};
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, SecondsFormat, TimeZone, Utc};
use clap::Parser;
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde_json::{json, Value};
use spacet::{config::Settings, rockets::message::Message};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "Sends rocket telemetry to a SpaceT service and checks the states it serves")]
struct Args {
    /// Base URL of the service's HTTP port. (127.0.0.1 rather than localhost:
    /// reqwest resolves a name on a blocking thread for every new connection,
    /// which adds about half again to the load generator's CPU per request.)
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Base URL the rockets are read back from (`GET /rockets/{channel}`): the HTTP
    /// port when `--url` is the rockets port, which serves `POST /messages` only.
    /// Defaults to `--url`.
    #[arg(long)]
    read_url: Option<String>,
    /// First send the same load to a storage-free server of the same stack, in this
    /// process, and print the service's throughput as a ratio of it.
    #[arg(long)]
    ceiling: bool,
    /// Number of rockets (channels).
    #[arg(long, default_value_t = 40)]
    rockets: usize,
    /// Messages per rocket (the first is its launch).
    #[arg(long, default_value_t = 2500)]
    messages_per_rocket: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 3)]
    concurrency: usize,
    /// Share of messages sent a second time, later.
    #[arg(long, default_value_t = 0.05)]
    duplicate_rate: f64,
    /// Share of messages delayed behind later ones.
    #[arg(long, default_value_t = 0.2)]
    out_of_order_rate: f64,
    /// How many positions a delayed message or a duplicate moves back, at most.
    #[arg(long, default_value_t = 200)]
    out_of_order_window: usize,
    /// Share of rockets whose last message is an explosion.
    #[arg(long, default_value_t = 0.3)]
    explode_rate: f64,
    /// Reuse connections instead of opening one per message.
    #[arg(long)]
    keep_alive: bool,
    /// Attempts per message before giving up on it.
    #[arg(long, default_value_t = 100)]
    max_attempts: u32,
    /// Random seed (channels are random regardless, so runs never collide).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The service's process id: prints its peak memory and CPU time, and those of
    /// its child processes (the embedded PostgreSQL).
    #[arg(long)]
    pid: Option<u32>,
}

/// One message of one rocket.
struct Planned {
    rocket: usize,
    number: i64,
    time: DateTime<FixedOffset>,
    kind: &'static str,
    body: Value,
}

/// What the service must answer for a rocket, computed in number order.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    rocket_type: Option<String>,
    launch_speed: Option<i64>,
    speed: i64,
    mission: Option<String>,
    status: &'static str,
    explosion_reason: Option<String>,
    last_message_number: i64,
    last_message_time: String,
    messages_received: i64,
    missing_messages: i64,
}

const TYPES: &[&str] = &[
    "Falcon-9",
    "Falcon-Heavy",
    "Starship",
    "Electron",
    "Ariane-6",
];
const MISSIONS: &[&str] = &[
    "ARTEMIS",
    "SHUTTLE_MIR",
    "APOLLO",
    "GEMINI",
    "LUNA",
    "MARS_ONE",
];
const REASONS: &[&str] = &["PRESSURE_VESSEL_FAILURE", "ENGINE_FAILURE", "GUIDANCE_LOST"];
const OFFSETS: &[i32] = &[0, 3600, -5 * 3600, 5 * 3600 + 1800, 14 * 3600];

fn plan(args: &Args, rng: &mut StdRng) -> (Vec<Uuid>, Vec<Vec<Planned>>) {
    let start = Utc.with_ymd_and_hms(2022, 2, 2, 18, 0, 0).unwrap();
    let channels: Vec<Uuid> = (0..args.rockets).map(|_| Uuid::new_v4()).collect();
    let rockets = (0..args.rockets)
        .map(|rocket| {
            let n = args.messages_per_rocket.max(1) as i64;
            let explodes = rng.random_bool(args.explode_rate);
            let offset = FixedOffset::east_opt(*OFFSETS.choose(rng).unwrap()).unwrap();
            (1..=n)
                .map(|number| {
                    let (kind, body) = if number == 1 {
                        (
                            "RocketLaunched",
                            json!({
                                "type": TYPES.choose(rng).unwrap(),
                                "launchSpeed": rng.random_range(100..2000),
                                "mission": MISSIONS.choose(rng).unwrap(),
                            }),
                        )
                    } else if number == n && explodes {
                        (
                            "RocketExploded",
                            json!({"reason": REASONS.choose(rng).unwrap()}),
                        )
                    } else {
                        match rng.random_range(0..20) {
                            0..=8 => (
                                "RocketSpeedIncreased",
                                json!({"by": rng.random_range(1..3000)}),
                            ),
                            9..=17 => (
                                "RocketSpeedDecreased",
                                json!({"by": rng.random_range(1..3000)}),
                            ),
                            _ => (
                                "RocketMissionChanged",
                                json!({"newMission": MISSIONS.choose(rng).unwrap()}),
                            ),
                        }
                    };
                    // Increasing times with a few fraction digits, in the rocket's offset.
                    let time = (start
                        + chrono::Duration::milliseconds(number * 1500)
                        + chrono::Duration::microseconds(rng.random_range(0..1_000_000)))
                    .with_timezone(&offset);
                    Planned {
                        rocket,
                        number,
                        time,
                        kind,
                        body,
                    }
                })
                .collect()
        })
        .collect();
    (channels, rockets)
}

/// The delivery order: rockets interleaved at random, some messages moved back,
/// some sent twice.
fn delivery(args: &Args, rockets: &[Vec<Planned>], rng: &mut StdRng) -> Vec<(usize, usize)> {
    let mut next = vec![0usize; rockets.len()];
    let mut remaining: Vec<usize> = (0..rockets.len())
        .filter(|&r| !rockets[r].is_empty())
        .collect();
    let mut order = Vec::new();
    let mut position = 0usize;
    while !remaining.is_empty() {
        let pick = rng.random_range(0..remaining.len());
        let rocket = remaining[pick];
        let index = next[rocket];
        next[rocket] += 1;
        if next[rocket] == rockets[rocket].len() {
            remaining.swap_remove(pick);
        }
        let window = args.out_of_order_window.max(1);
        let key = if rng.random_bool(args.out_of_order_rate) {
            position + rng.random_range(1..=window)
        } else {
            position
        };
        order.push((key, position, (rocket, index)));
        if rng.random_bool(args.duplicate_rate) {
            order.push((
                position + rng.random_range(1..=window),
                position,
                (rocket, index),
            ));
        }
        position += 1;
    }
    order.sort_by_key(|(key, position, _)| (*key, *position));
    order.into_iter().map(|(_, _, message)| message).collect()
}

fn expected(messages: &[Planned]) -> Expected {
    let mut e = Expected {
        status: "unknown",
        ..Expected::default()
    };
    let mut delta = 0i64;
    for m in messages {
        match m.kind {
            "RocketLaunched" => {
                if e.launch_speed.is_none() {
                    e.rocket_type = Some(m.body["type"].as_str().unwrap().to_string());
                    e.launch_speed = m.body["launchSpeed"].as_i64();
                }
                e.mission = Some(m.body["mission"].as_str().unwrap().to_string());
                if e.status == "unknown" {
                    e.status = "launched";
                }
            }
            "RocketSpeedIncreased" => delta += m.body["by"].as_i64().unwrap(),
            "RocketSpeedDecreased" => delta -= m.body["by"].as_i64().unwrap(),
            "RocketMissionChanged" => {
                e.mission = Some(m.body["newMission"].as_str().unwrap().to_string())
            }
            "RocketExploded" => {
                if e.status != "exploded" {
                    e.explosion_reason = Some(m.body["reason"].as_str().unwrap().to_string());
                }
                e.status = "exploded";
            }
            other => unreachable!("{other}"),
        }
        e.last_message_number = m.number;
        e.last_message_time = m
            .time
            .with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::AutoSi, true);
        e.messages_received += 1;
    }
    e.speed = e.launch_speed.unwrap_or(0) + delta;
    e
}

fn served(rocket: &Value) -> Expected {
    let text = |f: &str| rocket[f].as_str().map(str::to_string);
    Expected {
        rocket_type: text("type"),
        launch_speed: rocket["launchSpeed"].as_i64(),
        speed: rocket["speed"].as_i64().unwrap_or(i64::MIN),
        mission: text("mission"),
        status: match rocket["status"].as_str() {
            Some("launched") => "launched",
            Some("exploded") => "exploded",
            Some("unknown") => "unknown",
            _ => "?",
        },
        explosion_reason: text("explosionReason"),
        last_message_number: rocket["lastMessageNumber"].as_i64().unwrap_or(-1),
        last_message_time: rocket["lastMessageTime"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| {
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true)
            })
            .unwrap_or_default(),
        messages_received: rocket["messagesReceived"].as_i64().unwrap_or(-1),
        missing_messages: rocket["missingMessages"].as_i64().unwrap_or(-1),
    }
}

#[derive(Default)]
struct Tally {
    requests: u64,
    non_2xx: std::collections::BTreeMap<u16, u64>,
    transport_errors: u64,
    first_error: Option<String>,
    given_up: u64,
    latencies_us: Vec<u32>,
}

/// What one run of the load measured.
struct Run {
    tally: Tally,
    elapsed: f64,
}

impl Run {
    fn errors(&self) -> u64 {
        self.tally.non_2xx.values().sum::<u64>() + self.tally.transport_errors
    }

    /// A latency percentile in milliseconds (`p` in 0..=1).
    fn percentile(&self, p: f64) -> f64 {
        let v = &self.tally.latencies_us;
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    }

    fn print(&self, label: &str, unique: usize) {
        let tally = &self.tally;
        println!(
            "{label}: sent {unique} messages in {} requests in {:.2} s: {:.0} messages/s, {:.0} requests/s",
            tally.requests,
            self.elapsed,
            unique as f64 / self.elapsed,
            tally.requests as f64 / self.elapsed,
        );
        println!(
            "{label}: latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(1.0)
        );
        println!(
            "{label}: errors {} ({} non-2xx {:?}, {} transport), messages given up: {}",
            self.errors(),
            tally.non_2xx.values().sum::<u64>(),
            tally.non_2xx,
            tally.transport_errors,
            tally.given_up
        );
        if let Some(first) = &tally.first_error {
            println!("{label}: first error: {first}");
        }
    }
}

/// Sends every body to `url` with `concurrency` senders, each message again until
/// it gets a 2xx (at most `max_attempts` times).
async fn send_all(
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<Bytes>>,
    concurrency: usize,
    max_attempts: u32,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, url, next, bodies) = (
                client.clone(),
                url.to_string(),
                next.clone(),
                bodies.clone(),
            );
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return tally;
                    };
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        tally.requests += 1;
                        let sent = Instant::now();
                        let result = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        let ok = match result {
                            Ok(response) if response.status().is_success() => true,
                            Ok(response) => {
                                let status = response.status().as_u16();
                                *tally.non_2xx.entry(status).or_default() += 1;
                                if tally.first_error.is_none() {
                                    let text = response.text().await.unwrap_or_default();
                                    tally.first_error = Some(format!("{status} {text}"));
                                }
                                false
                            }
                            Err(error) => {
                                tally.transport_errors += 1;
                                if tally.first_error.is_none() {
                                    tally.first_error = Some(format!("{error:?}"));
                                }
                                false
                            }
                        };
                        tally
                            .latencies_us
                            .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        if ok {
                            break;
                        }
                        if attempt >= max_attempts {
                            tally.given_up += 1;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    let mut tally = Tally::default();
    for sender in senders {
        let t = sender.await?;
        tally.requests += t.requests;
        for (status, count) in t.non_2xx {
            *tally.non_2xx.entry(status).or_default() += count;
        }
        tally.transport_errors += t.transport_errors;
        tally.first_error = tally.first_error.or(t.first_error);
        tally.given_up += t.given_up;
        tally.latencies_us.extend(t.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    tally.latencies_us.sort_unstable();
    Ok(Run { tally, elapsed })
}

/// The ceiling: the service's HTTP stack without storage. Runs on a runtime of its
/// own (as many workers as the service's, one per core) in its own thread, so the
/// load generator's runtime is the same in both runs. Returns its address and the
/// token that stops it.
fn start_ceiling() -> anyhow::Result<(SocketAddr, CancellationToken, std::thread::JoinHandle<()>)> {
    // The service's own limits (idle, header and request timeouts, connection cap).
    let limits = Settings::load(None, |_| None)?.server_limits;
    let body_limit = Settings::load(None, |_| None)?.http_body_limit;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let stop = CancellationToken::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ceiling")
        .build()?;
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let router = axum::Router::new()
                    .route("/messages", axum::routing::post(ceiling_message))
                    .layer(axum::extract::DefaultBodyLimit::max(body_limit));
                if let Err(error) =
                    spacet::api::serve::serve_http(listener, router, limits, stop).await
                {
                    eprintln!("the ceiling server failed: {error}");
                }
            })
        })
    };
    Ok((address, stop, thread))
}

/// What the service does with a message, minus storing it: decode, parse, answer
/// 201 with the service's body.
async fn ceiling_message(body: Bytes) -> axum::response::Response {
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| Message::parse(&v).map_err(|v| format!("{v:?}")));
    match parsed {
        Ok(m) => (
            StatusCode::CREATED,
            Json(json!({"channel": m.channel, "messageNumber": m.number, "result": "stored"})),
        )
            .into_response(),
        Err(problem) => (StatusCode::BAD_REQUEST, problem).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = args.url.trim_end_matches('/').to_string();
    let read_base = args
        .read_url
        .as_deref()
        .unwrap_or(&base)
        .trim_end_matches('/')
        .to_string();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let (channels, rockets) = plan(&args, &mut rng);
    let order = delivery(&args, &rockets, &mut rng);
    let unique: usize = rockets.iter().map(Vec::len).sum();
    // Serialised up front: the timed part measures the service, not serde.
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        order
            .iter()
            .map(|&(r, i)| {
                let m = &rockets[r][i];
                Bytes::from(
                    serde_json::to_vec(&json!({
                        "metadata": {
                            "channel": channels[m.rocket],
                            "messageNumber": m.number,
                            "messageTime": m.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                            "messageType": m.kind,
                        },
                        "message": m.body,
                    }))
                    .expect("serialisable"),
                )
            })
            .collect(),
    );
    println!(
        "{} rockets × {} messages = {unique} messages, {} requests with duplicates; concurrency {}, {}",
        args.rockets,
        args.messages_per_rocket,
        bodies.len(),
        args.concurrency,
        if args.keep_alive { "keep-alive" } else { "a new connection per message" },
    );

    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true);
    if !args.keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    let client = builder.build()?;

    // The ceiling first, while the service is idle.
    let ceiling = if args.ceiling {
        let (address, stop, thread) = start_ceiling()?;
        let url = format!("http://{address}/messages");
        let run = send_all(&client, &url, &bodies, args.concurrency, args.max_attempts).await?;
        stop.cancel();
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        run.print("ceiling", unique);
        Some(run)
    } else {
        None
    };

    let cpu_before = args.pid.map(process_tree_cpu);
    let service = send_all(
        &client,
        &format!("{base}/messages"),
        &bodies,
        args.concurrency,
        args.max_attempts,
    )
    .await?;
    let cpu_after = args.pid.map(process_tree_cpu);
    service.print("service", unique);
    if let Some(ceiling) = &ceiling {
        println!(
            "service / ceiling: {:.2} of the messages/s ({:.0} / {:.0}), p50 {:.2} / {:.2} ms, p99 {:.2} / {:.2} ms",
            ceiling.elapsed / service.elapsed,
            unique as f64 / service.elapsed,
            unique as f64 / ceiling.elapsed,
            service.percentile(0.5),
            ceiling.percentile(0.5),
            service.percentile(0.99),
            ceiling.percentile(0.99),
        );
    }

    // Check every rocket.
    let checker = reqwest::Client::new();
    let mut mismatches = 0;
    for (r, messages) in rockets.iter().enumerate() {
        let want = expected(messages);
        let response = checker
            .get(format!("{read_base}/rockets/{}", channels[r]))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let got = served(&body);
        if !status.is_success() || got != want {
            mismatches += 1;
            if mismatches <= 5 {
                println!(
                    "MISMATCH rocket {}: {status}\n  expected {want:?}\n  served   {got:?}",
                    channels[r]
                );
            }
        }
    }
    println!("check: {} rockets, {mismatches} mismatches", rockets.len());

    if let (Some(pid), Some(before), Some(after)) = (args.pid, cpu_before, cpu_after) {
        let (service, children) = (after.0 - before.0, after.1 - before.1);
        println!(
            "service pid {pid}: peak RSS (VmHWM) {}, RSS now {}, CPU during the run {service:.2} s service + {children:.2} s its children (an embedded PostgreSQL) ({:.0} µs per message)",
            status_field(pid, "VmHWM").unwrap_or_else(|| "?".into()),
            status_field(pid, "VmRSS").unwrap_or_else(|| "?".into()),
            (service + children) * 1e6 / unique as f64
        );
    }
    let own = own_cpu();
    let requests = service.tally.requests + ceiling.as_ref().map_or(0, |c| c.tally.requests);
    println!(
        "load generator CPU {own:.2} s ({:.0} µs per request)",
        own * 1e6 / requests.max(1) as f64
    );

    let ceiling_failed = ceiling
        .as_ref()
        .is_some_and(|c| c.errors() > 0 || c.tally.given_up > 0);
    if service.errors() > 0 || mismatches > 0 || service.tally.given_up > 0 || ceiling_failed {
        std::process::exit(1);
    }
    Ok(())
}

/// A line of `/proc/PID/status` (e.g. `VmHWM`), without its label.
fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// (CPU seconds of `pid`, CPU seconds of all its descendants that are alive).
fn process_tree_cpu(pid: u32) -> (f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let stat = |p: u32| -> Option<(u32, f64)> {
        let text = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // Fields after the parenthesised command name.
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields.get(1)?.parse().ok()?;
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((ppid, (utime + stime) / ticks))
    };
    let all: Vec<(u32, u32, f64)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| stat(p).map(|(ppid, cpu)| (p, ppid, cpu)))
        .collect();
    let own = all.iter().find(|(p, _, _)| *p == pid).map_or(0.0, |t| t.2);
    let mut tree = vec![pid];
    let mut children = 0.0;
    let mut i = 0;
    while i < tree.len() {
        for (p, ppid, cpu) in &all {
            if *ppid == tree[i] {
                tree.push(*p);
                children += cpu;
            }
        }
        i += 1;
    }
    (own, children)
}

/// CPU seconds this process used.
fn own_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
