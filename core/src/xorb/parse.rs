//! Walking and decoding chunk records (what the server's xorb checks and the
//! client's downloads are built on).

use crate::compression::{CompressionScheme, Decompressor};
use crate::constants::{MAX_XORB_BYTES, MAX_XORB_CHUNKS};
use crate::error::{Error, Result};

use super::chunk_header::{CHUNK_HEADER_LEN, ChunkHeader, is_footer_marker};
use super::footer::FOOTER_IDENT;

// `partial` waits for a whole header before deciding between a record and a
// footer: that is enough bytes to see the footer marker.
const _: () = assert!(FOOTER_IDENT.len() <= CHUNK_HEADER_LEN);

/// One chunk record, not decoded: its header and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawChunk<'a> {
    /// Index of the chunk in the records walked (in the whole xorb, under
    /// [`ChunkRecords::continuing`]).
    pub index: usize,
    /// Offset of the header in the bytes walked (always relative to those bytes).
    pub offset: usize,
    /// Offset of the chunk's data in the uncompressed stream of the records
    /// walked (of the whole xorb, under [`ChunkRecords::continuing`]).
    pub uncompressed_offset: usize,
    /// The checked header.
    pub header: ChunkHeader,
    /// The payload (`header.compressed_len()` bytes).
    pub payload: &'a [u8],
}

/// An iterator over the chunk records of a xorb or range body, checking each
/// header and the xorb limits but not decoding payloads.
///
/// Yields `Err` once for the first problem, then ends. Errors: a truncated
/// header or payload (unless [`partial`](Self::partial)), or a bad header,
/// gives [`Error::MalformedXorb`] (or [`Error::UnknownCompression`]); more
/// than [`MAX_XORB_CHUNKS`] chunks or [`MAX_XORB_BYTES`] raw bytes gives
/// [`Error::XorbTooLarge`].
#[derive(Debug, Clone)]
pub struct ChunkRecords<'a> {
    bytes: &'a [u8],
    pos: usize,
    index: usize,
    raw_len: usize,
    allow_footer: bool,
    partial: bool,
    footer_start: Option<usize>,
    done: bool,
}

impl<'a> ChunkRecords<'a> {
    /// Records of a range body: chunk records only (a footer marker is an error).
    pub fn new(body: &'a [u8]) -> Self {
        ChunkRecords {
            bytes: body,
            pos: 0,
            index: 0,
            raw_len: 0,
            allow_footer: false,
            partial: false,
            footer_start: None,
            done: false,
        }
    }

    /// Continues a walk begun on earlier bytes: the first record is chunk
    /// `index` and `raw_len` raw bytes came before it (for the limits and
    /// messages; offsets stay relative to the bytes given).
    pub fn continuing(self, index: usize, raw_len: usize) -> Self {
        ChunkRecords {
            index,
            raw_len,
            ..self
        }
    }

    /// For bytes still streaming in: an incomplete record at the end (or fewer
    /// bytes than a header, which could still be a footer marker) ends the walk
    /// without error, and [`position`](Self::position) is then where the whole
    /// records end. The header of an incomplete record is still checked.
    pub fn partial(self) -> Self {
        ChunkRecords {
            partial: true,
            ..self
        }
    }

    /// Records of a whole xorb, which may end with a storage footer: iteration
    /// stops at the footer marker and [`footer_start`](Self::footer_start) tells where it is.
    pub fn with_footer(xorb: &'a [u8]) -> Self {
        ChunkRecords {
            allow_footer: true,
            ..Self::new(xorb)
        }
    }

    /// Where the footer starts, once iteration reached it.
    pub fn footer_start(&self) -> Option<usize> {
        self.footer_start
    }

    /// Offset of the next record.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Raw bytes of the records walked so far (from the start of the xorb).
    pub fn raw_len(&self) -> usize {
        self.raw_len
    }

