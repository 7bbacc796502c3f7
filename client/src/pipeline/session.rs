//! One upload session: files in, new xorbs and one shard out.
//!
//! Every chunk of every file is looked up, in order, among
//! 1. chunks already packed in this session (deduplication within and across
//!    the session's files), then
//! 2. chunks the store is known to hold (from global-dedup answers, possibly
//!    HMAC-keyed),
//!
//! and otherwise packed into the open xorb. Consecutive chunks that sit next
//! to each other in one xorb become one reconstruction term. The xorb hash of
//! a term is known only once its xorb is finished, so terms name xorbs by
//! session slot until [`UploadSession::finish`] resolves them.

use std::collections::HashMap;

use cas_core::MerkleHash;
use cas_core::chunking::Chunk;
use cas_core::hash::verification_hash;
use cas_core::merkle::file_hash;
use cas_core::shard::{FileInfo, FileTerm, ParsedShard, Shard, XorbInfo};
use cas_core::xorb::{AddChunk, SerializedXorb, XorbBuilder};
use sha2::{Digest, Sha256};

/// What can go wrong while planning an upload.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The chunk list does not describe the file's bytes.
    #[error("chunks do not cover the file: {0}")]
    BadChunks(String),
    /// A core codec refused the data.
    #[error(transparent)]
    Core(#[from] cas_core::Error),
    /// Packing was stopped by the consumer of finished xorbs.
    #[error("{0}")]
    Stopped(&'static str),
    /// The file's SHA-256 could not be computed (its hashing thread failed).
    #[error("computing the file's SHA-256 failed: {0}")]
    Sha256(String),
}

/// A xorb named by its slot in this session (hash not known yet) or by hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum XorbRef {
    /// The `n`-th xorb this session packs.
    Session(usize),
    /// A xorb the store already holds.
    Stored(MerkleHash),
}

/// A term before its xorb is resolved.
#[derive(Clone, Copy, Debug)]
struct PendingTerm {
    xorb: XorbRef,
    start: u32,
    end: u32,
    bytes: u32,
}

/// A file waiting for its terms to be resolved.
#[derive(Debug)]
struct PendingFile {
    file_hash: MerkleHash,
    terms: Vec<PendingTerm>,
    verification: Vec<MerkleHash>,
    sha256: Option<[u8; 32]>,
}

/// What happened to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSummary {
    /// The Xet file hash.
    pub file_hash: MerkleHash,
    /// File size in bytes.
    pub size: u64,
    /// Bytes packed into new xorbs for this file.
    pub new_bytes: u64,
    /// Bytes found in this session or in the store (not sent again).
    pub deduplicated_bytes: u64,
}

/// The result of a session: xorbs to upload first, then the shard.
#[derive(Debug)]
pub struct UploadPlan {
    /// New xorbs not yet handed out (by [`UploadSession::add_file_with`]), in the
    /// order they were packed.
    pub xorbs: Vec<SerializedXorb>,
    /// The shard registering every file (files and new xorbs in canonical order).
    pub shard: Shard,
}

/// Chunks the store already holds, as learned from one global-dedup answer.
#[derive(Debug)]
struct StoredChunks {
    /// Key the answer's chunk hashes are keyed with, if any.
    key: Option<MerkleHash>,
    /// (possibly keyed) chunk hash → (xorb, index, length).
    chunks: HashMap<MerkleHash, (MerkleHash, u32, u32)>,
}

/// What the shard needs of a finished xorb (its bytes may be gone already).
#[derive(Debug)]
struct SealedXorb {
    hash: MerkleHash,
    /// `(chunk hash, uncompressed length)` of each chunk.
    chunks: Vec<(MerkleHash, u32)>,
}

/// Why packing stopped early.
const STOPPED: &str = "the consumer of finished xorbs stopped";

/// Plans an upload: deduplicates, packs new chunks into xorbs, builds the shard.
#[derive(Debug, Default)]
pub struct UploadSession {
    builder: XorbBuilder,
    /// Every finished xorb, by session slot.
    sealed: Vec<SealedXorb>,
    /// Finished xorbs not handed out yet.
    ready: Vec<SerializedXorb>,
    /// Raw chunk hash → (session slot, index, length) for every packed chunk.
    packed: HashMap<MerkleHash, (usize, u32, u32)>,
    stored: Vec<StoredChunks>,
    files: Vec<PendingFile>,
}

