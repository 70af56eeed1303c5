//! Settings in layers: built-in defaults → `config/default.yaml` (or the file given
//! with `--config`) → environment variables. Every setting has one flat name: the
//! lowercase key in YAML, the uppercase name in the environment (`http_port` / `HTTP_PORT`).
//!
//! The file may also be the Go service's: nested sections (`http: {port: 8080}`), each
//! of its keys mapped to one of our settings by [`GO_KEYS`]; the Go service's
//! environment names (`POSTGRES_DSN`, ...) are accepted as aliases of ours.

pub mod go;
mod parse;

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use config::Source as _;
pub use go::GO_KEYS;
use parse::issuer_url_allowed;
pub use parse::{parse_dsn, parse_duration, parse_log_level};
use sqlx::postgres::PgConnectOptions;

/// Every setting: key, built-in default, description. The README's table mirrors this.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "app_name",
        "spacet",
        "Service name, in logs and Pub/Sub attributes",
    ),
    (
        "app_version",
        env!("CARGO_PKG_VERSION"),
        "Version reported in logs",
    ),
    (
        "log_level",
        "info",
        "Level (`error`, `warn`, `info`, `debug`, `trace`, any case; the Go service's `warning` too) or tracing filter (`spacet=debug,sqlx=warn`)",
    ),
    (
        "log_format",
        "auto",
        "`auto` (pretty on a terminal, JSON otherwise), `pretty`, `json`, or `gcp` (the JSON Cloud Logging reads: `severity`, `logging.googleapis.com/trace`, ...)",
    ),
    (
        "log_gcp_project",
        "",
        "Google Cloud project named in the `logging.googleapis.com/trace` field of `LOG_FORMAT=gcp` lines; empty: `GOOGLE_CLOUD_PROJECT`, else `PUBSUB_PROJECT_ID` when set, else the bare trace id",
    ),
    ("bind_address", "0.0.0.0", "Address both servers listen on"),
    (
        "http_port",
        "8080",
        "HTTP port (gateway, probes, metrics); 0 picks a free port",
    ),
    ("grpc_port", "8081", "gRPC port; 0 picks a free port"),
    (
        "rockets_port",
        "8088",
        "Port of the challenge's ingestion listener: only `POST /messages`, without a token (keep it on a private network); 0 turns it off",
    ),
    (
        "shutdown_grace_period",
        "10s",
        "Time in-flight requests get to finish after SIGTERM",
    ),
    (
        "shutdown_drain_delay",
        "0s",
        "Time readiness reports 503 before the listeners close (give load balancers time)",
    ),
    (
        "http_body_limit",
        "65536",
        "Largest accepted HTTP request body, in bytes",
    ),
    (
        "http_header_timeout",
        "5s",
        "Time a client gets to send a request's headers (also counted from the moment a keep-alive connection goes idle); the connection is closed after it",
    ),
    (
        "http_request_timeout",
        "30s",
        "Time an HTTP request may take to be answered; after it the answer is 504 DEADLINE_EXCEEDED",
    ),
    (
        "http_idle_timeout",
        "5s",
        "An HTTP connection with no traffic this long is closed (after its current answer, if any)",
    ),
    (
        "http_max_connections",
        "4096",
        "Open HTTP connections beyond which new ones are answered `503` with `Retry-After: 1` and closed",
    ),
    (
        "grpc_request_timeout",
        "30s",
        "Longest time a gRPC call may take (a shorter client `grpc-timeout` wins); after it the call ends DEADLINE_EXCEEDED",
    ),
    (
        "grpc_max_concurrent_streams",
        "200",
        "Concurrent calls (HTTP/2 streams) one gRPC connection may have open",
    ),
    (
        "cors_allowed_origins",
        "",
        "Comma-separated origins allowed by CORS, `*` for any; empty turns CORS off",
    ),
    (
        "pg_dsn",
        "",
        "PostgreSQL DSN (libpq key/value or postgres:// URL); empty starts an embedded PostgreSQL",
    ),
    (
        "pg_pool_max",
        "10",
        "Largest number of pooled database connections",
    ),
    (
        "pg_connect_timeout",
        "60s",
        "How long start-up waits for the database to come up",
    ),
    (
        "pg_statement_timeout",
        "10s",
        "PostgreSQL `statement_timeout` of every connection: a longer statement is cancelled (UNAVAILABLE, HTTP 503)",
    ),
    (
        "pg_lock_timeout",
        "5s",
        "PostgreSQL `lock_timeout` of every connection: a longer wait for a lock fails the statement (UNAVAILABLE, HTTP 503)",
    ),
    (
        "pg_idle_in_transaction_timeout",
        "30s",
        "PostgreSQL `idle_in_transaction_session_timeout`: a session idle this long inside a transaction is ended, releasing its locks",
    ),
    (
        "embedded_pg_dir",
        "./.spacet/postgres",
        "Data directory of the embedded PostgreSQL",
    ),
    ("seats_per_flight", "100", "Seats on each flight"),
    (
        "auth_mode",
        "auto",
        "`oidc` (tokens of AUTH_ISSUER), `dev` (tokens `spacet token` signs with AUTH_DEV_KEY_FILE), `none` (no authentication: every caller may do everything; for trusted networks and Go clients that send no token) or `auto` (`oidc` when AUTH_ISSUER is set; else `dev` with the embedded database; with an external PG_DSN and no issuer the service refuses to start)",
    ),
    (
        "auth_issuer",
        "",
        "OIDC issuer URL (https, or http on a loopback host); its discovery document gives the keys (JWKS)",
    ),
    (
        "auth_audience",
        "",
        "The `aud` tokens must carry (required with an issuer)",
    ),
    (
        "auth_roles_claim",
        "roles",
        "Claim holding the caller's roles (`passenger`, `agent`, `admin`, `telemetry`): a list or a space/comma-separated string; a dotted path reaches a nested claim (`realm_access.roles`)",
    ),
    (
        "auth_dev_key_file",
        "./.spacet/auth-dev.key",
        "Development signing key (created on first use, mode 0600), beside the embedded database",
    ),
    (
        "auth_clock_skew",
        "30s",
        "Clock skew allowed on a token's `exp` and `nbf`",
    ),
    (
        "auth_jwks_min_refresh",
        "10s",
        "Shortest time between two fetches of the issuer's keys (a token with an unknown key id triggers one)",
    ),
    (
        "auth_jwks_max_age",
        "1h",
        "The issuer's keys are fetched again when older than this",
    ),
    (
        "rockets_public_read",
        "false",
        "Let callers without a token read rocket state (`GET /rockets`, the dashboard, the gRPC RocketService reads)",
    ),
    (
        "booking_rate_limit",
        "30",
        "Bookings one principal may make per minute (bursts up to it); beyond, RESOURCE_EXHAUSTED / 429 with Retry-After; 0 turns it off",
    ),
    (
        "sync_rate_limit",
        "2",
        "Forced SpaceX syncs one principal may trigger per minute; 0 turns it off",
    ),
    (
        "max_active_tickets_per_passenger",
        "10",
        "Confirmed tickets with a launch day from today on that one passenger may hold; the next booking is refused ACTIVE_TICKET_LIMIT",
    ),
    (
        "metrics_port",
        "0",
        "Serve `/metrics` on its own listener on this port (and not on HTTP_PORT); 0 keeps it on HTTP_PORT",
    ),
    (
        "grpc_reflection",
        "true",
        "Serve gRPC server reflection (v1 and v1alpha)",
    ),
    (
        "spacex_api_url",
        "https://api.spacexdata.com/v4",
        "Base URL of the SpaceX v4 API",
    ),
    (
        "spacex_sync_enabled",
        "true",
        "Run the scheduled SpaceX sync",
    ),
    (
        "orchestrator_interval",
        "1h",
        "Time between SpaceX syncs (a bare number means hours)",
    ),
    (
        "spacex_timeout",
        "10s",
        "Timeout of one SpaceX HTTP request",
    ),
    (
        "spacex_retries",
        "3",
        "Retries of a SpaceX request after a 5xx, timeout or connection error",
    ),
    (
        "spacex_retry_backoff",
        "500ms",
        "Delay before the first SpaceX retry, doubled for each further one (at most 10s), with jitter (a bare number means milliseconds)",
    ),
    (
        "launchpads_max_age",
        "24h",
        "Launchpads are refreshed from SpaceX when older than this",
    ),
    (
        "spacex_allow_http",
        "false",
        "Allow a plain `http://` SPACEX_API_URL (local fakes); otherwise https only, and no redirect to another scheme",
    ),
    (
        "spacex_max_response_bytes",
        "16777216",
        "Largest SpaceX answer read, in bytes (16 MiB); a larger or endless one is cut there and fails the sync",
    ),
    (
        "spacex_max_launches",
        "10000",
        "Most upcoming launches a sync accepts from SpaceX; more fails the sync",
    ),
    (
        "spacex_max_cancellations",
        "500",
        "A sync that would cancel more tickets than this, or unblock every day SpaceX blocks, is held until an admin confirms it (`spacet sync --confirm`)",
    ),
    (
        "pubsub_enabled",
        "false",
        "Publish events to Pub/Sub (otherwise they are logged); when neither the file nor the environment sets it, a non-empty PUBSUB_EMULATOR_HOST turns it on",
    ),
    (
        "pubsub_emulator_host",
        "",
        "host:port of a Pub/Sub emulator; anonymous credentials, topic created if missing",
    ),
    (
        "pubsub_project_id",
        "spacet",
        "Google Cloud project of the topic",
    ),
    (
        "pubsub_launches_topic",
        "launches",
        "Topic the ticket events go to",
    ),
    (
        "events_format",
        "v1",
        "What goes to the launches topic: `v1` (TicketBooked / TicketCancelled, one per ticket), `legacy` (only the Go service's BookingsCancelled, one per SpaceX sync that cancelled tickets) or `both`",
    ),
    (
        "pubsub_publish_timeout",
        "5s",
        "Bound on one publish (the client's own retries can hang for minutes)",
    ),
    (
        "notifications_batch_size_max",
        "100",
        "Outbox rows claimed per relay round",
    ),
    (
        "notifications_interval",
        "5s",
        "Outbox poll interval besides LISTEN/NOTIFY wake-ups (a bare number means seconds)",
    ),
    (
        "notifications_max_attempts",
        "10",
        "Failed publishes of one event before it is parked",
    ),
    (
        "outbox_relay_enabled",
        "true",
        "Run the outbox relay in this instance (several instances share the work safely)",
    ),
    (
        "outbox_retry_backoff",
        "1s",
        "Delay before an event's first retry after a failed publish; doubles per attempt",
    ),
    (
        "outbox_retry_backoff_max",
        "1m",
        "Longest delay between two publish attempts of one event",
    ),
    (
        "outbox_retention",
        "24h",
        "How long published events are kept before deletion",
    ),
    (
        "outbox_backlog_threshold",
        "1000",
        "Unpublished events above which /liveness reports the outbox degraded",
    ),
    (
        "outbox_backlog_max_age",
        "5m",
        "Age of the oldest unpublished event above which the outbox is degraded",
    ),
    (
        "rockets_write_timeout",
        "5s",
        "Longest time POST /messages waits for the rocket writer (queueing and commit); after it the answer is 503 and a resend is safe",
    ),
    (
        "rockets_max_watchers",
        "200",
        "Concurrent WatchRockets streams; the next one is refused RESOURCE_EXHAUSTED",
    ),
    (
        "rocket_message_retention",
        "30d",
        "Rocket messages received longer ago are deleted (the rockets' states are kept)",
    ),
];