    fn next_record(&mut self) -> Result<Option<RawChunk<'a>>> {
        let rest = &self.bytes[self.pos..];
        if rest.is_empty() || (self.partial && rest.len() < CHUNK_HEADER_LEN) {
            return Ok(None);
        }
        if self.allow_footer && is_footer_marker(rest) {
            self.footer_start = Some(self.pos);
            return Ok(None);
        }
        let Some(head) = rest.first_chunk::<CHUNK_HEADER_LEN>() else {
            return Err(Error::MalformedXorb(format!(
                "chunk {}: truncated header at offset {} ({} bytes left)",
                self.index,
                self.pos,
                rest.len()
            )));
        };
        if self.index >= MAX_XORB_CHUNKS {
            return Err(Error::XorbTooLarge(format!(
                "more than {MAX_XORB_CHUNKS} chunks"
            )));
        }
        let header = ChunkHeader::parse(head, self.index)?;
        if self.raw_len + header.uncompressed_len() > MAX_XORB_BYTES {
            return Err(Error::XorbTooLarge(format!(
                "chunks hold more than {MAX_XORB_BYTES} raw bytes"
            )));
        }
        let Some(payload) = rest.get(CHUNK_HEADER_LEN..header.record_len()) else {
            if self.partial {
                return Ok(None);
            }
            return Err(Error::MalformedXorb(format!(
                "chunk {}: payload truncated ({} bytes declared, {} left)",
                self.index,
                header.compressed_len(),
                rest.len() - CHUNK_HEADER_LEN
            )));
        };
        let chunk = RawChunk {
            index: self.index,
            offset: self.pos,
            uncompressed_offset: self.raw_len,
            header,
            payload,
        };
        self.pos += header.record_len();
        self.index += 1;
        self.raw_len += header.uncompressed_len();
        Ok(Some(chunk))
    }
}

impl<'a> Iterator for ChunkRecords<'a> {
    type Item = Result<RawChunk<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_record().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

impl std::iter::FusedIterator for ChunkRecords<'_> {}

/// One decoded chunk, borrowed from a [`ChunkDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedChunk<'b> {
    /// Index of the chunk in the records decoded (see [`RawChunk::index`]).
    pub index: usize,
    /// Offset of its header in the bytes decoded.
    pub offset: usize,
    /// Offset of its data in the uncompressed stream (see [`RawChunk::uncompressed_offset`]).
    pub uncompressed_offset: usize,
    /// Its header.
    pub header: ChunkHeader,
    /// The uncompressed data (`header.uncompressed_len()` bytes).
    pub data: &'b [u8],
}

/// Decodes chunk records one at a time into one reused buffer (raw chunks are
/// borrowed from the input, not copied).
///
/// ```no_run
/// # use cas_core::xorb::ChunkDecoder;
/// # fn f(body: &[u8]) -> cas_core::Result<()> {
/// let mut decoder = ChunkDecoder::new(body);
/// while let Some(chunk) = decoder.next_chunk() {
///     let chunk = chunk?;
///     println!("chunk {}: {} bytes", chunk.index, chunk.data.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChunkDecoder<'a> {
    records: ChunkRecords<'a>,
    decompressor: Decompressor,
    buf: Vec<u8>,
}

impl<'a> ChunkDecoder<'a> {
    /// A decoder for a range body (chunk records only).
    pub fn new(body: &'a [u8]) -> Self {
        Self::from_records(ChunkRecords::new(body))
    }

    /// A decoder for a whole xorb that may end with a storage footer.
    pub fn with_footer(xorb: &'a [u8]) -> Self {
        Self::from_records(ChunkRecords::with_footer(xorb))
    }

    /// A decoder over a configured walk of records (see [`ChunkRecords::continuing`]
    /// and [`ChunkRecords::partial`]).
    pub fn from_records(records: ChunkRecords<'a>) -> Self {
        ChunkDecoder {
            records,
            decompressor: Decompressor::new(),
            buf: Vec::new(),
        }
    }

    /// Where the footer starts, once decoding reached it.
    pub fn footer_start(&self) -> Option<usize> {
        self.records.footer_start()
    }

