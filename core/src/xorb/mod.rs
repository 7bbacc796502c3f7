//! The xorb format: chunk records, builder, parser and storage footer.
//!
//! A serialized xorb (XET.md §7) is a run of chunk records, each an 8-byte
//! [`ChunkHeader`] followed by the chunk's payload in its
//! [`CompressionScheme`]. There is no
//! xorb header; clients upload exactly that. Servers may append a
//! [`XorbFooter`] (chunk hashes and boundaries) when storing it.
//!
//! - [`XorbBuilder`] packs chunks into a [`SerializedXorb`] (client upload path);
//! - [`parse_xorb`] and [`validate_xorb`] check an uploaded or stored xorb
//!   completely (server write path), decoding each chunk into one reused buffer,
//!   and [`XorbValidator`] applies the same checks as an upload streams in;
//! - [`ChunkDecoder`] and [`decode_range_body`] decode a *range body*, the run
//!   of chunk records a ranged fetch returns (client download path), and
//!   [`complete_records_len`] finds how much of one streaming in can be decoded;
//! - [`ChunkRecords`] walks records without decoding them.
//!
//! Rules enforced everywhere: header version 0, a known scheme, uncompressed
//! length 1..=[`MAX_CHUNK_UNCOMPRESSED_LEN`](crate::constants::MAX_CHUNK_UNCOMPRESSED_LEN)
//! (chunkers never emit empty chunks), compressed length at most
//! [`MAX_CHUNK_COMPRESSED_LEN`](crate::constants::MAX_CHUNK_COMPRESSED_LEN), at most
//! [`MAX_XORB_CHUNKS`](crate::constants::MAX_XORB_CHUNKS) chunks and
//! [`MAX_XORB_BYTES`](crate::constants::MAX_XORB_BYTES) raw bytes per xorb, and
//! payloads that decode to exactly their declared length.

use std::ops::Range;

use crate::compression::CompressionScheme;
use crate::hash::MerkleHash;

mod builder;
mod chunk_header;
mod footer;
mod parse;
mod validate;

#[cfg(test)]
mod tests;

pub use builder::{AddChunk, XorbBuilder};
pub use chunk_header::{CHUNK_HEADER_LEN, CHUNK_HEADER_VERSION, ChunkHeader, is_footer_marker};
pub use footer::{FOOTER_IDENT, MAX_FOOTER_LEN, XorbFooter};
pub use parse::{
    ChunkDecoder, ChunkRecords, DecodedChunk, RawChunk, complete_records_len, decode_chunk_records,
    decode_range_body,
};
pub use validate::{ParsedXorb, XorbValidator, parse_xorb, parse_xorb_with, validate_xorb};

/// Where one chunk sits in a xorb, both serialized and uncompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkInfo {
    /// The chunk hash.
    pub hash: MerkleHash,
    /// The scheme its payload is stored with.
    pub scheme: CompressionScheme,
    /// Offset of the chunk's header in the serialized xorb.
    pub serialized_offset: usize,
    /// Serialized length: header plus payload.
    pub serialized_len: usize,
    /// Offset of the chunk's data in the xorb's uncompressed byte stream.
    pub uncompressed_offset: usize,
    /// Uncompressed length of the chunk.
    pub uncompressed_len: usize,
}

impl ChunkInfo {
    /// The serialized bytes of the record (header and payload).
    pub fn serialized_range(&self) -> Range<usize> {
        self.serialized_offset..self.serialized_offset + self.serialized_len
    }

    /// The chunk's bytes in the xorb's uncompressed byte stream.
    pub fn uncompressed_range(&self) -> Range<usize> {
        self.uncompressed_offset..self.uncompressed_offset + self.uncompressed_len
    }

    /// The `(hash, uncompressed length)` leaf of the xorb's merkle tree.
    pub fn leaf(&self) -> (MerkleHash, u64) {
        (self.hash, self.uncompressed_len as u64)
    }
}

/// The serialized byte range holding chunks `chunks` (what a ranged fetch of
/// those chunks returns), or `None` if the range is empty or out of bounds.
pub fn chunk_byte_range(all: &[ChunkInfo], chunks: Range<usize>) -> Option<Range<usize>> {
    if chunks.start >= chunks.end {
        return None;
    }
    let first = all.get(chunks.start)?;
    let last = all.get(chunks.end - 1)?;
    Some(first.serialized_offset..last.serialized_range().end)
}

/// The uncompressed length of a whole xorb made of `all` (where its last chunk ends).
pub fn xorb_raw_len(all: &[ChunkInfo]) -> usize {
    all.last().map_or(0, |c| c.uncompressed_range().end)
}

/// The uncompressed length of chunks `chunks`, or `None` if out of bounds.
pub fn chunk_range_len(all: &[ChunkInfo], chunks: Range<usize>) -> Option<usize> {
    Some(all.get(chunks)?.iter().map(|c| c.uncompressed_len).sum())
}

/// A xorb serialized by a [`XorbBuilder`]: what a client uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerializedXorb {
    /// The xorb hash (merkle root over its chunks' hashes and lengths).
    pub hash: MerkleHash,
    /// The chunk records, without a footer.
    pub bytes: Vec<u8>,
    /// Where each chunk is.
    pub chunks: Vec<ChunkInfo>,
}

impl SerializedXorb {
    /// Number of chunks.
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Total uncompressed length of the chunks.
    pub fn raw_len(&self) -> usize {
        xorb_raw_len(&self.chunks)
    }

    /// The storage footer describing this xorb.
    pub fn footer(&self) -> XorbFooter {
        XorbFooter::from_chunks(self.hash, &self.chunks)
    }

    /// The bytes followed by the storage footer (the stored form).
    pub fn to_bytes_with_footer(&self) -> Vec<u8> {
        let footer = self.footer();
        let mut out = Vec::with_capacity(self.bytes.len() + footer.encoded_len());
        out.extend_from_slice(&self.bytes);
        footer.write_to(&mut out);
        out
    }

    /// The serialized byte range of chunks `chunks` (see [`chunk_byte_range`]).
    pub fn byte_range(&self, chunks: Range<usize>) -> Option<Range<usize>> {
        chunk_byte_range(&self.chunks, chunks)
    }
}
