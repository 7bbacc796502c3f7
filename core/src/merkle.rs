//! Merkle aggregation of chunk hashes: xorb hashes and file hashes.

use crate::hash::{MerkleHash, file_hash_from_root, internal_node_hash};

/// Mean branching factor of the aggregation tree; a node whose `hash % 4 == 0` ends a group.
const BRANCHING: u64 = 4;
/// Largest group merged into one internal node.
const MAX_GROUP: usize = 2 * BRANCHING as usize + 1;
/// Longest text line of one child: 64 hex digits, " : ", 20 decimal digits, newline.
const LINE_MAX: usize = 64 + 3 + 20 + 1;

/// Where the group starting at `nodes[0]` ends (exclusive).
#[inline]
fn group_end(nodes: &[(MerkleHash, u64)]) -> usize {
    if nodes.len() <= 2 {
        return nodes.len();
    }
    let end = MAX_GROUP.min(nodes.len());
    (2..end)
        .find(|&i| nodes[i].0.modulo(BRANCHING) == 0)
        .map_or(end, |i| i + 1)
}

/// Hashes one group of children into their parent node.
fn merge_group(group: &[(MerkleHash, u64)]) -> (MerkleHash, u64) {
    let mut buf = [0u8; MAX_GROUP * LINE_MAX];
    let mut pos = 0;
    let mut total = 0u64;
    for (h, size) in group {
        let mut hex = [0u8; 64];
        h.write_hex(&mut hex);
        buf[pos..pos + 64].copy_from_slice(&hex);
        pos += 64;
        buf[pos..pos + 3].copy_from_slice(b" : ");
        pos += 3;
        let dec = size.to_string();
        buf[pos..pos + dec.len()].copy_from_slice(dec.as_bytes());
        pos += dec.len();
        buf[pos] = b'\n';
        pos += 1;
        total = total.wrapping_add(*size);
    }
    (internal_node_hash(&buf[..pos]), total)
}

/// The merkle root over `(hash, size)` leaves: zero for no leaves, the leaf itself for one.
pub fn merkle_root(leaves: &[(MerkleHash, u64)]) -> MerkleHash {
    if leaves.is_empty() {
        return MerkleHash::ZERO;
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len() / 3 + 1);
        let mut i = 0;
        while i < level.len() {
            let end = i + group_end(&level[i..]);
            next.push(merge_group(&level[i..end]));
            i = end;
        }
        level = next;
    }
    level[0].0
}

/// The hash of a xorb: the merkle root over its chunks' `(hash, uncompressed length)`.
pub fn xorb_hash(chunks: &[(MerkleHash, u64)]) -> MerkleHash {
    merkle_root(chunks)
}

/// The hash of a file from its chunks' `(hash, length)`; an empty file hashes to zero.
pub fn file_hash(chunks: &[(MerkleHash, u64)]) -> MerkleHash {
    file_hash_from_root(&merkle_root(chunks), chunks.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::chunk_hash;

    #[test]
    fn empty_and_single_leaf_rules() {
        assert_eq!(merkle_root(&[]), MerkleHash::ZERO);
        assert_eq!(file_hash(&[]), MerkleHash::ZERO);
        let h = chunk_hash(b"abc");
        assert_eq!(merkle_root(&[(h, 3)]), h);
        assert_ne!(file_hash(&[(h, 3)]), h);
    }

    #[test]
    fn group_cut_follows_hash_modulo() {
        // Two leaves always merge into one node whose text is their two lines.
        let a = chunk_hash(b"a");
        let b = chunk_hash(b"b");
        let text = format!("{a} : 1\n{b} : 1\n");
        assert_eq!(
            merkle_root(&[(a, 1), (b, 1)]),
            internal_node_hash(text.as_bytes())
        );
    }
}
