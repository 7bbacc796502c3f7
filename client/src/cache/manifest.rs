//! Manifests of uploaded files: what a re-upload of the same path starts from.
//!
//! One file per uploaded path (named after its canonical path) under
//! `manifests/` in the cache directory: the file's size, its chunk list
//! (hash, length, and a fingerprint of the chunk's bytes) and, when the upload
//! computed it, its SHA-256 with the SHA-256 state every [`CHECKPOINT_INTERVAL`]
//! bytes. A re-upload verifies the old chunks against the new bytes
//! ([`cas_core::chunking::rechunk_with`]) by their fingerprints and resumes the
//! SHA-256 at the last checkpoint before the first changed byte.
//!
//! The fingerprint is XXH3-128 (as rsync's block checksums): four to five times
//! faster than the chunk hash, so a re-upload reads an unchanged gigabyte in a
//! fraction of the time, and 128 bits wide, so an accidental match is out of
//! reach. It only ever vouches for the user's own bytes against the manifest of
//! their own earlier upload; every chunk hash the server sees still names
//! bytes that were hashed with it, then or now.
//!
//! The encoding is versioned and ends with a checksum; a manifest that does
//! not decode, or was written for another path, is removed and ignored.

use std::path::{Path, PathBuf};

use cas_core::MerkleHash;
use cas_core::hash::chunk_hash;
use sha2::Sha256;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};

use super::{CacheError, evict_oldest, safe_name, write_atomic};

/// Bytes between two SHA-256 checkpoints (a multiple of the 64-byte block).
pub const CHECKPOINT_INTERVAL: u64 = 16 << 20;

/// Start of every manifest: the format, and the chunker it was made with.
const MAGIC: &[u8; 16] = b"cas-manifest-v2\n";

/// What an earlier upload of a path learned about its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The file's size.
    pub size: u64,
    /// Its chunks, in order: hash and length.
    pub chunks: Vec<(MerkleHash, usize)>,
    /// The [`fingerprint`] of each chunk's bytes, in the same order.
    pub fingerprints: Vec<u128>,
    /// Its SHA-256, if the upload computed one.
    pub sha256: Option<[u8; 32]>,
    /// SHA-256 states after the first `offset` bytes, ascending, at multiples of
    /// [`CHECKPOINT_INTERVAL`] (none without a SHA-256).
    pub checkpoints: Vec<Checkpoint>,
}

/// A SHA-256 state after a file's first `offset` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Bytes hashed (a multiple of 64).
    pub offset: u64,
    /// The serialized hasher state.
    pub state: Vec<u8>,
}

impl Checkpoint {
    /// The state of `hasher` after `offset` bytes.
    pub fn of(hasher: &Sha256, offset: u64) -> Self {
        Checkpoint {
            offset,
            state: hasher.serialize().as_slice().to_vec(),
        }
    }

    /// The hasher this checkpoint saved, if the state decodes.
    pub fn resume(&self) -> Option<Sha256> {
        let state = SerializedState::<Sha256>::try_from(self.state.as_slice()).ok()?;
        Sha256::deserialize(&state).ok()
    }
}

/// The fingerprint a manifest keeps of a chunk's bytes (XXH3-128).
pub fn fingerprint(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

impl Manifest {
    /// The encoded manifest of `path` (its canonical form).
    fn encode(&self, path: &str) -> Vec<u8> {
        debug_assert_eq!(self.chunks.len(), self.fingerprints.len());
        let mut out = Vec::with_capacity(128 + self.chunks.len() * 52);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(path.len() as u64).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.push(u8::from(self.sha256.is_some()));
        out.extend_from_slice(&self.sha256.unwrap_or_default());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        for ((h, len), f) in self.chunks.iter().zip(&self.fingerprints) {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&(*len as u32).to_le_bytes());
            out.extend_from_slice(&f.to_le_bytes());
        }
        out.extend_from_slice(&(self.checkpoints.len() as u64).to_le_bytes());
        for c in &self.checkpoints {
            out.extend_from_slice(&c.offset.to_le_bytes());
            out.extend_from_slice(&(c.state.len() as u64).to_le_bytes());
            out.extend_from_slice(&c.state);
        }
        let sum = chunk_hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes a manifest written for `path`; `None` if it is not one.
    fn decode(bytes: &[u8], path: &str) -> Option<Self> {
        let body_len = bytes.len().checked_sub(32)?;
        let (body, sum) = bytes.split_at(body_len);
        if chunk_hash(body).as_bytes() != sum {
            return None;
        }
        let mut r = Reader(body);
        if r.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let path_len = r.len()?;
        if r.take(path_len)? != path.as_bytes() {
            return None;
        }
        let size = r.u64()?;
        let has_sha256 = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let digest: [u8; 32] = r.take(32)?.try_into().ok()?;
        let sha256 = has_sha256.then_some(digest);
        let n = r.len()?;
        let mut chunks = Vec::with_capacity(n.min(body.len() / 52));
        let mut fingerprints = Vec::with_capacity(chunks.capacity());
        let mut total = 0u64;
        for _ in 0..n {
            let hash = MerkleHash::from_slice(r.take(32)?).ok()?;
            let len = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
            total += len as u64;
            chunks.push((hash, len));
            fingerprints.push(u128::from_le_bytes(r.take(16)?.try_into().ok()?));
        }
        let k = r.len()?;
        let mut checkpoints = Vec::with_capacity(k.min(body.len() / 16));
        for _ in 0..k {
            let offset = r.u64()?;
            let len = r.len()?;
            let state = r.take(len)?.to_vec();
            checkpoints.push(Checkpoint { offset, state });
        }
        let consistent = r.0.is_empty()
            && total == size
            && (has_sha256 || checkpoints.is_empty())
            && checkpoints
                .iter()
                .all(|c| c.offset.is_multiple_of(64) && c.offset <= size);
        consistent.then_some(Manifest {
            size,
            chunks,
            fingerprints,
            sha256,
            checkpoints,
        })
    }

    /// The last checkpoint at or before `offset`.
    pub fn checkpoint_before(&self, offset: u64) -> Option<&Checkpoint> {
        self.checkpoints.iter().rev().find(|c| c.offset <= offset)
    }
}

/// Reads little-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    /// The next u64.
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// The next u64 as a length that fits what is left.
    fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len() * 8 + 8).then_some(n)
    }
}

