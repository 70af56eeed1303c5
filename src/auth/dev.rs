//! Development tokens: HS256, signed with a random key kept in a file beside the
//! embedded database (`AUTH_DEV_KEY_FILE`), minted by `spacet token`. Used only
//! when no issuer is configured; the service says so when it starts.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use base64::{engine::general_purpose::STANDARD, Engine};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};

use super::{token_error, Role, TokenError};

/// The `iss` of development tokens.
pub const DEV_ISSUER: &str = "spacet-dev";
/// The `aud` of development tokens.
pub const DEV_AUDIENCE: &str = "spacet";
/// Clock skew allowed on `exp`.
const LEEWAY_SECONDS: u64 = 30;

/// The development signing key.
pub struct DevKey {
    secret: Vec<u8>,
    path: PathBuf,
}

impl DevKey {
    /// Reads the key at `path`, or creates it (32 random bytes, base64, mode 0600)
    /// and the directories above it.
    pub fn load_or_create(path: &Path) -> anyhow::Result<DevKey> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {} for the development key", dir.display()))?;
        }
        let created = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
        };
        match created {
            Ok(mut file) => {
                let secret: [u8; 32] = rand::random();
                file.write_all(STANDARD.encode(secret).as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing the development key {}", path.display()))?;
                tracing::info!(key_file = %path.display(), "development signing key created");
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("creating the development key {}", path.display()))
            }
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the development key {}", path.display()))?;
        let secret = STANDARD
            .decode(text.trim())
            .ok()
            .filter(|s| s.len() >= 32)
            .with_context(|| {
                format!(
                    "{} is not a development key (base64 of at least 32 bytes); delete it to get a new one",
                    path.display()
                )
            })?;
        Ok(DevKey {
            secret,
            path: path.to_path_buf(),
        })
    }

    /// Where the key lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A token for `subject` with `roles`, valid for `ttl`.
    pub fn mint(&self, subject: &str, roles: &[Role], ttl: Duration) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({
            "iss": DEV_ISSUER,
            "aud": DEV_AUDIENCE,
            "sub": subject,
            "roles": roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "iat": now,
            "exp": now + ttl.as_secs(),
        });
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )?)
    }

    /// The claims of a token this key signed, checked: HS256 only, `exp`
    /// required, issuer and audience the development ones.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_issuer(&[DEV_ISSUER]);
        validation.set_audience(&[DEV_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &DecodingKey::from_secret(&self.secret),
            &validation,
        )
        .map(|data| data.claims)
        .map_err(token_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_one_from_another_key_or_expired_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let key = DevKey::load_or_create(&dir.path().join("k/auth-dev.key")).unwrap();
        let again = DevKey::load_or_create(key.path()).unwrap();
        assert_eq!(key.secret, again.secret, "the key is kept, not replaced");
        let token = key
            .mint("alice", &[Role::Passenger], Duration::from_secs(60))
            .unwrap();
        let claims = again.verify(&token).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["roles"], json!(["passenger"]));

        let other = DevKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert_eq!(other.verify(&token), Err(TokenError::Signature));

        // Expired beyond the leeway.
        let now = jsonwebtoken::get_current_timestamp();
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "a", "exp": now - 120}),
            &EncodingKey::from_secret(&key.secret),
        )
        .unwrap();
        assert_eq!(key.verify(&old), Err(TokenError::Expired));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
