//! Pure, I/O-free core of the CAS: everything that must be byte-identical to
//! the Xet protocol.
//!
//! - [`chunking`]: gear-hash content-defined chunking (sequential, interleaved
//!   and multi-threaded, all with identical boundaries);
//! - [`hash`] and [`merkle`]: chunk, xorb, file and verification hashes;
//! - [`compression`] and [`xorb`]: the xorb chunk format and its codecs;
//! - [`shard`]: the shard format (file reconstructions and xorb chunk lists);
//! - [`dedup`]: which chunks take part in global deduplication.

pub mod chunking;
pub mod compression;
pub mod constants;
pub mod dedup;
pub mod error;
pub mod fuzzing;
pub mod hash;
pub mod merkle;
pub mod shard;
pub mod xorb;

pub use error::{Error, Result};
pub use hash::MerkleHash;
