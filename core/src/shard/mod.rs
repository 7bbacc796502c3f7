//! The shard format: file reconstructions and xorb chunk lists.
//!
//! A shard is a sequence of 48-byte little-endian records (XET.md §8):
//!
//! ```text
//! header            tag[32] "HFRepoMetaData\0…", u64 version = 2, u64 footer_size (200 or 0)
//! file-info         per file: header, terms, [verification entries], [metadata ext]
//!                   bookend (32 × 0xFF, 16 × 0)
//! CAS-info          per xorb: header, chunk entries
//!                   bookend
//! lookup tables     file (u64 key, u32 index), xorb (u64, u32), chunk (u64, u32, u32)  ─┐ only with
//! footer            200 bytes                                                          ─┘ a footer
//! ```
//!
//! - [`Shard`], [`FileInfo`], [`XorbInfo`]: plain data;
//! - [`Shard::to_bytes`] writes what hf_xet uploads (no footer);
//!   [`Shard::to_bytes_with_footer`] writes what a global-dedup query answers
//!   (footer, lookup tables, optional HMAC-keyed chunk hashes);
//! - [`parse_shard`] reads either form and validates every byte;
//! - [`Shard::check_consistency`], [`check_file`], [`term_verification_hashes`],
//!   [`check_file_hash`] and [`Shard::global_dedup_eligible_chunks`]: the
//!   pure checks a server runs on an uploaded shard.
//!
//! Byte-exact with the reference (`xet-core-structures` 1.8.0
//! `metadata_shard`) when the shard is in the reference's order: see
//! [`Shard::canonicalize`].

mod format;
mod lookup;
mod parse;
mod verify;
mod write;

#[cfg(test)]
mod tests;

pub use format::{
    FileInfo, FileTerm, FooterOptions, ParsedShard, Shard, ShardFooter, XorbChunk, XorbInfo,
    reference_cmp, sha256_from_stored, sha256_to_stored,
};
pub use lookup::{ChunkLookupEntry, FileLookupEntry, LookupTables, XorbLookupEntry};
pub use parse::{parse_shard, parse_shard_with_limit};
pub use verify::{check_file, check_file_hash, term_verification_hashes};

/// Size of every record of the file-info and CAS-info sections, and of the header.
pub const RECORD_SIZE: usize = 48;
/// Size of the shard header.
pub const HEADER_SIZE: usize = RECORD_SIZE;
/// Size of the shard footer.
pub const FOOTER_SIZE: usize = 200;
/// The 32-byte tag every shard starts with.
pub const HEADER_TAG: [u8; 32] = [
    b'H', b'F', b'R', b'e', b'p', b'o', b'M', b'e', b't', b'a', b'D', b'a', b't', b'a', 0, 85, 105,
    103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169,
];
/// The header version this implementation reads and writes.
pub const HEADER_VERSION: u64 = 2;
/// The footer version this implementation reads and writes (the client requires it).
pub const FOOTER_VERSION: u64 = 1;
/// File flag: the file's terms are followed by one verification entry per term.
pub const FILE_FLAG_WITH_VERIFICATION: u32 = 1 << 31;
/// File flag: the file's records end with one metadata extension (its SHA-256).
pub const FILE_FLAG_WITH_METADATA_EXT: u32 = 1 << 30;
/// Chunk-entry flag: the chunk is to be indexed for global dedup.
pub const CHUNK_FLAG_GLOBAL_DEDUP: u32 = 1 << 31;
/// Size of one file lookup-table entry (u64 truncated hash, u32 record index).
pub const FILE_LOOKUP_ENTRY_SIZE: usize = 12;
/// Size of one xorb lookup-table entry (u64 truncated hash, u32 record index).
pub const XORB_LOOKUP_ENTRY_SIZE: usize = 12;
/// Size of one chunk lookup-table entry (u64 truncated hash, u32 xorb record index, u32 chunk index).
pub const CHUNK_LOOKUP_ENTRY_SIZE: usize = 16;
/// The footer's key-expiry value meaning "never expires".
pub const NO_EXPIRY: u64 = u64::MAX;
/// The hash field of a bookend record (all 0xFF), which ends a section.
pub const BOOKEND_HASH: crate::hash::MerkleHash = crate::hash::MerkleHash([0xFF; 32]);
