//! Scanning a file for upload: its chunks and (when asked for) its SHA-256,
//! from scratch or, when an earlier upload of the same path left a manifest,
//! from that manifest.
//!
//! The fast path verifies the old chunks against the new bytes by their
//! fingerprints and chunks only around what changed ([`rechunk_with`]), and
//! resumes the SHA-256 at the last checkpoint before the first changed byte.
//! Its result is the same as the full path's; anything inconsistent falls back
//! to the full path.

use std::collections::HashMap;
use std::sync::Arc;

use cas_core::MerkleHash;
use cas_core::chunking::{Chunk, chunk_and_hash_parallel, map_chunks, rechunk_with};
use cas_core::constants::MAX_CHUNK_SIZE;
use sha2::{Digest, Sha256};

use super::TransferError;
use super::file_data::{FileData, Sha256Job};
use crate::cache::Manifest;
use crate::cache::manifest::{Checkpoint, fingerprint};

/// A scanned file: its chunks, and its SHA-256 (possibly still being computed).
#[derive(Debug)]
pub struct Scanned {
    /// The chunks, as [`cas_core::chunking::chunk_and_hash`] cuts them.
    pub chunks: Vec<Chunk>,
    /// The [`fingerprint`] of each chunk, for the next manifest.
    pub fingerprints: Vec<u128>,
    /// The SHA-256 and its checkpoints, if asked for.
    pub sha256: Option<Sha256Job>,
    /// Chunks verified from the manifest instead of chunked (0 on the full path).
    pub reused: usize,
}

/// Scans `data` on `threads` threads, starting from `manifest` when there is
/// one; with `sha256`, its SHA-256 is computed on a thread of its own meanwhile.
pub fn scan(
    data: &Arc<FileData>,
    manifest: Option<&Manifest>,
    threads: usize,
    sha256: bool,
) -> Result<Scanned, TransferError> {
    if let Some(m) = manifest
        && let Some(scanned) = scan_from(data, m, threads, sha256)?
    {
        return Ok(scanned);
    }
    let sha256 = sha256
        .then(|| Sha256Job::spawn(data.clone(), Sha256::new(), 0, Vec::new()))
        .transpose()?;
    let chunks = chunk_and_hash_parallel(data, threads);
    Ok(Scanned {
        fingerprints: map_chunks(data, &chunks, threads, fingerprint),
        chunks,
        sha256,
        reused: 0,
    })
}

/// The fast path; `None` if its result does not hold together.
fn scan_from(
    data: &Arc<FileData>,
    m: &Manifest,
    threads: usize,
    want_sha256: bool,
) -> Result<Option<Scanned>, TransferError> {
    let len = data.len();
    if m.fingerprints.len() != m.chunks.len() {
        return Ok(None);
    }
    let mut sha256: Option<Result<Sha256Job, TransferError>> = None;
    let is_old = |i: usize, bytes: &[u8]| fingerprint(bytes) == m.fingerprints[i];
    let r = rechunk_with(data, &m.chunks, threads, is_old, |prefix| {
        // Started as soon as the unchanged prefix is known, beside the rest of the scan.
        if want_sha256 {
            sha256 = Some(resume_sha256(data, m, prefix));
        }
    });
    let sha256 = sha256.transpose()?;
    let mut expected = 0;
    for c in &r.chunks {
        if c.offset != expected || c.len == 0 || c.len > MAX_CHUNK_SIZE {
            return Ok(None);
        }
        expected += c.len;
    }
    if expected != len {
        return Ok(None);
    }
    // A chunk with an old chunk's hash has its bytes, hence its fingerprint.
    let known: HashMap<MerkleHash, u128> = m
        .chunks
        .iter()
        .map(|c| c.0)
        .zip(m.fingerprints.iter().copied())
        .collect();
    let fingerprints = r
        .chunks
        .iter()
        .map(|c| {
            known
                .get(&c.hash)
                .copied()
                .unwrap_or_else(|| fingerprint(&data[c.range()]))
        })
        .collect();
    Ok(Some(Scanned {
        fingerprints,
        chunks: r.chunks,
        sha256,
        reused: r.verified,
    }))
}

/// The SHA-256 of `data`, whose first `prefix` bytes are the manifest's file's.
fn resume_sha256(
    data: &Arc<FileData>,
    m: &Manifest,
    prefix: usize,
) -> Result<Sha256Job, TransferError> {
    let len = data.len();
    if let Some(digest) = m.sha256
        && prefix == len
        && len as u64 == m.size
    {
        return Ok(Sha256Job::Done(digest, m.checkpoints.clone()));
    }
    let resumed = m
        .checkpoint_before(prefix as u64)
        .and_then(|c| Some((c.offset, c.resume()?)));
    let (from, state) = resumed.unwrap_or((0, Sha256::new()));
    let earlier = m
        .checkpoints
        .iter()
        .filter(|c| c.offset <= from && from > 0)
        .cloned()
        .collect();
    Sha256Job::spawn(data.clone(), state, from, earlier)
}

