//! The optional storage footer appended to a stored xorb.
//!
//! Layout (XET.md §7; all integers little-endian), `n` = number of chunks:
//!
//! | Section | Contents | Bytes |
//! |---|---|---|
//! | Start | `"XETBLOB"`, u8 version = 1, xorb hash | 40 |
//! | Hashes | `"XBLBHSH"`, u8 version = 0, u32 n, n × chunk hash | 12 + 32n |
//! | Boundaries | `"XBLBBND"`, u8 version = 1, u32 n, n × u32 cumulative serialized end, n × u32 cumulative uncompressed end | 12 + 8n |
//! | End | u32 n, u32 hashes-section offset from end, u32 boundary-section offset from end, 16 reserved bytes | 28 |
//! | Trailer | u32 footer length (everything above) | 4 |
//!
//! The two offsets count from the start of their section to the end of the
//! End section. The first 4 reserved bytes carry a "uniqueness nonce" in newer
//! reference writers; readers ignore the reserved bytes, and so does this one
//! (it keeps them, so a parsed footer re-encodes byte for byte). Version 0
//! footers (a legacy layout no current writer produces) are rejected.

use crate::constants::{MAX_XORB_BYTES, MAX_XORB_CHUNKS};
use crate::error::{Error, Result};
use crate::hash::MerkleHash;

use super::ChunkInfo;

/// The footer's first bytes: `XETBLOB`.
pub const FOOTER_IDENT: [u8; 7] = *b"XETBLOB";
const HASHES_IDENT: [u8; 7] = *b"XBLBHSH";
const BOUNDARIES_IDENT: [u8; 7] = *b"XBLBBND";
const FOOTER_VERSION: u8 = 1;
const HASHES_VERSION: u8 = 0;
const BOUNDARIES_VERSION: u8 = 1;
/// Length of the Start section.
const START_LEN: usize = 7 + 1 + 32;
/// Length of a section's ident, version and count.
const SECTION_HEAD_LEN: usize = 7 + 1 + 4;
/// Length of the End section.
const END_LEN: usize = 3 * 4 + RESERVED_LEN;
const RESERVED_LEN: usize = 16;
/// Footer length (without the trailer) of a xorb with no chunks.
const FIXED_INFO_LEN: usize = START_LEN + 2 * SECTION_HEAD_LEN + END_LEN;
/// Footer bytes per chunk: a hash and two u32 offsets.
const PER_CHUNK_LEN: usize = 32 + 2 * 4;
const TRAILER_LEN: usize = 4;
/// The longest footer there can be: one describing [`MAX_XORB_CHUNKS`] chunks.
pub const MAX_FOOTER_LEN: usize = FIXED_INFO_LEN + PER_CHUNK_LEN * MAX_XORB_CHUNKS + TRAILER_LEN;

/// A parsed or computed storage footer (chunk hashes and boundaries of a xorb).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XorbFooter {
    hash: MerkleHash,
    chunk_hashes: Vec<MerkleHash>,
    serialized_ends: Vec<u32>,
    uncompressed_ends: Vec<u32>,
    reserved: [u8; RESERVED_LEN],
}

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::MalformedXorb(format!("footer: {what}"))
}

/// A bounds-checked little-endian reader over the footer bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| malformed("truncated"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        let b = self.take(n.checked_mul(4).ok_or_else(|| malformed("truncated"))?)?;
        Ok(b.chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect())
    }

    fn section(&mut self, ident: &[u8; 7], version: u8, name: &str) -> Result<()> {
        if self.take(7)? != ident {
            return Err(malformed(format!("missing the {name} section")));
        }
        let v = self.u8()?;
        if v != version {
            return Err(malformed(format!("unsupported {name} section version {v}")));
        }
        Ok(())
    }
}

fn check_ascending(ends: &[u32], limit: usize, what: &str) -> Result<()> {
    let mut prev = 0u32;
    for &e in ends {
        if e <= prev {
            return Err(malformed(format!("{what} offsets are not increasing")));
        }
        prev = e;
    }
    if prev as usize > limit {
        return Err(malformed(format!("{what} offsets exceed {limit}")));
    }
    Ok(())
}

impl XorbFooter {
    /// The footer of a xorb named `hash` with these chunks (reserved bytes zero).
    pub fn from_chunks(hash: MerkleHash, chunks: &[ChunkInfo]) -> Self {
        let end32 = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        XorbFooter {
            hash,
            chunk_hashes: chunks.iter().map(|c| c.hash).collect(),
            serialized_ends: chunks
                .iter()
                .map(|c| end32(c.serialized_range().end))
                .collect(),
            uncompressed_ends: chunks
                .iter()
                .map(|c| end32(c.uncompressed_range().end))
                .collect(),
            reserved: [0; RESERVED_LEN],
        }
    }

