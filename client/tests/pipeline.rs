//! The upload pipeline: what it plans must rebuild every file byte for byte,
//! pass the server's shard checks, and deduplicate within and across sessions.

use std::collections::HashMap;

use cas_client::pipeline::{PipelineError, UploadPlan, UploadSession};
use cas_compat::datasets;
use cas_core::MerkleHash;
use cas_core::chunking::chunk_and_hash;
use cas_core::shard::{FooterOptions, check_file, parse_shard};
use cas_core::xorb::{SerializedXorb, decode_range_body};

/// Rebuilds a file from its terms and the xorbs holding them, as a downloader would.
fn rebuild(
    file_hash: &MerkleHash,
    plan: &UploadPlan,
    xorbs: &HashMap<MerkleHash, &SerializedXorb>,
) -> Vec<u8> {
    let file = plan.shard.file(file_hash).expect("file registered");
    let mut out = Vec::new();
    for t in &file.terms {
        let x = xorbs[&t.xorb_hash];
        let range = x
            .byte_range(t.chunk_start as usize..t.chunk_end as usize)
            .expect("term in bounds");
        let before = out.len();
        decode_range_body(&x.bytes[range], &mut out).expect("range decodes");
        assert_eq!(out.len() - before, t.unpacked_bytes as usize);
    }
    out
}

fn add(session: &mut UploadSession, data: &[u8]) -> cas_client::pipeline::FileSummary {
    session
        .add_file(data, &chunk_and_hash(data))
        .expect("file added")
}

#[test]
fn plan_rebuilds_files_and_passes_server_checks() {
    let a = datasets::random(1, 6 << 20);
    let mut b = a.clone();
    b.splice(3_000_000..3_000_010, b"an edited line".iter().copied());
    let files = [a.clone(), b, Vec::new(), datasets::mixed(2, 3 << 20), a];

    let mut session = UploadSession::new();
    let summaries: Vec<_> = files.iter().map(|f| add(&mut session, f)).collect();
    let plan = session.finish().expect("plan");

    // The edited copy and the repeat cost (almost) nothing new.
    assert_eq!(summaries[0].new_bytes, files[0].len() as u64);
    assert!(
        summaries[1].new_bytes < 300_000,
        "edit re-sent {} bytes",
        summaries[1].new_bytes
    );
    assert_eq!(summaries[4].new_bytes, 0);
    assert_eq!(summaries[4].deduplicated_bytes, files[4].len() as u64);
    assert_eq!(summaries[2].file_hash, MerkleHash::ZERO);
    let empty = plan
        .shard
        .file(&MerkleHash::ZERO)
        .expect("empty file registered");
    assert_eq!(
        empty.sha256,
        Some([0; 32]),
        "hf_xet stores zeros for the empty file"
    );
    for (f, s) in files.iter().zip(&summaries) {
        assert_eq!(s.size, f.len() as u64);
        assert_eq!(s.new_bytes + s.deduplicated_bytes, s.size);
    }

    // What the server checks before registering anything.
    plan.shard.check_consistency().expect("consistent shard");
    for f in &plan.shard.files {
        check_file(f, |h| plan.shard.xorb(h)).expect("file passes the server's checks");
    }
    let bytes = plan.shard.to_bytes().expect("serialises");
    assert_eq!(parse_shard(&bytes).expect("parses").shard, plan.shard);

    let xorbs: HashMap<_, _> = plan.xorbs.iter().map(|x| (x.hash, x)).collect();
    for (f, s) in files.iter().zip(&summaries) {
        assert_eq!(
            s.file_hash,
            cas_core::chunking::file_hash_of_chunks(&chunk_and_hash(f))
        );
        assert_eq!(&rebuild(&s.file_hash, &plan, &xorbs), f);
    }
}

#[test]
fn a_dedup_answer_avoids_resending_stored_chunks() {
    let data = datasets::float_tensor(3, 5 << 20);
    let mut first = UploadSession::new();
    add(&mut first, &data);
    let stored = first.finish().expect("plan");

    for key in [None, Some(MerkleHash([7; 32]))] {
        // What the server would answer a global-dedup query with (keyed or not).
        let answer = stored
            .shard
            .to_bytes_with_footer(&FooterOptions {
                hmac_key: key,
                ..FooterOptions::default()
            })
            .expect("footer form");
        let mut second = UploadSession::new();
        second.add_dedup_answer(&parse_shard(&answer).expect("answer parses"));
        let summary = add(&mut second, &data);
        let plan = second.finish().expect("plan");
        assert_eq!(summary.new_bytes, 0, "key {key:?}");
        assert!(plan.xorbs.is_empty());
        let file = plan.shard.file(&summary.file_hash).expect("registered");
        check_file(file, |h| stored.shard.xorb(h)).expect("terms point into the stored xorbs");
        let xorbs: HashMap<_, _> = stored.xorbs.iter().map(|x| (x.hash, x)).collect();
        assert_eq!(rebuild(&summary.file_hash, &plan, &xorbs), data);
    }
}

#[test]
fn chunks_that_do_not_cover_the_file_are_refused() {
    let data = datasets::random(4, 200_000);
    let mut chunks = chunk_and_hash(&data);
    chunks.pop();
    let mut session = UploadSession::new();
    assert!(matches!(
        session.add_file(&data, &chunks),
        Err(PipelineError::BadChunks(_))
    ));
}

#[test]
fn filled_xorbs_are_handed_out_as_they_fill_and_the_plan_is_unchanged() {
    // Over two full xorbs of incompressible data.
    let data = datasets::random(77, 140 << 20);
    let chunks = chunk_and_hash(&data);

    let mut plain = UploadSession::new();
    plain.add_file(&data, &chunks).unwrap();
    let plain = plain.finish().unwrap();

    let mut handed = Vec::new();
    let mut streamed = UploadSession::new();
    streamed
        .add_file_with(&data, &chunks, &mut |x| {
            handed.push(x);
            true
        })
        .unwrap();
    let streamed = streamed.finish().unwrap();
    assert_eq!(handed.len(), 2, "two xorbs fill up during the file");
    assert_eq!(streamed.xorbs.len(), 1, "the last one waits for finish");
    let all: Vec<MerkleHash> = handed
        .iter()
        .chain(&streamed.xorbs)
        .map(|x| x.hash)
        .collect();
    let expected: Vec<MerkleHash> = plain.xorbs.iter().map(|x| x.hash).collect();
    assert_eq!(all, expected);
    assert_eq!(streamed.shard, plain.shard);

    // A consumer that stops stops the packing.
    let mut stopped = UploadSession::new();
    assert!(matches!(
        stopped.add_file_with(&data, &chunks, &mut |_| false),
        Err(PipelineError::Stopped(_))
    ));
}
