//! Who is calling. Bearer JWTs are verified against an OIDC issuer's published
//! keys (production) or against a development key kept beside the embedded
//! database (`spacet token` mints tokens with it), and carry the caller's roles.
//! The edges (`api::auth`) turn the outcome into a [`Requester`], whose roles
//! the use cases read to decide what it may do, within the per-principal
//! [`RateLimits`] they check.

pub mod dev;
pub mod oidc;

use std::{
    fmt,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use governor::{clock::Clock as _, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value};

use crate::config::{AuthMode, AuthSettings};

/// What a token may do. A token may carry several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Books, lists, reads and cancels its own tickets.
    Passenger,
    /// Reads and cancels every ticket, books for a named passenger.
    Agent,
    /// What an agent may, plus the SpaceX sync and the operator views.
    Admin,
    /// Posts rocket telemetry messages.
    Telemetry,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Passenger, Role::Agent, Role::Admin, Role::Telemetry];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Passenger => "passenger",
            Role::Agent => "agent",
            Role::Admin => "admin",
            Role::Telemetry => "telemetry",
        }
    }

    /// A role by name, any case.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller: the token's subject and the roles it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Who a use case acts for. The edges authenticate: a request without a valid
/// token never becomes one. The features decide what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requester {
    /// Authentication is off (`AUTH_MODE=none`) or the listener is trusted
    /// (`ROCKETS_PORT`): may do everything, owns nothing.
    Trusted,
    /// A verified token's subject and roles.
    Principal(Principal),
}

impl Requester {
    /// The principal (`None` for a trusted requester).
    pub(crate) fn principal(&self) -> Option<&Principal> {
        match self {
            Requester::Trusted => None,
            Requester::Principal(principal) => Some(principal),
        }
    }

    /// The principal, when it holds one of `roles` (`None` for a trusted
    /// requester, which holds them all).
    pub fn require(&self, roles: &[Role]) -> Result<Option<&Principal>, Forbidden> {
        match self.principal() {
            Some(p) if !roles.iter().any(|r| p.has(*r)) => Err(Forbidden::needs(roles)),
            principal => Ok(principal),
        }
    }
}

/// A call refused for want of a role: why, and the roles that would do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Forbidden {
    pub message: String,
    pub roles: Vec<Role>,
}

impl Forbidden {
    /// "this call needs the role a or b".
    pub fn needs(roles: &[Role]) -> Forbidden {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Forbidden {
            message: format!("this call needs the role {}", names.join(" or ")),
            roles: roles.to_vec(),
        }
    }
}

/// Per-principal rate limits of the use cases that have one, which check them:
/// a GCRA bucket per token subject, refilled over a minute. Trusted requesters
/// (no principal: `AUTH_MODE=none`) are not limited; concurrent forced syncs
/// still share one fetch (see `spacex::sync_now`).
#[derive(Debug)]
pub struct RateLimits {
    /// Bookings per principal and minute (`BOOKING_RATE_LIMIT`).
    pub booking: RateLimit,
    /// Forced syncs per principal and minute (`SYNC_RATE_LIMIT`).
    pub sync: RateLimit,
}

impl RateLimits {
    pub fn new(settings: &AuthSettings) -> RateLimits {
        RateLimits {
            booking: RateLimit::per_minute(settings.booking_rate_limit, "bookings"),
            sync: RateLimit::per_minute(settings.sync_rate_limit, "forced syncs"),
        }
    }
}

/// Calls of one kind per principal and minute (0: unlimited).
pub struct RateLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// What is counted, in the message and the metrics label (`bookings`).
    what: &'static str,
    checks: AtomicU64,
}

/// Refused by a rate limit: retry after `retry_after` (`RATE_LIMITED`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RateLimited {
    pub message: String,
    pub retry_after: Duration,
}

/// Forget idle principals' buckets every this many checks, so the map stays
/// bounded by the principals active within a minute.
const RETAIN_EVERY: u64 = 4096;

impl RateLimit {
    /// `per_minute` calls of `what` per principal (0: unlimited).
    pub(crate) fn per_minute(per_minute: u32, what: &'static str) -> RateLimit {
        RateLimit {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            what,
            checks: AtomicU64::new(0),
        }
    }

