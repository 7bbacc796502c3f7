//! The global-dedup eligibility rule shared by client and server.

use crate::constants::GLOBAL_DEDUP_MODULUS;
use crate::hash::MerkleHash;

/// Whether a chunk hash is in the global-dedup sample (`hash % 1024 == 0`).
#[inline]
pub fn is_dedup_eligible(chunk_hash: &MerkleHash) -> bool {
    chunk_hash.modulo(GLOBAL_DEDUP_MODULUS) == 0
}

/// Whether a client should query global dedup for this chunk: the first chunk
/// of a file, or any chunk in the global-dedup sample.
#[inline]
pub fn should_query_global_dedup(chunk_hash: &MerkleHash, is_first_chunk_of_file: bool) -> bool {
    is_first_chunk_of_file || is_dedup_eligible(chunk_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_chunk_always_queried_sample_by_modulo() {
        let mut b = [0xFFu8; 32];
        b[24..32].copy_from_slice(&2048u64.to_le_bytes());
        let eligible = MerkleHash(b);
        b[24..32].copy_from_slice(&2049u64.to_le_bytes());
        let not = MerkleHash(b);
        assert!(is_dedup_eligible(&eligible));
        assert!(!is_dedup_eligible(&not));
        assert!(should_query_global_dedup(&not, true));
        assert!(!should_query_global_dedup(&not, false));
    }
}
