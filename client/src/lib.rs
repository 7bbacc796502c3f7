//! The client library behind the `cas` command line.
//!
//! - [`pipeline`]: the upload data pipeline, independent of any transport:
//!   deduplication against what this session and the store already hold,
//!   packing new chunks into xorbs, and the shard that registers the files.
//! - [`xet`]: the Xet CAS HTTP transport ([`xet::XetClient`]): dedup queries,
//!   xorb and shard uploads, reconstructions and ranged fetches, with retries
//!   and typed errors.
//! - [`transfer`]: whole uploads and downloads over that transport: files and
//!   directories in, file hashes out; file hashes (and byte ranges) in,
//!   verified bytes out.

pub mod pipeline;
pub mod transfer;
pub mod xet;
