//! The one error type of the core crate, with stable machine-readable codes.

use crate::hash::MerkleHash;

/// Result with the core error.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when decoding or validating Xet data.
///
/// Each variant has a stable [`Error::code`] that servers map once to HTTP
/// statuses and gRPC codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A hash string or byte slice is not a valid 32-byte hash.
    #[error("invalid hash: {0}")]
    InvalidHash(String),
    /// A xorb body does not follow the chunk format.
    #[error("malformed xorb: {0}")]
    MalformedXorb(String),
    /// A xorb exceeds the size or chunk-count limits.
    #[error("xorb too large: {0}")]
    XorbTooLarge(String),
    /// A xorb's content does not hash to the name it was given.
    #[error("xorb hash mismatch: named {expected}, but its chunks hash to {actual}")]
    XorbHashMismatch {
        /// The hash the xorb was uploaded under.
        expected: MerkleHash,
        /// The hash recomputed from its chunks.
        actual: MerkleHash,
    },
    /// A chunk names a compression scheme this implementation does not know.
    #[error("chunk {index}: unknown compression scheme {scheme}")]
    UnknownCompression {
        /// Index of the chunk in its xorb.
        index: usize,
        /// The scheme byte found.
        scheme: u8,
    },
    /// A chunk's compressed payload does not decode to its declared length.
    #[error("chunk {index}: decompression failed: {reason}")]
    Decompression {
        /// Index of the chunk in its xorb.
        index: usize,
        /// What went wrong.
        reason: String,
    },
    /// A shard does not follow the shard format.
    #[error("malformed shard: {0}")]
    MalformedShard(String),
    /// A shard exceeds the size limit.
    #[error("shard too large: {size} bytes (limit {limit})")]
    ShardTooLarge {
        /// The shard's size in bytes.
        size: usize,
        /// The largest size accepted.
        limit: usize,
    },
    /// A file's declared hash differs from the hash of the chunks its terms reference.
    #[error("file hash mismatch: declared {expected}, but its chunks hash to {actual}")]
    FileHashMismatch {
        /// The hash the file was registered under.
        expected: MerkleHash,
        /// The hash recomputed from its chunks.
        actual: MerkleHash,
    },
    /// A file term references a xorb that is not known.
    #[error("unknown xorb {0}")]
    UnknownXorb(MerkleHash),
}

impl Error {
    /// A stable, machine-readable code for this error (snake_case, never renamed).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidHash(_) => "invalid_hash",
            Error::MalformedXorb(_) => "malformed_xorb",
            Error::XorbTooLarge(_) => "xorb_too_large",
            Error::XorbHashMismatch { .. } => "xorb_hash_mismatch",
            Error::UnknownCompression { .. } => "unknown_compression",
            Error::Decompression { .. } => "decompression_failed",
            Error::MalformedShard(_) => "malformed_shard",
            Error::ShardTooLarge { .. } => "shard_too_large",
            Error::FileHashMismatch { .. } => "file_hash_mismatch",
            Error::UnknownXorb(_) => "unknown_xorb",
        }
    }
}