impl UploadSession {
    /// An empty session.
    pub fn new() -> Self {
        Self::default()
    }

    /// Learns the chunks a global-dedup answer says the store holds (HMAC-keyed or not).
    pub fn add_dedup_answer(&mut self, answer: &ParsedShard) {
        let key = answer
            .footer
            .as_ref()
            .and_then(|f| f.hmac_key)
            .filter(|k| !k.is_zero());
        let mut chunks = HashMap::new();
        for xorb in &answer.shard.xorbs {
            for (i, c) in xorb.chunks.iter().enumerate() {
                chunks
                    .entry(c.hash)
                    .or_insert((xorb.hash, i as u32, c.unpacked_bytes));
            }
        }
        self.stored.push(StoredChunks { key, chunks });
    }

    /// Where a chunk already is, if anywhere.
    fn locate(&self, chunk: &Chunk) -> Option<(XorbRef, u32)> {
        let len = chunk.len as u32;
        if let Some(&(slot, index, l)) = self.packed.get(&chunk.hash)
            && l == len
        {
            return Some((XorbRef::Session(slot), index));
        }
        self.stored.iter().find_map(|s| {
            let key = s.key.map_or(chunk.hash, |k| chunk.hash.hmac(&k));
            s.chunks
                .get(&key)
                .filter(|&&(_, _, l)| l == len)
                .map(|&(xorb, index, _)| (XorbRef::Stored(xorb), index))
        })
    }

    /// Finishes the open xorb and hands it to `sink` (`false` from the sink stops packing).
    fn seal(&mut self, sink: &mut dyn FnMut(SerializedXorb) -> bool) -> Result<(), PipelineError> {
        let xorb = self.builder.finish()?;
        self.sealed.push(SealedXorb {
            hash: xorb.hash,
            chunks: xorb
                .chunks
                .iter()
                .map(|c| (c.hash, c.uncompressed_len as u32))
                .collect(),
        });
        if sink(xorb) {
            Ok(())
        } else {
            Err(PipelineError::Stopped(STOPPED))
        }
    }

    /// Packs a chunk into the open xorb, finishing it first when full.
    fn pack(
        &mut self,
        data: &[u8],
        chunk: &Chunk,
        sink: &mut dyn FnMut(SerializedXorb) -> bool,
    ) -> Result<(XorbRef, u32), PipelineError> {
        let index = match self.builder.add_chunk_with_hash(data, chunk.hash)? {
            AddChunk::Added(i) => i,
            AddChunk::Full => {
                self.seal(sink)?;
                match self.builder.add_chunk_with_hash(data, chunk.hash)? {
                    AddChunk::Added(i) => i,
                    AddChunk::Full => {
                        return Err(PipelineError::BadChunks(format!(
                            "a {}-byte chunk does not fit an empty xorb",
                            chunk.len
                        )));
                    }
                }
            }
        };
        let slot = self.sealed.len();
        self.packed
            .insert(chunk.hash, (slot, index as u32, chunk.len as u32));
        Ok((XorbRef::Session(slot), index as u32))
    }

    /// Adds one file given its bytes and its chunks (as `cas_core::chunking` produces
    /// them); the xorbs it fills wait for [`UploadSession::finish`].
    pub fn add_file(
        &mut self,
        data: &[u8],
        chunks: &[Chunk],
    ) -> Result<FileSummary, PipelineError> {
        let mut ready = std::mem::take(&mut self.ready);
        let summary = self.add_file_with(data, chunks, &mut |x| {
            ready.push(x);
            true
        });
        self.ready = ready;
        summary
    }

    /// Like [`UploadSession::add_file`], but hands every xorb the file fills to `sink`
    /// as soon as it is finished, so it can be uploaded while packing goes on. A sink
    /// answering `false` stops packing with [`PipelineError::Stopped`]; the session
    /// must not be used after that.
    pub fn add_file_with(
        &mut self,
        data: &[u8],
        chunks: &[Chunk],
        sink: &mut dyn FnMut(SerializedXorb) -> bool,
    ) -> Result<FileSummary, PipelineError> {
        self.add_file_with_sha256(data, chunks, || Ok(Some(Sha256::digest(data).into())), sink)
    }

