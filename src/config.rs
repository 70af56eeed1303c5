//! Settings in layers: built-in defaults (`config/default.yaml`, embedded) → a YAML
//! file (`--config`, or `./config/default.yaml` when it exists) → environment
//! variables. Every setting has one flat name: the lowercase key in YAML, the
//! uppercase name in the environment (`http_port` / `HTTP_PORT`).
//!
//! A setting is one field of [`Settings`] or of one of its sections, whose serde
//! name is the flat key, and its default with a one-line description in
//! `config/default.yaml`; `docs/configuration.md` is generated from both
//! ([`docs::markdown`]). The Go service's file keys and environment names are
//! mapped to ours in [`go`].

mod de;
pub mod docs;
pub mod go;
mod parse;
mod sources;

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

pub use go::GO_KEYS;
pub use parse::{parse_dsn, parse_duration};
pub use sources::SETTINGS;

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

/// How a deployment template marks a value its operator must fill in.
pub const PLACEHOLDER: &str = "REPLACE_ME";

/// What the relay publishes to the launches topic (`EVENTS_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
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
    pub(crate) fn publishes_v1(self) -> bool {
        matches!(self, EventsFormat::V1 | EventsFormat::Both)
    }

    /// True when the Go service's messages are published.
    pub(crate) fn publishes_legacy(self) -> bool {
        matches!(self, EventsFormat::Legacy | EventsFormat::Both)
    }
}

impl TryFrom<String> for EventsFormat {
    type Error = String;

    fn try_from(text: String) -> Result<EventsFormat, String> {
        match text.trim().to_lowercase().as_str() {
            "v1" => Ok(EventsFormat::V1),
            "legacy" => Ok(EventsFormat::Legacy),
            "both" => Ok(EventsFormat::Both),
            other => Err(format!("{other:?} is not one of v1, legacy, both")),
        }
    }
}

/// How callers are authenticated (`AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
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

impl TryFrom<String> for AuthMode {
    type Error = String;

    /// `auto` reads as `Missing`, which [`Settings::load`] then resolves.
    fn try_from(text: String) -> Result<AuthMode, String> {
        match text.trim().to_lowercase().as_str() {
            "oidc" => Ok(AuthMode::Oidc),
            "dev" => Ok(AuthMode::Dev),
            "none" => Ok(AuthMode::None),
            "auto" | "" => Ok(AuthMode::Missing),
            other => Err(format!("{other:?} is not one of auto, oidc, dev, none")),
        }
    }
}

/// Authentication and per-principal limits.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    #[serde(rename = "auth_mode")]
    pub mode: AuthMode,
    #[serde(rename = "auth_issuer", deserialize_with = "de::trimmed")]
    pub issuer: String,
    #[serde(rename = "auth_audience", deserialize_with = "de::trimmed")]
    pub audience: String,
    #[serde(rename = "auth_roles_claim", deserialize_with = "de::non_empty")]
    pub roles_claim: String,
    #[serde(rename = "auth_dev_key_file", deserialize_with = "de::non_empty_path")]
    pub dev_key_file: PathBuf,
    #[serde(rename = "auth_clock_skew", deserialize_with = "de::seconds")]
    pub clock_skew: Duration,
    #[serde(rename = "auth_jwks_min_refresh", deserialize_with = "de::seconds")]
    pub jwks_min_refresh: Duration,
    #[serde(rename = "auth_jwks_max_age", deserialize_with = "de::seconds")]
    pub jwks_max_age: Duration,
    pub rockets_public_read: bool,
    /// Bookings per principal per minute; 0 is no limit.
    pub booking_rate_limit: u32,
    /// Forced syncs per principal per minute; 0 is no limit.
    pub sync_rate_limit: u32,
    #[serde(deserialize_with = "de::positive")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
    /// JSON with Cloud Logging's field names (`severity`, `logging.googleapis.com/trace`).
    Gcp,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(text: String) -> Result<LogFormat, String> {
        match text.to_lowercase().as_str() {
            "auto" | "" => Ok(LogFormat::Auto),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            "gcp" => Ok(LogFormat::Gcp),
            other => Err(format!("{other:?} is not one of auto, pretty, json, gcp")),
        }
    }
}

/// Where the database is.
#[derive(Clone, Deserialize)]
#[serde(from = "DatabaseSettings")]
// Built once at start-up: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Database {
    /// A server given by `PG_DSN`.
    External(Box<PgConnectOptions>),
    /// An embedded PostgreSQL started from the system binaries in this directory.
    Embedded(PathBuf),
}

