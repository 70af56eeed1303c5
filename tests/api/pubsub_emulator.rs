//! The real Pub/Sub emulator for tests: started on a free port, stopped and
//! restarted on the same port, killed with the test process; a TCP gate that can
//! cut the app off from it; and a subscriber through the emulator's REST API.

use std::{
    collections::HashMap,
    io::Read as _,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Where the machine image installs the emulator; `PUBSUB_EMULATOR_BIN` overrides.
const DEFAULT_BIN: &str =
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";

fn emulator_bin() -> PathBuf {
    let bin =
        PathBuf::from(std::env::var("PUBSUB_EMULATOR_BIN").unwrap_or_else(|_| DEFAULT_BIN.into()));
    assert!(
        bin.is_file(),
        "the Pub/Sub emulator is missing: {} does not exist. Install the Google Cloud CLI's \
         pubsub-emulator component (apt: google-cloud-cli-pubsub-emulator) or set PUBSUB_EMULATOR_BIN.",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range (32768+), so
/// that no port-0 listener or outgoing connection takes it before the process it
/// is for listens on it (a binary being started, an emulator restarting on it).
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000")
}

struct Running {
    pid: u32,
    // A Mutex makes the shared emulator `Sync`.
    exited: Mutex<mpsc::Receiver<()>>,
}

/// One emulator process, stopped and restartable on its port, killed on drop.
pub struct Emulator {
    port: u16,
    running: Option<Running>,
    log: PathBuf,
}

impl Emulator {
    /// Starts an emulator on a free port and waits until it answers.
    pub async fn start() -> Emulator {
        let log = tempfile::Builder::new()
            .prefix("pubsub-emulator-")
            .suffix(".log")
            .tempfile()
            .expect("emulator log file")
            .into_temp_path()
            .keep()
            .expect("keep the log file");
        let mut emulator = Emulator {
            port: free_port(),
            running: None,
            log,
        };
        emulator.launch().await;
        emulator
    }

    /// The one emulator the tests of this process share; each test isolates itself
    /// with its own project id. Lives as long as the process.
    pub async fn shared() -> &'static Emulator {
        static SHARED: tokio::sync::OnceCell<Emulator> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(Emulator::start).await
    }

    /// `127.0.0.1:PORT`, the form of `PUBSUB_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A client of the emulator's REST API for one project.
    pub fn rest(&self, project: &str) -> Rest {
        Rest::new(&self.host(), project)
    }

    /// Starts the emulator and waits until it answers. A restart on the same port
    /// can lose the race with the old server's sockets (the emulator reports a
    /// BindException and never answers): then it is started again.
    async fn launch(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log_start = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            self.spawn();
            let client = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{}/", self.port);
            loop {
                if let Ok(r) = client
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    if r.text().await.is_ok_and(|t| t.trim() == "Ok") {
                        return;
                    }
                }
                let running = self.running.as_ref().unwrap();
                if running.exited.lock().unwrap().try_recv().is_ok() {
                    panic!("the Pub/Sub emulator exited at start:\n{}", self.log_tail());
                }
                if self.log_since(log_start).contains("BindException") {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "the Pub/Sub emulator did not answer on port {} within 120 s:\n{}",
                        self.port,
                        self.log_tail()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.stop().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn spawn(&mut self) {
        let bin = emulator_bin();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("emulator log");
        let mut command = Command::new(bin);
        if std::env::var_os("CLOUD_PUBSUB_EMULATOR_OPTS").is_none() {
            // The JVM's default heap is a quarter of the machine's memory; several
            // emulators run at once here, on a machine other builds share.
            command.env("CLOUD_PUBSUB_EMULATOR_OPTS", "-Xmx512m");
        }
        command
            .arg("--host=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the emulator gets SIGKILL when the
        // thread that spawned it ends, and that thread lives until it exits.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let (spawned_tx, spawned_rx) = mpsc::channel();
        let (exited_tx, exited) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("pubsub-emulator-{}", self.port))
            .spawn(move || match command.spawn() {
                Ok(mut child) => {
                    let _ = spawned_tx.send(Ok(child.id()));
                    let _ = child.wait();
                    let _ = exited_tx.send(());
                }
                Err(e) => {
                    let _ = spawned_tx.send(Err(e));
                }
            })
            .expect("emulator thread");
        let pid = spawned_rx
            .recv()
            .expect("emulator thread answers")
            .expect("the Pub/Sub emulator starts");
        self.running = Some(Running {
            pid,
            exited: Mutex::new(exited),
        });
    }

    fn log_since(&self, offset: u64) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&text[(offset as usize).min(text.len())..]).into_owned()
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops the emulator (SIGTERM, then SIGKILL after 10 s) and waits until it has
    /// exited. Its topics and subscriptions are gone.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            // SAFETY: a pid we spawned and whose thread has not reaped it yet.
            unsafe { libc::kill(running.pid as i32, libc::SIGTERM) };
            let exited = running.exited.into_inner().unwrap();
            if exited.recv_timeout(Duration::from_secs(10)).is_err() {
                // SAFETY: as above.
                unsafe { libc::kill(running.pid as i32, libc::SIGKILL) };
                let _ = exited.recv_timeout(Duration::from_secs(10));
            }
        })
        .await
        .expect("stopping the emulator");
    }

    /// Starts the emulator again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // The log stays for a failing test to be diagnosed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
        if let Some(running) = self.running.take() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(running.pid as i32, libc::SIGKILL) };
            let _ = running
                .exited
                .into_inner()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        }
    }
}

