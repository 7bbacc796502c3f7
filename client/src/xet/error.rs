//! The typed errors of the Xet HTTP transport.

use std::fmt;

use reqwest::StatusCode;
use serde::Deserialize;

/// What a server said about an error: its machine-readable code, if it gave one, and its message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerMessage {
    /// The `error.code` of a JSON error body, if the body was one.
    pub code: Option<String>,
    /// The `error.message` of a JSON error body, or the body as text (trimmed, possibly empty).
    pub message: String,
}

/// The JSON error body `{"error": {"code": "...", "message": "..."}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

/// The inner object of [`ErrorBody`].
#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Longest error text kept from a response body.
const MAX_MESSAGE_CHARS: usize = 1024;

impl ServerMessage {
    /// Reads an error body: the JSON error object when it is one, otherwise the text itself.
    pub fn from_body(body: &[u8]) -> Self {
        if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
            return ServerMessage {
                code: parsed.error.code,
                message: parsed.error.message.unwrap_or_default(),
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = match text.char_indices().nth(MAX_MESSAGE_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_string(),
        };
        ServerMessage {
            code: None,
            message,
        }
    }
}

impl fmt::Display for ServerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, self.message.is_empty()) {
            (Some(code), true) => write!(f, "{code}"),
            (Some(code), false) => write!(f, "{code}: {}", self.message),
            (None, true) => f.write_str("(no message)"),
            (None, false) => f.write_str(&self.message),
        }
    }
}

/// Everything that can go wrong talking to a Xet CAS server or a fetch URL.
#[derive(Clone, Debug, thiserror::Error)]
pub enum XetError {
    /// The server answered 404: the file, chunk or route is not known.
    #[error("{url}: not found (HTTP 404): {detail}")]
    NotFound {
        /// The request URL (without query string).
        url: String,
        /// What the server said.
        detail: ServerMessage,
    },
    /// The server answered with another non-success status.
    #[error("{url}: HTTP {status}: {detail}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The request URL (without query string).
        url: String,
        /// What the server said.
        detail: ServerMessage,
    },
    /// The request could not be sent or its response could not be read (connection, timeout).
    #[error("{url}: {message}")]
    Transport {
        /// The request URL (without query string).
        url: String,
        /// The transport error, with its causes.
        message: String,
    },
    /// A response ended before it was complete (e.g. no terminal frame, short body).
    #[error("{url}: incomplete response: {message}")]
    Incomplete {
        /// The request URL (without query string).
        url: String,
        /// What was missing.
        message: String,
    },
    /// A response was complete but does not follow the protocol (bad JSON, wrong length).
    #[error("{url}: invalid response: {message}")]
    Protocol {
        /// The request URL (without query string).
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The shard upload stream ended with an error frame.
    #[error("shard upload rejected: {message}{}", if *.retryable { " (retryable)" } else { "" })]
    ShardRejected {
        /// The server's message.
        message: String,
        /// Whether the server asked for the upload to be retried.
        retryable: bool,
    },
    /// The client could not be configured (bad endpoint, bad token characters).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl XetError {
    /// The HTTP status the server answered, if the error is an error status.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            XetError::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            XetError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server said the thing asked for does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, XetError::NotFound { .. })
    }

    /// The server's error code, when its error body was JSON with one.
    pub fn server_code(&self) -> Option<&str> {
        match self {
            XetError::NotFound { detail, .. } | XetError::Status { detail, .. } => {
                detail.code.as_deref()
            }
            _ => None,
        }
    }

    /// Whether repeating the same request may succeed: 5xx (not 501, 505), 408, 429, transport
    /// failures, cut-off responses and retryable shard error frames.
    pub fn is_retryable(&self) -> bool {
        match self {
            XetError::Status { status, .. } => is_retryable_status(*status),
            XetError::Transport { .. } | XetError::Incomplete { .. } => true,
            XetError::ShardRejected { retryable, .. } => *retryable,
            XetError::NotFound { .. } | XetError::Protocol { .. } | XetError::Config(_) => false,
        }
    }

    /// The error for a non-success response status and its body.
    pub fn from_status(status: StatusCode, url: &str, body: &[u8]) -> Self {
        let detail = ServerMessage::from_body(body);
        let url = display_url(url);
        if status == StatusCode::NOT_FOUND {
            XetError::NotFound { url, detail }
        } else {
            XetError::Status {
                status,
                url,
                detail,
            }
        }
    }

    /// The error for a failed request or body read.
    pub(crate) fn transport(url: &str, e: reqwest::Error) -> Self {
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        XetError::Transport {
            url: display_url(url),
            message,
        }
    }

    /// A protocol violation in the response to `url`.
    pub(crate) fn protocol(url: &str, message: impl Into<String>) -> Self {
        XetError::Protocol {
            url: display_url(url),
            message: message.into(),
        }
    }

    /// A response to `url` that ended too early.
    pub(crate) fn incomplete(url: &str, message: impl Into<String>) -> Self {
        XetError::Incomplete {
            url: display_url(url),
            message: message.into(),
        }
    }
}

/// Whether a status is worth retrying: 5xx (but not 501 Not Implemented or 505
impl crate::retry::Retryable for XetError {
    fn is_retryable(&self) -> bool {
        XetError::is_retryable(self)
    }
}

/// HTTP Version Not Supported, which do not change), 408 Request Timeout, 429 Too Many Requests.
pub fn is_retryable_status(status: StatusCode) -> bool {
    (status.is_server_error()
        && status != StatusCode::NOT_IMPLEMENTED
        && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// A URL as shown in errors: without its query string, which may carry a signature.
pub(crate) fn display_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_body_gives_code_and_message() {
        let body = br#"{"error": {"code": "file_not_found", "message": "no such file"}}"#;
        let e = XetError::from_status(StatusCode::NOT_FOUND, "http://h/v2/reconstructions/x", body);
        assert!(e.is_not_found());
        assert_eq!(e.server_code(), Some("file_not_found"));
        assert_eq!(
            e.to_string(),
            "http://h/v2/reconstructions/x: not found (HTTP 404): file_not_found: no such file"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn text_error_body_is_the_message() {
        let e = XetError::from_status(
            StatusCode::BAD_REQUEST,
            "http://h/v1/shards",
            b" bad shard\n",
        );
        assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(e.server_code(), None);
        assert!(e.to_string().ends_with("HTTP 400 Bad Request: bad shard"));
        let long = vec![b'x'; 5000];
        match XetError::from_status(StatusCode::BAD_REQUEST, "u", &long) {
            XetError::Status { detail, .. } => assert!(detail.message.chars().count() <= 1025),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn retry_classes() {
        for (code, retry) in [
            (500, true),
            (501, false),
            (502, true),
            (504, true),
            (505, false),
            (503, true),
            (408, true),
            (429, true),
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (416, false),
        ] {
            let e = XetError::from_status(StatusCode::from_u16(code).unwrap(), "u", b"");
            assert_eq!(e.is_retryable(), retry, "status {code}");
        }
        assert!(
            XetError::ShardRejected {
                message: "x".into(),
                retryable: true
            }
            .is_retryable()
        );
        assert!(!XetError::protocol("u", "bad json").is_retryable());
        assert!(XetError::incomplete("u", "cut").is_retryable());
    }

    #[test]
    fn signed_query_strings_are_not_shown() {
        let e = XetError::from_status(
            StatusCode::FORBIDDEN,
            "https://bucket/x?X-Amz-Signature=secret",
            b"",
        );
        assert!(!e.to_string().contains("secret"));
    }
}
