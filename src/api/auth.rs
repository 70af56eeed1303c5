//! Authentication and authorisation at the edges. [`AuthLayer`] runs on both
//! servers — around the tonic services and around the HTTP router, whose gateway
//! calls the same services in-process and hands them the [`Caller`] — so every
//! request is authenticated in one place, whichever door it came through. Each
//! RPC then asks the caller for what it needs ([`Caller::require`],
//! [`Caller::tickets`]). Per-principal rate limits live here too.

use std::{
    future::Future,
    num::NonZeroU32,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{extract::FromRequestParts, http::request::Parts};
use governor::{clock::Clock as _, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{header::AUTHORIZATION, Request};
use tower::{Layer, Service};

use crate::{
    api::error::{ApiError, Reason},
    auth::{Authenticator, Principal, Role, TokenError},
    config::AuthSettings,
};

/// Who sent a request, as [`AuthLayer`] found out.
#[derive(Clone, Debug)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// A token that failed verification, and why.
    Refused(TokenError),
    /// Authentication is off (`AUTH_MODE=none`) or the listener is trusted
    /// (`ROCKETS_PORT`): may do everything, owns nothing.
    Trusted,
    /// A verified token.
    Principal(Principal),
}

/// Whose tickets a caller may list, read and cancel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TicketScope {
    /// Every ticket (agents, admins, trusted callers).
    All,
    /// The tickets this passenger owns.
    Owner(String),
}

impl Caller {
    /// The caller [`AuthLayer`] attached to a request; none attached (a request
    /// that did not come through the layer) is anonymous, so it fails closed.
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        Caller::attached(request.extensions())
    }

    /// The caller in `extensions`, or anonymous.
    fn attached(extensions: &http::Extensions) -> Caller {
        extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous)
    }

    /// The principal of a valid token (`None` for a trusted caller), or
    /// UNAUTHENTICATED.
    pub fn authenticated(&self) -> Result<Option<&Principal>, ApiError> {
        match self {
            Caller::Trusted => Ok(None),
            Caller::Principal(principal) => Ok(Some(principal)),
            Caller::Anonymous => Err(ApiError::refused(
                Reason::TokenMissing,
                TokenError::Missing.to_string(),
            )),
            Caller::Refused(error) => {
                Err(ApiError::refused(Reason::TokenInvalid, error.to_string()))
            }
        }
    }

    /// The principal, when it holds one of `roles` (`None` for a trusted caller);
    /// UNAUTHENTICATED without a valid token, PERMISSION_DENIED without the role.
    pub fn require(&self, roles: &[Role]) -> Result<Option<&Principal>, ApiError> {
        let principal = self.authenticated()?;
        match principal {
            Some(p) if !roles.iter().any(|r| p.has(*r)) => {
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                Err(ApiError::refused(
                    Reason::RoleRequired,
                    format!("this call needs the role {}", names.join(" or ")),
                )
                .with("roles", names.join(",")))
            }
            _ => Ok(principal),
        }
    }

    /// Whose tickets the caller may see: agents and admins every ticket, a
    /// passenger its own.
    pub fn tickets(&self) -> Result<TicketScope, ApiError> {
        match self.require(&[Role::Passenger, Role::Agent, Role::Admin])? {
            None => Ok(TicketScope::All),
            Some(p) if p.has(Role::Agent) || p.has(Role::Admin) => Ok(TicketScope::All),
            Some(p) => Ok(TicketScope::Owner(p.subject.clone())),
        }
    }

    /// True for an admin or a trusted caller (for the operators' details).
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Trusted => true,
            Caller::Principal(p) => p.has(Role::Admin),
            _ => false,
        }
    }
}

/// Reading rocket state: any valid token, or none with `ROCKETS_PUBLIC_READ`.
pub fn read_rockets(caller: &Caller, state: &crate::api::ApiState) -> Result<(), ApiError> {
    if state.settings.auth.rockets_public_read {
        return Ok(());
    }
    caller.authenticated().map(|_| ())
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Self::Rejection> {
        Ok(Caller::attached(&parts.extensions))
    }
}

/// Authenticates every request and attaches its [`Caller`]; with no
/// authenticator (a trusted listener) or with `AUTH_MODE=none` every caller is
/// [`Caller::Trusted`]. It refuses nothing itself: probes and metrics answer
/// whoever asks, and each RPC decides what it needs.
#[derive(Clone)]
pub struct AuthLayer(pub Option<Arc<Authenticator>>);

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            auth: self.0.clone().filter(|a| !a.is_disabled()),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

impl<S, B> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was made ready is the one that serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let caller = match auth {
                None => Caller::Trusted,
                Some(auth) => match request.headers().get(AUTHORIZATION) {
                    None => Caller::Anonymous,
                    Some(value) => match value.to_str() {
                        Err(_) => Caller::Refused(TokenError::NotBearer),
                        Ok(header) => match auth.verify_header(Some(header)).await {
                            Ok(principal) => Caller::Principal(principal),
                            Err(TokenError::Missing) => Caller::Anonymous,
                            Err(error) => {
                                crate::metrics::AUTH_REFUSED
                                    .with_label_values(&[refusal_label(&error)])
                                    .inc();
                                Caller::Refused(error)
                            }
                        },
                    },
                },
            };
            request.extensions_mut().insert(caller);
            inner.call(request).await
        })
    }
}

