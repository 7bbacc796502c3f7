//! Signed bearer tokens with read/write scopes.
//!
//! A token is a JWT signed with HS256 under the cluster's shared secret
//! (`[auth]` in the config). Its claims ([`Claims`]): `aud` (always [`AUDIENCE`]),
//! `sub` (who), `scope` (space-separated scopes), `iat` and `exp` (unix seconds; both
//! required) and `jti` (a random token id). Unknown claims make a token malformed, so a
//! restriction added by a newer node is never silently ignored by an older one.
//!
//! The rule, in one place for the HTTP and gRPC front ends: [`Tokens::authorize`] takes
//! the `Authorization` header value and the scope an operation needs, and returns the
//! caller's claims or an [`AuthError`] with a stable code and status:
//!
//! | error | code | HTTP | gRPC |
//! |---|---|---|---|
//! | no header / no token | `token_missing` | 401 | 16 |
//! | not a token of ours | `token_malformed` | 401 | 16 |
//! | signature does not verify | `token_bad_signature` | 401 | 16 |
//! | `exp` passed | `token_expired` | 401 | 16 |
//! | `iat` in the future | `token_not_yet_valid` | 401 | 16 |
//! | scope too narrow | `insufficient_scope` | 403 | 7 |
//!
//! `write` implies `read` ([`Scope::implies`]). Clocks may disagree by up to
//! [`CLOCK_SKEW_LEEWAY`] (30 s): a token is accepted until `exp + 30 s` and from
//! `iat - 30 s`.

mod error;
mod scope;

#[cfg(test)]
mod tests;

pub use error::{AuthError, IssueError, WeakSecret};
pub use scope::{Scope, Scopes, UnknownScope};

use crate::config::{AuthConfig, ConfigError, FieldError, Secret, format_duration};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far the clocks of the issuer and the verifier may disagree.
pub const CLOCK_SKEW_LEEWAY: Duration = Duration::from_secs(30);
/// Shortest accepted signing secret: 32 bytes, the HS256 output size (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;
/// Fewest distinct bytes a signing secret must contain.
pub const MIN_SECRET_DISTINCT_BYTES: usize = 8;
/// The `aud` claim of every API token; tokens for other purposes use other audiences.
pub const AUDIENCE: &str = "cas-api";
/// Longest token accepted for verification, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest subject, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// The claims of a verified (or freshly issued) token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Audience: always [`AUDIENCE`].
    pub aud: String,
    /// Subject: who the token was issued to.
    pub sub: String,
    /// The scopes granted.
    pub scope: Scopes,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
    /// Token id (128 random bits, hex), for audit and revocation.
    pub jti: String,
}

impl Claims {
    /// Whether the token grants `needed`.
    pub fn allows(&self, needed: Scope) -> bool {
        self.scope.allows(needed)
    }
}

/// A newly issued token and its claims. `Debug` does not show the token.
#[derive(Clone)]
pub struct IssuedToken {
    /// The encoded token, to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// What the token says.
    pub claims: Claims,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &crate::config::REDACTED)
            .field("claims", &self.claims)
            .finish()
    }
}

/// Checks a signing secret against [`MIN_SECRET_BYTES`] and [`MIN_SECRET_DISTINCT_BYTES`].
pub fn check_secret_strength(secret: &[u8]) -> Result<(), WeakSecret> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(WeakSecret::TooShort {
            len: secret.len(),
            min: MIN_SECRET_BYTES,
        });
    }
    if secret.iter().collect::<BTreeSet<_>>().len() < MIN_SECRET_DISTINCT_BYTES {
        return Err(WeakSecret::Repetitive {
            min: MIN_SECRET_DISTINCT_BYTES,
        });
    }
    Ok(())
}

/// Issues and verifies tokens under one secret. `Debug` does not show the secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    max_ttl: Duration,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("secret", &crate::config::REDACTED)
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

