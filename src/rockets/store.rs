//! The SQL of rocket telemetry: one statement stores a batch of messages and
//! merges them into the rockets' state rows; reads of one rocket or a page.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{
    list::{self, ListQuery, Sort, SortKey},
    message::Message,
    state::{Status, Summary},
};

/// A rocket's state as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Rocket {
    pub channel: Uuid,
    pub rocket_type: Option<String>,
    pub launch_speed: Option<i64>,
    pub speed: i64,
    pub mission: Option<String>,
    pub status: Status,
    pub explosion_reason: Option<String>,
    /// Message time of the launch message.
    pub launched_at: Option<DateTime<Utc>>,
    pub last_message_number: i64,
    pub last_message_time: DateTime<Utc>,
    pub messages_received: i64,
    pub missing_messages: i64,
    pub created_at: DateTime<Utc>,
    /// When a message last changed the state (server time).
    pub updated_at: DateTime<Utc>,
}

/// [`Summary::speed`] in SQL, over a `rockets` row. The statements checked at build
/// time ([`get`], [`write`]) spell it out, as they take only literals; a test keeps
/// the copies equal.
const SPEED_SQL: &str = "(COALESCE(launch_speed, 0) + speed_delta)";
/// [`Summary::status`] in SQL.
const STATUS_SQL: &str = "(CASE WHEN exploded_number IS NOT NULL THEN 'exploded' WHEN launch_number IS NOT NULL THEN 'launched' ELSE 'unknown' END)";

/// Columns of [`Rocket`], for the SQL [`list`] assembles at run time.
static ROCKET_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "channel, rocket_type, launch_speed, {SPEED_SQL} AS speed, mission, {STATUS_SQL} AS status, \
         explosion_reason, launched_at, last_message_number, last_message_time, messages_received, \
         last_message_number - messages_received AS missing_messages, created_at, updated_at"
    )
});

impl Rocket {
    /// True when the stored state is the state `summary` describes (timestamps of
    /// the row itself aside).
    pub fn matches(&self, summary: &Summary) -> bool {
        let launch = summary.launch.as_ref();
        self.rocket_type.as_deref() == launch.map(|l| l.rocket_type.as_str())
            && self.launch_speed == launch.map(|l| l.launch_speed)
            && self.launched_at == launch.map(|l| l.time)
            && self.speed == summary.speed()
            && self.mission.as_deref() == summary.mission.as_ref().map(|m| m.value.as_str())
            && self.status == summary.status()
            && self.explosion_reason.as_deref()
                == summary.explosion.as_ref().map(|e| e.value.as_str())
            && Some(self.last_message_number) == summary.last.as_ref().map(|l| l.number)
            && Some(self.last_message_time) == summary.last.as_ref().map(|l| l.value)
            && self.messages_received == summary.received
            && self.missing_messages == summary.missing()
    }
}

/// What became of one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// New: stored, and merged into its rocket's state.
    New,
    /// Already stored with the same fingerprint: nothing changed.
    Duplicate,
    /// Already stored with another fingerprint: the first one is kept.
    Conflict,
}

/// The answer to [`write`]: an outcome per message, in order, and the new state of
/// every rocket that changed.
#[derive(Debug, Default)]
pub struct Written {
    pub outcomes: Vec<Stored>,
    pub changed: Vec<Rocket>,
}