    /// The walk of records underneath (position, index and raw length so far).
    pub fn records(&self) -> &ChunkRecords<'a> {
        &self.records
    }

    /// Decodes the next chunk; `None` at the end. After an error, returns `None`.
    pub fn next_chunk(&mut self) -> Option<Result<DecodedChunk<'_>>> {
        let raw = match self.records.next()? {
            Ok(raw) => raw,
            Err(e) => return Some(Err(e)),
        };
        let len = raw.header.uncompressed_len();
        let data: &[u8] = if raw.header.scheme() == CompressionScheme::None {
            if raw.payload.len() != len {
                self.records.done = true;
                return Some(Err(Error::Decompression {
                    index: raw.index,
                    reason: format!(
                        "uncompressed payload is {} bytes, header declares {len}",
                        raw.payload.len()
                    ),
                }));
            }
            raw.payload
        } else {
            // The header check bounds `len`; the buffer only ever grows to the
            // largest chunk seen.
            if self.buf.len() < len {
                self.buf.resize(len, 0);
            }
            let dst = &mut self.buf[..len];
            if let Err(e) =
                self.decompressor
                    .decompress_into(raw.index, raw.payload, raw.header.scheme(), dst)
            {
                self.records.done = true;
                return Some(Err(e));
            }
            dst
        };
        Some(Ok(DecodedChunk {
            index: raw.index,
            offset: raw.offset,
            uncompressed_offset: raw.uncompressed_offset,
            header: raw.header,
            data,
        }))
    }
}

/// Decodes every chunk of a range body, handing each to `f` in order; returns
/// the number of chunks. Stops at the first error, from decoding or from `f`.
pub fn decode_chunk_records<E: From<Error>>(
    body: &[u8],
    mut f: impl FnMut(&DecodedChunk<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<usize, E> {
    let mut decoder = ChunkDecoder::new(body);
    let mut n = 0;
    while let Some(chunk) = decoder.next_chunk() {
        f(&chunk?)?;
        n += 1;
    }
    Ok(n)
}

/// Decodes a range body (the chunk records of a ranged fetch) and appends the
/// uncompressed bytes to `out`.
///
/// Returns the chunk boundaries relative to where the data starts in `out`:
/// `n + 1` offsets, `0` first and the total length last, so chunk `i` is
/// `out[start + b[i]..start + b[i + 1]]`. An empty body is an error (a fetch
/// covers at least one chunk), as is anything [`ChunkDecoder`] rejects; on
/// error `out` is left as it was.
pub fn decode_range_body(body: &[u8], out: &mut Vec<u8>) -> Result<Vec<usize>> {
    if body.is_empty() {
        return Err(Error::MalformedXorb("empty range body".into()));
    }
    let start = out.len();
    let mut decompressor = Decompressor::new();
    let mut bounds = vec![0];
    let mut run = || -> Result<()> {
        for raw in ChunkRecords::new(body) {
            let raw = raw?;
            decompressor.decompress_chunk(
                raw.index,
                raw.payload,
                raw.header.scheme(),
                raw.header.uncompressed_len(),
                out,
            )?;
            bounds.push(out.len() - start);
        }
        Ok(())
    };
    match run() {
        Ok(()) => Ok(bounds),
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// The longest prefix of `bytes` made of whole chunk records, as `(bytes,
/// records)`, for decoding a range body as it streams in: that prefix can be
/// decoded now, the rest waits for more bytes. The prefix stops before a
/// record that would take its chunks' uncompressed bytes past `max_raw`
/// (though it always holds the first whole record), so that what one call
/// hands on decodes to a bounded size however well it compressed. Each
/// header in the prefix is checked (chunk `first_index` is the first, for
/// messages); an incomplete record at the end is not an error here, only
/// the end of the prefix.
pub fn complete_records_len(
    bytes: &[u8],
    first_index: usize,
    max_raw: usize,
) -> Result<(usize, usize)> {
    let mut records = ChunkRecords::new(bytes)
        .continuing(first_index, 0)
        .partial();
    let (mut end, mut raw, mut whole) = (0, 0usize, 0);
    while let Some(record) = records.next().transpose()? {
        let len = record.header.uncompressed_len();
        if whole > 0 && raw + len > max_raw {
            break;
        }
        raw += len;
        end = record.offset + record.header.record_len();
        whole += 1;
    }
    Ok((end, whole))
}
