//! Checking a whole xorb (server write path), in one go or as it streams in.
//!
//! [`XorbValidator`] holds the rules; [`parse_xorb`] and [`validate_xorb`]
//! are it applied to bytes already in memory.

use std::ops::Range;

use crate::constants::MAX_SERIALIZED_XORB_BYTES;
use crate::error::{Error, Result};
use crate::hash::{MerkleHash, chunk_hash};
use crate::merkle::xorb_hash;

use super::footer::XorbFooter;
use super::parse::{ChunkDecoder, ChunkRecords};
use super::{ChunkInfo, chunk_byte_range, xorb_raw_len};

/// A fully checked xorb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedXorb {
    /// The xorb hash recomputed from the chunks.
    pub hash: MerkleHash,
    /// Every chunk, with its recomputed hash.
    pub chunks: Vec<ChunkInfo>,
    /// Length of the chunk records (the offset of the footer, if any).
    pub body_len: usize,
    /// The storage footer, if the bytes ended with one (checked against the chunks).
    pub footer: Option<XorbFooter>,
}

impl ParsedXorb {
    /// Number of chunks.
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Total uncompressed length of the chunks.
    pub fn raw_len(&self) -> usize {
        xorb_raw_len(&self.chunks)
    }

    /// The footer to store with this xorb: the parsed one if present (keeping
    /// its reserved bytes), else a fresh one.
    pub fn storage_footer(&self) -> XorbFooter {
        self.footer
            .clone()
            .unwrap_or_else(|| XorbFooter::from_chunks(self.hash, &self.chunks))
    }

    /// The serialized byte range of chunks `chunks` (see [`chunk_byte_range`]).
    pub fn byte_range(&self, chunks: Range<usize>) -> Option<Range<usize>> {
        chunk_byte_range(&self.chunks, chunks)
    }

    /// Checks the recomputed hash against the name the xorb was uploaded under
    /// ([`Error::XorbHashMismatch`] if they differ).
    pub fn check_hash(&self, expected: &MerkleHash) -> Result<()> {
        if self.hash != *expected {
            return Err(Error::XorbHashMismatch {
                expected: *expected,
                actual: self.hash,
            });
        }
        Ok(())
    }
}

/// Checks a serialized xorb as its bytes arrive, with exactly the rules of
/// [`parse_xorb`], so that a server can pass on each checked part while the
/// rest is still on its way.
///
/// Hand the bytes over in order: [`check_records`](Self::check_records)
/// decodes and hashes the whole chunk records at the start of what it is
/// given and says how many bytes they take; keep the rest and give it again,
/// followed by the next bytes. Once a storage footer begins
/// ([`footer_started`](Self::footer_started)), or the upload has ended, pass
/// everything left to [`finish`](Self::finish), which checks it (the last
/// records, or the footer) and gives the [`ParsedXorb`]. A footer is at most
/// [`MAX_FOOTER_LEN`](super::MAX_FOOTER_LEN) bytes, so a caller need not keep
/// more than that once it began. After an error the xorb is refused: the
/// validator is not to be used again.
///
/// ```
/// # use cas_core::xorb::{XorbBuilder, XorbValidator};
/// # let mut b = XorbBuilder::new();
/// # b.add_chunk(&[7u8; 5000])?;
/// # b.add_chunk(&[8u8; 3000])?;
/// # let xorb = b.finish()?;
/// let mut validator = XorbValidator::new();
/// let mut pending = Vec::new();
/// for piece in xorb.bytes.chunks(1000) {
///     pending.extend_from_slice(piece);
///     let checked = validator.check_records(&pending)?;
///     pending.drain(..checked); // those bytes can be passed on
/// }
/// let parsed = validator.finish(&pending)?;
/// assert_eq!(parsed.hash, xorb.hash);
/// # Ok::<(), cas_core::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct XorbValidator {
    chunks: Vec<ChunkInfo>,
    records_len: usize,
    raw_len: usize,
    footer_started: bool,
}

impl XorbValidator {
    /// A validator expecting the first byte of a xorb.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serialized bytes of the chunk records checked so far.
    pub fn records_len(&self) -> usize {
        self.records_len
    }

    /// Whether a storage footer begins right after the records checked: all
    /// that follows belongs to it and goes to [`finish`](Self::finish).
    pub fn footer_started(&self) -> bool {
        self.footer_started
    }

    /// Checks the whole chunk records at the start of `bytes` (the bytes that
    /// follow those checked so far) and returns how many bytes they take.
    ///
    /// Stops without error at an incomplete record (its header is checked
    /// already) and at a footer marker; errors are those of [`parse_xorb`]
    /// (with chunk indices and limits counted from the start of the xorb).
    pub fn check_records(&mut self, bytes: &[u8]) -> Result<usize> {
        if self.footer_started {
            return Ok(0);
        }
        check_total_len(self.records_len.saturating_add(bytes.len()))?;
        self.walk(
            ChunkRecords::with_footer(bytes)
                .continuing(self.chunks.len(), self.raw_len)
                .partial(),
            |_, _| {},
        )
    }