/// Stores messages with distinct (channel, number) and merges the new ones into
/// their rockets' states, in one statement and so in one transaction: one round
/// trip and one WAL flush for the whole batch.
///
/// Every message's contribution ([`Summary::of`]) is computed here and sent as
/// columns; the statement combines the contributions of the messages it actually
/// inserted (per rocket, then with the stored row) the way [`Summary::combine`]
/// does. Rows are inserted and upserted in key order, so concurrent writers (the
/// writer tasks, other replicas) lock in the same order and cannot deadlock.
///
/// The statement touches tables only through their primary keys, so its plan does
/// not depend on their statistics: the writer's connections plan it once (generic
/// plan) however much the tables grow.
pub async fn write(
    conn: &mut sqlx::PgConnection,
    messages: &[&Message],
    now: DateTime<Utc>,
) -> Result<Written, sqlx::Error> {
    let n = messages.len();
    let mut idx = Vec::with_capacity(n);
    let mut channel = Vec::with_capacity(n);
    let mut number = Vec::with_capacity(n);
    let mut message_type = Vec::with_capacity(n);
    let mut message_time = Vec::with_capacity(n);
    let mut fingerprint = Vec::with_capacity(n);
    let mut launch_number = Vec::with_capacity(n);
    let mut rocket_type = Vec::with_capacity(n);
    let mut launch_speed = Vec::with_capacity(n);
    let mut speed_delta = Vec::with_capacity(n);
    let mut mission_number = Vec::with_capacity(n);
    let mut mission = Vec::with_capacity(n);
    let mut exploded_number = Vec::with_capacity(n);
    let mut explosion_reason = Vec::with_capacity(n);
    for (i, m) in messages.iter().enumerate() {
        let s = Summary::of(m);
        idx.push(i as i32);
        channel.push(m.channel);
        number.push(m.number);
        message_type.push(m.body.message_type().as_str());
        message_time.push(m.time());
        fingerprint.push(m.fingerprint());
        launch_number.push(s.launch.as_ref().map(|l| l.number));
        rocket_type.push(s.launch.as_ref().map(|l| l.rocket_type.clone()));
        launch_speed.push(s.launch.as_ref().map(|l| l.launch_speed));
        speed_delta.push(s.speed_delta);
        mission_number.push(s.mission.as_ref().map(|m| m.number));
        mission.push(s.mission.map(|m| m.value));
        exploded_number.push(s.explosion.as_ref().map(|e| e.number));
        explosion_reason.push(s.explosion.map(|e| e.value));
    }
    // $1..$14 are the messages' columns (arrays in the same order), $15 is now.
    // Arrays of options and of `&str` are beyond the macro's table of Rust types
    // (`as _`): their SQL types are the casts in the statement.
    let rows = sqlx::query!(
        r#"
WITH input AS (
    SELECT * FROM unnest(
        $1::int4[], $2::uuid[], $3::int8[], $4::text[], $5::timestamptz[], $6::jsonb[],
        $7::int8[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::text[],
        $13::int8[], $14::text[]
    ) AS i (idx, channel, message_number, message_type, message_time, fingerprint,
            launch_number, rocket_type, launch_speed, speed_delta, mission_number, mission,
            exploded_number, explosion_reason)
),
-- A message already stored is "updated" to itself: that returns its fingerprint,
-- also when a concurrent transaction stored it after this statement's snapshot was
-- taken (the conflict waits for that transaction). xmax = 0 tells new rows apart.
stored AS (
    INSERT INTO rocket_messages AS m (channel, message_number, message_type, message_time, fingerprint, received_at)
    SELECT channel, message_number, message_type, message_time, fingerprint, $15
    FROM input
    ORDER BY channel, message_number
    ON CONFLICT (channel, message_number) DO UPDATE SET fingerprint = m.fingerprint
    RETURNING m.channel, m.message_number, m.fingerprint, (m.xmax = 0) AS inserted
),
-- Summary::combine over the new messages of each rocket.
batch AS (
    SELECT i.channel,
        min(i.launch_number) AS launch_number,
        (array_agg(i.rocket_type ORDER BY i.launch_number) FILTER (WHERE i.launch_number IS NOT NULL))[1] AS rocket_type,
        (array_agg(i.launch_speed ORDER BY i.launch_number) FILTER (WHERE i.launch_number IS NOT NULL))[1] AS launch_speed,
        (array_agg(i.message_time ORDER BY i.launch_number) FILTER (WHERE i.launch_number IS NOT NULL))[1] AS launched_at,
        sum(i.speed_delta)::int8 AS speed_delta,
        max(i.mission_number) AS mission_number,
        (array_agg(i.mission ORDER BY i.mission_number DESC) FILTER (WHERE i.mission_number IS NOT NULL))[1] AS mission,
        min(i.exploded_number) AS exploded_number,
        (array_agg(i.explosion_reason ORDER BY i.exploded_number) FILTER (WHERE i.exploded_number IS NOT NULL))[1] AS explosion_reason,
        max(i.message_number) AS last_message_number,
        (array_agg(i.message_time ORDER BY i.message_number DESC))[1] AS last_message_time,
        count(*) AS messages_received
    FROM input i
    JOIN stored s ON s.channel = i.channel AND s.message_number = i.message_number
    WHERE s.inserted
    GROUP BY i.channel
),
-- Summary::combine of the stored row (r) and the batch's (EXCLUDED). SET sees the
-- old row everywhere. `x < NULL` is NULL, so "EXCLUDED wins" reads
-- `EXCLUDED.n < r.n OR r.n IS NULL`.
changed AS (
    INSERT INTO rockets AS r (channel, launch_number, rocket_type, launch_speed, launched_at,
        speed_delta, mission_number, mission, exploded_number, explosion_reason,
        last_message_number, last_message_time, messages_received, created_at, updated_at)
    SELECT b.*, $15, $15 FROM batch b ORDER BY b.channel
    ON CONFLICT (channel) DO UPDATE SET
        launch_number = CASE WHEN EXCLUDED.launch_number < r.launch_number OR r.launch_number IS NULL
                             THEN EXCLUDED.launch_number ELSE r.launch_number END,
        rocket_type   = CASE WHEN EXCLUDED.launch_number < r.launch_number OR r.launch_number IS NULL
                             THEN EXCLUDED.rocket_type ELSE r.rocket_type END,
        launch_speed  = CASE WHEN EXCLUDED.launch_number < r.launch_number OR r.launch_number IS NULL
                             THEN EXCLUDED.launch_speed ELSE r.launch_speed END,
        launched_at   = CASE WHEN EXCLUDED.launch_number < r.launch_number OR r.launch_number IS NULL
                             THEN EXCLUDED.launched_at ELSE r.launched_at END,
        speed_delta   = r.speed_delta + EXCLUDED.speed_delta,
        mission_number = CASE WHEN EXCLUDED.mission_number > r.mission_number OR r.mission_number IS NULL
                              THEN EXCLUDED.mission_number ELSE r.mission_number END,
        mission        = CASE WHEN EXCLUDED.mission_number > r.mission_number OR r.mission_number IS NULL
                              THEN EXCLUDED.mission ELSE r.mission END,
        exploded_number  = CASE WHEN EXCLUDED.exploded_number < r.exploded_number OR r.exploded_number IS NULL
                                THEN EXCLUDED.exploded_number ELSE r.exploded_number END,
        explosion_reason = CASE WHEN EXCLUDED.exploded_number < r.exploded_number OR r.exploded_number IS NULL
                                THEN EXCLUDED.explosion_reason ELSE r.explosion_reason END,
        last_message_time = CASE WHEN EXCLUDED.last_message_number > r.last_message_number
                                 THEN EXCLUDED.last_message_time ELSE r.last_message_time END,
        last_message_number = GREATEST(r.last_message_number, EXCLUDED.last_message_number),
        messages_received = r.messages_received + EXCLUDED.messages_received,
        updated_at = EXCLUDED.updated_at
    RETURNING channel, rocket_type, launch_speed, (COALESCE(launch_speed, 0) + speed_delta) AS speed, mission,
        (CASE WHEN exploded_number IS NOT NULL THEN 'exploded' WHEN launch_number IS NOT NULL THEN 'launched' ELSE 'unknown' END) AS status,
        explosion_reason, launched_at, last_message_number, last_message_time, messages_received,
        last_message_number - messages_received AS missing_messages, created_at, updated_at
)
-- One row per message (its outcome), then one per changed rocket.
SELECT i.idx,
    CASE WHEN s.inserted THEN 'new'
         WHEN s.fingerprint = i.fingerprint THEN 'duplicate'
         ELSE 'conflict' END AS outcome,
    NULL::uuid AS channel, NULL::text AS rocket_type, NULL::int8 AS launch_speed,
    NULL::int8 AS speed, NULL::text AS mission, NULL::text AS "status: Status",
    NULL::text AS explosion_reason, NULL::timestamptz AS launched_at,
    NULL::int8 AS last_message_number, NULL::timestamptz AS last_message_time,
    NULL::int8 AS messages_received, NULL::int8 AS missing_messages,
    NULL::timestamptz AS created_at, NULL::timestamptz AS updated_at
FROM input i
JOIN stored s ON s.channel = i.channel AND s.message_number = i.message_number
UNION ALL
SELECT NULL, NULL, c.* FROM changed c
"#,
        &idx,
        &channel,
        &number,
        &message_type as _,
        &message_time,
        &fingerprint,
        &launch_number as _,
        &rocket_type as _,
        &launch_speed as _,
        &speed_delta,
        &mission_number as _,
        &mission as _,
        &exploded_number as _,
        &explosion_reason as _,
        now,
    )
    .fetch_all(conn)
    .await?;

    // Every column of the union may be NULL: a message's row has only `idx` and
    // `outcome`, a rocket's row only the others.
    let mut outcomes = vec![None; n];
    let mut changed = Vec::new();
    for row in rows {
        match row.idx {
            Some(i) => {
                let outcome = required(row.outcome, "outcome")?;
                outcomes[i as usize] = Some(match outcome.as_str() {
                    "new" => Stored::New,
                    "duplicate" => Stored::Duplicate,
                    _ => Stored::Conflict,
                });
            }
            None => changed.push(Rocket {
                channel: required(row.channel, "channel")?,
                rocket_type: row.rocket_type,
                launch_speed: row.launch_speed,
                speed: required(row.speed, "speed")?,
                mission: row.mission,
                status: required(row.status, "status")?,
                explosion_reason: row.explosion_reason,
                launched_at: row.launched_at,
                last_message_number: required(row.last_message_number, "last_message_number")?,
                last_message_time: required(row.last_message_time, "last_message_time")?,
                messages_received: required(row.messages_received, "messages_received")?,
                missing_messages: required(row.missing_messages, "missing_messages")?,
                created_at: required(row.created_at, "created_at")?,
                updated_at: required(row.updated_at, "updated_at")?,
            }),
        }
    }
    let outcomes = outcomes
        .into_iter()
        .collect::<Option<Vec<Stored>>>()
        .ok_or_else(|| sqlx::Error::Protocol("a message of the batch has no outcome".into()))?;
    Ok(Written { outcomes, changed })
}

/// A column of the batch statement's result that must not be NULL in this row:
/// the error `try_get` gives for an unexpected NULL.
fn required<T>(value: Option<T>, column: &str) -> Result<T, sqlx::Error> {
    value.ok_or_else(|| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: Box::new(sqlx::error::UnexpectedNullError),
    })
}