/// The settings [`Database`] is made of.
#[derive(Deserialize)]
struct DatabaseSettings {
    #[serde(deserialize_with = "de::dsn")]
    pg_dsn: Option<Box<PgConnectOptions>>,
    embedded_pg_dir: PathBuf,
}

impl From<DatabaseSettings> for Database {
    fn from(settings: DatabaseSettings) -> Database {
        match settings.pg_dsn {
            Some(options) => Database::External(options),
            None => Database::Embedded(settings.embedded_pg_dir),
        }
    }
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
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(deserialize_with = "de::non_empty")]
    pub app_name: String,
    #[serde(deserialize_with = "de::version")]
    pub app_version: String,
    #[serde(deserialize_with = "de::log_level")]
    pub log_level: String,
    pub log_format: LogFormat,
    /// The project of `LOG_FORMAT=gcp`'s trace field, when known.
    #[serde(deserialize_with = "de::optional")]
    pub log_gcp_project: Option<String>,
    #[serde(deserialize_with = "de::parsed")]
    pub bind_address: IpAddr,
    pub http_port: u16,
    pub grpc_port: u16,
    /// `ROCKETS_PORT`; `None` when it is 0 (no ingestion listener).
    #[serde(deserialize_with = "de::port_or_off")]
    pub rockets_port: Option<u16>,
    #[serde(deserialize_with = "de::seconds")]
    pub shutdown_grace_period: Duration,
    #[serde(deserialize_with = "de::seconds_or_off")]
    pub shutdown_drain_delay: Option<Duration>,
    #[serde(deserialize_with = "de::positive")]
    pub http_body_limit: usize,
    pub server_limits: ServerLimits,
    #[serde(deserialize_with = "de::comma_list")]
    pub cors_allowed_origins: Vec<String>,
    pub database: Database,
    #[serde(deserialize_with = "de::positive")]
    pub pg_pool_max: u32,
    #[serde(deserialize_with = "de::seconds")]
    pub pg_connect_timeout: Duration,
    pub pg_session_limits: PgSessionLimits,
    #[serde(deserialize_with = "de::positive")]
    pub seats_per_flight: i32,
    pub spacex: SpaceXSettings,
    pub pubsub: PubSubSettings,
    pub outbox: OutboxSettings,
    pub rockets: RocketSettings,
    pub auth: AuthSettings,
    /// `/metrics` on a listener of its own.
    #[serde(deserialize_with = "de::port_or_off")]
    pub metrics_port: Option<u16>,
    pub grpc_reflection: bool,
}

/// Rocket telemetry settings.
#[derive(Debug, Clone, Deserialize)]
pub struct RocketSettings {
    /// Bound on queueing a message and waiting for its commit.
    #[serde(rename = "rockets_write_timeout", deserialize_with = "de::seconds")]
    pub write_timeout: Duration,
    /// Concurrent WatchRockets streams.
    #[serde(rename = "rockets_max_watchers", deserialize_with = "de::positive")]
    pub max_watchers: usize,
    /// Age (by `received_at`) past which messages are deleted.
    #[serde(rename = "rocket_message_retention", deserialize_with = "de::seconds")]
    pub message_retention: Duration,
}

/// Server-side limits set on every database connection (`PG_STATEMENT_TIMEOUT`,
/// `PG_LOCK_TIMEOUT`, `PG_IDLE_IN_TRANSACTION_TIMEOUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PgSessionLimits {
    #[serde(rename = "pg_statement_timeout", deserialize_with = "de::seconds")]
    pub statement_timeout: Duration,
    #[serde(rename = "pg_lock_timeout", deserialize_with = "de::seconds")]
    pub lock_timeout: Duration,
    #[serde(
        rename = "pg_idle_in_transaction_timeout",
        deserialize_with = "de::seconds"
    )]
    pub idle_in_transaction_timeout: Duration,
}

/// What one client may hold of the HTTP and gRPC servers (`HTTP_HEADER_TIMEOUT`,
/// `HTTP_REQUEST_TIMEOUT`, `HTTP_IDLE_TIMEOUT`, `HTTP_MAX_CONNECTIONS`,
/// `GRPC_REQUEST_TIMEOUT`, `GRPC_MAX_CONCURRENT_STREAMS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ServerLimits {
    #[serde(deserialize_with = "de::seconds")]
    pub http_header_timeout: Duration,
    #[serde(deserialize_with = "de::seconds")]
    pub http_request_timeout: Duration,
    #[serde(deserialize_with = "de::seconds")]
    pub http_idle_timeout: Duration,
    #[serde(deserialize_with = "de::positive")]
    pub http_max_connections: usize,
    #[serde(deserialize_with = "de::seconds")]
    pub grpc_request_timeout: Duration,
    #[serde(deserialize_with = "de::positive")]
    pub grpc_max_concurrent_streams: u32,
}

