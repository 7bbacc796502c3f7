//! Object storage: xorbs and shards in an S3 bucket.
//!
//! - [`S3Store`]: the bucket through aws-sdk-s3 (bounded retries, timeouts,
//!   multipart uploads, ranged reads, presigned GET URLs for clients), with
//!   typed errors ([`StoreError`], stable [`StoreError::code`]s) and one
//!   observation point for metrics and tracing;
//! - [`ObjectWriter`]: an object stored while its bytes still arrive (parts
//!   sent as they fill, nothing visible until it is finished);
//! - [`keys`]: the content-addressed key layout, under the configured prefix:
//!   `<prefix>xorbs/default/<xorb hash>` and `<prefix>shards/<shard hash>`;
//! - [`LocalS3`]: an in-process s3s-fs server with real SigV4 auth, for
//!   `cas-node demo` and tests (its module documents what s3s-fs supports).
//!
//! Correctness never depends on conditional writes: keys are content
//! addresses, so two writers of one key write the same bytes (DESIGN.md,
//! "S3 backends").

mod body;
mod error;
pub mod keys;
mod local;
mod s3;
mod settings;
mod writer;

pub use body::ObjectBody;
pub use error::{ErrorClass, StoreError};
pub use keys::{shard_key, validate_prefix, xorb_key};
pub use local::{LocalS3, LocalS3Config, LocalS3Error};
pub use s3::S3Store;
pub use settings::{MAX_PRESIGN_TTL, MAX_REQUEST_TIMEOUT, MIN_PART_SIZE, S3Settings};
pub use writer::ObjectWriter;
