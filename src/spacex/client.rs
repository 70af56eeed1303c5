//! A client of the SpaceX v4 API: launchpads and upcoming launches.
//!
//! Every request has a timeout and is retried with exponential backoff and jitter
//! after a 5xx, a timeout or a connection error; a 4xx is final. Decoding ignores
//! fields we do not use, and one malformed launch or launchpad is skipped (and
//! logged) instead of failing the whole answer.
//!
//! A hostile or broken server cannot exhaust memory: each answer is read as a stream
//! and cut at `SPACEX_MAX_RESPONSE_BYTES` (an announced larger `Content-Length` is
//! refused before reading), the launches accepted are capped at
//! `SPACEX_MAX_LAUNCHES` while the JSON is parsed (not after), and `SPACEX_TIMEOUT`
//! bounds the whole exchange, body included, so a slow endless body ends too. The
//! client speaks https only unless `SPACEX_ALLOW_HTTP` is set, and follows no
//! redirect to another scheme.

use std::{collections::HashSet, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{
    de::{DeserializeSeed, SeqAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::{json, Value};

use crate::{config::SpaceXSettings, metrics};

/// Launches asked for per page of `POST /launches/query`.
pub const PAGE_LIMIT: u32 = 100;
/// A guard against a server that always says there is a next page.
const MAX_PAGES: u32 = 1000;
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Most launchpads accepted from `GET /launchpads` (SpaceX has six).
const MAX_LAUNCHPADS: usize = 1000;
/// Most redirects followed (all within one scheme).
const MAX_REDIRECTS: usize = 5;

use crate::launchpads::{self, DatePrecision, Launchpad, LaunchpadStatus, Timezone};

/// An upcoming launch as SpaceX describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub id: String,
    pub name: String,
    pub launchpad_id: String,
    pub date_utc: DateTime<Utc>,
    pub date_precision: DatePrecision,
    pub upcoming: bool,
}

/// Every page of upcoming launches, decoded.
#[derive(Debug, Clone, Default)]
pub struct Upcoming {
    pub launches: Vec<Launch>,
    /// Documents received, readable or not.
    pub seen: usize,
    /// Ids of the documents that could not be read (when they had a readable id):
    /// the sync leaves what it knows about these launches as it is.
    pub unreadable_ids: HashSet<String>,
    /// Documents skipped because they could not be read.
    pub skipped: usize,
}

/// Why a SpaceX answer could not be had. The text ends up in `sync_state.last_error`
/// and in `/liveness`, so it says what was asked and how often.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpaceXError {
    #[error("{what}: SpaceX answered HTTP {status} ({attempts} attempt(s))")]
    Status {
        what: String,
        status: u16,
        attempts: u32,
    },
    #[error("{what}: no answer within {timeout:?} ({attempts} attempt(s))")]
    Timeout {
        what: String,
        timeout: Duration,
        attempts: u32,
    },
    #[error("{what}: {cause} ({attempts} attempt(s))")]
    Transport {
        what: String,
        cause: String,
        attempts: u32,
    },
    #[error("{what}: the answer is not the expected JSON: {cause}")]
    Decode { what: String, cause: String },
    #[error("{what}: {cause}")]
    Inconsistent { what: String, cause: String },
    #[error("{what}: the answer is larger than {limit} bytes (SPACEX_MAX_RESPONSE_BYTES); not read further")]
    TooLarge { what: String, limit: usize },
    #[error("{what}: SpaceX lists more than {limit} launches (SPACEX_MAX_LAUNCHES)")]
    TooManyLaunches { what: String, limit: usize },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The SpaceX v4 API.
#[derive(Debug, Clone)]
pub struct SpaceXClient {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_response_bytes: usize,
    max_launches: usize,
}

/// What one failed attempt means for the next.
enum Failure {
    Retryable(SpaceXError),
    Final(SpaceXError),
}

impl SpaceXClient {
    /// A client for the API at `settings.api_url`.
    pub fn new(settings: &SpaceXSettings) -> Result<SpaceXClient, SpaceXError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "spacet/",
                env!("CARGO_PKG_VERSION"),
                " (SpaceT launch booking; SpaceX sync)"
            ))
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .https_only(!settings.allow_http)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let from = attempt.previous().last().map(|u| u.scheme().to_string());
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if from.as_deref().is_some_and(|s| s != attempt.url().scheme()) {
                    let error = format!(
                        "refusing a redirect from {} to {}",
                        from.unwrap_or_default(),
                        attempt.url().scheme()
                    );
                    attempt.error(error)
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| SpaceXError::Client(error_chain(&e)))?;
        Ok(SpaceXClient {
            http,
            base_url: settings.api_url.trim_end_matches('/').to_string(),
            timeout: settings.timeout,
            retries: settings.retries,
            backoff: settings.retry_backoff,
            max_response_bytes: settings.max_response_bytes,
            max_launches: settings.max_launches,
        })
    }

    /// `GET /launchpads`: every pad SpaceX knows, minus the ones that cannot be read.
    #[tracing::instrument(skip_all)]
    pub async fn launchpads(&self) -> Result<Vec<Launchpad>, SpaceXError> {
        let what = "GET /launchpads".to_string();
        let url = format!("{}/launchpads", self.base_url);
        let body = self.send(&what, || self.http.get(&url)).await?;
        let mut de = serde_json::Deserializer::from_slice(&body);
        let docs = Limited(MAX_LAUNCHPADS)
            .deserialize(&mut de)
            .and_then(|docs| de.end().map(|()| docs))
            .map_err(|e| SpaceXError::Decode {
                what: what.clone(),
                cause: e.to_string(),
            })?;
        let mut pads = Vec::with_capacity(docs.len());
        for doc in &docs {
            match decode_launchpad(doc) {
                Ok(pad) => pads.push(pad),
                Err(problem) => {
                    let id = doc.get("id").and_then(|id| id.as_str()).unwrap_or("?");
                    tracing::warn!(
                        launchpad_id = id,
                        %problem,
                        "skipping a SpaceX launchpad that cannot be read"
                    );
                }
            }
        }
        Ok(pads)
    }

    /// `POST /launches/query` for `{"upcoming": true}`, every page (pages start at 1).
    ///
    /// Fails when the pages do not add up to the `totalDocs` SpaceX announces (the
    /// data changed while we paged): a launch missed that way would look cancelled.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn upcoming_launches(&self) -> Result<Upcoming, SpaceXError> {
        /// A page whose `docs` hold at most the launches still allowed.
        struct PageSeed(usize);
        impl<'de> DeserializeSeed<'de> for PageSeed {
            type Value = Page;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Page, D::Error> {
                d.deserialize_map(self)
            }
        }
        impl<'de> Visitor<'de> for PageSeed {
            type Value = Page;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a page of launches")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Page, A::Error> {
                let (mut docs, mut has_next_page, mut total_docs) = (None, None, None);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "docs" => docs = Some(map.next_value_seed(Limited(self.0))?),
                        "hasNextPage" => has_next_page = Some(map.next_value()?),
                        "totalDocs" => total_docs = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Page {
                    docs: docs.ok_or_else(|| serde::de::Error::missing_field("docs"))?,
                    has_next_page: has_next_page
                        .ok_or_else(|| serde::de::Error::missing_field("hasNextPage"))?,
                    total_docs,
                })
            }
        }
        struct Page {
            docs: Vec<Value>,
            has_next_page: bool,
            total_docs: Option<u64>,
        }
        let too_many = |what: String| {
            metrics::SPACEX_LIMIT_HITS
                .with_label_values(&["launches"])
                .inc();
            SpaceXError::TooManyLaunches {
                what,
                limit: self.max_launches,
            }
        };

        let url = format!("{}/launches/query", self.base_url);
        let mut upcoming = Upcoming::default();
        let mut ids = HashSet::new();
        for page in 1..=MAX_PAGES {
            let what = format!("POST /launches/query page {page}");
            let query = json!({
                "query": {"upcoming": true},
                "options": {"page": page, "limit": PAGE_LIMIT},
            });
            let body = self
                .send(&what, || self.http.post(&url).json(&query))
                .await?;
            // One more than the launches still allowed, to tell "too many" apart.
            let allowed = self.max_launches - upcoming.seen + 1;
            let mut de = serde_json::Deserializer::from_slice(&body);
            let decoded = PageSeed(allowed)
                .deserialize(&mut de)
                .and_then(|page| de.end().map(|()| page));
            let decoded = match decoded {
                Ok(page) => page,
                Err(e) if e.to_string().starts_with(TOO_MANY) => return Err(too_many(what)),
                Err(e) => {
                    return Err(SpaceXError::Decode {
                        what: what.clone(),
                        cause: e.to_string(),
                    })
                }
            };
            upcoming.seen += decoded.docs.len();
            let announced = decoded.total_docs.unwrap_or(0);
            if upcoming.seen > self.max_launches || announced > self.max_launches as u64 {
                return Err(too_many(what));
            }
            for doc in &decoded.docs {
                match decode_launch(doc) {
                    Ok(launch) => {
                        if ids.insert(launch.id.clone()) {
                            upcoming.launches.push(launch);
                        } else {
                            return Err(SpaceXError::Inconsistent {
                                what,
                                cause: format!(
                                    "launch {} appears twice: the data changed while paging",
                                    launch.id
                                ),
                            });
                        }
                    }
                    Err(problem) => {
                        let id = doc.get("id").and_then(Value::as_str);
                        tracing::warn!(
                            launch_id = id.unwrap_or("?"),
                            %problem,
                            "skipping a SpaceX launch that cannot be read"
                        );
                        upcoming.skipped += 1;
                        if let Some(id) = id {
                            upcoming.unreadable_ids.insert(id.to_string());
                        }
                    }
                }
            }
            if !decoded.has_next_page {
                if let Some(total) = decoded.total_docs {
                    if total != upcoming.seen as u64 {
                        return Err(SpaceXError::Inconsistent {
                            what,
                            cause: format!(
                                "the pages held {} launches but SpaceX counts {total}: the data changed while paging",
                                upcoming.seen
                            ),
                        });
                    }
                }
                return Ok(upcoming);
            }
        }
        Err(SpaceXError::Inconsistent {
            what: "POST /launches/query".into(),
            cause: format!("still a next page after {MAX_PAGES} pages"),
        })
    }

    /// Sends the request `build` makes until it succeeds, fails for good, or the
    /// retries are spent; returns the body of the 2xx answer.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Bytes, SpaceXError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let span = attempt_span(what, attempt);
            let mut request = build();
            if !span.is_disabled() {
                let mut headers = http::HeaderMap::new();
                crate::telemetry::inject_headers(&span, &mut headers);
                request = request.headers(headers);
            }
            let outcome = tracing::Instrument::instrument(
                self.attempt(what, attempt, request, &span),
                span.clone(),
            )
            .await;
            if outcome.is_err() {
                span.record("otel.status_code", "ERROR");
            }
            let failure = match outcome {
                Ok(body) => return Ok(body),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retryable(error)) => error,
            };
            if attempt > self.retries {
                if matches!(failure, SpaceXError::Timeout { .. }) {
                    metrics::SPACEX_LIMIT_HITS
                        .with_label_values(&["time"])
                        .inc();
                }
                return Err(failure);
            }
            let delay = backoff(self.backoff, attempt);
            tracing::warn!(
                error = %failure,
                retry_in_ms = delay.as_millis() as u64,
                "SpaceX request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        what: &str,
        attempts: u32,
        request: reqwest::RequestBuilder,
        span: &tracing::Span,
    ) -> Result<Bytes, Failure> {
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                Failure::Retryable(SpaceXError::Timeout {
                    what: what.to_string(),
                    timeout: self.timeout,
                    attempts,
                })
            } else if e.is_builder() {
                Failure::Final(SpaceXError::Client(error_chain(&e)))
            } else if e.is_redirect() {
                // A redirect to another scheme, or too many: the next try is the same.
                Failure::Final(SpaceXError::Transport {
                    what: what.to_string(),
                    cause: error_chain(&e),
                    attempts,
                })
            } else {
                // Connection refused or reset, TLS, a body cut short: worth another try.
                Failure::Retryable(SpaceXError::Transport {
                    what: what.to_string(),
                    cause: error_chain(&e),
                    attempts,
                })
            }
        };
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        if !span.is_disabled() {
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
        }
        if !status.is_success() {
            let error = SpaceXError::Status {
                what: what.to_string(),
                status: status.as_u16(),
                attempts,
            };
            return Err(if status.is_server_error() {
                Failure::Retryable(error)
            } else {
                Failure::Final(error)
            });
        }
        self.read_capped(what, response, classify).await
    }

    /// The body, read chunk by chunk and refused as soon as it passes
    /// `max_response_bytes`: a 100 MB or endless answer costs at most the cap.
    async fn read_capped(
        &self,
        what: &str,
        mut response: reqwest::Response,
        classify: impl Fn(reqwest::Error) -> Failure,
    ) -> Result<Bytes, Failure> {
        let limit = self.max_response_bytes;
        let too_large = || {
            metrics::SPACEX_LIMIT_HITS
                .with_label_values(&["bytes"])
                .inc();
            Failure::Final(SpaceXError::TooLarge {
                what: what.to_string(),
                limit,
            })
        };
        let announced = response.content_length();
        if announced.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(announced.unwrap_or(0) as usize);
        loop {
            let Some(chunk) = response.chunk().await.map_err(&classify)? else {
                return Ok(Bytes::from(body));
            };
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
    }
}

