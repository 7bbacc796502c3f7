//! Pure checks a server runs on a shard's files and the global-dedup indexing rule.
//!
//! The xorb lookups passed in must describe the xorbs with their *raw* chunk
//! hashes (as uploaded, never HMAC-keyed).

use std::collections::HashSet;

use super::format::{FileInfo, FileTerm, Shard, XorbChunk, XorbInfo};
use crate::dedup::is_dedup_eligible;
use crate::error::{Error, Result};
use crate::hash::{MerkleHash, verification_hash};
use crate::merkle::file_hash;

/// The chunks of `x` a term covers, after checking the range is non-empty and in
/// bounds and that the term's length is the sum of the chunks' lengths.
pub(crate) fn term_chunks<'x>(
    file_hash: &MerkleHash,
    ti: usize,
    t: &FileTerm,
    x: &'x XorbInfo,
) -> Result<&'x [XorbChunk]> {
    let bad = |msg: String| Error::MalformedShard(format!("file {file_hash}, term {ti}: {msg}"));
    if t.chunk_start >= t.chunk_end {
        return Err(bad(format!(
            "empty chunk range [{}, {})",
            t.chunk_start, t.chunk_end
        )));
    }
    let chunks = x
        .chunks
        .get(t.chunk_start as usize..t.chunk_end as usize)
        .ok_or_else(|| {
            bad(format!(
                "chunk range [{}, {}) is out of bounds for xorb {} with {} chunks",
                t.chunk_start,
                t.chunk_end,
                x.hash,
                x.chunks.len()
            ))
        })?;
    let sum: u64 = chunks.iter().map(|c| u64::from(c.unpacked_bytes)).sum();
    if sum != u64::from(t.unpacked_bytes) {
        return Err(bad(format!(
            "declares {} bytes, but chunks [{}, {}) of xorb {} hold {sum}",
            t.unpacked_bytes, t.chunk_start, t.chunk_end, x.hash
        )));
    }
    Ok(chunks)
}

/// Resolves every term of `file` to its chunks through `xorb_of`.
fn resolve_terms<'x>(
    file: &FileInfo,
    mut xorb_of: impl FnMut(&MerkleHash) -> Option<&'x XorbInfo>,
) -> Result<Vec<&'x [XorbChunk]>> {
    file.terms
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let x = xorb_of(&t.xorb_hash).ok_or(Error::UnknownXorb(t.xorb_hash))?;
            term_chunks(&file.file_hash, ti, t, x)
        })
        .collect()
}

fn verification_of(chunks: &[XorbChunk], buf: &mut Vec<MerkleHash>) -> MerkleHash {
    buf.clear();
    buf.extend(chunks.iter().map(|c| c.hash));
    verification_hash(buf)
}

/// The verification hash of each term of `file` (what its verification entries must
/// hold), computed from the raw chunk hashes of the xorbs `xorb_of` returns.
///
/// Errors: [`Error::UnknownXorb`] if a term's xorb is not found, [`Error::MalformedShard`]
/// if a term's range is empty, out of bounds, or its length does not match.
pub fn term_verification_hashes<'x>(
    file: &FileInfo,
    xorb_of: impl FnMut(&MerkleHash) -> Option<&'x XorbInfo>,
) -> Result<Vec<MerkleHash>> {
    let terms = resolve_terms(file, xorb_of)?;
    let mut buf = Vec::new();
    Ok(terms
        .iter()
        .map(|chunks| verification_of(chunks, &mut buf))
        .collect())
}

/// Checks that the file's declared hash is the file hash of the chunks its terms
/// reference (resolved through `xorb_of`, raw chunk hashes).
///
/// Errors: [`Error::FileHashMismatch`], plus those of [`term_verification_hashes`].
pub fn check_file_hash<'x>(
    file: &FileInfo,
    xorb_of: impl FnMut(&MerkleHash) -> Option<&'x XorbInfo>,
) -> Result<()> {
    let terms = resolve_terms(file, xorb_of)?;
    check_hash_of_terms(file, &terms)
}

fn check_hash_of_terms(file: &FileInfo, terms: &[&[XorbChunk]]) -> Result<()> {
    let leaves: Vec<(MerkleHash, u64)> = terms
        .iter()
        .flat_map(|chunks| chunks.iter().map(|c| (c.hash, u64::from(c.unpacked_bytes))))
        .collect();
    let actual = file_hash(&leaves);
    if actual != file.file_hash {
        return Err(Error::FileHashMismatch {
            expected: file.file_hash,
            actual,
        });
    }
    Ok(())
}

/// Everything a server checks before registering `file`: every term references a
/// known xorb, with a non-empty in-bounds range whose length matches; the file hash
/// matches its chunks; and the verification entries, if present, are the terms'
/// verification hashes (so the uploader knew the chunk hashes of every xorb it uses).
pub fn check_file<'x>(
    file: &FileInfo,
    xorb_of: impl FnMut(&MerkleHash) -> Option<&'x XorbInfo>,
) -> Result<()> {
    let terms = resolve_terms(file, xorb_of)?;
    if let Some(v) = &file.verification {
        if v.len() != terms.len() {
            return Err(Error::MalformedShard(format!(
                "file {}: {} verification entries for {} terms",
                file.file_hash,
                v.len(),
                terms.len()
            )));
        }
        let mut buf = Vec::new();
        for (ti, (chunks, declared)) in terms.iter().zip(v).enumerate() {
            if verification_of(chunks, &mut buf) != *declared {
                return Err(Error::MalformedShard(format!(
                    "file {}, term {ti}: the verification entry does not match the chunks of xorb {}",
                    file.file_hash, file.terms[ti].xorb_hash
                )));
            }
        }
    }
    check_hash_of_terms(file, &terms)
}

impl Shard {
    /// The chunk hashes a server indexes for global dedup after accepting this shard
    /// (the reference's `global_dedup_eligible_chunks`): the chunk that starts each
    /// file, when its xorb is described in this shard; every chunk whose
    /// `hash % 1024 == 0`; and every chunk with the global-dedup flag.
    ///
    /// Each hash appears once, in CAS-info order. The hashes are as stored (keyed in a
    /// keyed shard).
    pub fn global_dedup_eligible_chunks(&self) -> Vec<MerkleHash> {
        let file_starts: HashSet<(MerkleHash, u32)> = self
            .files
            .iter()
            .filter_map(|f| f.terms.first().map(|t| (t.xorb_hash, t.chunk_start)))
            .collect();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for x in &self.xorbs {
            for (ci, c) in x.chunks.iter().enumerate() {
                let starts_file = u32::try_from(ci)
                    .map(|ci| file_starts.contains(&(x.hash, ci)))
                    .unwrap_or(false);
                if (starts_file || c.global_dedup || is_dedup_eligible(&c.hash))
                    && seen.insert(c.hash)
                {
                    out.push(c.hash);
                }
            }
        }
        out
    }
}