impl Tokens {
    /// Tokens signed with `secret`, with the default maximum lifetime.
    pub fn new(secret: &Secret) -> Result<Self, WeakSecret> {
        let bytes = secret.expose().as_bytes();
        check_secret_strength(bytes)?;
        // Signature and algorithm are checked by jsonwebtoken; every claim check is ours
        // (in `verify_at`), so that the rule and its clock are in one place.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            max_ttl: AuthConfig::default().max_token_ttl,
        })
    }

    /// Tokens as configured in `[auth]` (secret and `max_token_ttl`).
    pub fn from_config(config: &AuthConfig) -> Result<Self, ConfigError> {
        let secret = config.signing_secret()?;
        let tokens = Self::new(&secret).map_err(|e| {
            ConfigError::Invalid(vec![FieldError::new("auth.token_secret", e.to_string())])
        })?;
        Ok(tokens.with_max_ttl(config.max_token_ttl))
    }

    /// Sets the longest lifetime [`Tokens::issue`] accepts.
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// Issues a token for `subject` with `scopes`, valid for `ttl` from now.
    pub fn issue(
        &self,
        subject: &str,
        scopes: impl IntoIterator<Item = Scope>,
        ttl: Duration,
    ) -> Result<IssuedToken, IssueError> {
        self.issue_at(subject, scopes, ttl, unix_now())
    }

    /// Issues a token as if the time were `issued_at` (unix seconds); for tests and tools.
    pub fn issue_at(
        &self,
        subject: &str,
        scopes: impl IntoIterator<Item = Scope>,
        ttl: Duration,
        issued_at: u64,
    ) -> Result<IssuedToken, IssueError> {
        if subject.is_empty()
            || subject.len() > MAX_SUBJECT_BYTES
            || subject.chars().any(char::is_control)
        {
            return Err(IssueError::BadSubject);
        }
        let scope: Scopes = scopes.into_iter().collect();
        if scope.is_empty() {
            return Err(IssueError::NoScopes);
        }
        if ttl < Duration::from_secs(1) {
            return Err(IssueError::TtlTooShort);
        }
        if ttl > self.max_ttl {
            return Err(IssueError::TtlTooLong {
                ttl: format_duration(ttl),
                max: format_duration(self.max_ttl),
            });
        }
        let claims = Claims {
            aud: AUDIENCE.to_owned(),
            sub: subject.to_owned(),
            scope,
            iat: issued_at,
            exp: issued_at.saturating_add(ttl.as_secs()),
            jti: format!("{:032x}", rand::random::<u128>()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        Ok(IssuedToken { token, claims })
    }

    /// Verifies a token's signature and claims against the current time.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies a token as if the time were `now` (unix seconds).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("token too long"));
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                // Another algorithm (including `none`): not signed with our key.
                ErrorKind::InvalidAlgorithm => AuthError::BadSignature,
                ErrorKind::Json(_) => AuthError::Malformed("claims are not those of an API token"),
                _ => AuthError::Malformed("not a signed token"),
            })?
            .claims;
        if claims.aud != AUDIENCE {
            return Err(AuthError::Malformed("token is not for this API"));
        }
        if claims.sub.is_empty() {
            return Err(AuthError::Malformed("empty subject"));
        }
        if claims.exp <= claims.iat {
            return Err(AuthError::Malformed("token expires before it was issued"));
        }
        let leeway = CLOCK_SKEW_LEEWAY.as_secs();
        if now >= claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(AuthError::NotYetValid);
        }
        Ok(claims)
    }

    /// The whole check for a request: extracts the bearer token from the
    /// `Authorization` header value, verifies it, and requires `needed`.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        needed: Scope,
    ) -> Result<Claims, AuthError> {
        let claims = self.verify(bearer_token(authorization)?)?;
        require(&claims, needed)?;
        Ok(claims)
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` header value
/// (scheme case-insensitive).
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, token) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("authorization scheme is not Bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.contains(char::is_whitespace) {
        return Err(AuthError::Malformed("bearer token contains whitespace"));
    }
    Ok(token)
}

/// Requires that `claims` grant `needed` (`write` implies `read`).
pub fn require(claims: &Claims, needed: Scope) -> Result<(), AuthError> {
    if claims.allows(needed) {
        Ok(())
    } else {
        Err(AuthError::InsufficientScope { needed })
    }
}

/// The current time in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lifetime of the tokens a node signs for its own calls to its peers.
pub const NODE_TOKEN_TTL: Duration = Duration::from_secs(3_600);

/// The bearer credential a node sends with its calls to its peers: a `cluster`-scope
/// token signed with the secret the nodes share, renewed when less than half its
/// lifetime remains. Cheap to clone (clones share the cached token).
#[derive(Clone)]
pub struct NodeCredential {
    tokens: Tokens,
    subject: String,
    cached: std::sync::Arc<std::sync::Mutex<Option<IssuedToken>>>,
}

impl fmt::Debug for NodeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredential")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl NodeCredential {
    /// The credential of node `node_id`, signed by `tokens`.
    pub fn new(tokens: Tokens, node_id: u64) -> Self {
        NodeCredential {
            tokens: tokens.with_max_ttl(NODE_TOKEN_TTL),
            subject: format!("node-{node_id}"),
            cached: Default::default(),
        }
    }

    /// The `Authorization` header value to send now.
    pub fn header(&self) -> Result<String, IssueError> {
        let now = unix_now();
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cached
            .as_ref()
            .is_some_and(|t| t.claims.exp > now + NODE_TOKEN_TTL.as_secs() / 2);
        if !fresh {
            *cached = Some(
                self.tokens
                    .issue(&self.subject, [Scope::Cluster], NODE_TOKEN_TTL)?,
            );
        }
        Ok(format!(
            "Bearer {}",
            cached
                .as_ref()
                .map(|t| t.token.as_str())
                .unwrap_or_default()
        ))
    }
}
