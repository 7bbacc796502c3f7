//! Re-chunking a new version of a file from the chunk list of an earlier one.
//!
//! A chunk boundary depends only on the bytes since the previous boundary: the
//! gear hash restarts at every cut, a content cut is decided by the bytes of
//! the chunk so far, and a forced cut by its length. So if a chunk of the old
//! version starts at a true boundary of the new input and the same number of
//! bytes there hash to the old chunk's hash, they are that chunk, and the
//! chunker cuts exactly at its end. The one exception is the old version's
//! last chunk, cut by the end of the input: it is taken only where it also
//! ends the new input.
//!
//! [`rechunk`] therefore *verifies* old chunks in order, hashing the same byte
//! ranges of the new input (no boundary scan, in parallel), and at the first
//! mismatch runs the real chunker from the last verified boundary until one of
//! the chunks it cuts has the hash of an old chunk: from there on, the new input
//! is the old one shifted by the size of the insertion or deletion, and
//! verification resumes with the old chunk that followed. The result is
//! identical to [`super::chunk_and_hash`] on the new input for any old list
//! this chunker made (of any input): a wrong guess only costs a hash that does
//! not match.
//!
//! [`rechunk_with`] lets the caller say how the bytes at an old chunk's place
//! are recognised as that chunk (for instance by a faster digest it kept of
//! each old chunk); [`rechunk`] recomputes the chunk hash itself.

use std::collections::HashMap;

use super::gear::Lane;
use super::{Chunk, chunk_boundaries_parallel, hash_chunks};
use crate::constants::MAX_CHUNK_SIZE;
use crate::hash::{MerkleHash, chunk_hash};

/// Bytes of old chunks verified per round (split among the threads).
const VERIFY_ROUND: usize = 16 << 20;

/// Bytes the chunker may run without meeting an old chunk before the rest of
/// the input is chunked from scratch, in parallel (the file changed too much).
const RESYNC_LIMIT: usize = 8 << 20;

/// The chunks of a new version of a file, found from an earlier version's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rechunked {
    /// The chunks of the new input, exactly as [`super::chunk_and_hash`] cuts them.
    pub chunks: Vec<Chunk>,
    /// Length of the prefix of the new input that is byte for byte the old
    /// version's (its chunks were verified in place, from the start).
    pub unchanged_prefix: usize,
    /// Chunks taken from the old list after verification (the rest were chunked).
    pub verified: usize,
}

/// Chunks `data` given the `(hash, length)` list of an earlier version's chunks,
/// hashing on up to `threads` threads; `on_prefix` is called with
/// [`Rechunked::unchanged_prefix`] as soon as it is known (before the rest is done).
pub fn rechunk(
    data: &[u8],
    old: &[(MerkleHash, usize)],
    threads: usize,
    on_prefix: impl FnOnce(usize),
) -> Rechunked {
    rechunk_with(
        data,
        old,
        threads,
        |i, bytes| chunk_hash(bytes) == old[i].0,
        on_prefix,
    )
}

/// [`rechunk`], with `is_old(i, bytes)` deciding whether `bytes` (of old chunk
/// `i`'s length, where it would lie) are old chunk `i`. It must answer as
/// comparing the chunk hash would: the result is only as exact as it is.
pub fn rechunk_with(
    data: &[u8],
    old: &[(MerkleHash, usize)],
    threads: usize,
    is_old: impl Fn(usize, &[u8]) -> bool + Sync,
    on_prefix: impl FnOnce(usize),
) -> Rechunked {
    let n = data.len();
    let threads = threads.max(1);
    let mut on_prefix = Some(on_prefix);
    let mut out: Vec<Chunk> = Vec::with_capacity(old.len() + 16);
    let mut pos = 0;
    let mut next_old = 0;
    let mut verified = 0;
    let mut unchanged_prefix = None;
    // Old chunk hash → its first index, built at the first mismatch.
    let mut by_hash: Option<HashMap<MerkleHash, usize>> = None;
    loop {
        let k = verify_run(data, old, pos, next_old, threads, &is_old, &mut out);
        verified += k;
        pos = out.last().map_or(0, |c| c.offset + c.len);
        next_old += k;
        if unchanged_prefix.is_none() {
            unchanged_prefix = Some(pos);
            if let Some(f) = on_prefix.take() {
                f(pos);
            }
        }
        if pos == n {
            break;
        }
        // Chunk from `pos` (a true boundary) until a cut chunk is an old one.
        let index = by_hash.get_or_insert_with(|| {
            let mut m = HashMap::with_capacity(old.len());
            for (i, (h, _)) in old.iter().enumerate() {
                m.entry(*h).or_insert(i);
            }
            m
        });
        let start = pos;
        let mut lane = Lane::new(data, pos, n);
        let mut resynced = false;
        while pos < n {
            if pos - start > RESYNC_LIMIT {
                // Too different: chunk the rest from this boundary on, in parallel.
                let rest = &data[pos..];
                let ends = chunk_boundaries_parallel(rest, threads);
                out.extend(
                    hash_chunks(rest, &ends, threads)
                        .into_iter()
                        .map(|c| Chunk {
                            offset: c.offset + pos,
                            ..c
                        }),
                );
                pos = n;
                break;
            }
            let end = lane.next_cut(data).unwrap_or(n);
            let hash = chunk_hash(&data[pos..end]);
            out.push(Chunk {
                offset: pos,
                len: end - pos,
                hash,
            });
            pos = end;
            if let Some(&j) = index.get(&hash)
                && old[j].1 == out.last().map_or(0, |c| c.len)
                && j + 1 < old.len()
            {
                next_old = j + 1;
                resynced = true;
                break;
            }
        }
        if !resynced {
            break;
        }
    }
    let unchanged_prefix = unchanged_prefix.unwrap_or(0);
    if let Some(f) = on_prefix.take() {
        f(unchanged_prefix);
    }
    Rechunked {
        chunks: out,
        unchanged_prefix,
        verified,
    }
}

