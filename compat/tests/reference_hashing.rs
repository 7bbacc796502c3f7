//! Differential tests: chunk boundaries, chunk hashes, xorb hashes, file
//! hashes and verification hashes of cas-core against the Xet reference crates.

use cas_compat::datasets;
use cas_core::chunking::{self, ChunkedBlocks};
use cas_core::{MerkleHash, dedup, hash, merkle};
use rand::{Rng, SeedableRng, rngs::StdRng};
use xet_core_structures::merklehash::{self as refhash, MerkleHash as RefHash};

fn to_ref(h: &MerkleHash) -> RefHash {
    RefHash::from_slice(h.as_bytes()).expect("32 bytes")
}

fn from_ref(h: &RefHash) -> MerkleHash {
    MerkleHash::from_slice(h.as_bytes()).expect("32 bytes")
}

/// Chunks, the file hash, xorb hashes of slices and verification hashes, all compared.
fn compare(name: &str, data: &[u8]) {
    let reference = xet_data::deduplication::Chunker::default().next_block(data, true);
    let ours = chunking::chunk_and_hash_parallel(data, 2);
    assert_eq!(ours.len(), reference.len(), "{name}: chunk count");
    let mut offset = 0;
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert_eq!(
            (a.offset, a.len),
            (offset, b.data.len()),
            "{name}: chunk {i} boundary"
        );
        assert_eq!(a.hash, from_ref(&b.hash), "{name}: chunk {i} hash");
        offset += a.len;
    }
    assert_eq!(
        chunking::chunk_and_hash(data),
        ours,
        "{name}: one thread vs parallel"
    );

    let ref_leaves: Vec<(RefHash, u64)> = reference
        .iter()
        .map(|c| (c.hash, c.data.len() as u64))
        .collect();
    let leaves: Vec<(MerkleHash, u64)> = ours.iter().map(|c| (c.hash, c.len as u64)).collect();
    assert_eq!(
        merkle::file_hash(&leaves),
        from_ref(&refhash::file_hash(&ref_leaves)),
        "{name}: file hash"
    );
    assert_eq!(
        chunking::file_hash_of_chunks(&ours),
        merkle::file_hash(&leaves)
    );

    // Xorb hashes and verification hashes over assorted sub-ranges of chunks.
    let mut rng = StdRng::seed_from_u64(data.len() as u64);
    for _ in 0..8 {
        if leaves.is_empty() {
            break;
        }
        let s = rng.random_range(0..leaves.len());
        let e = rng.random_range(s + 1..=leaves.len());
        assert_eq!(
            merkle::xorb_hash(&leaves[s..e]),
            from_ref(&refhash::xorb_hash(&ref_leaves[s..e])),
            "{name}: xorb hash of chunks {s}..{e}"
        );
        let hashes: Vec<MerkleHash> = leaves[s..e].iter().map(|l| l.0).collect();
        let ref_hashes: Vec<RefHash> = hashes.iter().map(to_ref).collect();
        assert_eq!(
            hash::verification_hash(&hashes),
            from_ref(
                &xet_core_structures::metadata_shard::chunk_verification::range_hash_from_chunks(
                    &ref_hashes
                )
            ),
            "{name}: verification hash of chunks {s}..{e}"
        );
    }
    for l in &leaves {
        assert_eq!(l.0.to_hex(), to_ref(&l.0).hex(), "{name}: hex form");
        assert_eq!(
            dedup::is_dedup_eligible(&l.0),
            to_ref(&l.0) % 1024 == 0,
            "{name}: dedup eligibility"
        );
    }
}

#[test]
fn tiny_and_edge_sizes() {
    for len in [
        0, 1, 63, 64, 8191, 8192, 8193, 65536, 131071, 131072, 131073, 262144,
    ] {
        compare(&format!("random {len}"), &datasets::random(len as u64, len));
        compare(&format!("zeros {len}"), &datasets::zeros(len));
    }
}

#[test]
fn each_kind_of_data() {
    let len = 12 << 20;
    compare("random", &datasets::random(1, len));
    compare("zeros", &datasets::zeros(len));
    compare(
        "repetitive 4 KiB period",
        &datasets::repetitive(2, len, 4096),
    );
    compare(
        "repetitive 300 KiB period",
        &datasets::repetitive(3, len, 300 << 10),
    );
    compare("text", &datasets::text(4, len));
    compare("float tensor", &datasets::float_tensor(5, len));
}

#[test]
fn large_mixed_input_over_100_mb() {
    compare("mixed 130 MB", &datasets::mixed(6, 130 << 20));
}

#[test]
fn streaming_matches_reference_streaming() {
    let data = datasets::mixed(7, 20 << 20);
    // The reference fed in irregular pieces, ours read in blocks.
    let mut reference = Vec::new();
    let mut chunker = xet_data::deduplication::Chunker::default();
    let mut rng = StdRng::seed_from_u64(8);
    let mut pos = 0;
    while pos < data.len() {
        let n = rng.random_range(1..3_000_000).min(data.len() - pos);
        reference.extend(chunker.next_block(&data[pos..pos + n], false));
        pos += n;
    }
    reference.extend(chunker.finish());
    let mut ours = Vec::new();
    for block in ChunkedBlocks::with_block_size(&data[..], 2, 1 << 20) {
        ours.extend(block.expect("in-memory read").chunks);
    }
    assert_eq!(ours.len(), reference.len());
    for (a, b) in ours.iter().zip(&reference) {
        assert_eq!((a.len, a.hash), (b.data.len(), from_ref(&b.hash)));
    }
}

#[test]
fn hex_round_trips_against_reference() {
    let mut rng = StdRng::seed_from_u64(9);
    for _ in 0..100 {
        let mut b = [0u8; 32];
        rng.fill(&mut b);
        let ours = MerkleHash(b);
        let theirs = to_ref(&ours);
        assert_eq!(ours.to_hex(), theirs.hex());
        assert_eq!(
            MerkleHash::from_hex(&theirs.hex()).expect("valid hex"),
            ours
        );
    }
}