    /// The xorb hash the footer names.
    pub fn hash(&self) -> MerkleHash {
        self.hash
    }

    /// Number of chunks described.
    pub fn num_chunks(&self) -> usize {
        self.chunk_hashes.len()
    }

    /// The chunk hashes, in order.
    pub fn chunk_hashes(&self) -> &[MerkleHash] {
        &self.chunk_hashes
    }

    /// Cumulative serialized end offset of each chunk record (from the start of the xorb).
    pub fn serialized_ends(&self) -> &[u32] {
        &self.serialized_ends
    }

    /// Cumulative uncompressed end offset of each chunk.
    pub fn uncompressed_ends(&self) -> &[u32] {
        &self.uncompressed_ends
    }

    /// The 16 reserved bytes at the end of the footer.
    pub fn reserved(&self) -> &[u8; 16] {
        &self.reserved
    }

    /// The uniqueness nonce (the first 4 reserved bytes; zero if unset).
    pub fn nonce(&self) -> [u8; 4] {
        [
            self.reserved[0],
            self.reserved[1],
            self.reserved[2],
            self.reserved[3],
        ]
    }

    /// Sets the uniqueness nonce (it does not change the xorb hash).
    pub fn set_nonce(&mut self, nonce: [u8; 4]) {
        self.reserved[..4].copy_from_slice(&nonce);
    }

    /// Length of the serialized body the footer describes (the last serialized end).
    pub fn body_len(&self) -> usize {
        self.serialized_ends.last().map_or(0, |&e| e as usize)
    }

    /// The footer's length field: everything but the trailing u32.
    pub fn info_len(&self) -> usize {
        FIXED_INFO_LEN + PER_CHUNK_LEN * self.num_chunks()
    }

    /// Encoded length including the trailing u32.
    pub fn encoded_len(&self) -> usize {
        self.info_len() + TRAILER_LEN
    }