/// Verifies old chunks `first..` laid end to end from `pos`, pushing each one
/// that matches onto `out`; stops at the first that does not (or does not fit).
/// Returns how many matched.
fn verify_run(
    data: &[u8],
    old: &[(MerkleHash, usize)],
    pos: usize,
    first: usize,
    threads: usize,
    is_old: &(impl Fn(usize, &[u8]) -> bool + Sync),
    out: &mut Vec<Chunk>,
) -> usize {
    let n = data.len();
    let mut i = first;
    let mut p = pos;
    while i < old.len() {
        // The next round: old chunks that fit the input, about VERIFY_ROUND bytes.
        let mut round: Vec<Chunk> = Vec::new();
        let mut bytes = 0;
        while i + round.len() < old.len() && bytes < VERIFY_ROUND {
            let j = i + round.len();
            let (hash, len) = old[j];
            let offset = p + bytes;
            let is_last = j + 1 == old.len();
            // The old last chunk was cut by the end of the input, not by its content.
            let fits = if is_last {
                offset + len == n
            } else {
                offset + len <= n
            };
            if len == 0 || len > MAX_CHUNK_SIZE || !fits {
                break;
            }
            round.push(Chunk { offset, len, hash });
            bytes += len;
        }
        let matched = count_matching(data, &round, i, threads, is_old);
        out.extend_from_slice(&round[..matched]);
        i += matched;
        p += round[..matched].iter().map(|c| c.len).sum::<usize>();
        if matched < round.len() || round.is_empty() {
            break;
        }
    }
    i - first
}

