//! Parsing and validating shard bytes.
//!
//! The parser is strict: every byte is either part of the returned value or
//! checked (tag, versions, reserved and padding fields zero, no unknown flag
//! bits, bookends, footer offsets and counts, lookup tables complete and sorted).
//! So a shard that parses is re-written byte for byte by the writer, except for
//! the order of colliding lookup keys and for absent (empty) lookup tables.
//!
//! Every count is checked against the bytes that remain before anything is
//! allocated for it, so a hostile count costs nothing.

use super::format::{
    FileInfo, FileTerm, ParsedShard, Shard, ShardFooter, XorbChunk, XorbInfo, sha256_from_stored,
};
use super::lookup::{ChunkLookupEntry, FileLookupEntry, LookupTables, XorbLookupEntry};
use super::{
    BOOKEND_HASH, CHUNK_FLAG_GLOBAL_DEDUP, CHUNK_LOOKUP_ENTRY_SIZE, FILE_FLAG_WITH_METADATA_EXT,
    FILE_FLAG_WITH_VERIFICATION, FILE_LOOKUP_ENTRY_SIZE, FOOTER_SIZE, FOOTER_VERSION, HEADER_SIZE,
    HEADER_TAG, HEADER_VERSION, RECORD_SIZE, XORB_LOOKUP_ENTRY_SIZE,
};
use crate::constants::MAX_SHARD_BYTES;
use crate::error::{Error, Result};
use crate::hash::MerkleHash;

fn malformed(msg: impl Into<String>) -> Error {
    Error::MalformedShard(msg.into())
}

/// One 48-byte record: a hash and four little-endian u32 words.
struct Record {
    hash: MerkleHash,
    words: [u32; 4],
}

impl Record {
    fn padding_is_zero(&self) -> bool {
        self.words == [0; 4]
    }
}

/// Reads 48-byte records from `bytes[pos..end]`.
struct Records<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl Records<'_> {
    /// Whole records left before `end`.
    fn remaining(&self) -> u64 {
        (self.end.saturating_sub(self.pos) / RECORD_SIZE) as u64
    }

    /// The next record, or an error naming `section` and the offset.
    fn next(&mut self, section: &str) -> Result<Record> {
        let start = self.pos;
        let rec = start
            .checked_add(RECORD_SIZE)
            .filter(|&e| e <= self.end)
            .and_then(|e| self.bytes.get(start..e))
            .ok_or_else(|| {
                malformed(format!(
                    "{section}: the record at byte {start} is cut short by the end of the shard \
                     (section not closed by a bookend?)"
                ))
            })?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&rec[..32]);
        let mut words = [0u32; 4];
        for (i, w) in words.iter_mut().enumerate() {
            let mut b = [0u8; 4];
            b.copy_from_slice(&rec[32 + 4 * i..36 + 4 * i]);
            *w = u32::from_le_bytes(b);
        }
        self.pos = start + RECORD_SIZE;
        Ok(Record {
            hash: MerkleHash(hash),
            words,
        })
    }
}

/// Parses a shard of at most [`MAX_SHARD_BYTES`] bytes, with or without footer.
pub fn parse_shard(bytes: &[u8]) -> Result<ParsedShard> {
    parse_shard_with_limit(bytes, MAX_SHARD_BYTES)
}

