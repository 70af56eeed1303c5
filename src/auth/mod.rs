//! Who is calling. Bearer JWTs are verified against an OIDC issuer's published
//! keys (production) or against a development key kept beside the embedded
//! database (`spacet token` mints tokens with it), and carry the caller's roles.
//! The edges (`api::auth`) turn the outcome into a [`Caller`]-dependent answer.

pub mod dev;
pub mod oidc;

use std::{fmt, sync::Arc};

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
    pub fn mode_name(&self) -> &'static str {
        match self.verifier {
            Verifier::None => "none",
            Verifier::Dev(_) => "dev",
            Verifier::Oidc(_) => "oidc",
        }
    }

    /// True when authentication is off (`AUTH_MODE=none`).
    pub fn is_disabled(&self) -> bool {
        matches!(self.verifier, Verifier::None)
    }

    /// The principal an `Authorization` header value names.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Principal, TokenError> {
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
}
