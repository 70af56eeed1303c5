//! Embedded migrations, the server-side limits of every session, and database
//! error classification.

use std::time::Duration;

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

use crate::config::PgSessionLimits;

/// Migrations embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Adds the server-side limits to connection options: every session opened with
/// them cancels a statement after `statement_timeout`, gives up waiting for a lock
/// after `lock_timeout`, and is ended when idle inside a transaction for longer
/// than `idle_in_transaction_timeout` (releasing its locks). sqlx's `options()`
/// appends, so options derived from these keep them.
pub(crate) fn with_session_limits(
    options: PgConnectOptions,
    limits: &PgSessionLimits,
) -> PgConnectOptions {
    let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
    options.options([
        ("statement_timeout", ms(limits.statement_timeout)),
        ("lock_timeout", ms(limits.lock_timeout)),
        (
            "idle_in_transaction_session_timeout",
            ms(limits.idle_in_transaction_timeout),
        ),
    ])
}

/// Applies the embedded migrations. sqlx takes a PostgreSQL advisory lock for the
/// whole run, so replicas starting at once apply them one after the other.
///
/// They run on a connection of their own without the request limits: a migration
/// may take longer than `statement_timeout`, and a replica waits for the advisory
/// lock as long as another one migrates (`lock_timeout` would fail it). The later
/// `-c` settings override the pool's.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let options = (*pool.connect_options())
        .clone()
        .options([("statement_timeout", "0"), ("lock_timeout", "0")]);
    // A one-connection pool rather than a bare connection: a future that runs the
    // migrator over `&mut PgConnection` is not `Send` for every lifetime.
    let migrations = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let result = MIGRATOR.run(&migrations).await;
    migrations.close().await;
    result
}

/// What a database error means to the caller, by its kind and SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No usable connection: refused or lost, the pool exhausted (acquire timeout)
    /// or closed, the server shutting down (`57P*`), a connection exception
    /// (`08*`), or the session ended for idling in a transaction (`25P03`).
    Unreachable,
    /// The server is out of a resource (class `53`: `53300` too many connections,
    /// `53100` disk full, `53200` out of memory, ...).
    OutOfResources,
    /// The statement was cancelled at `statement_timeout` (`57014`) or did not get
    /// its lock within `lock_timeout` (`55P03`).
    TimedOut,
    /// The transaction was rolled back by a deadlock (`40P01`) or a serialization
    /// failure (`40001`): running it again may succeed.
    Conflict,
    /// Anything else: a bug, a constraint the caller did not map, corrupt data.
    Other,
}

/// Classifies a database error.
pub(crate) fn classify(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => Failure::Unreachable,
        sqlx::Error::Database(db) => db.code().map_or(Failure::Other, |c| classify_sqlstate(&c)),
        _ => Failure::Other,
    }
}

/// Classifies a SQLSTATE.
pub(crate) fn classify_sqlstate(code: &str) -> Failure {
    match code {
        "57014" | "55P03" => Failure::TimedOut,
        "40P01" | "40001" => Failure::Conflict,
        "25P03" => Failure::Unreachable,
        c if c.starts_with("57P") || c.starts_with("08") => Failure::Unreachable,
        c if c.starts_with("53") => Failure::OutOfResources,
        _ => Failure::Other,
    }
}

/// True when the error means the connection is unusable or none could be had.
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    classify(error) == Failure::Unreachable
}

/// Stores an enum in a PostgreSQL `text` column (checked by a `CHECK` constraint) by
/// its `as_str()` name, and decodes it with `parse()`: a value the enum does not
/// know fails the row loudly instead of falling back to a default.
macro_rules! text_enum {
    ($ty:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                <$ty>::parse(name)
                    .ok_or_else(|| format!("{name:?} is not a {}", stringify!($ty)).into())
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}
pub(crate) use text_enum;

/// The span of one unit of database work (an OpenTelemetry client span named
/// `OPERATION table`, `db.system=postgresql`), when traces are exported; sqlx's
/// statement events inside it become its span events. Disabled otherwise, so that
/// the hot path pays nothing.
pub fn span(operation: &'static str, table: &'static str) -> tracing::Span {
    if !crate::telemetry::otel_enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "db",
        otel.name = format!("{operation} {table}").as_str(),
        otel.kind = "client",
        db.system = "postgresql",
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.collection.name = table,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        for (code, expected) in [
            ("53300", Failure::OutOfResources),
            ("53100", Failure::OutOfResources),
            ("53200", Failure::OutOfResources),
            ("57014", Failure::TimedOut),
            ("55P03", Failure::TimedOut),
            ("40P01", Failure::Conflict),
            ("40001", Failure::Conflict),
            ("57P01", Failure::Unreachable),
            ("08006", Failure::Unreachable),
            ("25P03", Failure::Unreachable),
            ("23505", Failure::Other),
            ("42P01", Failure::Other),
        ] {
            assert_eq!(classify_sqlstate(code), expected, "{code}");
        }
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Unreachable);
        assert_eq!(
            classify(&sqlx::Error::RowNotFound),
            Failure::Other,
            "not a database problem"
        );
    }

    #[test]
    fn session_limits_are_appended_to_the_connection_options() {
        let limits = PgSessionLimits {
            statement_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_millis(1500),
            idle_in_transaction_timeout: Duration::from_secs(30),
        };
        let options = with_session_limits(PgConnectOptions::new(), &limits)
            .options([("synchronous_commit", "off")]);
        assert_eq!(
            options.get_options(),
            Some(
                "-c statement_timeout=10000ms -c lock_timeout=1500ms \
                 -c idle_in_transaction_session_timeout=30000ms -c synchronous_commit=off"
            )
        );
    }
}