/// A setting that failed to load: names the setting and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Environment name of the setting (or `--config`).
    pub setting: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration: {}: {}",
            self.setting, self.problem
        )
    }
}

impl std::error::Error for ConfigError {}

/// What the relay publishes to the launches topic (`EVENTS_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsFormat {
    /// This service's events: TicketBooked and TicketCancelled, one per ticket.
    V1,
    /// Only the Go service's message: one BookingsCancelled per SpaceX sync that
    /// cancelled tickets.
    Legacy,
    /// Both.
    Both,
}

impl EventsFormat {
    /// True when this service's own (spacet.v1) events are published.
    pub fn publishes_v1(self) -> bool {
        matches!(self, EventsFormat::V1 | EventsFormat::Both)
    }

    /// True when the Go service's messages are published.
    pub fn publishes_legacy(self) -> bool {
        matches!(self, EventsFormat::Legacy | EventsFormat::Both)
    }
}

/// How callers are authenticated (`AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Tokens of an OIDC issuer.
    Oidc,
    /// Tokens signed with the development key.
    Dev,
    /// No authentication: every caller may do everything.
    None,
    /// `auto` with an external database and no issuer: nothing may serve with it
    /// (see [`AuthSettings::require_mode`]).
    Missing,
}

/// Authentication and per-principal limits.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub issuer: String,
    pub audience: String,
    pub roles_claim: String,
    pub dev_key_file: PathBuf,
    pub clock_skew: Duration,
    pub jwks_min_refresh: Duration,
    pub jwks_max_age: Duration,
    pub rockets_public_read: bool,
    /// Bookings per principal per minute; 0 is no limit.
    pub booking_rate_limit: u32,
    /// Forced syncs per principal per minute; 0 is no limit.
    pub sync_rate_limit: u32,
    pub max_active_tickets_per_passenger: i64,
}

