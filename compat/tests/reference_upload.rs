//! What our upload pipeline sends is what the reference server accepts: its
//! streaming shard reader reads our upload shard, every xorb reconstructs
//! under its name, file hashes and term verification hashes agree.

use std::collections::HashMap;
use std::io::Cursor;

use cas_client::pipeline::UploadSession;
use cas_compat::datasets;
use cas_core::MerkleHash;
use cas_core::chunking::chunk_and_hash;
use xet_core_structures::merklehash::MerkleHash as RefHash;
use xet_core_structures::metadata_shard::chunk_verification::range_hash_from_chunks;
use xet_core_structures::metadata_shard::streaming_shard::MDBMinimalShard;
use xet_core_structures::xorb_object::reconstruct_xorb_with_footer;

fn from_ref(h: &RefHash) -> MerkleHash {
    MerkleHash::from_slice(h.as_bytes()).expect("32 bytes")
}

#[test]
fn reference_accepts_our_upload() {
    let base = datasets::mixed(11, 9 << 20);
    let mut edited = base.clone();
    edited.splice(4_000_000..4_000_100, datasets::text(12, 300));
    let files = [
        base,
        edited,
        Vec::new(),
        datasets::float_tensor(13, 2 << 20),
    ];

    let mut session = UploadSession::new();
    let hashes: Vec<MerkleHash> = files
        .iter()
        .map(|f| {
            session
                .add_file(f, &chunk_and_hash(f))
                .expect("added")
                .file_hash
        })
        .collect();
    let plan = session.finish().expect("plan");

    // Every xorb, as uploaded (no footer), rebuilt by the reference under its name.
    let mut xorb_chunks: HashMap<MerkleHash, Vec<RefHash>> = HashMap::new();
    for x in &plan.xorbs {
        let mut stored = Vec::new();
        let (object, hash) =
            reconstruct_xorb_with_footer(&mut stored, &x.bytes).expect("reference reads our xorb");
        assert_eq!(from_ref(&hash), x.hash);
        xorb_chunks.insert(x.hash, object.info.chunk_hashes.clone());
    }

    // The shard, as uploaded (no footer), through the reference's streaming reader.
    let bytes = plan.shard.to_bytes().expect("upload form");
    let minimal = MDBMinimalShard::from_reader(&mut Cursor::new(&bytes), true, true)
        .expect("reference reads our shard");
    assert_eq!(minimal.num_files(), files.len());
    assert_eq!(minimal.num_xorb(), plan.xorbs.len());
    let mut seen = Vec::new();
    for i in 0..minimal.num_files() {
        let file = xet_core_structures::metadata_shard::file_structs::MDBFileInfo::from(
            minimal.file(i).expect("file view"),
        );
        seen.push(from_ref(&file.metadata.file_hash));
        let verification = file.verification.clone();
        assert_eq!(
            verification.len(),
            file.segments.len(),
            "one verification entry per term"
        );
        for (term, v) in file.segments.iter().zip(&verification) {
            let chunks = &xorb_chunks[&from_ref(&term.xorb_hash)];
            let range = &chunks[term.chunk_index_start as usize..term.chunk_index_end as usize];
            assert_eq!(
                range_hash_from_chunks(range),
                v.range_hash,
                "term verification hash"
            );
        }
    }
    seen.sort();
    let mut want = hashes.clone();
    want.sort();
    want.dedup();
    seen.dedup();
    assert_eq!(seen, want);
}