/// One rocket, if any message of its channel was stored.
pub async fn get(pool: &PgPool, channel: Uuid) -> Result<Option<Rocket>, sqlx::Error> {
    sqlx::query_as!(
        Rocket,
        r#"SELECT channel, rocket_type, launch_speed,
               (COALESCE(launch_speed, 0) + speed_delta) AS "speed!", mission,
               (CASE WHEN exploded_number IS NOT NULL THEN 'exploded' WHEN launch_number IS NOT NULL THEN 'launched' ELSE 'unknown' END) AS "status!: Status",
               explosion_reason, launched_at, last_message_number, last_message_time, messages_received,
               last_message_number - messages_received AS "missing_messages!", created_at, updated_at
           FROM rockets WHERE channel = $1"#,
        channel
    )
    .fetch_optional(pool)
    .await
}

/// One page of rockets and, when there are more, the last one's sort key.
pub async fn list(
    pool: &PgPool,
    query: &ListQuery,
) -> Result<(Vec<Rocket>, Option<SortKey>), sqlx::Error> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {} FROM rockets WHERE true",
        *ROCKET_COLUMNS
    ));
    if let Some(status) = query.status {
        sql.push(format!(" AND {STATUS_SQL} = "))
            .push_bind(status.as_str());
    }
    if let Some(rocket_type) = &query.rocket_type {
        sql.push(" AND rocket_type = ")
            .push_bind(rocket_type.clone());
    }
    if let Some(mission) = &query.mission {
        sql.push(" AND mission = ").push_bind(mission.clone());
    }
    if let Some(channel) = query.channel {
        sql.push(" AND channel = ").push_bind(channel);
    }
    let expression = sort_expression(query.sort);
    let (cmp, direction) = if query.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let (Some(after), Sort::Channel) = (&query.after, query.sort) {
        // Keyed on the primary key alone, so that the index serves the page
        // (WatchRockets pages through every rocket this way).
        sql.push(format!(" AND channel {cmp} "))
            .push_bind(after.channel);
    } else if let Some(after) = &query.after {
        // The key travels as text and is cast back to the column's type.
        sql.push(format!(" AND ({expression}, channel) {cmp} ("))
            .push_bind(after.key.clone())
            .push(format!("::{}, ", sort_sql_type(query.sort)))
            .push_bind(after.channel)
            .push(")");
    }
    if query.sort == Sort::Channel {
        sql.push(format!(" ORDER BY channel {direction}"));
    } else {
        sql.push(format!(
            " ORDER BY {expression} {direction}, channel {direction}"
        ));
    }
    if let Some(limit) = query.limit {
        sql.push(" LIMIT ").push_bind(limit + 1);
    }
    let mut rockets: Vec<Rocket> = sql.build_query_as().fetch_all(pool).await?;
    let next = match query.limit {
        Some(limit) if rockets.len() as i64 > limit => {
            rockets.truncate(limit as usize);
            rockets.last().map(|r| key_of(query.sort, r))
        }
        _ => None,
    };
    Ok((rockets, next))
}