    /// Like [`UploadSession::add_file_with`], but takes the file's SHA-256 from
    /// `sha256`, called once after the file is packed: a caller hashing on another
    /// thread joins it there, so the digest is computed while packing goes on.
    /// `None` registers the file without one (the format makes it optional); an
    /// empty file's is stored as zeros, as hf_xet does.
    pub fn add_file_with_sha256(
        &mut self,
        data: &[u8],
        chunks: &[Chunk],
        sha256: impl FnOnce() -> Result<Option<[u8; 32]>, PipelineError>,
        sink: &mut dyn FnMut(SerializedXorb) -> bool,
    ) -> Result<FileSummary, PipelineError> {
        let mut expected = 0;
        for c in chunks {
            if c.offset != expected || c.len == 0 {
                return Err(PipelineError::BadChunks(format!(
                    "chunk at {} (length {}) does not follow byte {expected}",
                    c.offset, c.len
                )));
            }
            expected += c.len;
        }
        if expected != data.len() {
            return Err(PipelineError::BadChunks(format!(
                "chunks cover {expected} of {} bytes",
                data.len()
            )));
        }

        let mut terms: Vec<PendingTerm> = Vec::new();
        let mut term_chunks: Vec<Vec<MerkleHash>> = Vec::new();
        let (mut new_bytes, mut dedup_bytes) = (0u64, 0u64);
        for c in chunks {
            let (xorb, index) = match self.locate(c) {
                Some(found) => {
                    dedup_bytes += c.len as u64;
                    found
                }
                None => {
                    new_bytes += c.len as u64;
                    self.pack(&data[c.range()], c, sink)?
                }
            };
            match terms.last_mut() {
                Some(t) if t.xorb == xorb && t.end == index => {
                    t.end += 1;
                    t.bytes += c.len as u32;
                    if let Some(hashes) = term_chunks.last_mut() {
                        hashes.push(c.hash);
                    }
                }
                _ => {
                    terms.push(PendingTerm {
                        xorb,
                        start: index,
                        end: index + 1,
                        bytes: c.len as u32,
                    });
                    term_chunks.push(vec![c.hash]);
                }
            }
        }
        let leaves: Vec<(MerkleHash, u64)> =
            chunks.iter().map(|c| (c.hash, c.len as u64)).collect();
        let hash = file_hash(&leaves);
        self.files.push(PendingFile {
            file_hash: hash,
            terms,
            // A term's chunks are the file's own chunks, so their raw hashes are known
            // even when the store only told us keyed ones.
            verification: term_chunks.iter().map(|h| verification_hash(h)).collect(),
            // hf_xet stores zeros, not sha256(""), for an empty file.
            sha256: sha256()?.map(|d| if data.is_empty() { [0; 32] } else { d }),
        });
        Ok(FileSummary {
            file_hash: hash,
            size: data.len() as u64,
            new_bytes,
            deduplicated_bytes: dedup_bytes,
        })
    }

    /// Finishes the open xorb, resolves every term and builds the shard.
    pub fn finish(mut self) -> Result<UploadPlan, PipelineError> {
        if !self.builder.is_empty() {
            let mut ready = std::mem::take(&mut self.ready);
            self.seal(&mut |x| {
                ready.push(x);
                true
            })?;
            self.ready = ready;
        }
        let hashes: Vec<MerkleHash> = self.sealed.iter().map(|x| x.hash).collect();
        let files = self
            .files
            .into_iter()
            .map(|f| FileInfo {
                file_hash: f.file_hash,
                terms: f
                    .terms
                    .iter()
                    .map(|t| {
                        let xorb_hash = match t.xorb {
                            XorbRef::Session(slot) => hashes[slot],
                            XorbRef::Stored(h) => h,
                        };
                        FileTerm::new(xorb_hash, t.bytes, t.start, t.end)
                    })
                    .collect(),
                verification: Some(f.verification),
                sha256: f.sha256,
            })
            .collect();
        let xorbs = self
            .sealed
            .iter()
            .map(|x| XorbInfo::from_chunks(x.hash, &x.chunks))
            .collect::<Result<Vec<_>, _>>()?;
        let mut shard = Shard::new(files, xorbs);
        shard.canonicalize();
        Ok(UploadPlan {
            xorbs: self.ready,
            shard,
        })
    }
}
