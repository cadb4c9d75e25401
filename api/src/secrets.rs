//! Secrets on the node that takes a request: password hashing (argon2id, off the async
//! runtime, a bounded number at a time), random secrets, the session value clients hold, and
//! JWTs. Nothing here is logged, and nothing secret goes into the state in the clear.

use crate::error::ApiError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use model::auth::Credential;
use model::ErrorCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// OWASP's argon2id parameters (19 MiB, 2 passes, 1 lane).
const ARGON2_M_KIB: u32 = 19_456;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params =
        Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).expect("argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// How a password stored with argon2id is described in `hashOptions`.
fn argon2_options() -> String {
    serde_json::json!({
        "type": "argon2",
        "memoryCost": ARGON2_M_KIB,
        "timeCost": ARGON2_T,
        "threads": ARGON2_P,
    })
    .to_string()
}

/// Hashes and verifies passwords on blocking threads, at most `permits` at once: a flood of
/// sign-ins waits its turn instead of starving every other request of the runtime.
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// A hash of nothing anyone knows, verified when the user does not exist, so that an
    /// unknown email costs what a wrong password costs.
    decoy: String,
}

impl Hasher {
    pub fn new(permits: usize) -> Hasher {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let decoy = argon2()
            .hash_password(random_hex(16).as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default();
        Hasher {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            decoy,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self.permits.acquire().await.map_err(|_| server_error())?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| server_error())
    }

    /// A new argon2id credential for `password`.
    pub async fn hash(&self, password: String) -> Result<Credential, ApiError> {
        let hash = self
            .run(move || {
                let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
                argon2()
                    .hash_password(password.as_bytes(), &salt)
                    .map(|h| h.to_string())
            })
            .await?
            .map_err(|_| server_error())?;
        Ok(Credential {
            algo: "argon2".into(),
            hash,
            options: argon2_options(),
        })
    }

    /// Does `password` match `stored`? `None` (no such user, or no password) verifies
    /// against the decoy and answers false, in the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<Credential>,
    ) -> Result<bool, ApiError> {
        let decoy = self.decoy.clone();
        self.run(move || match stored {
            Some(c) if c.algo == "argon2" => verify_argon2(&password, &c.hash),
            Some(c) => {
                crate::imported::verify(&c.algo, &c.hash, &c.options, &password).unwrap_or(false)
            }
            None => {
                let _ = verify_argon2(&password, &decoy);
                false
            }
        })
        .await
    }
}

fn verify_argon2(password: &str, hash: &str) -> bool {
    if !crate::imported::argon2_bounded(hash) {
        return false;
    }
    match PasswordHash::new(hash) {
        // The parameters come from the stored hash itself.
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

fn server_error() -> ApiError {
    ApiError::new(ErrorCode::GeneralServerError, "Server Error")
}

/// `n` random bytes from the OS, as hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Equality of two digests in time that depends on their length only.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What a client holds for a session (the cookie's value, `X-Appwrite-Session`, a session's
/// `secret` shown to a key holder): base64 of `{"id":USER,"secret":SECRET}`, as Appwrite.
#[derive(Serialize, Deserialize)]
pub struct SessionValue {
    pub id: String,
    pub secret: String,
}

impl SessionValue {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(s: &str) -> Option<SessionValue> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A JWT's claims, as Appwrite signs them (no `iat`).
#[derive(Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "userId")]
    pub user_id: String,
    #[serde(rename = "sessionId")]
    pub session_id: String,
    pub exp: i64,
}

pub fn sign_jwt(secret: &str, claims: &Claims) -> Result<String, ApiError> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|_| server_error())
}

/// The claims of a JWT signed with `secret` that has not expired, or why not, in the words
/// of Appwrite's JWT library.
pub fn verify_jwt(secret: &str, token: &str) -> Result<Claims, &'static str> {
    use jsonwebtoken::errors::ErrorKind;
    if token.matches('.').count() < 2 {
        return Err("Incomplete segments");
    }
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.leeway = 0;
    v.required_spec_claims = ["exp".to_string()].into_iter().collect();
    jsonwebtoken::decode::<Claims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &v,
    )
    .map(|d| d.claims)
    .map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => "Expired",
        ErrorKind::ImmatureSignature => "Not now",
        ErrorKind::InvalidAlgorithm => "Unsupported header algo",
        _ => "Signature failed",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let h = Hasher::new(1);
        let c = h.hash("correct horse".into()).await.unwrap();
        assert!(c.hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h
            .verify("correct horse".into(), Some(c.clone()))
            .await
            .unwrap());
        assert!(!h.verify("wrong horse".into(), Some(c)).await.unwrap());
        assert!(!h.verify("anything".into(), None).await.unwrap());
    }

    #[test]
    fn session_values_round_trip() {
        let v = SessionValue {
            id: "u1".into(),
            secret: "abc".into(),
        }
        .encode();
        let back = SessionValue::decode(&v).unwrap();
        assert_eq!((back.id.as_str(), back.secret.as_str()), ("u1", "abc"));
        assert!(SessionValue::decode("not base64!").is_none());
    }

    #[test]
    fn jwts_are_checked() {
        let now = crate::params::now_ms() / 1000;
        let claims = Claims {
            user_id: "u1".into(),
            session_id: "s1".into(),
            exp: now + 900,
        };
        let t = sign_jwt("k1", &claims).unwrap();
        assert_eq!(verify_jwt("k1", &t).unwrap().user_id, "u1");
        assert_eq!(verify_jwt("k2", &t).err(), Some("Signature failed"));
        let mut tampered = t.clone();
        tampered.insert(t.len() - 2, 'x');
        assert!(verify_jwt("k1", &tampered).is_err());
        assert_eq!(verify_jwt("k1", "abc").err(), Some("Incomplete segments"));
        let expired = sign_jwt("k1", &Claims { exp: 1, ..claims }).unwrap();
        assert_eq!(verify_jwt("k1", &expired).err(), Some("Expired"));
    }
}