/// The pause after failed attempt `attempt` (1-based): `base·2^(attempt-1)`, at most
/// [`MAX_BACKOFF`], of which a random half is dropped ("equal jitter"), so that
/// replicas failing together do not retry together.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exponential = base
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    let half = exponential / 2;
    half + half.mul_f64(rand::random_range(0.0..=1.0))
}

/// The start of the parse error [`Limited`] raises.
const TOO_MANY: &str = "more documents than allowed";

/// A JSON array of at most `.0` documents, refused while it is parsed: a page of a
/// million tiny documents never becomes a million `Value`s.
struct Limited(usize);

impl<'de> DeserializeSeed<'de> for Limited {
    type Value = Vec<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Limited {
    type Value = Vec<Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of at most {} documents", self.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut docs = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.0));
        while let Some(doc) = seq.next_element::<Value>()? {
            if docs.len() == self.0 {
                return Err(serde::de::Error::custom(format!("{TOO_MANY} ({})", self.0)));
            }
            docs.push(doc);
        }
        Ok(docs)
    }
}

fn decode_launchpad(doc: &Value) -> Result<Launchpad, String> {
    #[derive(Deserialize)]
    struct Raw {
        id: String,
        name: String,
        full_name: Option<String>,
        locality: Option<String>,
        region: Option<String>,
        timezone: String,
        status: String,
    }
    let raw = Raw::deserialize(doc).map_err(|e| e.to_string())?;
    if !launchpads::is_launchpad_id(&raw.id) {
        return Err(format!("{:?} is not a launchpad id", raw.id));
    }
    let Some(timezone) = Timezone::parse(&raw.timezone) else {
        return Err(format!("{:?} is not an IANA time zone", raw.timezone));
    };
    let Some(status) = LaunchpadStatus::parse(&raw.status) else {
        return Err(format!("{:?} is not a launchpad status", raw.status));
    };
    Ok(Launchpad {
        full_name: raw.full_name.unwrap_or_else(|| raw.name.clone()),
        id: raw.id,
        name: raw.name,
        locality: raw.locality.unwrap_or_default(),
        region: raw.region.unwrap_or_default(),
        timezone,
        status,
    })
}