/// The manifests of uploaded files, under one directory.
#[derive(Clone, Debug)]
pub struct ManifestStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl ManifestStore {
    /// The manifests under `dir`, the oldest evicted beyond `max_bytes`.
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        ManifestStore { dir, max_bytes }
    }

    /// The canonical form of `path` and its manifest file.
    fn locate(&self, path: &Path) -> Option<(String, PathBuf)> {
        let canonical = std::fs::canonicalize(path).ok()?;
        let key = canonical.to_string_lossy().into_owned();
        let file = self.dir.join(safe_name(&key));
        Some((key, file))
    }

    /// The manifest of the last upload of `path`, if any; an unreadable or
    /// corrupt one is removed.
    pub fn load(&self, path: &Path) -> Option<Manifest> {
        let (key, file) = self.locate(path)?;
        let bytes = std::fs::read(&file).ok()?;
        let manifest = Manifest::decode(&bytes, &key);
        if manifest.is_none() {
            let _ = std::fs::remove_file(&file);
        }
        manifest
    }

    /// Keeps `manifest` as the one of `path` (atomically), then evicts the oldest
    /// manifests beyond the size bound.
    pub fn save(&self, path: &Path, manifest: &Manifest) -> Result<(), CacheError> {
        let (key, file) = self
            .locate(path)
            .ok_or_else(|| CacheError::Encode(format!("{}: no canonical path", path.display())))?;
        write_atomic(&file, &manifest.encode(&key))?;
        evict_oldest(&self.dir, self.max_bytes, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn sample() -> Manifest {
        let mut h = Sha256::new();
        h.update([7u8; 128]);
        Manifest {
            size: 300,
            chunks: vec![(chunk_hash(b"a"), 100), (chunk_hash(b"b"), 200)],
            fingerprints: vec![fingerprint(b"a"), fingerprint(b"b")],
            sha256: Some([3; 32]),
            checkpoints: vec![Checkpoint::of(&Sha256::new(), 0), Checkpoint::of(&h, 128)],
        }
    }

    #[test]
    fn round_trips_and_rejects_corruption() {
        let m = sample();
        let bytes = m.encode("/a/b");
        assert_eq!(Manifest::decode(&bytes, "/a/b"), Some(m.clone()));
        assert_eq!(Manifest::decode(&bytes, "/a/c"), None, "another path");
        for i in [0, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert_eq!(Manifest::decode(&bad, "/a/b"), None, "byte {i}");
        }
        assert_eq!(Manifest::decode(&bytes[..bytes.len() - 1], "/a/b"), None);
        assert_eq!(Manifest::decode(b"", "/a/b"), None);
        // Without a SHA-256: no checkpoints either.
        let plain = Manifest {
            sha256: None,
            checkpoints: Vec::new(),
            ..m.clone()
        };
        assert_eq!(Manifest::decode(&plain.encode("/a/b"), "/a/b"), Some(plain));
        let inconsistent = Manifest {
            sha256: None,
            ..m.clone()
        };
        assert_eq!(Manifest::decode(&inconsistent.encode("/a/b"), "/a/b"), None);
        // A resumed checkpoint continues the hash.
        let mut h = m.checkpoints[1].resume().unwrap();
        h.update(b"tail");
        let mut whole = Sha256::new();
        whole.update([7u8; 128]);
        whole.update(b"tail");
        assert_eq!(h.finalize(), whole.finalize());
        assert_eq!(m.checkpoint_before(127).unwrap().offset, 0);
        assert_eq!(m.checkpoint_before(5000).unwrap().offset, 128);
    }

    #[test]
    fn stored_per_path_and_corrupt_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ManifestStore::new(dir.path().join("manifests"), 1 << 20);
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(store.load(&file), None);
        store.save(&file, &sample()).unwrap();
        assert_eq!(store.load(&file), Some(sample()));
        let (_, stored) = store.locate(&file).unwrap();
        std::fs::write(&stored, b"garbage").unwrap();
        assert_eq!(store.load(&file), None);
        assert!(!stored.exists());
        assert_eq!(store.load(&dir.path().join("missing")), None);
    }
}
