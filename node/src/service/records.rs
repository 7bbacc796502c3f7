//! Conversions between the index's stored records and the core's shard/xorb types.

use bytes::Bytes;
use cas_core::hash::MerkleHash;
use cas_core::shard::{FileInfo, XorbChunk, XorbInfo};
use cas_core::xorb::ParsedXorb;
use cas_proto::index::{DedupEntry, FileRecord, FileTerm, XorbRecord};

use super::ServiceError;

/// Format version of the records this node writes.
pub const RECORD_FORMAT: u32 = 1;

/// The raw bytes of a hash, as the index keys and records hold them.
pub fn raw(hash: &MerkleHash) -> Bytes {
    Bytes::copy_from_slice(&hash.0)
}

/// A 32-byte hash read back from a stored record.
pub fn hash_from(bytes: &[u8], what: &str) -> Result<MerkleHash, ServiceError> {
    <[u8; 32]>::try_from(bytes).map(MerkleHash).map_err(|_| {
        ServiceError::Inconsistent(format!("{what}: stored hash of {} bytes", bytes.len()))
    })
}

/// The index record of a validated xorb stored as `stored_len` bytes.
pub fn xorb_record(
    parsed: &ParsedXorb,
    stored_len: u64,
    now_ms: u64,
    uploader: &str,
) -> XorbRecord {
    let mut chunk_hashes = Vec::with_capacity(parsed.chunks.len() * 32);
    let mut chunk_lens = Vec::with_capacity(parsed.chunks.len());
    let mut chunk_ends = Vec::with_capacity(parsed.chunks.len());
    for c in &parsed.chunks {
        chunk_hashes.extend_from_slice(&c.hash.0);
        // Both fit in u32: the parser enforces the xorb size limits.
        chunk_lens.push(c.uncompressed_len as u32);
        chunk_ends.push((c.serialized_offset + c.serialized_len) as u32);
    }
    XorbRecord {
        format: RECORD_FORMAT,
        hash: raw(&parsed.hash),
        serialized_len: stored_len,
        chunk_hashes: chunk_hashes.into(),
        chunk_lens,
        chunk_ends,
        created_at_ms: now_ms,
        uploader: uploader.to_owned(),
    }
}

/// A stored xorb's chunk layout, checked for internal consistency once when read.
#[derive(Debug, Clone)]
pub struct XorbLayout {
    /// The xorb hash.
    pub hash: MerkleHash,
    /// Size of the stored object.
    pub stored_len: u64,
    /// Chunk hashes, lengths and uncompressed offsets, as a shard describes them.
    pub info: XorbInfo,
    /// End offset of each chunk record in the stored object.
    pub chunk_ends: Vec<u32>,
}

impl XorbLayout {
    /// Reads a record; a record that contradicts itself is an internal error.
    pub fn from_record(r: &XorbRecord) -> Result<Self, ServiceError> {
        let hash = hash_from(&r.hash, "xorb record")?;
        let n = r.chunk_lens.len();
        if r.chunk_hashes.len() != n * 32 || r.chunk_ends.len() != n || n == 0 {
            return Err(ServiceError::Inconsistent(format!(
                "xorb record {hash}: {} hash bytes, {} lengths, {} ends",
                r.chunk_hashes.len(),
                n,
                r.chunk_ends.len()
            )));
        }
        let mut chunks = Vec::with_capacity(n);
        let mut offset: u64 = 0;
        for (i, len) in r.chunk_lens.iter().enumerate() {
            let mut h = [0u8; 32];
            h.copy_from_slice(&r.chunk_hashes[i * 32..(i + 1) * 32]);
            chunks.push(XorbChunk {
                hash: MerkleHash(h),
                byte_range_start: offset as u32,
                unpacked_bytes: *len,
                global_dedup: false,
            });
            offset += u64::from(*len);
        }
        let ascending = r.chunk_ends.windows(2).all(|w| w[0] < w[1]);
        if !ascending
            || u64::from(r.chunk_ends[n - 1]) > r.serialized_len
            || offset > u64::from(u32::MAX)
        {
            return Err(ServiceError::Inconsistent(format!(
                "xorb record {hash}: bad chunk offsets"
            )));
        }
        Ok(XorbLayout {
            hash,
            stored_len: r.serialized_len,
            info: XorbInfo {
                hash,
                chunks,
                num_bytes_in_xorb: offset as u32,
                num_bytes_on_disk: r.serialized_len.min(u64::from(u32::MAX)) as u32,
            },
            chunk_ends: r.chunk_ends.clone(),
        })
    }

    /// Number of chunks.
    pub fn num_chunks(&self) -> u32 {
        self.chunk_ends.len() as u32
    }

    /// Serialized byte range `[start, end)` of chunks `[first, end_chunk)` in the object.
    pub fn byte_range(&self, first: u32, end_chunk: u32) -> (u64, u64) {
        let start = if first == 0 {
            0
        } else {
            self.chunk_ends[first as usize - 1]
        };
        (
            u64::from(start),
            u64::from(self.chunk_ends[end_chunk as usize - 1]),
        )
    }

    /// Uncompressed length of chunk `i`.
    pub fn chunk_len(&self, i: u32) -> u32 {
        self.info.chunks[i as usize].unpacked_bytes
    }
}

/// The index record of a file that passed the shard checks.
pub fn file_record(f: &FileInfo, shard: &MerkleHash, now_ms: u64, uploader: &str) -> FileRecord {
    FileRecord {
        format: RECORD_FORMAT,
        hash: raw(&f.file_hash),
        size: f.size(),
        sha256: f
            .sha256
            .map(|d| Bytes::copy_from_slice(&d))
            .unwrap_or_default(),
        terms: f
            .terms
            .iter()
            .map(|t| FileTerm {
                xorb_hash: raw(&t.xorb_hash),
                chunk_start: t.chunk_start,
                chunk_end: t.chunk_end,
                unpacked_len: t.unpacked_bytes,
            })
            .collect(),
        shard_hash: raw(shard),
        created_at_ms: now_ms,
        uploader: uploader.to_owned(),
    }
}

/// A dedup entry for chunk `index` of `xorb`.
pub fn dedup_entry(chunk: &MerkleHash, xorb: &MerkleHash, index: u32) -> DedupEntry {
    DedupEntry {
        format: RECORD_FORMAT,
        chunk_hash: raw(chunk),
        xorb_hash: raw(xorb),
        chunk_index: index,
    }
}