fn decode_launch(doc: &Value) -> Result<Launch, String> {
    #[derive(Deserialize)]
    struct Raw {
        id: String,
        name: String,
        launchpad: String,
        date_utc: DateTime<Utc>,
        date_precision: DatePrecision,
        upcoming: bool,
    }
    let raw = Raw::deserialize(doc).map_err(|e| e.to_string())?;
    if raw.id.trim().is_empty() {
        return Err("empty id".into());
    }
    if raw.launchpad.trim().is_empty() {
        return Err("empty launchpad".into());
    }
    Ok(Launch {
        id: raw.id,
        name: raw.name,
        launchpad_id: raw.launchpad,
        date_utc: raw.date_utc,
        date_precision: raw.date_precision,
        upcoming: raw.upcoming,
    })
}

/// An error and its causes on one line (reqwest hides the useful part in `source`).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The client span of one SpaceX request attempt (`what` is `METHOD /path`), when
/// traces are exported: its context goes into the request's `traceparent`.
fn attempt_span(what: &str, attempt: u32) -> tracing::Span {
    if !crate::telemetry::otel_enabled() {
        return tracing::Span::none();
    }
    let method = what.split(' ').next().unwrap_or("GET");
    // `POST /launches/query page 2`: the page is an attribute, not part of the name.
    let name = what.split(" page ").next().unwrap_or(what);
    tracing::info_span!(
        "spacex request",
        otel.name = name,
        spacex.request = what,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.request.resend_count = attempt - 1,
        peer.service = "spacex",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for _ in 0..50 {
            let first = backoff(base, 1);
            assert!(first >= Duration::from_millis(50) && first <= base);
            let third = backoff(base, 3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(backoff(base, 40) <= MAX_BACKOFF);
        }
    }

    #[test]
    fn a_recorded_launch_decodes_and_unknown_fields_are_ignored() {
        let doc = json!({
            "id": "633f71dd0531f07b4fdf59c1", "name": "Hotbird 13G",
            "launchpad": "5e9e4501f509094ba4566f84", "date_utc": "2049-11-03T03:24:00.000Z",
            "date_unix": 2519429040u64, "date_precision": "hour", "upcoming": true,
            "tbd": false, "cores": [{"core": null}], "something_new": {"x": 1}
        });
        let launch = decode_launch(&doc).unwrap();
        assert_eq!(launch.date_precision, DatePrecision::Hour);
        assert_eq!(launch.date_utc.to_rfc3339(), "2049-11-03T03:24:00+00:00");
        for broken in [
            json!({"id": "x", "name": "n", "launchpad": null, "date_utc": "2049-11-03T03:24:00.000Z", "date_precision": "hour", "upcoming": true}),
            json!({"id": "x", "name": "n", "launchpad": "p", "date_utc": "soon", "date_precision": "hour", "upcoming": true}),
            json!({"id": "x", "name": "n", "launchpad": "p", "date_utc": "2049-11-03T03:24:00.000Z", "date_precision": "week", "upcoming": true}),
        ] {
            assert!(decode_launch(&broken).is_err(), "{broken}");
        }
    }
}