/// A TCP gate between the app and the emulator: closed, its port refuses
/// connections and open ones are cut, as if Pub/Sub were unreachable.
pub struct Gate {
    port: u16,
    upstream: u16,
    open: Mutex<Option<CancellationToken>>,
}

impl Gate {
    /// An open gate to `upstream` on a free port.
    pub async fn open_to(upstream: u16) -> Arc<Gate> {
        let gate = Arc::new(Gate {
            port: free_port(),
            upstream,
            open: Mutex::new(None),
        });
        gate.open().await;
        gate
    }

    /// `127.0.0.1:PORT`, to give the app as `PUBSUB_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts forwarding (again).
    pub async fn open(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("gate cannot listen on port {} again: {e}", self.port),
            }
        };
        let token = CancellationToken::new();
        let upstream = self.upstream;
        let stop = token.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        if let Some(old) = self.open.lock().unwrap().replace(token) {
            old.cancel();
        }
    }

    /// Stops listening and cuts every forwarded connection.
    pub fn close(&self) {
        if let Some(token) = self.open.lock().unwrap().take() {
            token.cancel();
        }
    }
}

/// One message as a subscriber receives it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub data: Value,
    pub attributes: HashMap<String, String>,
    pub ordering_key: String,
}

impl Received {
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }

    pub fn event_id(&self) -> i64 {
        self.attr("event_id").parse().expect("event_id is a number")
    }
}

/// The emulator's REST API for one project: topics, subscriptions, pull and ack.
pub struct Rest {
    base: String,
    project: String,
    http: reqwest::Client,
}

impl Rest {
    /// A client of the emulator at `host` (`host:port`) for one project.
    pub fn new(host: &str, project: &str) -> Rest {
        Rest {
            base: format!("http://{host}/v1/projects/{project}"),
            project: project.to_string(),
            // No kept-alive connections: the emulator would close them when it
            // stops, leaving its port in TIME_WAIT, in the way of a restart.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("HTTP client"),
        }
    }

    pub fn topic_name(&self, topic: &str) -> String {
        format!("projects/{}/topics/{topic}", self.project)
    }

    /// Creates a resource (`topics/NAME`, `subscriptions/NAME`); an existing one is fine.
    async fn create(&self, resource: &str, body: Value) {
        let r = self
            .http
            .put(format!("{}/{resource}", self.base))
            .json(&body)
            .send()
            .await
            .expect("emulator answers");
        assert!(
            r.status().is_success() || r.status() == 409,
            "create {resource}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }

    /// Creates a topic; an existing one is fine.
    pub async fn create_topic(&self, topic: &str) {
        self.create(&format!("topics/{topic}"), json!({})).await;
    }

    pub async fn topic_exists(&self, topic: &str) -> bool {
        let r = self
            .http
            .get(format!("{}/topics/{topic}", self.base))
            .send()
            .await
            .expect("emulator answers");
        r.status().is_success()
    }

    /// Creates an ordered subscription to `topic`; an existing one is fine.
    pub async fn create_subscription(&self, subscription: &str, topic: &str) {
        let body = json!({
            "topic": self.topic_name(topic),
            "ackDeadlineSeconds": 10,
            "enableMessageOrdering": true,
        });
        self.create(&format!("subscriptions/{subscription}"), body)
            .await;
    }

    /// Pulls what is available now and acknowledges it.
    pub async fn pull(&self, subscription: &str) -> Vec<Received> {
        let response: Value = self
            .http
            .post(format!("{}/subscriptions/{subscription}:pull", self.base))
            .json(&json!({"maxMessages": 1000, "returnImmediately": true}))
            .send()
            .await
            .expect("emulator answers")
            .error_for_status()
            .expect("pull succeeds")
            .json()
            .await
            .expect("pull answers JSON");
        let mut received = Vec::new();
        let mut ack_ids = Vec::new();
        // An empty pull answers `{}`.
        for m in response["receivedMessages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            ack_ids.push(m["ackId"].as_str().unwrap_or_default().to_string());
            let message = &m["message"];
            let data = base64::engine::general_purpose::STANDARD
                .decode(message["data"].as_str().unwrap_or_default())
                .expect("data is base64");
            received.push(Received {
                message_id: message["messageId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                data: serde_json::from_slice(&data).expect("data is JSON"),
                attributes: serde_json::from_value(message["attributes"].clone())
                    .unwrap_or_default(),
                ordering_key: message["orderingKey"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        if !ack_ids.is_empty() {
            self.http
                .post(format!(
                    "{}/subscriptions/{subscription}:acknowledge",
                    self.base
                ))
                .json(&json!({"ackIds": ack_ids}))
                .send()
                .await
                .expect("emulator answers")
                .error_for_status()
                .expect("ack succeeds");
        }
        received
    }

    /// Pulls until `n` messages have arrived or `deadline` passes; returns them all.
    pub async fn pull_at_least(
        &self,
        subscription: &str,
        n: usize,
        deadline: Duration,
    ) -> Vec<Received> {
        self.pull_until(subscription, deadline, |all| all.len() >= n)
            .await
    }

    /// Pulls until what has arrived satisfies `done` or `deadline` passes; returns
    /// everything that arrived.
    pub async fn pull_until(
        &self,
        subscription: &str,
        deadline: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let end = Instant::now() + deadline;
        let mut all = Vec::new();
        loop {
            all.extend(self.pull(subscription).await);
            if done(&all) || Instant::now() >= end {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A project id of its own for one test on the shared emulator.
pub fn unique_project() -> String {
    format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}
