//! The Go service's configuration, read as ours: its nested file keys, its
//! environment names and its units.
//!
//! Each key of its file (`http.port`) sets one of our settings (`http_port`). Its
//! environment names are the same paths in upper case (`POSTGRES_DSN`), accepted as
//! aliases where they differ from ours (`PG_DSN`). Numbers keep the Go service's
//! units, which are the bare-number units of our settings: `orchestrator.interval`
//! in hours, `notifications.interval` in seconds.

/// One key of the Go service's file.
#[derive(Debug, Clone, Copy)]
pub struct GoKey {
    /// Its section (`postgres`).
    pub section: &'static str,
    /// Its key in the section (`dsn`).
    pub key: &'static str,
    /// Our setting it sets (`pg_dsn`).
    pub setting: &'static str,
    /// The unit of a bare number, for a duration.
    pub unit: Option<&'static str>,
}

const fn go(section: &'static str, key: &'static str, setting: &'static str) -> GoKey {
    GoKey {
        section,
        key,
        setting,
        unit: None,
    }
}

/// Every key of the Go service's file.
pub const GO_KEYS: &[GoKey] = &[
    go("app", "name", "app_name"),
    go("app", "version", "app_version"),
    go("app", "log_level", "log_level"),
    go("http", "port", "http_port"),
    go("grpc", "port", "grpc_port"),
    GoKey {
        unit: Some("hours"),
        ..go("orchestrator", "interval", "orchestrator_interval")
    },
    go("postgres", "pool_max", "pg_pool_max"),
    go("postgres", "dsn", "pg_dsn"),
    go("pubsub", "enabled", "pubsub_enabled"),
    go("pubsub", "project_id", "pubsub_project_id"),
    go("pubsub", "launches_topic", "pubsub_launches_topic"),
    GoKey {
        unit: Some("seconds"),
        ..go("notifications", "interval", "notifications_interval")
    },
    go(
        "notifications",
        "batch_size_max",
        "notifications_batch_size_max",
    ),
];

impl GoKey {
    /// The key as the file writes it: `postgres.dsn`.
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    /// The Go service's environment name: `POSTGRES_DSN`.
    pub(crate) fn env_name(&self) -> String {
        format!("{}_{}", self.section, self.key).to_uppercase()
    }
}

/// The Go key `section.key`, when the Go service had it.
pub(super) fn key(section: &str, key: &str) -> Option<&'static GoKey> {
    GO_KEYS
        .iter()
        .find(|k| k.section == section && k.key == key)
}

/// The Go service's environment name of `setting`, where it differs from ours.
pub(super) fn env_alias(setting: &str) -> Option<String> {
    GO_KEYS
        .iter()
        .find(|k| k.setting == setting)
        .map(GoKey::env_name)
        .filter(|alias| *alias != setting.to_uppercase())
}

/// The Go keys, for an error about a key that is none of them.
pub(super) fn known_keys() -> String {
    GO_KEYS
        .iter()
        .map(GoKey::path)
        .collect::<Vec<_>>()
        .join(", ")
}