/// How many of `chunks` (old chunks `first..`, in order), from the first, are
/// found where they would lie.
fn count_matching(
    data: &[u8],
    chunks: &[Chunk],
    first: usize,
    threads: usize,
    is_old: &(impl Fn(usize, &[u8]) -> bool + Sync),
) -> usize {
    let first_mismatch = |part: &[Chunk], from: usize| {
        part.iter()
            .enumerate()
            .position(|(k, c)| !is_old(from + k, &data[c.range()]))
            .unwrap_or(part.len())
    };
    let threads = threads.clamp(1, chunks.len().max(1));
    if threads == 1 {
        return first_mismatch(chunks, first);
    }
    let per = chunks.len().div_ceil(threads);
    let parts: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .chunks(per)
            .enumerate()
            .map(|(k, part)| scope.spawn(move || first_mismatch(part, first + k * per)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut total = 0;
    for (k, matched) in parts.into_iter().enumerate() {
        total += matched;
        if matched < chunks[k * per..].len().min(per) {
            break;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking::chunk_and_hash;
    use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

    fn list(chunks: &[Chunk]) -> Vec<(MerkleHash, usize)> {
        chunks.iter().map(|c| (c.hash, c.len)).collect()
    }

    /// Random bytes with runs of zeros (forced 128 KiB cuts) and repeats.
    fn content(rng: &mut StdRng, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let piece = rng.random_range(1..300_000).min(len - v.len());
            match rng.random_range(0..4) {
                0 => v.resize(v.len() + piece, 0),
                1 if !v.is_empty() => {
                    let from = rng.random_range(0..v.len());
                    let take = piece.min(v.len() - from);
                    v.extend_from_within(from..from + take);
                }
                _ => {
                    let at = v.len();
                    v.resize(at + piece, 0);
                    rng.fill_bytes(&mut v[at..]);
                }
            }
        }
        v
    }

    /// One random edit: replace, insert or delete, at the start, the middle or the end.
    fn edit(rng: &mut StdRng, data: &[u8]) -> Vec<u8> {
        let n = data.len();
        let at = match rng.random_range(0..4) {
            0 => 0,
            1 => n,
            _ => rng.random_range(0..=n),
        };
        let len = match rng.random_range(0..3) {
            0 => rng.random_range(0..16),
            1 => rng.random_range(0..5_000),
            _ => rng.random_range(0..400_000),
        };
        let mut new_bytes = vec![0u8; len];
        rng.fill_bytes(&mut new_bytes);
        let mut out = data[..at].to_vec();
        match rng.random_range(0..3) {
            0 => {
                // Replace.
                out.extend_from_slice(&new_bytes);
                out.extend_from_slice(&data[(at + len).min(n)..]);
            }
            1 => {
                // Insert.
                out.extend_from_slice(&new_bytes);
                out.extend_from_slice(&data[at..]);
            }
            _ => {
                // Delete.
                out.extend_from_slice(&data[(at + len).min(n)..]);
            }
        }
        out
    }

    fn check(old: &[u8], new: &[u8], threads: usize) {
        let expected = chunk_and_hash(new);
        let mut seen = None;
        let got = rechunk(new, &list(&chunk_and_hash(old)), threads, |p| {
            seen = Some(p)
        });
        assert_eq!(got.chunks, expected, "old {} new {}", old.len(), new.len());
        assert_eq!(seen, Some(got.unchanged_prefix));
        let p = got.unchanged_prefix;
        assert!(p <= new.len() && p <= old.len() && new[..p] == old[..p]);
        // Recognising old chunks by another digest of their bytes (indexed as the
        // old list is) gives the same result.
        let old_chunks = chunk_and_hash(old);
        let digests: Vec<_> = old_chunks
            .iter()
            .map(|c| blake3::hash(&old[c.range()]))
            .collect();
        let is_old = |i: usize, b: &[u8]| blake3::hash(b) == digests[i];
        let with = rechunk_with(new, &list(&old_chunks), threads, is_old, |_| {});
        assert_eq!(with, got);
    }

    #[test]
    fn random_edits_give_exactly_the_full_chunking() {
        let mut rng = StdRng::seed_from_u64(42);
        let (mut verified, mut total) = (0, 0);
        for round in 0..60 {
            let len = match round % 4 {
                0 => rng.random_range(0..20_000),
                _ => rng.random_range(0..3_000_000),
            };
            let old = content(&mut rng, len);
            let mut new = edit(&mut rng, &old);
            if round % 5 == 0 {
                new = edit(&mut rng, &new);
            }
            check(&old, &new, 1 + round % 3);
            let got = rechunk(&new, &list(&chunk_and_hash(&old)), 2, |_| {});
            verified += got.verified;
            total += got.chunks.len();
        }
        // Most chunks were verified, not re-chunked.
        assert!(verified * 2 > total, "{verified} of {total}");
    }

    #[test]
    fn edge_cases() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = content(&mut rng, 2_000_000);
        let same = base.clone();
        let got = rechunk(&same, &list(&chunk_and_hash(&base)), 2, |_| {});
        assert_eq!(got.unchanged_prefix, base.len());
        assert_eq!(got.verified, got.chunks.len());
        for (old, new) in [
            (&[][..], &base[..]),
            (&base[..], &[][..]),
            (&[][..], &[][..]),
            (&base[..], &base[..100]),
            (&base[..100], &base[..]),
            (&base[..1_000_000], &base[..]),
            (&base[..], &base[..1_000_000]),
            (&base[..], &base[1..]),
            (&base[1..], &base[..]),
        ] {
            check(old, new, 2);
        }
        // Growing at the end: the old last chunk is not taken as a boundary.
        let mut grown = base.clone();
        grown.extend_from_slice(&[1, 2, 3]);
        check(&base, &grown, 1);
        // Zeros only: every cut is forced, shifted inserts still resynchronise.
        let zeros = vec![0u8; 1_500_000];
        let mut shifted = vec![9u8; 5];
        shifted.extend_from_slice(&zeros);
        check(&zeros, &shifted, 2);
        // A wholly different file: chunked from scratch.
        check(&base, &content(&mut rng, 30_000_000), 2);
    }

    #[test]
    fn a_lying_list_cannot_change_the_result() {
        let mut rng = StdRng::seed_from_u64(9);
        let data = content(&mut rng, 1_000_000);
        let mut old = list(&chunk_and_hash(&data));
        old[3].1 += 1;
        old.swap(5, 6);
        old.push((chunk_hash(b"x"), 1));
        let got = rechunk(&data, &old, 2, |_| {});
        assert_eq!(got.chunks, chunk_and_hash(&data));
    }
}