/// The SQL expression `sort` sorts on: never NULL (rockets without a launch sort
/// first in ascending order), so that the keyset comparison is total.
fn sort_expression(sort: Sort) -> &'static str {
    match sort {
        Sort::Channel => "channel",
        Sort::Type => "COALESCE(rocket_type, '')",
        Sort::Speed => SPEED_SQL,
        Sort::Mission => "COALESCE(mission, '')",
        Sort::Status => STATUS_SQL,
        Sort::LaunchedAt => "COALESCE(launched_at, '-infinity')",
        Sort::UpdatedAt => "updated_at",
    }
}

/// The SQL type of [`sort_expression`], which the cursor's key is cast to.
fn sort_sql_type(sort: Sort) -> &'static str {
    match sort {
        Sort::Channel => "uuid",
        Sort::Type | Sort::Mission | Sort::Status => "text",
        Sort::Speed => "int8",
        Sort::LaunchedAt | Sort::UpdatedAt => "timestamptz",
    }
}

/// The value of [`sort_expression`] for a rocket, as text PostgreSQL casts back.
fn key_of(sort: Sort, rocket: &Rocket) -> SortKey {
    let key = match sort {
        Sort::Channel => rocket.channel.to_string(),
        Sort::Type => rocket.rocket_type.clone().unwrap_or_default(),
        Sort::Speed => rocket.speed.to_string(),
        Sort::Mission => rocket.mission.clone().unwrap_or_default(),
        Sort::Status => rocket.status.as_str().to_string(),
        Sort::LaunchedAt => rocket
            .launched_at
            .map_or_else(|| "-infinity".to_string(), list::time),
        Sort::UpdatedAt => list::time(rocket.updated_at),
    };
    SortKey {
        sort,
        descending: false,
        key,
        channel: rocket.channel,
    }
}