    /// Appends the encoded footer to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.num_chunks();
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        let boundary_from_end = SECTION_HEAD_LEN + 8 * n + END_LEN;
        let hashes_from_end = SECTION_HEAD_LEN + 32 * n + boundary_from_end;
        out.reserve(self.encoded_len());
        out.extend_from_slice(&FOOTER_IDENT);
        out.push(FOOTER_VERSION);
        out.extend_from_slice(self.hash.as_bytes());
        out.extend_from_slice(&HASHES_IDENT);
        out.push(HASHES_VERSION);
        out.extend_from_slice(&n32.to_le_bytes());
        for h in &self.chunk_hashes {
            out.extend_from_slice(h.as_bytes());
        }
        out.extend_from_slice(&BOUNDARIES_IDENT);
        out.push(BOUNDARIES_VERSION);
        out.extend_from_slice(&n32.to_le_bytes());
        for e in self.serialized_ends.iter().chain(&self.uncompressed_ends) {
            out.extend_from_slice(&e.to_le_bytes());
        }
        out.extend_from_slice(&n32.to_le_bytes());
        out.extend_from_slice(&(hashes_from_end as u32).to_le_bytes());
        out.extend_from_slice(&(boundary_from_end as u32).to_le_bytes());
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&(self.info_len() as u32).to_le_bytes());
    }

    /// The encoded footer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }

    /// Parses exactly one footer, trailer included, checking every field.
    ///
    /// Checks: idents and versions, the three chunk counts agree (and are at
    /// most [`MAX_XORB_CHUNKS`]), both section offsets, the length field
    /// matches the bytes given, and the boundaries strictly increase within the
    /// xorb limits. Nothing is allocated before the bytes it describes are known
    /// to be present. Errors are [`Error::MalformedXorb`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < FIXED_INFO_LEN + TRAILER_LEN {
            return Err(malformed(format!("{} bytes is too short", bytes.len())));
        }
        let (info, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
        let info_len = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        if info_len as usize != info.len() {
            return Err(malformed(format!(
                "length field says {info_len} bytes, found {}",
                info.len()
            )));
        }
        let mut r = Reader {
            bytes: info,
            pos: 0,
        };
        r.section(&FOOTER_IDENT, FOOTER_VERSION, "start")?;
        let hash = MerkleHash::from_slice(r.take(32)?)?;

        let hashes_start = r.pos;
        r.section(&HASHES_IDENT, HASHES_VERSION, "hashes")?;
        let n = r.u32()? as usize;
        if n > MAX_XORB_CHUNKS {
            return Err(malformed(format!(
                "{n} chunks exceed the {MAX_XORB_CHUNKS}-chunk limit"
            )));
        }
        if info.len() != FIXED_INFO_LEN + PER_CHUNK_LEN * n {
            return Err(malformed(format!(
                "{} bytes do not fit {n} chunks",
                info.len()
            )));
        }
        let chunk_hashes = r
            .take(32 * n)?
            .chunks_exact(32)
            .map(MerkleHash::from_slice)
            .collect::<Result<Vec<_>>>()?;

        let boundaries_start = r.pos;
        r.section(&BOUNDARIES_IDENT, BOUNDARIES_VERSION, "boundaries")?;
        if r.u32()? as usize != n {
            return Err(malformed(
                "chunk counts of the hashes and boundaries sections differ",
            ));
        }
        let serialized_ends = r.u32s(n)?;
        let uncompressed_ends = r.u32s(n)?;
        if r.u32()? as usize != n {
            return Err(malformed("chunk count of the end section differs"));
        }
        let hashes_from_end = r.u32()? as usize;
        let boundary_from_end = r.u32()? as usize;
        let mut reserved = [0u8; RESERVED_LEN];
        reserved.copy_from_slice(r.take(RESERVED_LEN)?);
        if r.pos != info.len() {
            return Err(malformed("unexpected bytes before the trailer"));
        }
        if hashes_from_end != info.len() - hashes_start {
            return Err(malformed(format!(
                "hashes section offset {hashes_from_end}, expected {}",
                info.len() - hashes_start
            )));
        }
        if boundary_from_end != info.len() - boundaries_start {
            return Err(malformed(format!(
                "boundary section offset {boundary_from_end}, expected {}",
                info.len() - boundaries_start
            )));
        }
        check_ascending(&serialized_ends, usize::MAX, "serialized")?;
        check_ascending(&uncompressed_ends, MAX_XORB_BYTES, "uncompressed")?;
        Ok(XorbFooter {
            hash,
            chunk_hashes,
            serialized_ends,
            uncompressed_ends,
            reserved,
        })
    }

    /// Finds and parses the footer at the end of a stored xorb (from its
    /// trailing length field); returns it with the length of the body before it.
    ///
    /// Checks that the footer describes exactly the bytes before it, but does
    /// not look at the chunks: use [`parse_xorb`](super::parse_xorb) for that.
    pub fn from_stored(stored: &[u8]) -> Result<(Self, usize)> {
        let len = stored.len();
        let trailer = stored
            .get(len.saturating_sub(TRAILER_LEN)..)
            .filter(|t| t.len() == TRAILER_LEN)
            .ok_or_else(|| malformed("no trailer"))?;
        let info_len =
            u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize;
        let start = len
            .checked_sub(TRAILER_LEN)
            .and_then(|l| l.checked_sub(info_len))
            .ok_or_else(|| malformed(format!("length field {info_len} exceeds the object")))?;
        let footer = Self::parse(&stored[start..])?;
        if footer.body_len() != start {
            return Err(malformed(format!(
                "describes a {}-byte body, found {start} bytes before it",
                footer.body_len()
            )));
        }
        Ok((footer, start))
    }

    /// Checks that the footer describes exactly `chunks` of the xorb `hash`.
    pub fn check_matches(&self, hash: &MerkleHash, chunks: &[ChunkInfo]) -> Result<()> {
        if self.num_chunks() != chunks.len() {
            return Err(malformed(format!(
                "describes {} chunks, the xorb has {}",
                self.num_chunks(),
                chunks.len()
            )));
        }
        if self.hash != *hash {
            return Err(malformed(format!(
                "names xorb {}, the chunks hash to {hash}",
                self.hash
            )));
        }
        for (i, c) in chunks.iter().enumerate() {
            if self.chunk_hashes[i] != c.hash {
                return Err(malformed(format!("hash of chunk {i} differs")));
            }
            if self.serialized_ends[i] as usize != c.serialized_range().end {
                return Err(malformed(format!("serialized end of chunk {i} differs")));
            }
            if self.uncompressed_ends[i] as usize != c.uncompressed_range().end {
                return Err(malformed(format!("uncompressed end of chunk {i} differs")));
            }
        }
        Ok(())
    }
}