/// SpaceX sync settings.
#[derive(Debug, Clone, Deserialize)]
pub struct SpaceXSettings {
    #[serde(rename = "spacex_api_url", deserialize_with = "de::http_url")]
    pub api_url: String,
    #[serde(rename = "spacex_sync_enabled")]
    pub sync_enabled: bool,
    #[serde(rename = "orchestrator_interval", deserialize_with = "de::hours")]
    pub interval: Duration,
    #[serde(rename = "spacex_timeout", deserialize_with = "de::seconds")]
    pub timeout: Duration,
    #[serde(rename = "spacex_retries")]
    pub retries: u32,
    /// Delay before the first retry; doubled for each further one.
    #[serde(rename = "spacex_retry_backoff", deserialize_with = "de::millis")]
    pub retry_backoff: Duration,
    #[serde(deserialize_with = "de::hours")]
    pub launchpads_max_age: Duration,
    /// A plain `http://` API URL is allowed (local fakes).
    #[serde(rename = "spacex_allow_http")]
    pub allow_http: bool,
    /// Largest answer read, in bytes.
    #[serde(
        rename = "spacex_max_response_bytes",
        deserialize_with = "de::positive"
    )]
    pub max_response_bytes: usize,
    /// Most upcoming launches accepted.
    #[serde(rename = "spacex_max_launches", deserialize_with = "de::positive")]
    pub max_launches: usize,
    /// More ticket cancellations than this hold a sync until it is confirmed.
    #[serde(rename = "spacex_max_cancellations")]
    pub max_cancellations: usize,
    /// Which events a sync's cancellations write (`EVENTS_FORMAT`).
    pub events_format: EventsFormat,
}

/// Pub/Sub settings.
#[derive(Debug, Clone, Deserialize)]
pub struct PubSubSettings {
    /// `auto` is decided by [`Settings::load`] from the emulator host.
    #[serde(rename = "pubsub_enabled")]
    pub enabled: bool,
    #[serde(rename = "pubsub_emulator_host", deserialize_with = "de::optional")]
    pub emulator_host: Option<String>,
    #[serde(rename = "pubsub_project_id", deserialize_with = "de::non_empty")]
    pub project_id: String,
    #[serde(rename = "pubsub_launches_topic", deserialize_with = "de::non_empty")]
    pub topic: String,
    #[serde(rename = "pubsub_publish_timeout", deserialize_with = "de::seconds")]
    pub publish_timeout: Duration,
}

