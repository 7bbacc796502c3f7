//! Whole uploads and downloads over either transport ([`Transport`]).
//!
//! - [`upload`]: files and directories → chunks → global-dedup queries →
//!   [`crate::pipeline::UploadSession`] → xorbs and shards posted to the server.
//! - [`download`]: a file hash (and optionally a byte range) → reconstruction →
//!   ranged fetches → decoded, length-checked and (for whole files) hash-verified
//!   bytes, written atomically.

pub mod download;
pub mod file_data;
pub mod scan;
pub mod transport;
pub mod upload;

use std::path::PathBuf;
use std::sync::Arc;

use cas_core::MerkleHash;
use reqwest::StatusCode;

use crate::grpc::GrpcError;
use crate::pipeline::PipelineError;
use crate::xet::XetError;

pub use download::{DownloadOptions, DownloadReport, download_bytes, download_to_file};
pub use transport::{DedupAnswers, Remote, Transport};
pub use upload::{
    UploadOptions, UploadReport, UploadedFile, collect_files, upload_files, upload_paths,
    usable_answer,
};

/// A progress notification of an upload or download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The total of what the operation will process, in bytes, once it is known.
    Total {
        /// Bytes to read (upload) or to fetch (download).
        bytes: u64,
    },
    /// A file is about to be read.
    FileStarted {
        /// Its path.
        path: PathBuf,
        /// Its size when it was listed.
        size: u64,
    },
    /// Input bytes read, chunked and deduplicated (upload).
    Read {
        /// How many more.
        bytes: u64,
    },
    /// Bytes posted to the server (upload: xorbs and shards).
    Sent {
        /// How many more.
        bytes: u64,
    },
    /// Bytes fetched from fetch URLs (download, before decompression).
    Fetched {
        /// How many more.
        bytes: u64,
    },
}

/// A progress callback; called from the transfer's tasks, so it must be cheap and thread-safe.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Calls the progress callback, if there is one.
pub(crate) fn report(progress: &Option<ProgressFn>, event: Progress) {
    if let Some(f) = progress {
        f(&event);
    }
}

/// Everything that can go wrong in an upload or a download.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A local file or directory could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A path to upload is neither a regular file nor a directory.
    #[error("{}: not a regular file or directory", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The server (over HTTP) or a fetch URL failed.
    #[error(transparent)]
    Xet(#[from] XetError),
    /// The server failed over gRPC.
    #[error(transparent)]
    Grpc(GrpcError),
    /// The upload pipeline refused the data.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Encoding the shard failed.
    #[error(transparent)]
    Core(#[from] cas_core::Error),
    /// Fetched xorb bytes do not decode.
    #[error("xorb {xorb} chunks {start}..{end}: undecodable data")]
    Decode {
        /// The xorb fetched from.
        xorb: MerkleHash,
        /// First chunk of the fetched range.
        start: u32,
        /// One past its last chunk.
        end: u32,
        /// The decoding error.
        source: cas_core::Error,
    },
    /// The reconstruction is inconsistent with itself or with the fetched data.
    #[error("invalid reconstruction of {file}: {reason}")]
    Reconstruction {
        /// The file being downloaded.
        file: MerkleHash,
        /// What is inconsistent.
        reason: String,
    },
    /// The downloaded file does not hash to the hash asked for; nothing was written.
    #[error("file hash mismatch: asked for {expected}, the downloaded chunks hash to {actual}")]
    FileHashMismatch {
        /// The hash asked for.
        expected: MerkleHash,
        /// The hash of what was downloaded.
        actual: MerkleHash,
    },
    /// The requested byte range starts at or after the end of the file.
    #[error("byte range {range} is outside the file")]
    RangeNotSatisfiable {
        /// The range asked for.
        range: String,
    },
    /// One upload batch needs a shard larger than the server accepts.
    #[error(
        "the shard for this upload would be {size} bytes, over the {limit}-byte limit \
         (a single file this large cannot be registered in one shard)"
    )]
    ShardTooLarge {
        /// Size of the shard.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A background task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

impl TransferError {
    /// Whether the server said the file (or chunk) does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            TransferError::Xet(e) => e.is_not_found(),
            TransferError::Grpc(e) => e.is_not_found(),
            _ => false,
        }
    }

    /// Whether the server refused the request as invalid (not a transient or
    /// authorization failure): e.g. a shard naming a xorb the server does not hold.
    pub fn is_refused(&self) -> bool {
        match self {
            TransferError::Xet(XetError::ShardRejected { retryable, .. }) => !retryable,
            TransferError::Xet(e) => e.status().is_some_and(|s| {
                s.is_client_error()
                    && ![
                        StatusCode::UNAUTHORIZED,
                        StatusCode::FORBIDDEN,
                        StatusCode::REQUEST_TIMEOUT,
                        StatusCode::TOO_MANY_REQUESTS,
                    ]
                    .contains(&s)
            }),
            TransferError::Grpc(e) => matches!(
                e.code(),
                Some(
                    tonic::Code::InvalidArgument
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::NotFound
                )
            ),
            _ => false,
        }
    }

    /// Whether the range asked for is outside the file (locally known or HTTP 416).
    pub fn is_range_not_satisfiable(&self) -> bool {
        match self {
            TransferError::RangeNotSatisfiable { .. } => true,
            TransferError::Xet(e) => e.status() == Some(StatusCode::RANGE_NOT_SATISFIABLE),
            TransferError::Grpc(e) => e.is_range_not_satisfiable(),
            _ => false,
        }
    }

    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TransferError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<tokio::task::JoinError> for TransferError {
    fn from(e: tokio::task::JoinError) -> Self {
        TransferError::Task(e.to_string())
    }
}