impl AuthSettings {
    /// The mode tokens are verified with; an error naming the settings when
    /// `AUTH_MODE=auto` found no issuer with an external database — a deployment
    /// that forgot AUTH_ISSUER must not fall back to development keys.
    pub fn require_mode(&self) -> Result<AuthMode, ConfigError> {
        match self.mode {
            AuthMode::Missing => Err(ConfigError {
                setting: "AUTH_ISSUER".into(),
                problem: "is required with an external database (PG_DSN) and AUTH_MODE=auto: set AUTH_ISSUER and AUTH_AUDIENCE to your OIDC issuer, or choose a mode explicitly (AUTH_MODE=dev for development tokens, AUTH_MODE=none behind a trusted gateway)".into(),
            }),
            mode => Ok(mode),
        }
    }
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
    /// JSON with Cloud Logging's field names (`severity`, `logging.googleapis.com/trace`).
    Gcp,
}

/// Where the database is.
#[derive(Clone)]
// Built once at start-up: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Database {
    /// A server given by `PG_DSN`.
    External(Box<PgConnectOptions>),
    /// An embedded PostgreSQL started from the system binaries in this directory.
    Embedded(PathBuf),
}

impl fmt::Debug for Database {
    // Never print a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::External(o) => write!(
                f,
                "External(host={} port={} db={:?})",
                o.get_host(),
                o.get_port(),
                o.get_database()
            ),
            Database::Embedded(dir) => write!(f, "Embedded({})", dir.display()),
        }
    }
}

/// All settings, parsed and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub app_name: String,
    pub app_version: String,
    pub log_level: String,
    pub log_format: LogFormat,
    /// The project of `LOG_FORMAT=gcp`'s trace field, when known.
    pub log_gcp_project: Option<String>,
    pub bind_address: IpAddr,
    pub http_port: u16,
    pub grpc_port: u16,
    /// `ROCKETS_PORT`; `None` when it is 0 (no ingestion listener).
    pub rockets_port: Option<u16>,
    pub shutdown_grace_period: Duration,
    pub shutdown_drain_delay: Option<Duration>,
    pub http_body_limit: usize,
    pub server_limits: ServerLimits,
    pub cors_allowed_origins: Vec<String>,
    pub database: Database,
    pub pg_pool_max: u32,
    pub pg_connect_timeout: Duration,
    pub pg_session_limits: PgSessionLimits,
    pub seats_per_flight: i32,
    pub spacex: SpaceXSettings,
    pub pubsub: PubSubSettings,
    pub outbox: OutboxSettings,
    pub rockets: RocketSettings,
    pub auth: AuthSettings,
    /// `/metrics` on a listener of its own.
    pub metrics_port: Option<u16>,
    pub grpc_reflection: bool,
}

/// Rocket telemetry settings.
#[derive(Debug, Clone)]
pub struct RocketSettings {
    /// Bound on queueing a message and waiting for its commit.
    pub write_timeout: Duration,
    /// Concurrent WatchRockets streams.
    pub max_watchers: usize,
    /// Age (by `received_at`) past which messages are deleted.
    pub message_retention: Duration,
}

/// Server-side limits set on every database connection (`PG_STATEMENT_TIMEOUT`,
/// `PG_LOCK_TIMEOUT`, `PG_IDLE_IN_TRANSACTION_TIMEOUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSessionLimits {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
}

/// What one client may hold of the HTTP and gRPC servers (`HTTP_HEADER_TIMEOUT`,
/// `HTTP_REQUEST_TIMEOUT`, `HTTP_IDLE_TIMEOUT`, `HTTP_MAX_CONNECTIONS`,
/// `GRPC_REQUEST_TIMEOUT`, `GRPC_MAX_CONCURRENT_STREAMS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub http_header_timeout: Duration,
    pub http_request_timeout: Duration,
    pub http_idle_timeout: Duration,
    pub http_max_connections: usize,
    pub grpc_request_timeout: Duration,
    pub grpc_max_concurrent_streams: u32,
}

/// SpaceX sync settings.
#[derive(Debug, Clone)]
pub struct SpaceXSettings {
    pub api_url: String,
    pub sync_enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
    pub launchpads_max_age: Duration,
    /// A plain `http://` API URL is allowed (local fakes).
    pub allow_http: bool,
    /// Largest answer read, in bytes.
    pub max_response_bytes: usize,
    /// Most upcoming launches accepted.
    pub max_launches: usize,
    /// More ticket cancellations than this hold a sync until it is confirmed.
    pub max_cancellations: usize,
    /// Which events a sync's cancellations write (`EVENTS_FORMAT`).
    pub events_format: EventsFormat,
}

/// Pub/Sub settings.
#[derive(Debug, Clone)]
pub struct PubSubSettings {
    pub enabled: bool,
    pub emulator_host: Option<String>,
    pub project_id: String,
    pub topic: String,
    pub publish_timeout: Duration,
}

