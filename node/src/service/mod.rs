//! The service layer: the one place the rules of the store live.
//!
//! The HTTP (Xet) and gRPC front ends are thin adapters: they authenticate, decode the
//! request, call one method here, and encode the answer. Every check a write must pass
//! before it is acknowledged, and every rule of how reads are answered, is in this
//! module:
//!
//! - [`xorbs`]: xorb upload (parse, decompress within limits, recompute the hash, store
//!   in S3, then register in the index) and xorb metadata;
//! - [`shards`]: shard upload (every referenced xorb committed, ranges in bounds, file
//!   and verification hashes match; then store the shard and register its files);
//! - [`dedup`]: the global-dedup query, answered with a keyed shard;
//! - [`reconstruction`]: which byte ranges of which xorbs rebuild a file (or a range);
//! - [`records`]: conversions between index records and the core's types;
//! - [`error`]: the error type, mapped once to HTTP statuses and gRPC codes.
//!
//! Ordering rule (invariant 1): an object is durably in S3 before the index entry that
//! points at it is committed, and a request is acknowledged only after that commit.

pub mod dedup;
pub mod error;
pub mod reconstruction;
pub mod records;
pub mod shards;
pub mod xorbs;

pub use error::{ServiceError, parse_hash};
pub use reconstruction::{ByteRange, FetchRange, Reconstruction, ReconstructionTerm, XorbFetch};
pub use shards::{ShardProgress, ShardRegistered};
pub use xorbs::XorbUploaded;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cas_core::hash::MerkleHash;
use cas_proto::index::FileRecord;

use crate::config::LimitsConfig;
use crate::index::Index;
use crate::store::S3Store;

/// Who is making a request (from a verified token), recorded with what they write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject.
    pub subject: String,
}

/// Size limits and lifetimes the service enforces.
#[derive(Debug, Clone)]
pub struct ServiceLimits {
    /// Largest serialized xorb accepted, in bytes.
    pub max_xorb_bytes: u64,
    /// Largest shard accepted, in bytes.
    pub max_shard_bytes: u64,
    /// How long a global-dedup answer's HMAC key may be used by a client.
    pub dedup_key_ttl: Duration,
}

impl ServiceLimits {
    /// The limits of a node configuration.
    pub fn from_config(limits: &LimitsConfig) -> Self {
        ServiceLimits {
            max_xorb_bytes: limits.max_xorb_upload_bytes,
            max_shard_bytes: limits.max_shard_upload_bytes,
            dedup_key_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// The store's operations, over the index and the object store.
#[derive(Clone)]
pub struct CasService {
    inner: Arc<Inner>,
}

struct Inner {
    index: Arc<Index>,
    store: S3Store,
    limits: ServiceLimits,
}

impl CasService {
    /// A service over `index` and `store`.
    pub fn new(index: Arc<Index>, store: S3Store, limits: ServiceLimits) -> Self {
        CasService {
            inner: Arc::new(Inner {
                index,
                store,
                limits,
            }),
        }
    }

    /// The index this service reads and writes.
    pub fn index(&self) -> &Arc<Index> {
        &self.inner.index
    }

    /// The object store this service writes to.
    pub fn store(&self) -> &S3Store {
        &self.inner.store
    }

    /// The limits in force.
    pub fn limits(&self) -> &ServiceLimits {
        &self.inner.limits
    }

    /// The size of a registered file, or `None` when it is not registered.
    pub async fn file_size(&self, file: &MerkleHash) -> Result<Option<u64>, ServiceError> {
        Ok(self.file_record(file).await?.map(|r| r.size))
    }

    /// A file's record: read locally, and on a local miss confirmed through the leader
    /// (read index) before answering that it does not exist, so a file acknowledged
    /// anywhere in the cluster is never reported missing.
    pub(crate) async fn file_record(
        &self,
        file: &MerkleHash,
    ) -> Result<Option<FileRecord>, ServiceError> {
        if let Some(r) = self.inner.index.file(&file.0)? {
            return Ok(Some(r));
        }
        self.inner.index.ensure_linearizable().await?;
        Ok(self.inner.index.file(&file.0)?)
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
