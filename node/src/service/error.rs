//! The service layer's one error type: a stable code, the HTTP status and gRPC code it
//! maps to, and whether a client should retry.

use cas_core::hash::MerkleHash;

use crate::auth::AuthError;
use crate::index::IndexError;
use crate::store::StoreError;

/// Why a service operation failed. Client mistakes are 4xx and leave nothing behind;
/// server-side failures (index, S3) are 5xx and retryable where retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A hash in a path or body is not 64 hex digits.
    #[error("invalid hash: {0}")]
    InvalidHash(String),
    /// A request body or parameter is malformed (message says which and why).
    #[error("{message}")]
    BadRequest {
        /// Stable code of the specific problem.
        code: &'static str,
        /// What was wrong, for a person.
        message: String,
    },
    /// The request body exceeds the configured limit.
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large (`xorb`, `shard`).
        what: &'static str,
        /// The body's length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A xorb or shard failed validation (bad format, hash mismatch, failed checks).
    #[error(transparent)]
    Invalid(#[from] cas_core::Error),
    /// A shard references a xorb that is not committed to the index.
    #[error("xorb {0} is not stored; upload it before the shard that references it")]
    UnknownXorb(MerkleHash),
    /// The requested file is not registered.
    #[error("file {0} not found")]
    FileNotFound(MerkleHash),
    /// The requested xorb is not stored.
    #[error("xorb {0} not found")]
    XorbNotFound(MerkleHash),
    /// No stored xorb holds the queried chunk in the dedup index.
    #[error("chunk {0} is not tracked by the global dedup index")]
    ChunkNotFound(MerkleHash),
    /// The requested byte range starts at or after the end of the file.
    #[error("range start {start} is not below the file size {size}")]
    RangeNotSatisfiable {
        /// Requested first byte.
        start: u64,
        /// File size.
        size: u64,
    },
    /// Missing, invalid or expired token, or a scope too narrow.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The index could not serve the request.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The object store could not serve the request.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The index and the object store disagree (a bug or lost data).
    #[error("internal inconsistency: {0}")]
    Inconsistent(String),
}

impl ServiceError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::InvalidHash(_) => "invalid_hash",
            ServiceError::BadRequest { code, .. } => code,
            ServiceError::TooLarge { .. } => "body_too_large",
            ServiceError::Invalid(e) => e.code(),
            ServiceError::UnknownXorb(_) => "unknown_xorb",
            ServiceError::FileNotFound(_) => "file_not_found",
            ServiceError::XorbNotFound(_) => "xorb_not_found",
            ServiceError::ChunkNotFound(_) => "chunk_not_found",
            ServiceError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ServiceError::Auth(e) => e.code(),
            ServiceError::Index(e) => e.code(),
            ServiceError::Store(e) => e.code(),
            ServiceError::Inconsistent(_) => "internal_inconsistency",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            ServiceError::InvalidHash(_)
            | ServiceError::BadRequest { .. }
            | ServiceError::Invalid(_)
            | ServiceError::UnknownXorb(_) => 400,
            ServiceError::TooLarge { .. } => 413,
            ServiceError::FileNotFound(_)
            | ServiceError::XorbNotFound(_)
            | ServiceError::ChunkNotFound(_) => 404,
            ServiceError::RangeNotSatisfiable { .. } => 416,
            ServiceError::Auth(e) => e.http_status(),
            ServiceError::Index(e) if e.is_retryable() => 503,
            ServiceError::Store(e) if e.is_retryable() => 503,
            ServiceError::Index(_) | ServiceError::Store(_) | ServiceError::Inconsistent(_) => 500,
        }
    }

    /// The gRPC status code this error is answered with (`tonic::Code` as i32).
    pub fn grpc_code(&self) -> i32 {
        // Numeric values of google.rpc.Code.
        const INVALID_ARGUMENT: i32 = 3;
        const NOT_FOUND: i32 = 5;
        const FAILED_PRECONDITION: i32 = 9;
        const OUT_OF_RANGE: i32 = 11;
        const RESOURCE_EXHAUSTED: i32 = 8;
        const INTERNAL: i32 = 13;
        const UNAVAILABLE: i32 = 14;
        match self {
            ServiceError::InvalidHash(_)
            | ServiceError::BadRequest { .. }
            | ServiceError::Invalid(_) => INVALID_ARGUMENT,
            ServiceError::UnknownXorb(_) => FAILED_PRECONDITION,
            ServiceError::TooLarge { .. } => RESOURCE_EXHAUSTED,
            ServiceError::FileNotFound(_)
            | ServiceError::XorbNotFound(_)
            | ServiceError::ChunkNotFound(_) => NOT_FOUND,
            ServiceError::RangeNotSatisfiable { .. } => OUT_OF_RANGE,
            ServiceError::Auth(e) => e.grpc_code(),
            ServiceError::Index(e) if e.is_retryable() => UNAVAILABLE,
            ServiceError::Store(e) if e.is_retryable() => UNAVAILABLE,
            ServiceError::Index(_) | ServiceError::Store(_) | ServiceError::Inconsistent(_) => {
                INTERNAL
            }
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ServiceError::Index(e) => e.is_retryable(),
            ServiceError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// A client-error shorthand with a stable code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ServiceError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The request body (or upload stream) could not be read: `body_read_failed`.
    pub fn body_read_failed(reason: impl std::fmt::Display) -> Self {
        Self::bad_request(
            "body_read_failed",
            format!("could not read the request body: {reason}"),
        )
    }

    /// Whether the error is about the request body itself (unreadable, or past
    /// its size limit), so that nothing more of it should be read.
    pub fn is_body_failure(&self) -> bool {
        matches!(
            self,
            ServiceError::TooLarge { .. }
                | ServiceError::BadRequest {
                    code: "body_read_failed",
                    ..
                }
        )
    }
}

/// Parses a hash in the Xet hex form, as a client error on failure.
pub fn parse_hash(text: &str) -> Result<MerkleHash, ServiceError> {
    MerkleHash::from_hex(text).map_err(|_| {
        ServiceError::InvalidHash(format!(
            "{:?} is not a hash (64 lowercase hex digits)",
            truncate_for_message(text)
        ))
    })
}

fn truncate_for_message(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