/// Outbox relay settings.
#[derive(Debug, Clone, Deserialize)]
pub struct OutboxSettings {
    #[serde(rename = "outbox_relay_enabled")]
    pub relay_enabled: bool,
    /// Which events the relay publishes; it marks the others done unsent (booking
    /// writes its per-ticket events whatever the format).
    pub events_format: EventsFormat,
    #[serde(
        rename = "notifications_batch_size_max",
        deserialize_with = "de::positive"
    )]
    pub batch_size_max: i64,
    #[serde(rename = "notifications_interval", deserialize_with = "de::seconds")]
    pub interval: Duration,
    #[serde(
        rename = "notifications_max_attempts",
        deserialize_with = "de::positive"
    )]
    pub max_attempts: i32,
    #[serde(rename = "outbox_retry_backoff", deserialize_with = "de::seconds")]
    pub retry_backoff: Duration,
    #[serde(rename = "outbox_retry_backoff_max", deserialize_with = "de::seconds")]
    pub retry_backoff_max: Duration,
    #[serde(rename = "outbox_retention", deserialize_with = "de::hours")]
    pub retention: Duration,
    #[serde(rename = "outbox_backlog_threshold", deserialize_with = "de::positive")]
    pub backlog_threshold: i64,
    #[serde(rename = "outbox_backlog_max_age", deserialize_with = "de::seconds")]
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
        let mut values = sources::Values::load(config_file, &env)?;
        Settings::read(&mut values)?.check(&values, &env)
    }

    /// Every field from the setting of its name.
    fn read(values: &mut sources::Values) -> Result<Settings, ConfigError> {
        // As in the Go service's minimal environment: only PUBSUB_EMULATOR_HOST.
        let auto = values.raw("pubsub_enabled").trim();
        if auto.eq_ignore_ascii_case("auto") {
            let emulator = !values.raw("pubsub_emulator_host").trim().is_empty();
            values.replace("pubsub_enabled", emulator.to_string());
        }
        Settings::deserialize(de::Reader { values, key: "" })
    }

    /// Loads from the process environment.
    pub fn from_env(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(config_file, |name| std::env::var(name).ok())
    }

    /// The rules between settings, and the values that depend on others.
    fn check(
        mut self,
        values: &sources::Values,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let auth = &mut self.auth;
        // `auto`. Development tokens only where nothing can be a deployment: the
        // embedded database. An external database without an issuer is a
        // deployment that forgot AUTH_ISSUER, and must not start on keys each
        // replica makes up for itself; it stays `Missing`, refused by whatever
        // verifies tokens (`spacet migrate` and `spacet sync` need none).
        if auth.mode == AuthMode::Missing {
            if !auth.issuer.is_empty() {
                auth.mode = AuthMode::Oidc;
            } else if matches!(self.database, Database::Embedded(_)) {
                auth.mode = AuthMode::Dev;
            }
        }
        if auth.mode == AuthMode::Oidc {
            if auth.issuer.is_empty() {
                return Err(values.error("auth_issuer", "is required with AUTH_MODE=oidc"));
            }
            if !parse::issuer_url_allowed(&auth.issuer) {
                return Err(values.error(
                    "auth_issuer",
                    format!(
                        "{:?} is not an https URL (plain http is accepted on a loopback host only)",
                        auth.issuer
                    ),
                ));
            }
            if auth.audience.is_empty() {
                return Err(values.error("auth_audience", "is required with an issuer"));
            }
        }
        let spacex = &self.spacex;
        if spacex.api_url.starts_with("http://") && !spacex.allow_http {
            return Err(values.error(
                "spacex_api_url",
                format!(
                    "{:?} is not https (set SPACEX_ALLOW_HTTP=true for a local fake)",
                    spacex.api_url
                ),
            ));
        }
        if self.outbox.retry_backoff_max < self.outbox.retry_backoff {
            return Err(values.error(
                "outbox_retry_backoff_max",
                "must not be shorter than OUTBOX_RETRY_BACKOFF",
            ));
        }
        if self.log_gcp_project.is_none() {
            self.log_gcp_project = [env("GOOGLE_CLOUD_PROJECT"), env("PUBSUB_PROJECT_ID")]
                .into_iter()
                .flatten()
                .map(|p| p.trim().to_string())
                .find(|p| !p.is_empty());
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
    fn every_setting_is_documented_in_the_docs_and_the_yaml_file() {
        let docs = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
        )
        .unwrap();
        let yaml = include_str!("../config/default.yaml");
        for (key, _, description) in SETTINGS.iter() {
            assert!(
                docs.contains(&format!("`{}`", key.to_uppercase())),
                "{key} missing from docs/configuration.md"
            );
            assert!(
                yaml.contains(&format!("\n{key}:")),
                "{key} missing from config/default.yaml"
            );
            assert!(!description.is_empty(), "{key} has no comment above it");
        }
    }

    #[test]
    fn every_field_has_a_default_and_every_default_a_field() {
        let mut values = sources::Values::load(None, &|_| None).unwrap();
        Settings::read(&mut values).unwrap();
        assert_eq!(values.unread(), Vec::<&str>::new(), "keys no field reads");
        assert_eq!(
            load_env(&[]).unwrap().app_version,
            env!("CARGO_PKG_VERSION"),
            "an empty APP_VERSION is this build's"
        );
    }

    #[test]
    fn the_gcp_project_comes_from_the_setting_or_the_given_environment() {
        assert_eq!(load_env(&[]).unwrap().log_gcp_project, None);
        let project = |vars: &[(&str, &str)]| load_env(vars).unwrap().log_gcp_project;
        assert_eq!(
            project(&[("PUBSUB_PROJECT_ID", "p"), ("GOOGLE_CLOUD_PROJECT", " g ")]),
            Some("g".into())
        );
        assert_eq!(project(&[("PUBSUB_PROJECT_ID", "p")]), Some("p".into()));
        assert_eq!(
            project(&[("LOG_GCP_PROJECT", "l"), ("GOOGLE_CLOUD_PROJECT", "g")]),
            Some("l".into())
        );
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
