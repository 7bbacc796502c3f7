//! Protocol constants of the Xet format, in one place.

/// Target chunk size of the content-defined chunker (64 KiB).
pub const TARGET_CHUNK_SIZE: usize = 65_536;
/// Smallest chunk the chunker cuts, except for a file's last chunk (8 KiB).
pub const MIN_CHUNK_SIZE: usize = TARGET_CHUNK_SIZE / 8;
/// Largest chunk the chunker produces; a cut is forced at this size (128 KiB).
pub const MAX_CHUNK_SIZE: usize = TARGET_CHUNK_SIZE * 2;
/// Gear-hash boundary mask: a cut is allowed where `hash & MASK == 0`.
pub const CHUNK_BOUNDARY_MASK: u64 = 0xFFFF_0000_0000_0000;
/// Width of the gear-hash window: the hash at a position depends on this many bytes.
pub const GEAR_WINDOW: usize = 64;

/// Largest uncompressed xorb body: raw chunk bytes in one xorb (64 MiB).
pub const MAX_XORB_BYTES: usize = 64 * 1024 * 1024;
/// Largest number of chunks in one xorb.
pub const MAX_XORB_CHUNKS: usize = 8 * 1024;
/// Largest serialized xorb a server accepts (64 MiB of chunk data plus headers and footer slack).
pub const MAX_SERIALIZED_XORB_BYTES: usize = MAX_XORB_BYTES + MAX_XORB_CHUNKS * 8 + 1024 * 1024;
/// Largest uncompressed length a xorb chunk header may declare.
pub const MAX_CHUNK_UNCOMPRESSED_LEN: usize = MAX_CHUNK_SIZE;
/// Largest compressed length a xorb chunk header may declare.
pub const MAX_CHUNK_COMPRESSED_LEN: usize = 2 * MAX_CHUNK_SIZE;

/// Largest shard a client uploads (64 MiB).
pub const MAX_SHARD_BYTES: usize = 64 * 1024 * 1024;

/// A chunk is eligible for global dedup when `hash % GLOBAL_DEDUP_MODULUS == 0`.
pub const GLOBAL_DEDUP_MODULUS: u64 = 1024;

/// blake3 key of chunk hashes (and of shard file names).
pub const DATA_KEY: [u8; 32] = [
    102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28, 157, 228, 33, 16,
    155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41,
];
/// blake3 key of merkle internal nodes.
pub const INTERNAL_NODE_KEY: [u8; 32] = [
    1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230, 93, 221, 83, 111, 55,
    199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63,
];
/// blake3 key of term verification hashes.
pub const VERIFICATION_KEY: [u8; 32] = [
    127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243, 164, 205, 38, 213,
    181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195,
];
/// blake3 key applied to a merkle root to name a file (all zeros).
pub const FILE_HASH_KEY: [u8; 32] = [0; 32];