    /// One call by `requester` (a trusted one is not limited).
    pub fn check(&self, requester: &Requester) -> Result<(), RateLimited> {
        let (Some(limiter), Some(principal)) = (&self.limiter, requester.principal()) else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&principal.subject).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            crate::metrics::RATE_LIMITED
                .with_label_values(&[self.what])
                .inc();
            RateLimited {
                message: format!(
                    "too many {} by this caller; retry in {} s",
                    self.what,
                    wait.as_secs() + 1
                ),
                retry_after: wait.max(Duration::from_secs(1)),
            }
        })
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("what", &self.what)
            .field("limited", &self.limiter.is_some())
            .finish()
    }
}

/// Why a token was refused. The text is safe to send to the client: it names the
/// problem, never the token or the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a bearer token is required (Authorization: Bearer ...)")]
    Missing,
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    #[error("the token has expired")]
    Expired,
    #[error("the token was not issued by this service's issuer")]
    WrongIssuer,
    #[error("the token is not meant for this service (audience)")]
    WrongAudience,
    #[error("the token's signing key is not one of the issuer's")]
    UnknownKey,
    #[error("the token's algorithm is not accepted (RS256 and ES256 are)")]
    Algorithm,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has no subject")]
    NoSubject,
    #[error("the token is not a valid JWT")]
    Malformed,
}

/// Verifies tokens in the configured [`AuthMode`].
pub struct Authenticator {
    verifier: Verifier,
    roles_claim: String,
}

enum Verifier {
    None,
    Dev(dev::DevKey),
    Oidc(Box<oidc::Issuer>),
}

impl Authenticator {
    /// Sets up the configured mode: reads (or creates) the development key, or
    /// fetches the issuer's keys (a failure there is logged, not fatal: the keys are
    /// fetched again when a token needs them).
    pub async fn start(settings: &AuthSettings) -> anyhow::Result<Arc<Authenticator>> {
        let verifier = match settings.require_mode()? {
            AuthMode::Missing => unreachable!("require_mode refuses it"),
            AuthMode::None => {
                tracing::warn!(
                    auth_mode = "none",
                    "AUTH_MODE=none: authentication is off, every caller may do everything (for trusted networks only)"
                );
                Verifier::None
            }
            AuthMode::Dev => {
                let key = dev::DevKey::load_or_create(&settings.dev_key_file)?;
                tracing::warn!(
                    auth_mode = "dev",
                    key_file = %settings.dev_key_file.display(),
                    "accepting development tokens (no AUTH_ISSUER set; not for production): mint one with `spacet token --role ROLE --subject SUBJECT`"
                );
                Verifier::Dev(key)
            }
            AuthMode::Oidc => {
                tracing::info!(
                    auth_mode = "oidc",
                    issuer = %settings.issuer,
                    audience = %settings.audience,
                    "accepting tokens of the OIDC issuer"
                );
                Verifier::Oidc(Box::new(oidc::Issuer::start(settings).await?))
            }
        };
        Ok(Arc::new(Authenticator {
            verifier,
            roles_claim: settings.roles_claim.clone(),
        }))
    }

    /// The mode in use, as `AUTH_MODE` names it (`oidc`, `dev`, `none`).
    pub(crate) fn mode_name(&self) -> &'static str {
        match self.verifier {
            Verifier::None => "none",
            Verifier::Dev(_) => "dev",
            Verifier::Oidc(_) => "oidc",
        }
    }

    /// True when authentication is off (`AUTH_MODE=none`).
    pub(crate) fn is_disabled(&self) -> bool {
        matches!(self.verifier, Verifier::None)
    }

    /// The principal an `Authorization` header value names.
    pub(crate) async fn verify_header(
        &self,
        header: Option<&str>,
    ) -> Result<Principal, TokenError> {
        let header = header.map(str::trim).filter(|h| !h.is_empty());
        let Some(header) = header else {
            return Err(TokenError::Missing);
        };
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(TokenError::NotBearer),
        };
        self.verify(token).await
    }

    /// The principal a token names, once its signature and claims are checked.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let claims = match &self.verifier {
            Verifier::None => return Err(TokenError::Missing),
            Verifier::Dev(key) => key.verify(token)?,
            Verifier::Oidc(issuer) => issuer.verify(token).await?,
        };
        principal(&claims, &self.roles_claim)
    }
}

