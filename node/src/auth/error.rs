//! Why a request's token was refused, with stable codes and status mappings.

use super::Scope;

/// Why a bearer token was refused. Each variant has a stable [`AuthError::code`] and
/// maps to one HTTP status ([`AuthError::http_status`]) and one gRPC code
/// ([`AuthError::grpc_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` credentials were sent.
    #[error("missing bearer token")]
    Missing,
    /// The credentials are not a well-formed token of this service.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token's signature does not verify with this cluster's secret.
    #[error("token signature is not valid")]
    BadSignature,
    /// The token's expiry (plus the clock-skew leeway) has passed.
    #[error("token has expired")]
    Expired,
    /// The token claims to be issued in the future, beyond the clock-skew leeway.
    #[error("token is not valid yet (issued in the future; check the clocks)")]
    NotYetValid,
    /// The token is valid but does not grant the scope the operation needs.
    #[error("token lacks the `{needed}` scope")]
    InsufficientScope {
        /// The scope the operation needs.
        needed: Scope,
    },
}

impl AuthError {
    /// A stable machine-readable code, e.g. `token_expired`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed(_) => "token_malformed",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::InsufficientScope { .. } => "insufficient_scope",
        }
    }

    /// The HTTP status: 401 when the caller is not authenticated, 403 when the scope
    /// is too narrow (Xet spec §10).
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::InsufficientScope { .. } => 403,
            _ => 401,
        }
    }

    /// The numeric gRPC status code: 16 (`UNAUTHENTICATED`) or 7 (`PERMISSION_DENIED`).
    pub fn grpc_code(&self) -> i32 {
        match self {
            AuthError::InsufficientScope { .. } => 7,
            _ => 16,
        }
    }

    /// The `WWW-Authenticate` response header value (RFC 6750 §3).
    pub fn www_authenticate(&self) -> String {
        match self {
            AuthError::Missing => "Bearer".to_owned(),
            AuthError::InsufficientScope { needed } => {
                format!("Bearer error=\"insufficient_scope\", scope=\"{needed}\"")
            }
            _ => "Bearer error=\"invalid_token\"".to_owned(),
        }
    }
}

/// Why a token could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The subject is empty, too long, or contains control characters.
    #[error("subject must be 1 to 256 bytes without control characters")]
    BadSubject,
    /// No scope was requested.
    #[error("at least one scope is required")]
    NoScopes,
    /// The lifetime is under one second.
    #[error("ttl must be at least 1s")]
    TtlTooShort,
    /// The lifetime exceeds the configured maximum (`auth.max_token_ttl`).
    #[error("ttl {ttl} exceeds the maximum of {max} (auth.max_token_ttl)")]
    TtlTooLong {
        /// The requested lifetime, formatted.
        ttl: String,
        /// The maximum lifetime, formatted.
        max: String,
    },
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Signing(String),
}

/// A signing secret that is too weak for HS256.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakSecret {
    /// Shorter than [`super::MIN_SECRET_BYTES`].
    #[error("must be at least {min} bytes (got {len}); generate one with `openssl rand -hex 32`")]
    TooShort {
        /// The secret's length.
        len: usize,
        /// The minimum length.
        min: usize,
    },
    /// Fewer than [`super::MIN_SECRET_DISTINCT_BYTES`] distinct bytes (e.g. `aaaa…`).
    #[error("is too repetitive (fewer than {min} distinct characters)")]
    Repetitive {
        /// The minimum number of distinct bytes.
        min: usize,
    },
}
