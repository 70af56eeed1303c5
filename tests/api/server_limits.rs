//! What slow, idle and too numerous clients can hold of the servers: headers sent
//! a byte a second and idle keep-alive connections are closed on time while normal
//! requests stay fast, connections beyond `HTTP_MAX_CONNECTIONS` are shed with a
//! `503`, and a call past its deadline ends DEADLINE_EXCEEDED on both servers.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};
use wiremock::{matchers::any, Mock, MockServer, ResponseTemplate};

use crate::helpers::{assert_body_reason, assert_reason, body_retry_delay, poll, TestApp};

const SLOW: usize = 2_000;
const IDLE: usize = 2_000;
/// Long enough that all 4,000 connections are open before the first is closed, so
/// the normal requests are measured while the slow and idle ones are held.
const HEADER_TIMEOUT: Duration = Duration::from_secs(8);
const IDLE_TIMEOUT: Duration = Duration::from_secs(8);
/// Room for a loaded two-core machine: a closing may come this much late.
const MARGIN: Duration = Duration::from_secs(3);

/// 4,000 sockets on each side (the app runs in this process) need more than the
/// usual soft limit of 1,024 open files.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= 2 * (SLOW + IDLE) as u64 + 1_000,
        "RLIMIT_NOFILE hard limit {} is too low for this test",
        limit.rlim_cur
    );
}

/// Reads one HTTP/1.1 response head and its `Content-Length` body; the status and
/// the head's text.
async fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    read_whole_response(stream)
        .await
        .map(|(status, head, _)| (status, head))
}

