//! The client library behind the `cas` command line.
//!
//! - [`pipeline`]: the upload data pipeline, independent of any transport:
//!   deduplication against what this session and the store already hold,
//!   packing new chunks into xorbs, and the shard that registers the files.

pub mod pipeline;