/// Parses a shard, rejecting it up front if it is larger than `limit` bytes.
pub fn parse_shard_with_limit(bytes: &[u8], limit: usize) -> Result<ParsedShard> {
    if bytes.len() > limit {
        return Err(Error::ShardTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let footer_size = parse_header(bytes)?;
    let body_end = if footer_size == 0 {
        bytes.len()
    } else {
        bytes
            .len()
            .checked_sub(FOOTER_SIZE)
            .filter(|&e| e >= HEADER_SIZE)
            .ok_or_else(|| {
                malformed(format!(
                    "the header declares a {FOOTER_SIZE}-byte footer, but the shard is only {} bytes",
                    bytes.len()
                ))
            })?
    };

    let mut recs = Records {
        bytes,
        pos: HEADER_SIZE,
        end: body_end,
    };
    let files = parse_file_section(&mut recs)?;
    let xorb_info_offset = recs.pos;
    let xorbs = parse_xorb_section(&mut recs)?;
    let sections_end = recs.pos;
    let shard = Shard { files, xorbs };

    if footer_size == 0 {
        if sections_end != bytes.len() {
            return Err(malformed(format!(
                "{} unexpected bytes after the CAS-info bookend (ending at byte {sections_end}) \
                 in a shard whose header declares no footer",
                bytes.len() - sections_end
            )));
        }
        return Ok(ParsedShard {
            shard,
            footer: None,
        });
    }

    let footer = parse_footer(
        bytes,
        &shard,
        xorb_info_offset as u64,
        sections_end as u64,
        body_end,
    )?;
    Ok(ParsedShard {
        shard,
        footer: Some(footer),
    })
}

/// Checks the header; returns the declared footer size (0 or [`FOOTER_SIZE`]).
fn parse_header(bytes: &[u8]) -> Result<u64> {
    let h = bytes.get(..HEADER_SIZE).ok_or_else(|| {
        malformed(format!(
            "the shard is {} bytes, shorter than its {HEADER_SIZE}-byte header",
            bytes.len()
        ))
    })?;
    if h[..32] != HEADER_TAG {
        return Err(malformed(
            "bytes 0..32 are not the shard tag \"HFRepoMetaData\\0…\": not a shard",
        ));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[32..40]);
    let version = u64::from_le_bytes(b);
    if version != HEADER_VERSION {
        return Err(malformed(format!(
            "header version {version} at byte 32, expected {HEADER_VERSION}"
        )));
    }
    b.copy_from_slice(&h[40..48]);
    let footer_size = u64::from_le_bytes(b);
    if footer_size != 0 && footer_size != FOOTER_SIZE as u64 {
        return Err(malformed(format!(
            "header footer_size {footer_size} at byte 40, expected 0 or {FOOTER_SIZE}"
        )));
    }
    Ok(footer_size)
}

fn parse_file_section(recs: &mut Records<'_>) -> Result<Vec<FileInfo>> {
    const SECTION: &str = "file-info section";
    let mut files = Vec::new();
    loop {
        let off = recs.pos;
        let fi = files.len();
        let head = recs.next(SECTION)?;
        if head.hash == BOOKEND_HASH {
            if !head.padding_is_zero() {
                return Err(malformed(format!(
                    "file-info bookend at byte {off}: bytes 32..48 must be zero"
                )));
            }
            return Ok(files);
        }
        let what = || format!("file {fi} (header at byte {off})");
        let [flags, num_entries, reserved_lo, reserved_hi] = head.words;
        let known = FILE_FLAG_WITH_VERIFICATION | FILE_FLAG_WITH_METADATA_EXT;
        if flags & !known != 0 {
            return Err(malformed(format!(
                "{}: unknown flag bits {:#010x} in flags {flags:#010x}",
                what(),
                flags & !known
            )));
        }
        if reserved_lo != 0 || reserved_hi != 0 {
            return Err(malformed(format!(
                "{}: the reserved u64 at bytes 40..48 is not zero",
                what()
            )));
        }
        let with_verification = flags & FILE_FLAG_WITH_VERIFICATION != 0;
        let with_ext = flags & FILE_FLAG_WITH_METADATA_EXT != 0;
        let n = u64::from(num_entries);
        let following = n * if with_verification { 2 } else { 1 } + u64::from(with_ext);
        if following > recs.remaining() {
            return Err(malformed(format!(
                "{}: declares {num_entries} terms{}{} ({following} records of {RECORD_SIZE} bytes), \
                 but only {} whole records remain",
                what(),
                if with_verification {
                    " with verification"
                } else {
                    ""
                },
                if with_ext {
                    " and a metadata extension"
                } else {
                    ""
                },
                recs.remaining()
            )));
        }

        // `n` is now bounded by the input size.
        let mut terms = Vec::with_capacity(n as usize);
        for ti in 0..n {
            let roff = recs.pos;
            let r = recs.next(SECTION)?;
            let [term_flags, unpacked_bytes, chunk_start, chunk_end] = r.words;
            if term_flags != 0 {
                return Err(malformed(format!(
                    "{}, term {ti} at byte {roff}: flags {term_flags:#010x} must be zero",
                    what()
                )));
            }
            terms.push(FileTerm {
                xorb_hash: r.hash,
                unpacked_bytes,
                chunk_start,
                chunk_end,
            });
        }
        let verification = if with_verification {
            let mut v = Vec::with_capacity(n as usize);
            for ti in 0..n {
                let roff = recs.pos;
                let r = recs.next(SECTION)?;
                if !r.padding_is_zero() {
                    return Err(malformed(format!(
                        "{}, verification entry {ti} at byte {roff}: bytes 32..48 must be zero",
                        what()
                    )));
                }
                v.push(r.hash);
            }
            Some(v)
        } else {
            None
        };
        let sha256 = if with_ext {
            let roff = recs.pos;
            let r = recs.next(SECTION)?;
            if !r.padding_is_zero() {
                return Err(malformed(format!(
                    "{}, metadata extension at byte {roff}: bytes 32..48 must be zero",
                    what()
                )));
            }
            Some(sha256_from_stored(&r.hash))
        } else {
            None
        };
        files.push(FileInfo {
            file_hash: head.hash,
            terms,
            verification,
            sha256,
        });
    }
}

fn parse_xorb_section(recs: &mut Records<'_>) -> Result<Vec<XorbInfo>> {
    const SECTION: &str = "CAS-info section";
    let mut xorbs = Vec::new();
    loop {
        let off = recs.pos;
        let xi = xorbs.len();
        let head = recs.next(SECTION)?;
        if head.hash == BOOKEND_HASH {
            if !head.padding_is_zero() {
                return Err(malformed(format!(
                    "CAS-info bookend at byte {off}: bytes 32..48 must be zero"
                )));
            }
            return Ok(xorbs);
        }
        let what = || format!("xorb {xi} (header at byte {off})");
        let [flags, num_entries, num_bytes_in_xorb, num_bytes_on_disk] = head.words;
        if flags != 0 {
            return Err(malformed(format!(
                "{}: flags {flags:#010x} must be zero",
                what()
            )));
        }
        let n = u64::from(num_entries);
        if n > recs.remaining() {
            return Err(malformed(format!(
                "{}: declares {num_entries} chunks ({RECORD_SIZE} bytes each), \
                 but only {} whole records remain",
                what(),
                recs.remaining()
            )));
        }
        let mut chunks = Vec::with_capacity(n as usize);
        for ci in 0..n {
            let roff = recs.pos;
            let r = recs.next(SECTION)?;
            let [byte_range_start, unpacked_bytes, chunk_flags, unused] = r.words;
            if chunk_flags & !CHUNK_FLAG_GLOBAL_DEDUP != 0 {
                return Err(malformed(format!(
                    "{}, chunk {ci} at byte {roff}: unknown flag bits {:#010x}",
                    what(),
                    chunk_flags & !CHUNK_FLAG_GLOBAL_DEDUP
                )));
            }
            if unused != 0 {
                return Err(malformed(format!(
                    "{}, chunk {ci} at byte {roff}: the unused u32 at bytes 44..48 is not zero",
                    what()
                )));
            }
            chunks.push(XorbChunk {
                hash: r.hash,
                byte_range_start,
                unpacked_bytes,
                global_dedup: chunk_flags & CHUNK_FLAG_GLOBAL_DEDUP != 0,
            });
        }
        xorbs.push(XorbInfo {
            hash: head.hash,
            chunks,
            num_bytes_in_xorb,
            num_bytes_on_disk,
        });
    }
}

/// Reads the little-endian u64 at `off` of the footer (offsets are constants below 200).
fn footer_u64(f: &[u8; FOOTER_SIZE], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&f[off..off + 8]);
    u64::from_le_bytes(b)
}

/// Checks one lookup table's place: it starts at `offset`, which must be `expected_offset`,
/// and its `count` entries of `entry_size` bytes end at or before `limit`; returns its end.
fn table_span(
    name: &str,
    offset: u64,
    expected_offset: u64,
    count: u64,
    entry_size: usize,
    limit: u64,
) -> Result<u64> {
    if offset != expected_offset {
        return Err(malformed(format!(
            "footer: {name} lookup offset is {offset}, expected {expected_offset}"
        )));
    }
    count
        .checked_mul(entry_size as u64)
        .and_then(|len| offset.checked_add(len))
        .filter(|&end| end <= limit)
        .ok_or_else(|| {
            malformed(format!(
                "footer: {name} lookup table of {count} entries at byte {offset} \
                 runs past the footer at byte {limit}"
            ))
        })
}

fn parse_footer(
    bytes: &[u8],
    shard: &Shard,
    xorb_info_offset: u64,
    sections_end: u64,
    body_end: usize,
) -> Result<ShardFooter> {
    let f: &[u8; FOOTER_SIZE] = bytes
        .get(body_end..)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| malformed("footer: not 200 bytes"))?;
    let at = |i: usize| footer_u64(f, 8 * i);

    let version = at(0);
    if version != FOOTER_VERSION {
        return Err(malformed(format!(
            "footer version {version} at byte {body_end}, expected {FOOTER_VERSION}"
        )));
    }
    if at(1) != HEADER_SIZE as u64 {
        return Err(malformed(format!(
            "footer: file_info_offset is {}, expected {HEADER_SIZE}",
            at(1)
        )));
    }
    if at(2) != xorb_info_offset {
        return Err(malformed(format!(
            "footer: xorb_info_offset is {}, but the CAS-info section starts at byte {xorb_info_offset}",
            at(2)
        )));
    }
    let footer_offset = footer_u64(f, 192);
    if footer_offset != body_end as u64 {
        return Err(malformed(format!(
            "footer: footer_offset is {footer_offset}, but the footer starts at byte {body_end}"
        )));
    }
    let limit = body_end as u64;
    let (file_off, file_n) = (at(3), at(4));
    let (xorb_off, xorb_n) = (at(5), at(6));
    let (chunk_off, chunk_n) = (at(7), at(8));
    let file_end = table_span(
        "file",
        file_off,
        sections_end,
        file_n,
        FILE_LOOKUP_ENTRY_SIZE,
        limit,
    )?;
    let xorb_end = table_span(
        "xorb",
        xorb_off,
        file_end,
        xorb_n,
        XORB_LOOKUP_ENTRY_SIZE,
        limit,
    )?;
    let chunk_end = table_span(
        "chunk",
        chunk_off,
        xorb_end,
        chunk_n,
        CHUNK_LOOKUP_ENTRY_SIZE,
        limit,
    )?;
    if chunk_end != limit {
        return Err(malformed(format!(
            "footer: {} unexplained bytes between the chunk lookup table (ending at byte {chunk_end}) \
             and the footer",
            limit - chunk_end
        )));
    }

    let mut key = [0u8; 32];
    key.copy_from_slice(&f[72..104]);
    let key = MerkleHash(key);
    if (15..21).any(|i| at(i) != 0) {
        return Err(malformed(format!(
            "footer: the reserved bytes {}..{} are not zero",
            body_end + 120,
            body_end + 168
        )));
    }

    // The spans above are in bounds, so these slices are too; `get` keeps it panic-free.
    let table = |start: u64, end: u64| -> Result<&[u8]> {
        bytes
            .get(start as usize..end as usize)
            .ok_or_else(|| malformed("footer: lookup table out of bounds"))
    };
    let expected = LookupTables::build(&shard.files, &shard.xorbs)?;
    let files: Vec<FileLookupEntry> = table(file_off, file_end)?
        .chunks_exact(FILE_LOOKUP_ENTRY_SIZE)
        .map(|e| FileLookupEntry {
            key: le_u64(&e[..8]),
            index: le_u32(&e[8..12]),
        })
        .collect();
    check_table("file", file_off, files, &expected.files)?;
    let xorbs: Vec<XorbLookupEntry> = table(xorb_off, xorb_end)?
        .chunks_exact(XORB_LOOKUP_ENTRY_SIZE)
        .map(|e| XorbLookupEntry {
            key: le_u64(&e[..8]),
            index: le_u32(&e[8..12]),
        })
        .collect();
    check_table("xorb", xorb_off, xorbs, &expected.xorbs)?;
    let chunks: Vec<ChunkLookupEntry> = table(chunk_off, chunk_end)?
        .chunks_exact(CHUNK_LOOKUP_ENTRY_SIZE)
        .map(|e| ChunkLookupEntry {
            key: le_u64(&e[..8]),
            xorb_index: le_u32(&e[8..12]),
            chunk_index: le_u32(&e[12..16]),
        })
        .collect();
    check_table("chunk", chunk_off, chunks, &expected.chunks)?;

    Ok(ShardFooter {
        hmac_key: (!key.is_zero()).then_some(key),
        creation_timestamp: at(13),
        key_expiry: at(14),
        stored_bytes_on_disk: at(21),
        materialized_bytes: at(22),
        stored_bytes: at(23),
        has_file_lookup: file_n != 0,
        has_xorb_lookup: xorb_n != 0,
        has_chunk_lookup: chunk_n != 0,
    })
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

/// Entries with a sort key (the truncated hash).
trait Keyed: Ord + Copy {
    fn key(&self) -> u64;
}
impl Keyed for FileLookupEntry {
    fn key(&self) -> u64 {
        self.key
    }
}
impl Keyed for XorbLookupEntry {
    fn key(&self) -> u64 {
        self.key
    }
}
impl Keyed for ChunkLookupEntry {
    fn key(&self) -> u64 {
        self.key
    }
}

/// A lookup table must be empty, or sorted by key and hold exactly the expected entries.
fn check_table<T: Keyed>(name: &str, offset: u64, mut got: Vec<T>, expected: &[T]) -> Result<()> {
    if got.is_empty() {
        return Ok(());
    }
    if got.len() != expected.len() {
        return Err(malformed(format!(
            "{name} lookup table at byte {offset}: {} entries, but the shard has {}",
            got.len(),
            expected.len()
        )));
    }
    if let Some(i) = got.windows(2).position(|w| w[0].key() > w[1].key()) {
        return Err(malformed(format!(
            "{name} lookup table at byte {offset}: not sorted by key at entry {}",
            i + 1
        )));
    }
    // Colliding keys may come in any order; compare as sorted lists.
    got.sort_unstable();
    if let Some(i) = got.iter().zip(expected).position(|(g, e)| g != e) {
        return Err(malformed(format!(
            "{name} lookup table at byte {offset}: does not match the shard's sections \
             (first difference among entries with key {:#018x})",
            got[i].key().min(expected[i].key())
        )));
    }
    Ok(())
}