/// Reads one response: its status, head and body.
async fn read_whole_response(stream: &mut TcpStream) -> std::io::Result<(u16, String, String)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while bytes.len() < end + 4 + length {
                match stream.read(&mut chunk).await? {
                    0 => break,
                    n => bytes.extend_from_slice(&chunk[..n]),
                }
            }
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = String::from_utf8_lossy(&bytes[(end + 4).min(bytes.len())..]).to_string();
            return Ok((status, head, body));
        }
        match stream.read(&mut chunk).await? {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before a response",
                ))
            }
            n => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the server closes `stream` (end of file or a reset), at most `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Instant> {
    let mut chunk = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_on_time_and_do_not_slow_normal_requests() {
    raise_open_files_limit();
    let app = TestApp::spawn_with(&[
        ("HTTP_HEADER_TIMEOUT", "8s"),
        ("HTTP_IDLE_TIMEOUT", "8s"),
        ("HTTP_MAX_CONNECTIONS", "8192"),
    ])
    .await;
    let addr = app.http.trim_start_matches("http://").to_string();
    // Connects a few hundred at a time: a burst of thousands overflows the listen
    // backlog, and a dropped SYN is retried only a second later.
    let connecting = Arc::new(Semaphore::new(200));
    let established = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    // Headers one byte a second: the request line alone would take half a minute.
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            let (addr, connecting) = (addr.clone(), connecting.clone());
            let (established, closed_count) = (established.clone(), closed.clone());
            tokio::spawn(async move {
                let permit = connecting.acquire_owned().await.unwrap();
                let mut stream = TcpStream::connect(&addr)
                    .await
                    .expect("slow client connects");
                let connected = Instant::now();
                drop(permit);
                established.fetch_add(1, Ordering::Relaxed);
                let (mut reader, mut writer) = stream.split();
                let drip = async {
                    for byte in b"GET /healthz HTTP/1.1\r\nHost: spacet\r\n\r\n" {
                        if writer.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    std::future::pending::<()>().await;
                };
                let mut chunk = [0u8; 256];
                let closed = tokio::select! {
                    _ = drip => unreachable!(),
                    closed = tokio::time::timeout(HEADER_TIMEOUT + MARGIN + MARGIN, async {
                        loop {
                            match reader.read(&mut chunk).await {
                                Ok(0) | Err(_) => return Instant::now(),
                                Ok(_) => {}
                            }
                        }
                    }) => closed.ok(),
                };
                closed_count.fetch_add(1, Ordering::Relaxed);
                closed.map(|at| at - connected)
            })
        })
        .collect();

    // One request each, then nothing.
    let idle: Vec<_> = (0..IDLE)
        .map(|_| {
            let (addr, connecting) = (addr.clone(), connecting.clone());
            let (established, closed_count) = (established.clone(), closed.clone());
            tokio::spawn(async move {
                let permit = connecting.acquire_owned().await.unwrap();
                let mut stream = TcpStream::connect(&addr)
                    .await
                    .expect("idle client connects");
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: spacet\r\n\r\n")
                    .await
                    .unwrap();
                let (status, _) = read_response(&mut stream).await.expect("answered");
                let answered = Instant::now();
                drop(permit);
                established.fetch_add(1, Ordering::Relaxed);
                assert_eq!(status, 200);
                let closed = closed_within(&mut stream, IDLE_TIMEOUT + MARGIN + MARGIN).await;
                closed_count.fetch_add(1, Ordering::Relaxed);
                closed.map(|at| at - answered)
            })
        })
        .collect();

    // Opening 4,000 connections and answering 2,000 requests is a burst of real
    // work; what must not hurt is holding them, so the measurement starts once
    // all are open and lasts until the server has closed them all.
    assert!(
        poll(Duration::from_secs(20), || async {
            established.load(Ordering::Relaxed) == SLOW + IDLE
        })
        .await,
        "only {} of {} connections open after 20 s",
        established.load(Ordering::Relaxed),
        SLOW + IDLE
    );
    let all_open = started.elapsed();

    // Meanwhile, normal requests on two keep-alive clients.
    let load = |offset: usize| {
        let app_url = app.http.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let paths = ["/healthz", "/readiness", "/v1/launchpads"];
            let mut latencies = Vec::new();
            let end = Instant::now() + HEADER_TIMEOUT + MARGIN + MARGIN;
            let mut i = offset;
            while closed.load(Ordering::Relaxed) < SLOW + IDLE && Instant::now() < end {
                let sent = Instant::now();
                let response = client
                    .get(format!("{app_url}{}", paths[i % paths.len()]))
                    .send()
                    .await
                    .expect("normal request answered");
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.unwrap();
                // Held: answered before the server closed any of them.
                let held = closed.load(Ordering::Relaxed) == 0;
                latencies.push((held, sent.elapsed()));
                i += 1;
            }
            latencies
        })
    };
    let loads = [load(0), load(1)];
    let (mut held, mut closing) = (Vec::new(), Vec::new());
    for l in loads {
        for (while_held, latency) in l.await.unwrap() {
            if while_held { &mut held } else { &mut closing }.push(latency);
        }
    }

    let mut slow_closed = Vec::new();
    for task in slow {
        slow_closed.push(task.await.unwrap());
    }
    let mut idle_closed = Vec::new();
    for task in idle {
        idle_closed.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();

    held.sort();
    closing.sort();
    let figures = |latencies: &[Duration]| {
        if latencies.is_empty() {
            return "none".to_string();
        }
        format!(
            "{} requests, p50 {:?} p99 {:?} max {:?}",
            latencies.len(),
            percentile(latencies, 0.50),
            percentile(latencies, 0.99),
            latencies.last().unwrap()
        )
    };
    let slow_open = slow_closed.iter().filter(|c| c.is_none()).count();
    let idle_open = idle_closed.iter().filter(|c| c.is_none()).count();
    let mut slow_times: Vec<_> = slow_closed.into_iter().flatten().collect();
    let mut idle_times: Vec<_> = idle_closed.into_iter().flatten().collect();
    slow_times.sort();
    idle_times.sort();
    println!(
        "server_limits: normal requests while {SLOW} slow + {IDLE} idle connections are held: \
         {}; while the server closes them: {}; slow closed {} (after {}..{}, still open {slow_open}); \
         idle closed {} (after {}..{}, still open {idle_open}); all open after {}, whole run {}",
        figures(&held),
        figures(&closing),
        slow_times.len(),
        seconds(slow_times[0]),
        seconds(*slow_times.last().unwrap()),
        idle_times.len(),
        seconds(idle_times[0]),
        seconds(*idle_times.last().unwrap()),
        seconds(all_open),
        seconds(elapsed),
    );

    assert_eq!(slow_open, 0, "slow connections left open");
    assert_eq!(idle_open, 0, "idle connections left open");
    // Closed by the header timeout: not before it, and not much after it.
    // (A client task may note its connection a little late on a busy machine.)
    assert!(slow_times[0] >= HEADER_TIMEOUT / 2);
    assert!(*slow_times.last().unwrap() <= HEADER_TIMEOUT + MARGIN);
    // Kept alive for a while, then closed by the idle timeout.
    assert!(idle_times[0] >= IDLE_TIMEOUT / 2);
    assert!(*idle_times.last().unwrap() <= IDLE_TIMEOUT + MARGIN);
    // Holding thousands of slow and idle connections costs the others nothing
    // noticeable. Closing them all in the same instant (they were opened in one
    // burst) is a burst of work, so that phase gets a looser bound.
    assert!(held.len() >= 50, "too few normal requests to judge");
    let p99 = percentile(&held, 0.99);
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?} while held");
    if !closing.is_empty() {
        let p99 = percentile(&closing, 0.99);
        assert!(
            p99 < Duration::from_millis(500),
            "p99 {p99:?} while closing"
        );
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503_with_retry_after_until_others_close() {
    let app = TestApp::spawn_with(&[
        ("HTTP_MAX_CONNECTIONS", "20"),
        ("HTTP_IDLE_TIMEOUT", "60s"),
        ("HTTP_HEADER_TIMEOUT", "60s"),
    ])
    .await;
    let addr = app.http.trim_start_matches("http://").to_string();
    // The harness's own client may keep a connection from the readiness poll, so
    // the first one or two refusals can come a little before the 20th of ours.
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..25 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: spacet\r\n\r\n")
            .await
            .unwrap();
        let (status, head, body) = read_whole_response(&mut stream).await.unwrap();
        match status {
            200 => {
                assert!(refused.is_empty(), "served after a refusal: {head}");
                held.push(stream);
            }
            503 => {
                // grpc-gateway's body: OVERLOADED with the same retry advice.
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_body_reason(&body, "OVERLOADED");
                assert_eq!(body_retry_delay(&body).as_deref(), Some("1s"), "{body}");
                refused.push((stream, head))
            }
            other => panic!("unexpected {other}: {head}"),
        }
    }
    println!(
        "server_limits: {} connections served and held, {} refused",
        held.len(),
        refused.len()
    );
    assert!((18..=20).contains(&held.len()), "{} held", held.len());
    for (mut stream, head) in refused {
        assert!(head.to_lowercase().contains("retry-after: 1"), "{head}");
        // Refused, not queued: the server closes the connection.
        assert!(
            closed_within(&mut stream, Duration::from_secs(5))
                .await
                .is_some(),
            "a refused connection stayed open"
        );
    }

    drop(held);
    // Once the held connections are gone, a new one is served again.
    let served = poll(Duration::from_secs(10), || async {
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            return false;
        };
        if stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: spacet\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        matches!(read_response(&mut stream).await, Ok((200, _)))
    })
    .await;
    assert!(served, "no connection served after the others closed");
}

#[tokio::test]
async fn a_call_past_its_deadline_ends_deadline_exceeded_on_both_servers() {
    // A SpaceX that takes its time: a forced sync waits on it.
    let spacex = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(20)))
        .mount(&spacex)
        .await;
    let app = TestApp::spawn_with(&[
        ("SPACEX_API_URL", &spacex.uri()),
        ("SPACEX_TIMEOUT", "30s"),
        ("SPACEX_RETRIES", "0"),
        ("GRPC_REQUEST_TIMEOUT", "500ms"),
        ("HTTP_REQUEST_TIMEOUT", "500ms"),
    ])
    .await;

    // The client's grpc-timeout (50 ms), shorter than GRPC_REQUEST_TIMEOUT, wins.
    // Sent over plain HTTP/2: tonic's client would time the call out itself.
    let stream = TcpStream::connect(("127.0.0.1", app.grpc_port))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!(
        "http://127.0.0.1:{}/spacet.v1.SpaceTService/TriggerSync",
        app.grpc_port
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", "50m")
    // One empty message: no compression flag, length 0.
    .body(axum::body::Body::from(vec![0u8; 5]))
    .unwrap();
    let sent = Instant::now();
    let response = sender.send_request(request).await.unwrap();
    let took = sent.elapsed();
    println!("server_limits: grpc-timeout 50m answered after {took:?}");
    assert_eq!(response.headers()["grpc-status"], "4", "{response:?}");
    assert!(took < Duration::from_millis(450), "{took:?}");

    // Without a grpc-timeout, GRPC_REQUEST_TIMEOUT applies.
    let sent = Instant::now();
    let status = app
        .grpc()
        .await
        .trigger_sync(spacet::proto::TriggerSyncRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_reason(&status, "DEADLINE_EXCEEDED");
    assert!(sent.elapsed() < Duration::from_secs(5));

    // Over HTTP, HTTP_REQUEST_TIMEOUT: 504 with grpc-gateway's body.
    let (status, body) = app.post_json("/v1/admin/sync", &json!({})).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], 4, "{body}");
    assert_body_reason(&body, "DEADLINE_EXCEEDED");

    // The probes stay fast meanwhile.
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
}