    /// Checks what followed the last whole record (nothing, the last records,
    /// a storage footer, or both) and returns the checked xorb: at least one
    /// chunk, records ending exactly at the end or at a footer that parses
    /// completely and agrees with the chunks and the hash.
    pub fn finish(self, rest: &[u8]) -> Result<ParsedXorb> {
        self.finish_with(rest, |_, _| {})
    }

    /// [`finish`](Self::finish), handing each chunk `rest` holds to `f` with its
    /// decoded data as it is checked.
    fn finish_with(mut self, rest: &[u8], f: impl FnMut(&ChunkInfo, &[u8])) -> Result<ParsedXorb> {
        check_total_len(self.records_len.saturating_add(rest.len()))?;
        let checked = if self.footer_started {
            0
        } else {
            self.walk(
                ChunkRecords::with_footer(rest).continuing(self.chunks.len(), self.raw_len),
                f,
            )?
        };
        if self.chunks.is_empty() {
            return Err(Error::MalformedXorb(
                "a xorb needs at least one chunk".into(),
            ));
        }
        let leaves: Vec<(MerkleHash, u64)> = self.chunks.iter().map(ChunkInfo::leaf).collect();
        let hash = xorb_hash(&leaves);
        let footer = if self.footer_started {
            let footer = XorbFooter::parse(&rest[checked..])?;
            footer.check_matches(&hash, &self.chunks)?;
            Some(footer)
        } else {
            None
        };
        Ok(ParsedXorb {
            hash,
            chunks: self.chunks,
            body_len: self.records_len,
            footer,
        })
    }

    /// Decodes and hashes the records `records` yields (offsets relative to
    /// the bytes it walks, which start at `self.records_len`), recording each
    /// chunk; returns the bytes they take.
    fn walk(
        &mut self,
        records: ChunkRecords<'_>,
        mut f: impl FnMut(&ChunkInfo, &[u8]),
    ) -> Result<usize> {
        let base = self.records_len;
        let mut decoder = ChunkDecoder::from_records(records);
        while let Some(chunk) = decoder.next_chunk() {
            let chunk = chunk?;
            let info = ChunkInfo {
                hash: chunk_hash(chunk.data),
                scheme: chunk.header.scheme(),
                serialized_offset: base + chunk.offset,
                serialized_len: chunk.header.record_len(),
                uncompressed_offset: chunk.uncompressed_offset,
                uncompressed_len: chunk.data.len(),
            };
            f(&info, chunk.data);
            self.chunks.push(info);
        }
        let records = decoder.records();
        let checked = records.position();
        self.records_len = base + checked;
        self.raw_len = records.raw_len();
        self.footer_started = records.footer_start().is_some();
        Ok(checked)
    }
}

fn check_total_len(len: usize) -> Result<()> {
    if len > MAX_SERIALIZED_XORB_BYTES {
        return Err(Error::XorbTooLarge(format!(
            "{len} serialized bytes exceed the {MAX_SERIALIZED_XORB_BYTES}-byte limit"
        )));
    }
    Ok(())
}

/// Parses and fully checks a serialized xorb, with or without a storage footer.
///
/// In order: the input length (at most [`MAX_SERIALIZED_XORB_BYTES`], checked
/// before any work); each record's header and the xorb limits; each payload
/// decodes to exactly its declared length (bounded, into one reused buffer);
/// each chunk is hashed, and the xorb hash computed. The records must end
/// exactly at the end of the input or at a footer, which must then parse
/// completely and agree with the chunks and the hash. At least one chunk is
/// required. (The same checks as bytes stream in: [`XorbValidator`].)
pub fn parse_xorb(bytes: &[u8]) -> Result<ParsedXorb> {
    parse_xorb_with(bytes, |_, _| {})
}

/// [`parse_xorb`], also handing each chunk's decoded data to `f` as it is checked.
pub fn parse_xorb_with(bytes: &[u8], f: impl FnMut(&ChunkInfo, &[u8])) -> Result<ParsedXorb> {
    XorbValidator::new().finish_with(bytes, f)
}

/// [`parse_xorb`], then checks the recomputed hash against the name the xorb
/// was uploaded under ([`Error::XorbHashMismatch`] if they differ).
pub fn validate_xorb(bytes: &[u8], expected: &MerkleHash) -> Result<ParsedXorb> {
    let parsed = parse_xorb(bytes)?;
    parsed.check_hash(expected)?;
    Ok(parsed)
}