/// The metrics label of a refused token.
fn refusal_label(error: &TokenError) -> &'static str {
    match error {
        TokenError::Missing | TokenError::NotBearer | TokenError::Malformed => "malformed",
        TokenError::Expired => "expired",
        TokenError::WrongIssuer | TokenError::WrongAudience => "wrong_issuer_or_audience",
        TokenError::UnknownKey | TokenError::Algorithm | TokenError::Signature => "signature",
        TokenError::NoSubject => "no_subject",
    }
}

/// Per-principal rate limits (`BOOKING_RATE_LIMIT`, `SYNC_RATE_LIMIT`): a GCRA
/// bucket per token subject, refilled over a minute. Trusted callers (no
/// principal: `AUTH_MODE=none`) are not limited; concurrent forced syncs still
/// share one fetch (see `spacex::sync_now`).
pub struct RateLimits {
    booking: Option<Keyed>,
    sync: Option<Keyed>,
    checks: AtomicU64,
}

type Keyed = DefaultKeyedRateLimiter<String>;

/// Forget idle principals' buckets every this many checks, so the map stays
/// bounded by the principals active within a minute.
const RETAIN_EVERY: u64 = 4096;

impl RateLimits {
    pub fn new(settings: &AuthSettings) -> RateLimits {
        let keyed = |per_minute: u32| {
            NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
        };
        RateLimits {
            booking: keyed(settings.booking_rate_limit),
            sync: keyed(settings.sync_rate_limit),
            checks: AtomicU64::new(0),
        }
    }

    /// One booking by `principal` (none for a trusted caller: not limited).
    pub fn booking(&self, principal: Option<&Principal>) -> Result<(), ApiError> {
        match principal {
            Some(p) => self.check(self.booking.as_ref(), &p.subject, "bookings"),
            None => Ok(()),
        }
    }

    /// One forced sync by `principal` (none for a trusted caller: not limited).
    pub fn sync(&self, principal: Option<&Principal>) -> Result<(), ApiError> {
        match principal {
            Some(p) => self.check(self.sync.as_ref(), &p.subject, "forced syncs"),
            None => Ok(()),
        }
    }

    fn check(&self, limiter: Option<&Keyed>, key: &str, what: &str) -> Result<(), ApiError> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            crate::metrics::RATE_LIMITED
                .with_label_values(&[what])
                .inc();
            ApiError::RateLimited {
                message: format!(
                    "too many {what} by this caller; retry in {} s",
                    wait.as_secs() + 1
                ),
                retry_after: wait.max(Duration::from_secs(1)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(subject: &str, roles: &[Role]) -> Caller {
        Caller::Principal(Principal {
            subject: subject.into(),
            roles: roles.to_vec(),
        })
    }

    #[test]
    fn each_role_sees_the_tickets_it_may_and_the_rest_is_refused() {
        assert_eq!(
            principal("p", &[Role::Passenger]).tickets().unwrap(),
            TicketScope::Owner("p".into())
        );
        assert_eq!(
            principal("a", &[Role::Passenger, Role::Agent])
                .tickets()
                .unwrap(),
            TicketScope::All
        );
        assert_eq!(
            principal("x", &[Role::Admin]).tickets().unwrap(),
            TicketScope::All
        );
        assert_eq!(Caller::Trusted.tickets().unwrap(), TicketScope::All);
        let denied = principal("t", &[Role::Telemetry]).tickets().unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            Caller::Anonymous.tickets().unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            Caller::Refused(TokenError::Expired)
                .tickets()
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert!(!principal("a", &[Role::Agent]).is_admin());
        assert!(principal("x", &[Role::Admin]).is_admin());
    }

    #[test]
    fn a_principal_beyond_its_rate_is_told_when_to_retry_and_others_are_not_affected() {
        let settings = crate::config::Settings::load(None, |k| {
            (k == "BOOKING_RATE_LIMIT").then(|| "2".to_string())
        })
        .unwrap()
        .auth;
        let limits = RateLimits::new(&settings);
        let alice = Principal {
            subject: "alice".into(),
            roles: vec![Role::Passenger],
        };
        let bob = Principal {
            subject: "bob".into(),
            roles: vec![Role::Passenger],
        };
        limits.booking(Some(&alice)).unwrap();
        limits.booking(Some(&alice)).unwrap();
        match limits.booking(Some(&alice)) {
            Err(ApiError::RateLimited { retry_after, .. }) => {
                assert!(
                    retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(30)
                );
            }
            other => panic!("{other:?}"),
        }
        limits.booking(Some(&bob)).unwrap();
        // Trusted callers (AUTH_MODE=none) are not limited on bookings.
        for _ in 0..10 {
            limits.booking(None).unwrap();
        }
    }
}