/// At most this many missing ranges are listed for a rocket (the lowest ones);
/// `missing_messages` still counts every missing number.
pub const MISSING_RANGES_CAP: i64 = 100;

/// A run of consecutive message numbers, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberRange {
    pub from: i64,
    pub to: i64,
}

/// The lowest `limit` runs of message numbers below the highest stored one that
/// are not stored, in order. One pass over the channel's primary-key range: each
/// stored number is compared with the one before it (`lag`), and a step of more
/// than one is a gap.
///
/// Computed from the stored messages: a number whose message retention deleted
/// (`ROCKET_MESSAGE_RETENTION`) is listed as missing, while the state row's
/// `missing_messages` stays exact.
pub async fn missing_ranges(
    pool: &PgPool,
    channel: Uuid,
    limit: i64,
) -> Result<Vec<NumberRange>, sqlx::Error> {
    sqlx::query_as!(
        NumberRange,
        r#"SELECT prev + 1 AS "from!", message_number - 1 AS "to!"
           FROM (SELECT message_number,
                        lag(message_number, 1, 0::int8) OVER (ORDER BY message_number) AS prev
                 FROM rocket_messages WHERE channel = $1) steps
           WHERE message_number > prev + 1
           ORDER BY message_number
           LIMIT $2"#,
        channel,
        limit
    )
    .fetch_all(pool)
    .await
}

/// A stored message, as the history lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub number: i64,
    pub message_type: String,
    /// `messageTime`, in UTC, to the microsecond.
    pub time: DateTime<Utc>,
    /// The `message` object as received.
    pub message: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

/// The stored messages of a channel numbered above `after`, at most `limit`, in
/// order of number (a range scan of the primary key).
pub async fn messages(
    pool: &PgPool,
    channel: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredMessage>, sqlx::Error> {
    sqlx::query_as!(
        StoredMessage,
        r#"SELECT message_number AS number, message_type, message_time AS time,
                  COALESCE(fingerprint -> 'message', '{}'::jsonb) AS "message!", received_at
           FROM rocket_messages
           WHERE channel = $1 AND message_number > $2
           ORDER BY message_number
           LIMIT $3"#,
        channel,
        after,
        limit
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements checked at build time take only literals, so they spell out
    /// the expressions [`list`] filters and sorts on: a copy that drifts from the
    /// constants would show one speed or status and page by another.
    #[test]
    fn the_checked_statements_spell_out_the_list_expressions() {
        let source = include_str!("store.rs");
        // The constant itself, `write`'s RETURNING and `get`.
        assert_eq!(source.matches(SPEED_SQL).count(), 3, "{SPEED_SQL}");
        assert_eq!(source.matches(STATUS_SQL).count(), 3, "{STATUS_SQL}");
    }
}