/// Outbox relay settings.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub relay_enabled: bool,
    /// Which events the relay publishes; it marks the others done unsent (booking
    /// writes its per-ticket events whatever the format).
    pub events_format: EventsFormat,
    pub batch_size_max: i64,
    pub interval: Duration,
    pub max_attempts: i32,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub retention: Duration,
    pub backlog_threshold: i64,
    pub backlog_max_age: Duration,
}

impl Settings {
    /// Loads defaults, then the file (`--config`, or `config/default.yaml` when it
    /// exists; ours or the Go service's), then the variables `env` returns (the Go
    /// service's names too), and checks every value.
    pub fn load(
        config_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        for (key, default, _) in SETTINGS {
            builder = builder
                .set_default(*key, *default)
                .expect("static defaults are valid");
        }
        let file = match config_file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError {
                        setting: "--config".into(),
                        problem: format!("file {} does not exist", path.display()),
                    });
                }
                let values = config::File::from(path)
                    .required(true)
                    .collect()
                    .map_err(|e| ConfigError {
                        setting: "--config".into(),
                        problem: e.to_string(),
                    })?;
                FileValues::read(&path.display().to_string(), values)?
            }
            None => {
                let values = config::File::with_name("config/default")
                    .required(false)
                    .collect()
                    .map_err(|e| ConfigError {
                        setting: "--config".into(),
                        problem: e.to_string(),
                    })?;
                FileValues::read("config/default.yaml", values)?
            }
        };
        // Where a value came from when it is not the setting's own name: named in errors.
        let mut origins: HashMap<String, String> = HashMap::new();
        for (key, value, origin) in &file.values {
            builder = builder
                .set_override(key.as_str(), value.as_str())
                .expect("string overrides are valid");
            if let Some(origin) = origin {
                origins.insert(key.clone(), origin.clone());
            }
        }
        // A setting's environment value, and the Go service's name it came from.
        let env_value = |key: &str| -> Result<Option<(String, Option<String>)>, ConfigError> {
            let name = key.to_uppercase();
            let own = env(&name);
            let Some(alias) = go::env_alias(key) else {
                return Ok(own.map(|v| (v, None)));
            };
            match (own, env(&alias)) {
                (Some(own), Some(go)) if own != go => Err(ConfigError {
                    problem: format!(
                        "{name} and {alias} (the Go service's name) are both set, to different values"
                    ),
                    setting: name,
                }),
                (Some(own), _) => Ok(Some((own, None))),
                (None, Some(go)) => Ok(Some((go, Some(alias)))),
                (None, None) => Ok(None),
            }
        };
        let mut pubsub_enabled_set = file.values.iter().any(|(k, _, _)| k == "pubsub_enabled");
        for (key, _, _) in SETTINGS {
            if let Some((value, alias)) = env_value(key)? {
                pubsub_enabled_set |= *key == "pubsub_enabled";
                match alias {
                    Some(alias) => origins.insert(key.to_string(), alias),
                    None => origins.remove(*key),
                };
                builder = builder
                    .set_override(*key, value)
                    .expect("string overrides are valid");
            }
        }
        let raw = builder.build().map_err(|e| ConfigError {
            setting: "--config".into(),
            problem: e.to_string(),
        })?;
        let r = Reader { raw, origins };
        let pg_dsn = r.string("pg_dsn")?;
        let database = if pg_dsn.trim().is_empty() {
            Database::Embedded(PathBuf::from(r.string("embedded_pg_dir")?))
        } else {
            Database::External(Box::new(parse_dsn(&pg_dsn).map_err(|problem| {
                ConfigError {
                    setting: "PG_DSN".into(),
                    problem,
                }
            })?))
        };
        let events_format = match r.string("events_format")?.trim().to_lowercase().as_str() {
            "v1" => EventsFormat::V1,
            "legacy" => EventsFormat::Legacy,
            "both" => EventsFormat::Both,
            other => {
                return Err(r.error(
                    "events_format",
                    format!("{other:?} is not one of v1, legacy, both"),
                ))
            }
        };
        let auth = AuthSettings {
            mode: match r.string("auth_mode")?.trim().to_lowercase().as_str() {
                "oidc" => AuthMode::Oidc,
                "dev" => AuthMode::Dev,
                "none" => AuthMode::None,
                // Development tokens only where nothing can be a deployment: the
                // embedded database. An external database without an issuer is a
                // deployment that forgot AUTH_ISSUER, and must not start on keys
                // each replica makes up for itself.
                "auto" | "" if !r.string("auth_issuer")?.trim().is_empty() => AuthMode::Oidc,
                "auto" | "" if matches!(database, Database::Embedded(_)) => AuthMode::Dev,
                // Refused by whatever verifies tokens (serving, `spacet token`);
                // `spacet migrate` and `spacet sync` need no authentication.
                "auto" | "" => AuthMode::Missing,
                other => {
                    return Err(r.error(
                        "auth_mode",
                        format!("{other:?} is not one of auto, oidc, dev, none"),
                    ))
                }
            },
            issuer: r.string("auth_issuer")?.trim().to_string(),
            audience: r.string("auth_audience")?.trim().to_string(),
            roles_claim: r.non_empty("auth_roles_claim")?.trim().to_string(),
            dev_key_file: PathBuf::from(r.non_empty("auth_dev_key_file")?),
            clock_skew: r.duration("auth_clock_skew", Duration::from_secs(1))?,
            jwks_min_refresh: r.duration("auth_jwks_min_refresh", Duration::from_secs(1))?,
            jwks_max_age: r.duration("auth_jwks_max_age", Duration::from_secs(1))?,
            rockets_public_read: r.bool("rockets_public_read")?,
            booking_rate_limit: r.parse("booking_rate_limit")?,
            sync_rate_limit: r.parse("sync_rate_limit")?,
            max_active_tickets_per_passenger: r.positive("max_active_tickets_per_passenger")?,
        };
        if auth.mode == AuthMode::Oidc {
            if auth.issuer.is_empty() {
                return Err(r.error("auth_issuer", "is required with AUTH_MODE=oidc"));
            }
            if !issuer_url_allowed(&auth.issuer) {
                return Err(r.error(
                    "auth_issuer",
                    format!(
                        "{:?} is not an https URL (plain http is accepted on a loopback host only)",
                        auth.issuer
                    ),
                ));
            }
            if auth.audience.is_empty() {
                return Err(r.error("auth_audience", "is required with an issuer"));
            }
        }
        let settings = Settings {
            auth,
            metrics_port: Some(r.parse::<u16>("metrics_port")?).filter(|&port| port != 0),
            grpc_reflection: r.bool("grpc_reflection")?,
            app_name: r.non_empty("app_name")?,
            app_version: r.non_empty("app_version")?,
            log_level: {
                let value = r.non_empty("log_level")?;
                parse_log_level(&value).map_err(|problem| r.error("log_level", problem))?
            },
            log_format: match r.string("log_format")?.to_lowercase().as_str() {
                "auto" | "" => LogFormat::Auto,
                "pretty" | "text" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                "gcp" => LogFormat::Gcp,
                other => {
                    return Err(r.error(
                        "log_format",
                        format!("{other:?} is not one of auto, pretty, json, gcp"),
                    ))
                }
            },
            log_gcp_project: [
                Some(r.string("log_gcp_project")?),
                std::env::var("GOOGLE_CLOUD_PROJECT").ok(),
                std::env::var("PUBSUB_PROJECT_ID").ok(),
            ]
            .into_iter()
            .flatten()
            .map(|p| p.trim().to_string())
            .find(|p| !p.is_empty()),
            bind_address: r.parse("bind_address")?,
            http_port: r.parse("http_port")?,
            grpc_port: r.parse("grpc_port")?,
            rockets_port: Some(r.parse::<u16>("rockets_port")?).filter(|&port| port != 0),
            shutdown_grace_period: r.duration("shutdown_grace_period", Duration::from_secs(1))?,
            shutdown_drain_delay: {
                let value = r.string("shutdown_drain_delay")?;
                if matches!(value.trim(), "0" | "0s" | "") {
                    None
                } else {
                    Some(r.duration("shutdown_drain_delay", Duration::from_secs(1))?)
                }
            },
            http_body_limit: r.positive("http_body_limit")?,
            server_limits: ServerLimits {
                http_header_timeout: r.duration("http_header_timeout", Duration::from_secs(1))?,
                http_request_timeout: r.duration("http_request_timeout", Duration::from_secs(1))?,
                http_idle_timeout: r.duration("http_idle_timeout", Duration::from_secs(1))?,
                http_max_connections: r.positive("http_max_connections")?,
                grpc_request_timeout: r.duration("grpc_request_timeout", Duration::from_secs(1))?,
                grpc_max_concurrent_streams: r.positive("grpc_max_concurrent_streams")?,
            },
            cors_allowed_origins: r
                .string("cors_allowed_origins")?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            database,
            pg_pool_max: r.positive("pg_pool_max")?,
            pg_connect_timeout: r.duration("pg_connect_timeout", Duration::from_secs(1))?,
            pg_session_limits: PgSessionLimits {
                statement_timeout: r.duration("pg_statement_timeout", Duration::from_secs(1))?,
                lock_timeout: r.duration("pg_lock_timeout", Duration::from_secs(1))?,
                idle_in_transaction_timeout: r
                    .duration("pg_idle_in_transaction_timeout", Duration::from_secs(1))?,
            },
            seats_per_flight: r.positive("seats_per_flight")?,
            spacex: SpaceXSettings {
                api_url: {
                    let url = r.non_empty("spacex_api_url")?;
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(
                            r.error("spacex_api_url", format!("{url:?} is not an http(s) URL"))
                        );
                    }
                    if url.starts_with("http://") && !r.bool("spacex_allow_http")? {
                        return Err(r.error(
                            "spacex_api_url",
                            format!("{url:?} is not https (set SPACEX_ALLOW_HTTP=true for a local fake)"),
                        ));
                    }
                    url.trim_end_matches('/').to_string()
                },
                sync_enabled: r.bool("spacex_sync_enabled")?,
                interval: r.duration("orchestrator_interval", Duration::from_secs(3600))?,
                timeout: r.duration("spacex_timeout", Duration::from_secs(1))?,
                retries: r.parse("spacex_retries")?,
                retry_backoff: r.duration("spacex_retry_backoff", Duration::from_millis(1))?,
                launchpads_max_age: r.duration("launchpads_max_age", Duration::from_secs(3600))?,
                allow_http: r.bool("spacex_allow_http")?,
                max_response_bytes: r.positive("spacex_max_response_bytes")?,
                max_launches: r.positive("spacex_max_launches")?,
                max_cancellations: r.parse("spacex_max_cancellations")?,
                events_format,
            },
            pubsub: {
                let emulator_host = Some(r.string("pubsub_emulator_host")?.trim().to_string())
                    .filter(|s| !s.is_empty());
                PubSubSettings {
                    // The Go service's minimal environment: only PUBSUB_EMULATOR_HOST.
                    enabled: if pubsub_enabled_set {
                        r.bool("pubsub_enabled")?
                    } else {
                        emulator_host.is_some()
                    },
                    emulator_host,
                    project_id: r.non_empty("pubsub_project_id")?,
                    topic: r.non_empty("pubsub_launches_topic")?,
                    publish_timeout: r
                        .duration("pubsub_publish_timeout", Duration::from_secs(1))?,
                }
            },
            outbox: OutboxSettings {
                relay_enabled: r.bool("outbox_relay_enabled")?,
                events_format,
                batch_size_max: r.positive("notifications_batch_size_max")?,
                interval: r.duration("notifications_interval", Duration::from_secs(1))?,
                max_attempts: r.positive("notifications_max_attempts")?,
                retry_backoff: r.duration("outbox_retry_backoff", Duration::from_secs(1))?,
                retry_backoff_max: {
                    let max = r.duration("outbox_retry_backoff_max", Duration::from_secs(1))?;
                    if max < r.duration("outbox_retry_backoff", Duration::from_secs(1))? {
                        return Err(r.error(
                            "outbox_retry_backoff_max",
                            "must not be shorter than OUTBOX_RETRY_BACKOFF",
                        ));
                    }
                    max
                },
                retention: r.duration("outbox_retention", Duration::from_secs(3600))?,
                backlog_threshold: r.positive("outbox_backlog_threshold")?,
                backlog_max_age: r.duration("outbox_backlog_max_age", Duration::from_secs(1))?,
            },
            rockets: RocketSettings {
                write_timeout: r.duration("rockets_write_timeout", Duration::from_secs(1))?,
                max_watchers: r.positive("rockets_max_watchers")?,
                message_retention: r
                    .duration("rocket_message_retention", Duration::from_secs(1))?,
            },
        };
        Ok(settings)
    }

    /// Loads from the process environment.
    pub fn from_env(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(config_file, |name| std::env::var(name).ok())
    }
}

