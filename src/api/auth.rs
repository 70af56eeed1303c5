//! Authentication at the edges. [`AuthLayer`] runs on both servers — around
//! the tonic services and around the HTTP router — so every request is
//! authenticated in one place, whichever door it came through, and carries its
//! [`Caller`]. A handler turns the caller into the [`Requester`] a use case
//! takes ([`Caller::into_requester`]: UNAUTHENTICATED without a valid token);
//! what the requester may do is the use case's decision.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{extract::FromRequestParts, http::request::Parts};
use http::{header::AUTHORIZATION, Request};
use tower::{Layer, Service};

use crate::{
    api::error::{ApiError, Reason},
    auth::{Authenticator, Principal, Requester, Role, TokenError},
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
    pub(crate) fn authenticated(&self) -> Result<Option<&Principal>, ApiError> {
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

    /// The requester a use case acts for: the principal of a valid token, or
    /// the trusted caller; UNAUTHENTICATED without a valid token.
    pub(crate) fn into_requester(self) -> Result<Requester, ApiError> {
        match self {
            Caller::Trusted => Ok(Requester::Trusted),
            Caller::Principal(principal) => Ok(Requester::Principal(principal)),
            refused => Err(refused
                .authenticated()
                .expect_err("neither trusted nor a principal")),
        }
    }

    /// True for an admin or a trusted caller (for the operators' details).
    pub(crate) fn is_admin(&self) -> bool {
        match self {
            Caller::Trusted => true,
            Caller::Principal(p) => p.has(Role::Admin),
            _ => false,
        }
    }
}

/// Reading rocket state: any valid token, or none with `ROCKETS_PUBLIC_READ`.
pub(crate) fn read_rockets(caller: &Caller, state: &crate::api::ApiState) -> Result<(), ApiError> {
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
    fn a_valid_token_or_a_trusted_caller_is_a_requester_and_the_rest_is_refused() {
        assert_eq!(
            principal("p", &[Role::Passenger]).into_requester().unwrap(),
            Requester::Principal(Principal {
                subject: "p".into(),
                roles: vec![Role::Passenger],
            })
        );
        assert_eq!(
            Caller::Trusted.into_requester().unwrap(),
            Requester::Trusted
        );
        let missing = Caller::Anonymous.into_requester().unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert_eq!(missing.reason(), Reason::TokenMissing);
        let refused = Caller::Refused(TokenError::Expired)
            .into_requester()
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(refused.reason(), Reason::TokenInvalid);
        assert!(!principal("a", &[Role::Agent]).is_admin());
        assert!(principal("x", &[Role::Admin]).is_admin());
    }
}