/// The subject and the roles of verified claims. `roles_claim` may be a dotted
/// path (`realm_access.roles`); its value a list of names or one string of names
/// separated by spaces or commas. Names that are no role are ignored.
fn principal(claims: &Map<String, Value>, roles_claim: &str) -> Result<Principal, TokenError> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::NoSubject)?
        .to_string();
    let mut value = None;
    let mut object = Some(claims);
    for part in roles_claim.split('.') {
        value = object.and_then(|o| o.get(part));
        object = value.and_then(Value::as_object);
    }
    let names: Vec<&str> = match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(text)) => text
            .split(|c: char| c == ',' || c.is_whitespace())
            .collect(),
        _ => Vec::new(),
    };
    let mut roles: Vec<Role> = names.into_iter().filter_map(Role::parse).collect();
    roles.sort_by_key(|r| *r as u8);
    roles.dedup();
    Ok(Principal { subject, roles })
}

/// Maps jsonwebtoken's validation errors to ours.
fn token_error(error: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match error.kind() {
        K::ExpiredSignature => TokenError::Expired,
        K::InvalidIssuer => TokenError::WrongIssuer,
        K::InvalidAudience => TokenError::WrongAudience,
        K::InvalidSignature => TokenError::Signature,
        K::InvalidAlgorithm | K::InvalidAlgorithmName => TokenError::Algorithm,
        // `exp`, `iss` or `aud` absent, `nbf` in the future, bad base64 or JSON.
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn roles_come_from_a_list_a_string_or_a_nested_claim_and_unknown_names_are_ignored() {
        let list = claims(json!({"sub": "u1", "roles": ["Agent", "auditor", "passenger"]}));
        assert_eq!(
            principal(&list, "roles").unwrap().roles,
            vec![Role::Passenger, Role::Agent]
        );
        let text = claims(json!({"sub": "u1", "scope": "openid admin,telemetry"}));
        assert_eq!(
            principal(&text, "scope").unwrap().roles,
            vec![Role::Admin, Role::Telemetry]
        );
        let nested = claims(json!({"sub": "u1", "realm_access": {"roles": ["admin"]}}));
        assert_eq!(
            principal(&nested, "realm_access.roles").unwrap().roles,
            vec![Role::Admin]
        );
        let none = claims(json!({"sub": "u1"}));
        assert!(principal(&none, "roles").unwrap().roles.is_empty());
        let no_subject = claims(json!({"sub": "  ", "roles": ["admin"]}));
        assert_eq!(principal(&no_subject, "roles"), Err(TokenError::NoSubject));
    }

    #[test]
    fn a_principal_beyond_its_rate_is_told_when_to_retry_and_others_are_not_affected() {
        let settings = crate::config::Settings::load(None, |k| {
            (k == "BOOKING_RATE_LIMIT").then(|| "2".to_string())
        })
        .unwrap()
        .auth;
        let limits = RateLimits::new(&settings);
        let alice = Requester::Principal(Principal {
            subject: "alice".into(),
            roles: vec![Role::Passenger],
        });
        let bob = Requester::Principal(Principal {
            subject: "bob".into(),
            roles: vec![Role::Passenger],
        });
        limits.booking.check(&alice).unwrap();
        limits.booking.check(&alice).unwrap();
        match limits.booking.check(&alice) {
            Err(RateLimited { retry_after, .. }) => {
                assert!(
                    retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(30)
                );
            }
            other => panic!("{other:?}"),
        }
        limits.booking.check(&bob).unwrap();
        // Trusted callers (AUTH_MODE=none) are not limited on bookings.
        for _ in 0..10 {
            limits.booking.check(&Requester::Trusted).unwrap();
        }
    }
}