/// The settings a file gives, flattened: `(setting, value, origin)`, where origin
/// names the Go service's key (`http.port in FILE`) when the file is nested.
struct FileValues {
    values: Vec<(String, String, Option<String>)>,
}

impl FileValues {
    /// Flattens our flat file or the Go service's nested one (or a mix: top-level
    /// keys are ours, sections the Go service's). Any key neither knows is an error
    /// naming it.
    fn read(
        file: &str,
        map: config::Map<String, config::Value>,
    ) -> Result<FileValues, ConfigError> {
        let mut values = Vec::new();
        let mut entries: Vec<(String, config::Value)> = map.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in entries {
            if let config::ValueKind::Table(section) = value.kind {
                let mut keys: Vec<(String, config::Value)> = section.into_iter().collect();
                keys.sort_by(|a, b| a.0.cmp(&b.0));
                for (sub, value) in keys {
                    let path = format!("{key}.{sub}");
                    let Some(&go::GoKey { setting, .. }) = go::key(&key, &sub) else {
                        return Err(ConfigError {
                            setting: path,
                            problem: format!(
                                "unknown key in {file} (the Go service's keys: {}; or our flat settings at the top level, see the README)",
                                go::known_keys()
                            ),
                        });
                    };
                    let text = scalar(value).map_err(|problem| ConfigError {
                        setting: setting.to_uppercase(),
                        problem: format!("{path} in {file}: {problem}"),
                    })?;
                    values.push((setting.to_string(), text, Some(format!("{path} in {file}"))));
                }
            } else {
                if !SETTINGS.iter().any(|(s, _, _)| *s == key) {
                    return Err(ConfigError {
                        setting: key.to_uppercase(),
                        problem: format!(
                            "unknown setting in {file} (see the README's configuration table)"
                        ),
                    });
                }
                let text = scalar(value).map_err(|problem| ConfigError {
                    setting: key.to_uppercase(),
                    problem: format!("in {file}: {problem}"),
                })?;
                values.push((key, text, None));
            }
        }
        // A setting given twice (`http_port` and `http.port`) would be ambiguous.
        for (i, (key, _, origin)) in values.iter().enumerate() {
            if let Some((_, _, other)) = values[..i].iter().find(|(k, _, _)| k == key) {
                let name =
                    |o: &Option<String>| o.clone().unwrap_or_else(|| format!("{key} in {file}"));
                return Err(ConfigError {
                    setting: key.to_uppercase(),
                    problem: format!("set twice: by {} and by {}", name(other), name(origin)),
                });
            }
        }
        Ok(FileValues { values })
    }
}

