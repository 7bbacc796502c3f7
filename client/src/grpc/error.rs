//! The typed errors of the gRPC transport.

use tonic::Code;

/// Metadata key in which the server puts its stable error code.
pub const ERROR_CODE_METADATA: &str = "x-cas-error-code";

/// Everything that can go wrong in a gRPC call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GrpcError {
    /// The server (or the connection) answered with a non-OK status.
    #[error("{endpoint}: gRPC {code:?}{}: {message}", server_code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        /// The endpoint called.
        endpoint: String,
        /// The gRPC status code.
        code: Code,
        /// The server's stable error code, when it sent one.
        server_code: Option<String>,
        /// The status message.
        message: String,
    },
    /// The answer does not make sense (wrong number of entries, bad hash length).
    #[error("{endpoint}: unexpected answer: {message}")]
    Protocol {
        /// The endpoint called.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The client settings are unusable (endpoint, token).
    #[error("gRPC client: {0}")]
    Config(String),
}

impl GrpcError {
    /// The error for a status received from `endpoint`.
    pub fn from_status(endpoint: &str, status: &tonic::Status) -> Self {
        GrpcError::Status {
            endpoint: endpoint.to_owned(),
            code: status.code(),
            server_code: status
                .metadata()
                .get(ERROR_CODE_METADATA)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            message: status.message().to_owned(),
        }
    }

    /// A malformed answer from `endpoint`.
    pub fn protocol(endpoint: &str, message: impl Into<String>) -> Self {
        GrpcError::Protocol {
            endpoint: endpoint.to_owned(),
            message: message.into(),
        }
    }

    /// The gRPC status code, when the server or connection gave one.
    pub fn code(&self) -> Option<Code> {
        match self {
            GrpcError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's stable error code (`file_not_found`, `unknown_xorb`, ...), if any.
    pub fn server_code(&self) -> Option<&str> {
        match self {
            GrpcError::Status { server_code, .. } => server_code.as_deref(),
            _ => None,
        }
    }

    /// Whether the server said the file, xorb or chunk does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// Whether the byte range asked for lies outside the file.
    pub fn is_range_not_satisfiable(&self) -> bool {
        self.code() == Some(Code::OutOfRange)
    }

    /// Whether repeating the call may succeed: the server or connection was
    /// unavailable, the deadline passed or the call was aborted.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            Some(Code::Unavailable | Code::DeadlineExceeded | Code::Aborted)
        )
    }
}

impl crate::retry::Retryable for GrpcError {
    fn is_retryable(&self) -> bool {
        GrpcError::is_retryable(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_server_code_and_classify() {
        let mut s = tonic::Status::not_found("file abc is not known");
        s.metadata_mut()
            .insert(ERROR_CODE_METADATA, "file_not_found".parse().unwrap());
        let e = GrpcError::from_status("grpc://h:1", &s);
        assert!(e.is_not_found() && !e.is_retryable());
        assert_eq!(e.server_code(), Some("file_not_found"));
        assert!(e.to_string().contains("NotFound (file_not_found)"), "{e}");

        let e = GrpcError::from_status("grpc://h:1", &tonic::Status::unavailable("down"));
        assert!(e.is_retryable() && e.server_code().is_none());
        let e = GrpcError::from_status("grpc://h:1", &tonic::Status::out_of_range("past end"));
        assert!(e.is_range_not_satisfiable() && !e.is_retryable());
        assert!(!GrpcError::protocol("e", "x").is_retryable());
    }
}
