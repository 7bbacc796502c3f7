//! Tests of the chunkers against a byte-by-byte oracle.

use super::*;
use crate::constants::{CHUNK_BOUNDARY_MASK, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The protocol's rule, literally: hash every byte from the chunk start,
/// cut where the chunk is at least MIN long and the mask matches, force a cut at MAX.
fn oracle(data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut h = 0u64;
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        h = (h << 1).wrapping_add(gearhash::DEFAULT_TABLE[b as usize]);
        let size = i + 1 - start;
        if (size >= MIN_CHUNK_SIZE && h & CHUNK_BOUNDARY_MASK == 0) || size == MAX_CHUNK_SIZE {
            out.push(i + 1);
            start = i + 1;
            h = 0;
        }
    }
    if start < data.len() {
        out.push(data.len());
    }
    out
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill(&mut v[..]);
    v
}

/// Inputs that stress resynchronisation: runs of zeros (forced cuts only),
/// periodic content, text-like bytes and random data spliced together.
fn mixed(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = rng.random_range(1..3 * MAX_CHUNK_SIZE).min(len - v.len());
        match rng.random_range(0..4) {
            0 => v.extend(std::iter::repeat_n(0u8, n)),
            1 => {
                let period: Vec<u8> = (0..rng.random_range(1..20_000))
                    .map(|_| rng.random())
                    .collect();
                v.extend(period.iter().cycle().take(n));
            }
            2 => v.extend(
                (0..n).map(|_| b"the quick brown fox, 0123456789\n"[rng.random_range(0..32)]),
            ),
            _ => v.extend((0..n).map(|_| rng.random::<u8>())),
        }
    }
    v
}

fn check_all_forms(data: &[u8]) {
    let want = oracle(data);
    assert_eq!(chunk_boundaries_sequential(data), want, "sequential");
    assert_eq!(chunk_boundaries(data), want, "interleaved");
    for threads in [2, 3] {
        assert_eq!(
            chunk_boundaries_parallel(data, threads),
            want,
            "parallel {threads}"
        );
    }
    // Many tiny segments: the stitching is exercised at every segment edge.
    for (segments, min_segment) in [
        (7, 1),
        (16, 4096),
        (33, MIN_CHUNK_SIZE),
        (5, 3 * MAX_CHUNK_SIZE),
    ] {
        for threads in [1, 2] {
            let got = segmented::boundaries_with(data, segments, threads, true, min_segment);
            assert_eq!(
                got, want,
                "{segments} segments of at least {min_segment} on {threads} threads"
            );
        }
    }
}

#[test]
fn empty_small_and_exact_sizes() {
    for len in [
        0,
        1,
        63,
        64,
        65,
        MIN_CHUNK_SIZE - 1,
        MIN_CHUNK_SIZE,
        MIN_CHUNK_SIZE + 1,
        MAX_CHUNK_SIZE,
        MAX_CHUNK_SIZE + 1,
    ] {
        check_all_forms(&random(len as u64, len));
    }
    assert!(chunk_boundaries(&[]).is_empty());
    assert_eq!(chunk_boundaries(&[7u8; 100]), vec![100]);
}

#[test]
fn zeros_cut_at_max_size() {
    let data = vec![0u8; 1 << 20];
    let want: Vec<usize> = (1..=8).map(|i| i * MAX_CHUNK_SIZE).collect();
    assert_eq!(oracle(&data), want);
    check_all_forms(&data);
}

#[test]
fn random_and_mixed_inputs_agree_with_oracle() {
    for seed in 0..4 {
        check_all_forms(&random(seed, 3 << 20));
        check_all_forms(&mixed(seed, 3 << 20));
    }
}

#[test]
fn large_inputs_use_real_segments() {
    // Larger than several MIN_SEGMENTs, so the default split really happens.
    let data = mixed(99, 40 << 20);
    let want = oracle(&data);
    assert_eq!(chunk_boundaries(&data), want);
    assert_eq!(chunk_boundaries_parallel(&data, 2), want);
    assert_eq!(chunk_boundaries_parallel(&data, 4), want);
}

#[test]
fn chunk_sizes_respect_limits() {
    let data = random(5, 4 << 20);
    let ends = chunk_boundaries(&data);
    let mut start = 0;
    for (i, &end) in ends.iter().enumerate() {
        let size = end - start;
        assert!(size <= MAX_CHUNK_SIZE);
        assert!(size >= MIN_CHUNK_SIZE || i == ends.len() - 1);
        start = end;
    }
    assert_eq!(start, data.len());
}

#[test]
fn streaming_equals_whole_input() {
    let data = mixed(7, 5 << 20);
    let want = chunk_and_hash(&data);
    for block in [1, 4096, 100_000, 1 << 20, 64 << 20] {
        let mut got = Vec::new();
        for b in ChunkedBlocks::with_block_size(&data[..], 2, block) {
            let b = b.unwrap();
            for c in b.chunks {
                assert_eq!(
                    &b.data[c.range()],
                    &data[b.stream_offset as usize + c.offset..][..c.len]
                );
                got.push(Chunk {
                    offset: c.offset + b.stream_offset as usize,
                    ..c
                });
            }
        }
        assert_eq!(got, want, "block size {block}");
    }
    assert_eq!(ChunkedBlocks::new(&[][..], 1).count(), 0);
}

#[test]
fn hashes_match_between_forms() {
    let data = mixed(11, 6 << 20);
    let a = chunk_and_hash(&data);
    let b = chunk_and_hash_parallel(&data, 3);
    assert_eq!(a, b);
    assert_eq!(a[0].hash, crate::hash::chunk_hash(&data[a[0].range()]));
    assert_eq!(file_hash_of_chunks(&[]), crate::MerkleHash::ZERO);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn stitching_is_exact(seed in any::<u64>(), len in 0usize..1_500_000, segments in 1usize..40, threads in 1usize..4, min_segment in 1usize..300_000) {
        let data = mixed(seed, len);
        let got = segmented::boundaries_with(&data, segments, threads, true, min_segment);
        prop_assert_eq!(got, oracle(&data));
    }
}

/// A reader that fails once, with `TimedOut`, after `fail_at` bytes.
struct FlakyReader<'a> {
    data: &'a [u8],
    pos: usize,
    fail_at: usize,
    failed: bool,
}

impl std::io::Read for FlakyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.failed && self.pos >= self.fail_at {
            self.failed = true;
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "flaky"));
        }
        let end = (self.pos + buf.len().min(100_000)).min(self.data.len());
        let n = end - self.pos;
        buf[..n].copy_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        Ok(n)
    }
}

#[test]
fn streaming_continues_losslessly_after_a_read_error() {
    let data = mixed(13, 2_000_000);
    let reader = FlakyReader {
        data: &data,
        pos: 0,
        fail_at: 700_000,
        failed: false,
    };
    let mut errors = 0;
    let mut got = Vec::new();
    for block in ChunkedBlocks::with_block_size(reader, 1, 300_000) {
        match block {
            Ok(b) => got.extend(b.chunks.iter().map(|c| Chunk {
                offset: c.offset + b.stream_offset as usize,
                ..*c
            })),
            Err(_) => errors += 1,
        }
    }
    assert_eq!(errors, 1);
    assert_eq!(got, chunk_and_hash(&data));
}
