//! Tokens of an OIDC issuer (`AUTH_ISSUER`): its keys come from the `jwks_uri` of
//! its discovery document, are cached, and are fetched again when a token names
//! a key id the cache does not hold (at most once per `AUTH_JWKS_MIN_REFRESH`, so
//! a flood of made-up key ids cannot make us hammer the issuer) or when the cache
//! is older than `AUTH_JWKS_MAX_AGE`. A rotated key is thus picked up without a
//! restart. RS256 and ES256 only: the algorithm comes from the key, never from
//! the token alone (no `none`, no HMAC with a public key).

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse},
    Algorithm, DecodingKey, Validation,
};
use serde_json::{Map, Value};

use super::{token_error, TokenError};
use crate::config::AuthSettings;

/// Largest discovery document or key set we read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Time one fetch of the discovery document or the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One issuer's keys and the rules its tokens must meet.
pub struct Issuer {
    issuer: String,
    audience: String,
    leeway: u64,
    min_refresh: Duration,
    max_age: Duration,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// When the keys were last asked for: refreshes are serialised and spaced.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Keys {
    jwks_uri: Option<String>,
    /// Key id → key and the one algorithm it verifies.
    by_id: HashMap<String, (DecodingKey, Algorithm)>,
    fetched_at: Option<Instant>,
}

impl Issuer {
    /// The issuer with its keys fetched once; if that fails it is logged and
    /// retried when a token arrives.
    pub async fn start(settings: &AuthSettings) -> anyhow::Result<Issuer> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .context("building the OIDC HTTP client")?;
        let issuer = Issuer {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.clock_skew.as_secs(),
            min_refresh: settings.jwks_min_refresh,
            max_age: settings.jwks_max_age,
            http,
            keys: RwLock::new(Keys::default()),
            refreshing: tokio::sync::Mutex::new(None),
        };
        match issuer.refresh().await {
            Ok(count) => {
                tracing::info!(issuer = %issuer.issuer, keys = count, "OIDC issuer keys fetched")
            }
            Err(error) => tracing::error!(
                issuer = %issuer.issuer,
                error = format!("{error:#}"),
                "OIDC issuer keys could not be fetched; tokens are refused until they are"
            ),
        }
        Ok(issuer)
    }

    /// The claims of a token signed by one of the issuer's keys, checked: `exp`,
    /// `iss`, `aud` and `sub` present, `exp` and `nbf` met within the skew.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(TokenError::Algorithm);
        }
        let stale = self
            .keys
            .read()
            .expect("keys lock")
            .fetched_at
            .is_none_or(|at| at.elapsed() > self.max_age);
        let mut found = if stale {
            None
        } else {
            self.key_for(header.kid.as_deref(), header.alg)?
        };
        if found.is_none() {
            if let Err(error) = self.refresh().await {
                tracing::warn!(issuer = %self.issuer, error = format!("{error:#}"), "OIDC issuer keys could not be refreshed");
            }
            found = self.key_for(header.kid.as_deref(), header.alg)?;
        }
        let key = found.ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(token_error)
    }

    /// The key `kid` names (or the only key for `alg` when the token names none);
    /// an error when the key exists but verifies another algorithm.
    fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<DecodingKey>, TokenError> {
        let keys = self.keys.read().expect("keys lock");
        let entry = match kid {
            Some(kid) => keys.by_id.get(kid),
            None => {
                let mut matching = keys.by_id.values().filter(|(_, a)| *a == alg);
                match (matching.next(), matching.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        };
        match entry {
            Some((key, key_alg)) if *key_alg == alg => Ok(Some(key.clone())),
            Some(_) => Err(TokenError::Algorithm),
            None => Ok(None),
        }
    }

    /// Fetches the discovery document (once) and the key set, unless another call
    /// did or one was attempted less than `min_refresh` ago; returns how many
    /// usable keys the cache holds.
    async fn refresh(&self) -> anyhow::Result<usize> {
        let mut last = self.refreshing.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
            // Another caller refreshed while we waited for the lock.
            return Ok(self.keys.read().expect("keys lock").by_id.len());
        }
        *last = Some(Instant::now());
        let known_uri = self.keys.read().expect("keys lock").jwks_uri.clone();
        let jwks_uri = match known_uri {
            Some(uri) => uri,
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let discovery: Value = self.fetch_json(&url).await?;
                let named = discovery["issuer"].as_str().unwrap_or_default();
                anyhow::ensure!(
                    named.trim_end_matches('/') == self.issuer.trim_end_matches('/'),
                    "the discovery document names issuer {named:?}, not {:?}",
                    self.issuer
                );
                discovery["jwks_uri"]
                    .as_str()
                    .context("the discovery document has no jwks_uri")?
                    .to_string()
            }
        };
        let set: JwkSet = serde_json::from_value(self.fetch_json(&jwks_uri).await?)
            .context("the issuer's key set is not a JWK set")?;
        let mut by_id = HashMap::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(ec))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, AlgorithmParameters::EllipticCurve(ec))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                tracing::warn!(issuer = %self.issuer, index, "an issuer key could not be read; skipped");
                continue;
            };
            let id = jwk
                .common
                .key_id
                .clone()
                .unwrap_or_else(|| format!("#{index}"));
            by_id.insert(id, (key, alg));
        }
        let count = by_id.len();
        let mut keys = self.keys.write().expect("keys lock");
        *keys = Keys {
            jwks_uri: Some(jwks_uri),
            by_id,
            fetched_at: Some(Instant::now()),
        };
        tracing::debug!(issuer = %self.issuer, keys = count, "OIDC issuer keys refreshed");
        Ok(count)
    }

    /// GETs a JSON document of at most [`MAX_DOCUMENT_BYTES`].
    async fn fetch_json(&self, url: &str) -> anyhow::Result<Value> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET {url} answered {}",
            response.status()
        );
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("reading {url}"))?
        {
            anyhow::ensure!(
                body.len() + chunk.len() <= MAX_DOCUMENT_BYTES,
                "{url} is larger than {MAX_DOCUMENT_BYTES} bytes"
            );
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).with_context(|| format!("{url} is not JSON"))
    }
}
