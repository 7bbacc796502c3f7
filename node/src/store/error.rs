//! The store's one error type, its stable codes, and the mapping from SDK errors.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;

/// The raw HTTP response type the SDK attaches to its errors.
type HttpResponse = aws_sdk_s3::config::http::HttpResponse;

/// How a caller should react to a [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The object does not exist (a normal answer for `head`/`exists`).
    NotFound,
    /// Worth retrying later: timeouts, throttling, 5xx, broken connections.
    Transient,
    /// Retrying the same request cannot help: bad credentials, bad request, missing bucket.
    Permanent,
}

/// Why a store operation failed.
///
/// Transient failures are reported only after the SDK's own bounded retries
/// (`S3Settings::max_retries`) are exhausted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object does not exist.
    #[error("object {key:?} not found")]
    NotFound {
        /// Key relative to the store's prefix.
        key: String,
    },
    /// The byte range is empty or reaches past the end of the object.
    #[error("byte range {start}..{end} of object {key:?} is not satisfiable{}", size_note(*size))]
    InvalidRange {
        /// Key relative to the store's prefix.
        key: String,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// Size of the object, when the server reported it.
        size: Option<u64>,
    },
    /// The key is not one the store accepts (see `keys::validate_key`).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The refused key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The settings cannot make a working client.
    #[error("invalid S3 settings: {0}")]
    Config(String),
    /// The call did not finish within the request timeout, on every attempt.
    #[error("S3 {op} of {key:?} timed out: {message}")]
    Timeout {
        /// S3 operation name.
        op: &'static str,
        /// Key relative to the store's prefix.
        key: String,
        /// Details from the SDK.
        message: String,
    },
    /// S3 unreachable, throttling, failing with 5xx, or the response broke off.
    #[error("S3 {op} of {key:?} unavailable: {message}")]
    Unavailable {
        /// S3 operation name.
        op: &'static str,
        /// Key relative to the store's prefix.
        key: String,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
        /// Details from the SDK or the server.
        message: String,
    },
    /// S3 refused the credentials or the signature (401/403).
    #[error("S3 {op} of {key:?} denied: {message}")]
    AccessDenied {
        /// S3 operation name.
        op: &'static str,
        /// Key relative to the store's prefix.
        key: String,
        /// HTTP status.
        status: u16,
        /// Details from the server (S3 error code, request id).
        message: String,
    },
    /// The configured bucket does not exist.
    #[error("S3 bucket {bucket:?} does not exist ({op} of {key:?})")]
    NoSuchBucket {
        /// S3 operation name.
        op: &'static str,
        /// Key relative to the store's prefix.
        key: String,
        /// The bucket name.
        bucket: String,
    },
    /// S3 rejected the request for another reason, or the SDK could not build it.
    #[error("S3 {op} of {key:?} rejected: {message}")]
    Rejected {
        /// S3 operation name.
        op: &'static str,
        /// Key relative to the store's prefix.
        key: String,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
        /// Details from the SDK or the server.
        message: String,
    },
}

fn size_note(size: Option<u64>) -> String {
    size.map(|s| format!(" (object size {s})"))
        .unwrap_or_default()
}

impl StoreError {
    /// A stable, machine-readable code for this error (also the metrics outcome label).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "store_not_found",
            StoreError::InvalidRange { .. } => "store_invalid_range",
            StoreError::InvalidKey { .. } => "store_invalid_key",
            StoreError::Config(_) => "store_config",
            StoreError::Timeout { .. } => "store_timeout",
            StoreError::Unavailable { .. } => "store_unavailable",
            StoreError::AccessDenied { .. } => "store_access_denied",
            StoreError::NoSuchBucket { .. } => "store_no_such_bucket",
            StoreError::Rejected { .. } => "store_rejected",
        }
    }

    /// Whether this is a not-found, a transient or a permanent failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::NotFound { .. } => ErrorClass::NotFound,
            StoreError::Timeout { .. } | StoreError::Unavailable { .. } => ErrorClass::Transient,
            StoreError::InvalidRange { .. }
            | StoreError::InvalidKey { .. }
            | StoreError::Config(_)
            | StoreError::AccessDenied { .. }
            | StoreError::NoSuchBucket { .. }
            | StoreError::Rejected { .. } => ErrorClass::Permanent,
        }
    }

    /// True if retrying the operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// True if the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.class() == ErrorClass::NotFound
    }
}

/// S3 error codes that mean "try again later" whatever their HTTP status.
const TRANSIENT_S3_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
];

/// Maps an SDK error (after the SDK's retries) to a [`StoreError`].
pub(crate) fn classify<E>(
    op: &'static str,
    key: &str,
    bucket: &str,
    err: SdkError<E, HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let key = key.to_owned();
    let message = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::ConstructionFailure(_) => StoreError::Rejected {
            op,
            key,
            status: None,
            message,
        },
        SdkError::TimeoutError(_) => StoreError::Timeout { op, key, message },
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            StoreError::Timeout { op, key, message }
        }
        SdkError::DispatchFailure(failure) if failure.is_user() => StoreError::Rejected {
            op,
            key,
            status: None,
            message,
        },
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => StoreError::Unavailable {
            op,
            key,
            status: err.raw_response().map(|r| r.status().as_u16()),
            message,
        },
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let s3_code = err.code().unwrap_or("");
            let detail = format!(
                "HTTP {status}{}{}{}",
                if s3_code.is_empty() { "" } else { " " },
                s3_code,
                err.request_id()
                    .map(|id| format!(" (request id {id})"))
                    .unwrap_or_default(),
            );
            let message = match err.message() {
                Some(m) if !m.is_empty() => format!("{detail}: {m}"),
                _ => detail,
            };
            if s3_code == "NoSuchBucket" {
                return StoreError::NoSuchBucket {
                    op,
                    key,
                    bucket: bucket.to_owned(),
                };
            }
            if s3_code == "NoSuchKey"
                || (status == 404 && matches!(s3_code, "" | "NotFound" | "NoSuchKey"))
            {
                return StoreError::NotFound { key };
            }
            if TRANSIENT_S3_CODES.contains(&s3_code) || matches!(status, 408 | 429 | 500..=599) {
                return StoreError::Unavailable {
                    op,
                    key,
                    status: Some(status),
                    message,
                };
            }
            if matches!(status, 401 | 403) {
                return StoreError::AccessDenied {
                    op,
                    key,
                    status,
                    message,
                };
            }
            StoreError::Rejected {
                op,
                key,
                status: Some(status),
                message,
            }
        }
        // `SdkError` is non-exhaustive: anything new is treated as transient.
        _ => StoreError::Unavailable {
            op,
            key,
            status: None,
            message,
        },
    }
}

/// A reading of a response body that broke off (transient).
pub(crate) fn body_error(op: &'static str, key: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        op,
        key: key.to_owned(),
        status: None,
        message: format!("reading the response body failed: {err}"),
    }
}