/// The manifest describing a scanned file: its chunks and their fingerprints
/// (as [`Scanned`] has them), and its SHA-256 and checkpoints if it had a job.
pub fn manifest_of(
    chunks: &[Chunk],
    fingerprints: Vec<u128>,
    size: u64,
    sha256: Option<([u8; 32], Vec<Checkpoint>)>,
) -> Manifest {
    let (sha256, checkpoints) = match sha256 {
        Some((digest, checkpoints)) => (Some(digest), checkpoints),
        None => (None, Vec::new()),
    };
    Manifest {
        size,
        chunks: chunks.iter().map(|c| (c.hash, c.len)).collect(),
        fingerprints,
        sha256,
        checkpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::manifest::CHECKPOINT_INTERVAL;
    use cas_core::chunking::chunk_and_hash;
    use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

    fn sha256_of(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn mapped(dir: &std::path::Path, name: &str, bytes: &[u8]) -> Arc<FileData> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        Arc::new(FileData::open(&p).unwrap())
    }

    /// Scans `new` with the manifest a full scan of `old` leaves, and checks
    /// the result against a full scan of `new`.
    fn check(dir: &std::path::Path, old: &[u8], new: &[u8]) -> usize {
        let old_data = mapped(dir, "old", old);
        let first = scan(&old_data, None, 2, true).unwrap();
        let (digest, cps) = first.sha256.unwrap().join().unwrap();
        assert_eq!(digest, sha256_of(old));
        let m = manifest_of(
            &first.chunks,
            first.fingerprints.clone(),
            old.len() as u64,
            Some((digest, cps)),
        );
        let new_data = mapped(dir, "new", new);
        let again = scan(&new_data, Some(&m), 2, true).unwrap();
        assert_eq!(again.chunks, chunk_and_hash(new));
        let expected: Vec<u128> = again
            .chunks
            .iter()
            .map(|c| fingerprint(&new[c.range()]))
            .collect();
        assert_eq!(again.fingerprints, expected);
        let (digest, cps) = again.sha256.unwrap().join().unwrap();
        assert_eq!(digest, sha256_of(new));
        // The checkpoints are those of a full hash of the new bytes.
        let fresh = scan(&new_data, None, 1, true).unwrap();
        assert_eq!(fresh.sha256.unwrap().join().unwrap().1, cps);
        // Without a SHA-256 the chunks are the same, from a manifest with or without one.
        let plain = scan(&new_data, Some(&m), 2, false).unwrap();
        assert!(plain.sha256.is_none());
        assert_eq!(plain.chunks, again.chunks);
        let m_plain = manifest_of(
            &first.chunks,
            first.fingerprints.clone(),
            old.len() as u64,
            None,
        );
        let plain = scan(&new_data, Some(&m_plain), 2, false).unwrap();
        assert_eq!((plain.chunks, plain.reused), (again.chunks, again.reused));
        // A SHA-256 asked of a manifest made without one is computed whole.
        let late = scan(&new_data, Some(&m_plain), 2, true).unwrap();
        assert_eq!(late.sha256.unwrap().join().unwrap(), (digest, cps));
        again.reused
    }

    #[test]
    fn the_fast_path_matches_the_full_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let mut base = vec![0u8; 2 * CHECKPOINT_INTERVAL as usize + 300_000];
        rng.fill_bytes(&mut base);
        // Unchanged, then edits before, at and after the checkpoints.
        assert!(check(dir.path(), &base, &base) > 0);
        for _ in 0..8 {
            let at = rng.random_range(0..base.len());
            let mut new = base.clone();
            match rng.random_range(0..3) {
                0 => new[at] ^= 0x5A,
                1 => drop(new.splice(at..at, *b"{\"an\": \"inserted line\"}\n")),
                _ => drop(new.splice(at..(at + 5_000).min(base.len()), [])),
            }
            let reused = check(dir.path(), &base, &new);
            assert!(reused > 10, "{reused} chunks reused");
        }
        check(dir.path(), &base, &base[..CHECKPOINT_INTERVAL as usize]);
        check(dir.path(), &base, b"");
        check(dir.path(), b"", &base[..1000]);
        check(dir.path(), &base[..100], &base[..200]);
    }
}
