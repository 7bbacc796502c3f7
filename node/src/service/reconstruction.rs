//! File reconstruction: which chunk ranges of which xorbs rebuild a file or a byte
//! range of it, and where to fetch their bytes.
//!
//! Terms are trimmed to the chunks the requested range needs. For each xorb, the chunk
//! ranges of its terms are merged into disjoint fetch ranges, so every term lies inside
//! exactly one fetch range (the Xet client requires that). Fetch URLs are presigned
//! S3 GETs of the whole xorb object: self-authorising, and valid for any sub-range.

use std::collections::BTreeMap;
use std::ops::Range;

use cas_core::hash::MerkleHash;

use super::records::{XorbLayout, hash_from};
use super::{CasService, ServiceError};
use crate::store::keys::xorb_key;

/// A byte range of a file, `start..=end` (inclusive end, as in HTTP `Range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive); may exceed the file, then the range stops at its end.
    pub end: u64,
}

/// One term of a reconstruction: chunks of one xorb, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconstructionTerm {
    /// The xorb.
    pub xorb: MerkleHash,
    /// Chunk indices `[start, end)` in the xorb.
    pub chunks: Range<u32>,
    /// Uncompressed bytes of those chunks.
    pub unpacked_len: u64,
}

/// A contiguous range of a xorb to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRange {
    /// Chunk indices `[start, end)`.
    pub chunks: Range<u32>,
    /// Serialized bytes `start..=end` (inclusive end) of those chunks in the object.
    pub bytes: (u64, u64),
}

/// Where to fetch a xorb's needed ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XorbFetch {
    /// The xorb.
    pub xorb: MerkleHash,
    /// A self-authorising URL of the xorb object.
    pub url: String,
    /// The ranges to fetch, sorted and disjoint.
    pub ranges: Vec<FetchRange>,
}

/// How to rebuild a file or a byte range of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconstruction {
    /// The file's total size.
    pub file_size: u64,
    /// Bytes to skip at the start of the first term's data.
    pub offset_into_first_range: u64,
    /// The terms, in file order.
    pub terms: Vec<ReconstructionTerm>,
    /// Fetch ranges per xorb, in order of first use.
    pub fetches: Vec<XorbFetch>,
}

impl CasService {
    /// The reconstruction of `file`, or of `range` of it.
    ///
    /// Errors: [`ServiceError::FileNotFound`]; [`ServiceError::RangeNotSatisfiable`] when
    /// the range starts at or after the end of the file.
    pub async fn reconstruction(
        &self,
        file: &MerkleHash,
        range: Option<ByteRange>,
    ) -> Result<Reconstruction, ServiceError> {
        let record = self
            .file_record(file)
            .await?
            .ok_or(ServiceError::FileNotFound(*file))?;
        let size = record.size;
        let (start, end) = match range {
            None => (0, size),
            Some(r) if r.start >= size || r.end < r.start => {
                return Err(ServiceError::RangeNotSatisfiable {
                    start: r.start,
                    size,
                });
            }
            Some(r) => (r.start, r.end.saturating_add(1).min(size)),
        };

        let mut layouts: BTreeMap<MerkleHash, XorbLayout> = BTreeMap::new();
        let mut order: Vec<MerkleHash> = Vec::new();
        let mut terms = Vec::new();
        let mut offset_into_first_range = 0;
        let mut pos: u64 = 0; // file offset of the current term's first byte
        for t in &record.terms {
            let term_len = u64::from(t.unpacked_len);
            let (term_start, term_end) = (pos, pos + term_len);
            pos = term_end;
            if term_end <= start || term_start >= end {
                continue;
            }
            let xorb = hash_from(&t.xorb_hash, "file record term")?;
            if let std::collections::btree_map::Entry::Vacant(slot) = layouts.entry(xorb) {
                let layout = self.xorb_layout(&xorb)?.ok_or_else(|| {
                    ServiceError::Inconsistent(format!(
                        "file {file} references unknown xorb {xorb}"
                    ))
                })?;
                slot.insert(layout);
                order.push(xorb);
            }
            let layout = &layouts[&xorb];
            if t.chunk_start >= t.chunk_end || t.chunk_end > layout.num_chunks() {
                return Err(ServiceError::Inconsistent(format!(
                    "file {file}: term range [{}, {}) outside xorb {xorb}",
                    t.chunk_start, t.chunk_end
                )));
            }
            // Trim the chunks wholly before `start` or wholly after `end`.
            let (mut first, mut last) = (t.chunk_start, t.chunk_end);
            let mut first_offset = term_start;
            while first + 1 < last && first_offset + u64::from(layout.chunk_len(first)) <= start {
                first_offset += u64::from(layout.chunk_len(first));
                first += 1;
            }
            let mut last_offset = term_end; // end offset of chunk `last - 1`
            while last - 1 > first && last_offset - u64::from(layout.chunk_len(last - 1)) >= end {
                last_offset -= u64::from(layout.chunk_len(last - 1));
                last -= 1;
            }
            if terms.is_empty() {
                offset_into_first_range = start - first_offset;
            }
            terms.push(ReconstructionTerm {
                xorb,
                chunks: first..last,
                unpacked_len: last_offset - first_offset,
            });
        }

        let mut fetches = Vec::with_capacity(order.len());
        for xorb in order {
            let layout = &layouts[&xorb];
            let mut ranges: Vec<Range<u32>> = terms
                .iter()
                .filter(|t| t.xorb == xorb)
                .map(|t| t.chunks.clone())
                .collect();
            ranges.sort_by_key(|r| r.start);
            let mut merged: Vec<Range<u32>> = Vec::with_capacity(ranges.len());
            for r in ranges {
                match merged.last_mut() {
                    Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
                    _ => merged.push(r),
                }
            }
            let url = self.store().presigned_get(&xorb_key(&xorb)).await?;
            fetches.push(XorbFetch {
                xorb,
                url,
                ranges: merged
                    .into_iter()
                    .map(|c| {
                        let (s, e) = layout.byte_range(c.start, c.end);
                        FetchRange {
                            chunks: c,
                            bytes: (s, e - 1),
                        }
                    })
                    .collect(),
            });
        }
        Ok(Reconstruction {
            file_size: size,
            offset_into_first_range,
            terms,
            fetches,
        })
    }
}
