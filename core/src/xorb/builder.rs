//! Packing chunks into a serialized xorb (the client's upload path).

use crate::compression::{CompressionPolicy, Compressor};
use crate::constants::{MAX_CHUNK_UNCOMPRESSED_LEN, MAX_XORB_BYTES, MAX_XORB_CHUNKS};
use crate::error::{Error, Result};
use crate::hash::{MerkleHash, chunk_hash};
use crate::merkle::xorb_hash;

use super::chunk_header::{CHUNK_HEADER_LEN, ChunkHeader};
use super::{ChunkInfo, SerializedXorb};

/// What [`XorbBuilder::add_chunk`] did with a chunk.
#[must_use = "a full xorb must be finished and the chunk added to a new one"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddChunk {
    /// The chunk was added at this index.
    Added(usize),
    /// The chunk was not added: it would push the xorb past 64 MiB of raw
    /// bytes or 8192 chunks. Finish this xorb and add the chunk to a new one.
    Full,
}

/// Builds one xorb chunk by chunk, compressing each as it arrives.
///
/// Limits follow the reference client: a chunk is refused (with
/// [`AddChunk::Full`]) when the raw bytes would exceed
/// [`MAX_XORB_BYTES`] or the chunks [`MAX_XORB_CHUNKS`]; an empty builder
/// accepts any valid chunk. The serialized size then stays below
/// [`MAX_SERIALIZED_XORB_BYTES`](crate::constants::MAX_SERIALIZED_XORB_BYTES)
/// because a chunk is stored raw whenever compression does not shrink it.
#[derive(Debug, Default)]
pub struct XorbBuilder {
    bytes: Vec<u8>,
    chunks: Vec<ChunkInfo>,
    raw_len: usize,
    policy: CompressionPolicy,
    compressor: Compressor,
}

impl XorbBuilder {
    /// An empty builder choosing compression per chunk ([`CompressionPolicy::Auto`]).
    pub fn new() -> Self {
        Self::with_policy(CompressionPolicy::Auto)
    }

    /// An empty builder with the given compression policy.
    pub fn with_policy(policy: CompressionPolicy) -> Self {
        XorbBuilder {
            policy,
            compressor: Compressor::new(),
            ..Default::default()
        }
    }

    /// Reserves room for `additional` more serialized bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.bytes.reserve(additional);
    }

    /// Number of chunks added so far.
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no chunk has been added.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Raw (uncompressed) bytes added so far.
    pub fn raw_len(&self) -> usize {
        self.raw_len
    }

    /// Serialized bytes so far.
    pub fn serialized_len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether a chunk of `len` bytes would fit in this xorb.
    pub fn has_room_for(&self, len: usize) -> bool {
        self.chunks.len() < MAX_XORB_CHUNKS && self.raw_len + len <= MAX_XORB_BYTES
    }

    /// Adds a chunk, hashing it.
    ///
    /// Errors ([`Error::MalformedXorb`]) for an empty chunk or one over
    /// [`MAX_CHUNK_UNCOMPRESSED_LEN`]; returns [`AddChunk::Full`] when the xorb
    /// has no room left for it.
    pub fn add_chunk(&mut self, data: &[u8]) -> Result<AddChunk> {
        self.add(data, None)
    }

    /// Adds a chunk whose hash the caller already computed (it is trusted; a
    /// wrong hash produces a xorb that servers reject).
    pub fn add_chunk_with_hash(&mut self, data: &[u8], hash: MerkleHash) -> Result<AddChunk> {
        debug_assert_eq!(hash, chunk_hash(data), "chunk hash does not match its data");
        self.add(data, Some(hash))
    }

    fn add(&mut self, data: &[u8], hash: Option<MerkleHash>) -> Result<AddChunk> {
        if data.is_empty() || data.len() > MAX_CHUNK_UNCOMPRESSED_LEN {
            return Err(Error::MalformedXorb(format!(
                "a chunk must hold 1..={MAX_CHUNK_UNCOMPRESSED_LEN} bytes, got {}",
                data.len()
            )));
        }
        if !self.has_room_for(data.len()) {
            return Ok(AddChunk::Full);
        }
        let hash = hash.unwrap_or_else(|| chunk_hash(data));
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(&[0; CHUNK_HEADER_LEN]);
        let scheme = self
            .compressor
            .compress_append(data, self.policy, &mut self.bytes);
        let payload_len = self.bytes.len() - offset - CHUNK_HEADER_LEN;
        // The payload is never larger than the data (it is stored raw
        // otherwise), so the header limits hold; the error arm is unreachable.
        let header = match ChunkHeader::new(scheme, payload_len, data.len()) {
            Ok(h) => h,
            Err(e) => {
                self.bytes.truncate(offset);
                return Err(e);
            }
        };
        self.bytes[offset..offset + CHUNK_HEADER_LEN].copy_from_slice(&header.to_bytes());
        let index = self.chunks.len();
        self.chunks.push(ChunkInfo {
            hash,
            scheme,
            serialized_offset: offset,
            serialized_len: CHUNK_HEADER_LEN + payload_len,
            uncompressed_offset: self.raw_len,
            uncompressed_len: data.len(),
        });
        self.raw_len += data.len();
        Ok(AddChunk::Added(index))
    }

    /// Finishes the xorb: computes its hash and returns it with its bytes and
    /// chunk list. The builder is left empty, ready for the next xorb.
    ///
    /// Errors ([`Error::MalformedXorb`]) if no chunk was added: an empty xorb is invalid.
    pub fn finish(&mut self) -> Result<SerializedXorb> {
        if self.chunks.is_empty() {
            return Err(Error::MalformedXorb(
                "a xorb needs at least one chunk".into(),
            ));
        }
        let leaves: Vec<(MerkleHash, u64)> = self.chunks.iter().map(ChunkInfo::leaf).collect();
        let hash = xorb_hash(&leaves);
        self.raw_len = 0;
        Ok(SerializedXorb {
            hash,
            bytes: std::mem::take(&mut self.bytes),
            chunks: std::mem::take(&mut self.chunks),
        })
    }
}
