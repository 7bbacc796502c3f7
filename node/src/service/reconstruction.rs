//! File reconstruction: which chunk ranges of which xorbs rebuild a file or a byte
//! range of it, and where to fetch their bytes.
//!
//! Terms are trimmed to the chunks the requested range needs. For each xorb, the chunk
//! ranges of its terms are merged into disjoint fetch ranges, which are then cut at
//! chunk boundaries into pieces of at most [`FETCH_RANGE_BYTES`] (a term crossing a
//! cut becomes one term per piece), so every term lies inside exactly one fetch range
//! (the Xet client requires that). Small pieces let a client decode one while it
//! fetches the next and keep its buffers small, instead of holding whole 64 MiB
//! xorbs in memory. Fetch URLs are presigned S3 GETs of the whole xorb object:
//! self-authorising, and valid for any sub-range.

use std::collections::BTreeMap;
use std::ops::Range;

use cas_core::hash::MerkleHash;

use super::records::{XorbLayout, hash_from};
use super::{CasService, ServiceError};
use crate::store::keys::xorb_key;

/// Serialized bytes a fetch range holds at most (unless one chunk alone is larger).
pub const FETCH_RANGE_BYTES: u64 = 8 << 20;

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
        let mut by_xorb: BTreeMap<MerkleHash, Vec<Range<u32>>> = BTreeMap::new();
        for t in &terms {
            by_xorb.entry(t.xorb).or_default().push(t.chunks.clone());
        }
        let mut pieces: BTreeMap<MerkleHash, Vec<Range<u32>>> = BTreeMap::new();
        for (xorb, mut ranges) in by_xorb {
            let layout = &layouts[&xorb];
            ranges.sort_by_key(|r| r.start);
            let mut merged: Vec<Range<u32>> = Vec::with_capacity(ranges.len());
            for r in ranges {
                match merged.last_mut() {
                    Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
                    _ => merged.push(r),
                }
            }
            let cut: Vec<Range<u32>> = merged
                .into_iter()
                .flat_map(|r| {
                    split_range(r, FETCH_RANGE_BYTES, |a, b| {
                        let (s, e) = layout.byte_range(a, b);
                        e - s
                    })
                })
                .collect();
            pieces.insert(xorb, cut);
        }
        let terms = split_terms(terms, &pieces, |xorb, c| {
            u64::from(layouts[xorb].chunk_len(c))
        });
        for xorb in order {
            let layout = &layouts[&xorb];
            let url = self.store().presigned_get(&xorb_key(&xorb)).await?;
            fetches.push(XorbFetch {
                xorb,
                url,
                ranges: pieces
                    .remove(&xorb)
                    .unwrap_or_default()
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

/// Cuts chunk range `r` into consecutive pieces whose serialized size
/// (`bytes(first, end)`) is at most `limit`, a chunk larger than `limit` alone
/// in its piece.
fn split_range(r: Range<u32>, limit: u64, bytes: impl Fn(u32, u32) -> u64) -> Vec<Range<u32>> {
    let mut out = Vec::new();
    let mut start = r.start;
    for c in r.start..r.end {
        if c > start && bytes(start, c + 1) > limit {
            out.push(start..c);
            start = c;
        }
    }
    if start < r.end {
        out.push(start..r.end);
    }
    out
}

/// Splits every term at the boundaries of its xorb's fetch pieces, so each lies
/// in exactly one; `chunk_len(xorb, i)` is chunk `i`'s uncompressed length (a
/// term's length is that of its whole chunks, trimming being by whole chunks).
/// The first term's first bytes stay first (its offset into the first range holds).
fn split_terms(
    terms: Vec<ReconstructionTerm>,
    pieces: &BTreeMap<MerkleHash, Vec<Range<u32>>>,
    chunk_len: impl Fn(&MerkleHash, u32) -> u64,
) -> Vec<ReconstructionTerm> {
    let mut out = Vec::with_capacity(terms.len());
    for t in terms {
        let cuts = pieces.get(&t.xorb).map(Vec::as_slice).unwrap_or_default();
        let inside: Vec<u32> = cuts
            .iter()
            .map(|p| p.start)
            .filter(|&c| c > t.chunks.start && c < t.chunks.end)
            .collect();
        if inside.is_empty() {
            out.push(t);
            continue;
        }
        let bounds = std::iter::once(t.chunks.start)
            .chain(inside)
            .chain(std::iter::once(t.chunks.end))
            .collect::<Vec<_>>();
        for w in bounds.windows(2) {
            out.push(ReconstructionTerm {
                xorb: t.xorb,
                chunks: w[0]..w[1],
                unpacked_len: (w[0]..w[1]).map(|c| chunk_len(&t.xorb, c)).sum(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_cut_into_pieces_of_at_most_the_limit() {
        // Chunk i is 3 serialized bytes, except chunk 4 (20 bytes).
        let size = |c: u32| if c == 4 { 20 } else { 3 };
        let bytes = |a: u32, b: u32| (a..b).map(size).sum::<u64>();
        assert_eq!(
            split_range(0..10, 9, bytes),
            vec![0..3, 3..4, 4..5, 5..8, 8..10]
        );
        assert_eq!(split_range(2..3, 9, bytes), vec![2..3]);
        assert_eq!(split_range(0..10, 1000, bytes), vec![0..10]);
        for limit in [1, 3, 5, 9, 25] {
            let pieces = split_range(1..10, limit, bytes);
            assert_eq!(pieces.first().unwrap().start, 1);
            assert_eq!(pieces.last().unwrap().end, 10);
            for w in pieces.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            for p in &pieces {
                assert!(!p.is_empty() && (p.len() == 1 || bytes(p.start, p.end) <= limit));
            }
        }
    }

    #[test]
    fn terms_are_split_where_pieces_are_cut() {
        let x = MerkleHash([1; 32]);
        let y = MerkleHash([2; 32]);
        let mut pieces = BTreeMap::new();
        pieces.insert(x, vec![0..4, 4..8, 8..10]);
        pieces.insert(y, std::iter::once(0..10).collect());
        let term = |xorb, chunks: Range<u32>, unpacked_len| ReconstructionTerm {
            xorb,
            chunks,
            unpacked_len,
        };
        // Chunk i of x is 10 + i bytes, y's 10; the first term crosses two cuts,
        // the second is another xorb's, the third lies in one piece.
        let len = |xorb: &MerkleHash, c: u32| if *xorb == x { 10 + u64::from(c) } else { 10 };
        let terms = vec![term(x, 2..9, 105), term(y, 0..10, 100), term(x, 4..8, 62)];
        let split = split_terms(terms, &pieces, len);
        assert_eq!(
            split,
            vec![
                term(x, 2..4, 25),
                term(x, 4..8, 62),
                term(x, 8..9, 18),
                term(y, 0..10, 100),
                term(x, 4..8, 62),
            ]
        );
    }
}