/// One value of a file as text: YAML numbers and booleans as written, an empty key
/// as the empty string.
fn scalar(value: config::Value) -> Result<String, String> {
    match value.kind {
        config::ValueKind::Nil => Ok(String::new()),
        config::ValueKind::Table(_) => Err("expected a single value, found a section".into()),
        config::ValueKind::Array(_) => Err("expected a single value, found a list".into()),
        _ => value.into_string().map_err(|e| e.to_string()),
    }
}

/// How a deployment template marks a value its operator must fill in.
pub const PLACEHOLDER: &str = "REPLACE_ME";

struct Reader {
    raw: config::Config,
    /// Where a value came from, when not from the setting's own name.
    origins: HashMap<String, String>,
}

impl Reader {
    fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        let mut problem = problem.into();
        if let Some(origin) = self.origins.get(key) {
            problem = format!("{problem} (set by {origin})");
        }
        ConfigError {
            setting: key.to_uppercase(),
            problem,
        }
    }

    /// The value, refused when it is still a deployment template's placeholder
    /// (`REPLACE_ME...`): such a value must never reach a running service.
    fn string(&self, key: &str) -> Result<String, ConfigError> {
        let value = self
            .raw
            .get_string(key)
            .map_err(|e| self.error(key, e.to_string()))?;
        if value.trim_start().starts_with(PLACEHOLDER) {
            return Err(self.error(
                key,
                format!("is still the placeholder {value:?}: set it to the real value"),
            ));
        }
        Ok(value)
    }

    fn non_empty(&self, key: &str) -> Result<String, ConfigError> {
        let value = self.string(key)?;
        if value.trim().is_empty() {
            return Err(self.error(key, "must not be empty"));
        }
        Ok(value.trim().to_string())
    }

    fn parse<T: FromStr>(&self, key: &str) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        let value = self.string(key)?;
        value
            .trim()
            .parse()
            .map_err(|e| self.error(key, format!("{value:?}: {e}")))
    }

    fn positive<T: FromStr + PartialOrd + Default>(&self, key: &str) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        let value: T = self.parse(key)?;
        if value <= T::default() {
            return Err(self.error(key, "must be greater than zero"));
        }
        Ok(value)
    }

    fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        let value = self.string(key)?;
        match value.trim().to_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(self.error(key, format!("{value:?} is not a boolean (true or false)"))),
        }
    }

    fn duration(&self, key: &str, bare_unit: Duration) -> Result<Duration, ConfigError> {
        let value = self.string(key)?;
        parse_duration(&value, bare_unit)
            .map_err(|problem| self.error(key, format!("{value:?}: {problem}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(None, |k| env.get(k).cloned())
    }

    #[test]
    fn auto_auth_takes_development_tokens_only_with_the_embedded_database() {
        let embedded = load_env(&[]).unwrap();
        assert_eq!(embedded.auth.mode, AuthMode::Dev);

        // A deployment: an external database and no issuer must not serve (the
        // one-shot commands that verify no token still run).
        let deployment = load_env(&[("PG_DSN", "host=db user=spacet")]).unwrap();
        assert_eq!(deployment.auth.mode, AuthMode::Missing);
        let error = deployment.auth.require_mode().unwrap_err();
        assert_eq!(error.setting, "AUTH_ISSUER");
        assert!(error.problem.contains("AUTH_MODE=dev"), "{error}");

        let oidc = load_env(&[
            ("PG_DSN", "host=db user=spacet"),
            ("AUTH_ISSUER", "https://issuer.example"),
            ("AUTH_AUDIENCE", "spacet"),
        ])
        .unwrap();
        assert_eq!(oidc.auth.mode, AuthMode::Oidc);
        for (mode, expected) in [("dev", AuthMode::Dev), ("none", AuthMode::None)] {
            let explicit = load_env(&[("PG_DSN", "host=db"), ("AUTH_MODE", mode)]).unwrap();
            assert_eq!(explicit.auth.mode, expected);
        }
    }

    #[test]
    fn a_placeholder_value_stops_the_start_naming_its_setting() {
        let error = load_env(&[
            ("PG_DSN", "host=db"),
            ("AUTH_ISSUER", "https://issuer.example"),
            (
                "AUTH_AUDIENCE",
                "REPLACE_ME: the audience your issuer puts in tokens",
            ),
        ])
        .unwrap_err();
        assert_eq!(error.setting, "AUTH_AUDIENCE");
        assert!(error.problem.contains("placeholder"), "{error}");
        let error = load_env(&[("PUBSUB_PROJECT_ID", " REPLACE_ME")]).unwrap_err();
        assert_eq!(error.setting, "PUBSUB_PROJECT_ID");
    }

    #[test]
    fn every_setting_is_documented_in_the_readme_and_the_yaml_file() {
        let readme = include_str!("../README.md");
        let yaml = include_str!("../config/default.yaml");
        for (key, _, _) in SETTINGS {
            assert!(
                readme.contains(&format!("`{}`", key.to_uppercase())),
                "{key} missing from the README table"
            );
            assert!(
                yaml.contains(&format!("# {key}:")),
                "{key} missing from config/default.yaml"
            );
        }
    }

    /// A file with `text` in a temporary directory.
    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    fn load_file(
        text: &str,
        env: &[(&str, &str)],
    ) -> (Result<Settings, ConfigError>, tempfile::NamedTempFile) {
        let file = file(text);
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let result = Settings::load(Some(file.path()), |k| env.get(k).cloned());
        (result, file)
    }

    fn go_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/go-service.yaml")
    }

    #[test]
    fn the_go_services_file_sets_every_mapped_setting_in_its_units() {
        let s = Settings::load(Some(&go_file()), |_| None).unwrap();
        assert_eq!(s.app_name, "spacet-service");
        assert_eq!(s.app_version, "1.4.2");
        assert_eq!(s.log_level, "info");
        assert_eq!((s.http_port, s.grpc_port), (8080, 8081));
        assert_eq!(s.spacex.interval, Duration::from_secs(3600));
        assert_eq!(s.pg_pool_max, 20);
        let Database::External(pg) = &s.database else {
            panic!("postgres.dsn gives an external database: {:?}", s.database)
        };
        assert_eq!(
            (pg.get_host(), pg.get_port(), pg.get_database()),
            ("localhost", 5432, Some("spacet"))
        );
        assert!(s.pubsub.enabled);
        assert_eq!(s.pubsub.project_id, "spacet-local");
        assert_eq!(s.pubsub.topic, "launches");
        assert_eq!(s.outbox.interval, Duration::from_secs(5));
        assert_eq!(s.outbox.batch_size_max, 50);
        // What the Go service did not have keeps our default.
        assert_eq!(s.outbox.events_format, EventsFormat::V1);
        assert_eq!(s.seats_per_flight, 100);
    }

    #[test]
    fn fractional_go_intervals_keep_their_units() {
        let (s, _f) = load_file(
            "orchestrator:\n  interval: 0.5\nnotifications:\n  interval: 2\n",
            &[],
        );
        let s = s.unwrap();
        assert_eq!(s.spacex.interval, Duration::from_secs(1800));
        assert_eq!(s.outbox.interval, Duration::from_secs(2));
    }

    #[test]
    fn the_environment_overrides_the_go_file_by_our_names_and_the_go_services() {
        let env: HashMap<&str, &str> = [
            ("HTTP_PORT", "9090"),
            ("POSTGRES_POOL_MAX", "7"),
            ("POSTGRES_DSN", "host=db.internal dbname=other"),
            ("APP_LOG_LEVEL", "Warning"),
            ("NOTIFICATIONS_BATCH_SIZE_MAX", "3"),
        ]
        .into_iter()
        .collect();
        let s = Settings::load(Some(&go_file()), |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!((s.http_port, s.grpc_port), (9090, 8081));
        assert_eq!(s.pg_pool_max, 7);
        assert_eq!(s.log_level, "warn");
        assert_eq!(s.outbox.batch_size_max, 3);
        let Database::External(pg) = &s.database else {
            panic!("external")
        };
        assert_eq!(pg.get_host(), "db.internal");
        // Our name and the Go service's agreeing is fine; disagreeing is an error.
        let same = |k: &str| match k {
            "PG_POOL_MAX" | "POSTGRES_POOL_MAX" => Some("4".to_string()),
            _ => None,
        };
        assert_eq!(
            Settings::load(Some(&go_file()), same).unwrap().pg_pool_max,
            4
        );
        let differ = |k: &str| match k {
            "PG_POOL_MAX" => Some("4".to_string()),
            "POSTGRES_POOL_MAX" => Some("5".to_string()),
            _ => None,
        };
        let error = Settings::load(Some(&go_file()), differ).unwrap_err();
        assert_eq!(error.setting, "PG_POOL_MAX");
        assert!(error.problem.contains("POSTGRES_POOL_MAX"), "{error}");
    }

    #[test]
    fn an_unknown_go_key_or_section_is_an_error_naming_it() {
        for (text, key) in [
            ("app:\n  name: x\n  colour: blue\n", "app.colour"),
            ("http:\n  port: 1\nredis:\n  host: r\n", "redis.host"),
            ("postgres:\n  pool_min: 1\n", "postgres.pool_min"),
        ] {
            let (result, _f) = load_file(text, &[]);
            let error = result.unwrap_err();
            assert_eq!(error.setting, key, "{error}");
            assert!(
                error.problem.contains("http.port"),
                "lists the known keys: {error}"
            );
        }
        let (result, _f) = load_file("http_port: 1\nspeed: 3\n", &[]);
        assert_eq!(result.unwrap_err().setting, "SPEED");
    }

    #[test]
    fn a_bad_go_value_names_the_setting_and_the_go_key() {
        let (result, f) = load_file("http:\n  port: eighty\n", &[]);
        let error = result.unwrap_err();
        assert_eq!(error.setting, "HTTP_PORT");
        assert!(error.problem.contains("http.port in"), "{error}");
        assert!(
            error.problem.contains(&f.path().display().to_string()),
            "{error}"
        );
        let (result, _f) = load_file("orchestrator:\n  interval: 0\n", &[]);
        assert_eq!(result.unwrap_err().setting, "ORCHESTRATOR_INTERVAL");
        let (result, _f) = load_file("postgres:\n  pool_max: [1, 2]\n", &[]);
        let error = result.unwrap_err();
        assert_eq!(error.setting, "PG_POOL_MAX");
        assert!(error.problem.contains("list"), "{error}");
        let (result, _f) = load_file("http:\n  port:\n    inner: 1\n", &[]);
        assert_eq!(result.unwrap_err().setting, "HTTP_PORT");
        // A value from the Go service's environment name is named as such.
        let error = Settings::load(Some(&go_file()), |k| {
            (k == "POSTGRES_POOL_MAX").then(|| "0".to_string())
        })
        .unwrap_err();
        assert_eq!(error.setting, "PG_POOL_MAX");
        assert!(error.problem.contains("POSTGRES_POOL_MAX"), "{error}");
    }

    #[test]
    fn a_setting_given_twice_in_one_file_is_an_error() {
        let (result, _f) = load_file("http_port: 1\nhttp:\n  port: 2\n", &[]);
        let error = result.unwrap_err();
        assert_eq!(error.setting, "HTTP_PORT");
        assert!(error.problem.contains("http.port"), "{error}");
    }

    #[test]
    fn our_flat_file_keeps_working_and_may_be_mixed_with_go_sections() {
        let (s, _f) = load_file(
            "http_port: 7000\nseats_per_flight: 3\ngrpc:\n  port: 7001\n",
            &[("SEATS_PER_FLIGHT", "4")],
        );
        let s = s.unwrap();
        assert_eq!(
            (s.http_port, s.grpc_port, s.seats_per_flight),
            (7000, 7001, 4)
        );
        // An empty value is the empty string: no DSN means the embedded PostgreSQL.
        let (s, _f) = load_file("postgres:\n  dsn:\n", &[]);
        assert!(matches!(s.unwrap().database, Database::Embedded(_)));
    }

    #[test]
    fn log_level_takes_the_go_services_values_in_any_case() {
        for (given, level) in [
            ("error", "error"),
            ("WARN", "warn"),
            ("warning", "warn"),
            ("Warning", "warn"),
            (" info ", "info"),
            ("DEBUG", "debug"),
            ("trace", "trace"),
            ("spacet=debug,sqlx=warn", "spacet=debug,sqlx=warn"),
        ] {
            let s = Settings::load(None, |k| (k == "LOG_LEVEL").then(|| given.to_string()))
                .unwrap_or_else(|e| panic!("{given:?}: {e}"));
            assert_eq!(s.log_level, level, "{given:?}");
        }
        for bad in ["verbose", "fatal", "spacet=loud"] {
            let error =
                Settings::load(None, |k| (k == "LOG_LEVEL").then(|| bad.to_string())).unwrap_err();
            assert_eq!(error.setting, "LOG_LEVEL", "{bad:?}");
            assert!(error.problem.contains(bad), "{error}");
        }
    }

    #[test]
    fn the_emulator_host_alone_turns_pubsub_on() {
        let load = |env: &[(&str, &str)], file: Option<&str>| {
            let map: HashMap<String, String> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let f = file.map(self::file);
            Settings::load(f.as_ref().map(|f| f.path()), |k| map.get(k).cloned())
                .unwrap()
                .pubsub
                .enabled
        };
        let host = ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085");
        assert!(load(&[host], None));
        assert!(!load(&[], None));
        assert!(!load(&[host, ("PUBSUB_ENABLED", "false")], None));
        assert!(load(&[("PUBSUB_ENABLED", "true")], None));
        // Set in the file is set: the file's `enabled: false` holds.
        assert!(!load(&[host], Some("pubsub:\n  enabled: false\n")));
        assert!(load(&[host], Some("pubsub:\n  project_id: p\n")));
        assert!(!load(&[("PUBSUB_EMULATOR_HOST", " ")], None));
    }

    #[test]
    fn events_format_is_one_of_three() {
        let format = |v: &str| {
            Settings::load(None, |k| (k == "EVENTS_FORMAT").then(|| v.to_string()))
                .map(|s| s.outbox.events_format)
        };
        assert_eq!(
            Settings::load(None, |_| None).unwrap().outbox.events_format,
            EventsFormat::V1
        );
        assert_eq!(format("v1"), Ok(EventsFormat::V1));
        assert_eq!(format("legacy"), Ok(EventsFormat::Legacy));
        assert_eq!(format("BOTH"), Ok(EventsFormat::Both));
        let error = format("go").unwrap_err();
        assert_eq!(error.setting, "EVENTS_FORMAT");
        assert!(error.problem.contains("v1, legacy, both"), "{error}");
        assert!(EventsFormat::Both.publishes_v1() && EventsFormat::Both.publishes_legacy());
        assert!(!EventsFormat::V1.publishes_legacy() && !EventsFormat::Legacy.publishes_v1());
    }

    #[test]
    fn the_shipped_yaml_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.yaml");
        let settings = Settings::load(Some(&path), |_| None).unwrap();
        assert_eq!((settings.http_port, settings.grpc_port), (8080, 8081));
    }
}
