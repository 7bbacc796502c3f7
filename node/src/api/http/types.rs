//! The Xet API's JSON bodies, and their construction from service answers.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::service::{Reconstruction, ReconstructionTerm};

/// A half-open index or byte range `{start, end}` as the Xet JSON writes it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct JsonRange {
    /// Start.
    pub start: u64,
    /// End (exclusive for chunk ranges, inclusive for byte ranges, as in Xet).
    pub end: u64,
}

/// One term of a reconstruction.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Term {
    /// The xorb hash.
    pub hash: String,
    /// Uncompressed bytes of the term.
    pub unpacked_length: u64,
    /// Chunk range `[start, end)`.
    pub range: JsonRange,
}

/// A v2 fetch range: chunks and their serialized bytes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FetchRangeV2 {
    /// Chunk range `[start, end)`.
    pub chunks: JsonRange,
    /// Byte range, inclusive end.
    pub bytes: JsonRange,
}

/// A v2 xorb entry: one URL and its ranges.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct XorbFetchV2 {
    /// Self-authorising URL of the xorb.
    pub url: String,
    /// The ranges to fetch from it.
    pub ranges: Vec<FetchRangeV2>,
}

/// `GET /v2/reconstructions/{file}` answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReconstructionV2 {
    /// Bytes to skip in the first term's data.
    pub offset_into_first_range: u64,
    /// The terms in file order.
    pub terms: Vec<Term>,
    /// Fetch information per xorb hash.
    pub xorbs: BTreeMap<String, Vec<XorbFetchV2>>,
}

/// A v1 fetch entry: one range with its URL.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FetchInfoV1 {
    /// Chunk range `[start, end)`.
    pub range: JsonRange,
    /// Self-authorising URL of the xorb.
    pub url: String,
    /// Byte range to request, inclusive end.
    pub url_range: JsonRange,
}

/// `GET /v1/reconstructions/{file}` answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReconstructionV1 {
    /// Bytes to skip in the first term's data.
    pub offset_into_first_range: u64,
    /// The terms in file order.
    pub terms: Vec<Term>,
    /// Fetch information per xorb hash.
    pub fetch_info: BTreeMap<String, Vec<FetchInfoV1>>,
}

/// `GET /v1/reconstructions?file_id=…` answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BatchReconstruction {
    /// Terms per file hash.
    pub files: BTreeMap<String, Vec<Term>>,
    /// Fetch information per xorb hash, for all files.
    pub fetch_info: BTreeMap<String, Vec<FetchInfoV1>>,
}

fn term(t: &ReconstructionTerm) -> Term {
    Term {
        hash: t.xorb.to_hex(),
        unpacked_length: t.unpacked_len,
        range: JsonRange {
            start: u64::from(t.chunks.start),
            end: u64::from(t.chunks.end),
        },
    }
}

/// The v1 fetch entries of a reconstruction.
pub fn fetch_info_v1(r: &Reconstruction) -> BTreeMap<String, Vec<FetchInfoV1>> {
    r.fetches
        .iter()
        .map(|f| {
            let entries = f
                .ranges
                .iter()
                .map(|fr| FetchInfoV1 {
                    range: JsonRange {
                        start: u64::from(fr.chunks.start),
                        end: u64::from(fr.chunks.end),
                    },
                    url: f.url.clone(),
                    url_range: JsonRange {
                        start: fr.bytes.0,
                        end: fr.bytes.1,
                    },
                })
                .collect();
            (f.xorb.to_hex(), entries)
        })
        .collect()
}

/// The terms of a reconstruction as JSON.
pub fn terms(r: &Reconstruction) -> Vec<Term> {
    r.terms.iter().map(term).collect()
}

impl From<&Reconstruction> for ReconstructionV2 {
    fn from(r: &Reconstruction) -> Self {
        ReconstructionV2 {
            offset_into_first_range: r.offset_into_first_range,
            terms: terms(r),
            xorbs: r
                .fetches
                .iter()
                .map(|f| {
                    let entry = XorbFetchV2 {
                        url: f.url.clone(),
                        ranges: f
                            .ranges
                            .iter()
                            .map(|fr| FetchRangeV2 {
                                chunks: JsonRange {
                                    start: u64::from(fr.chunks.start),
                                    end: u64::from(fr.chunks.end),
                                },
                                bytes: JsonRange {
                                    start: fr.bytes.0,
                                    end: fr.bytes.1,
                                },
                            })
                            .collect(),
                    };
                    (f.xorb.to_hex(), vec![entry])
                })
                .collect(),
        }
    }
}

impl From<&Reconstruction> for ReconstructionV1 {
    fn from(r: &Reconstruction) -> Self {
        ReconstructionV1 {
            offset_into_first_range: r.offset_into_first_range,
            terms: terms(r),
            fetch_info: fetch_info_v1(r),
        }
    }
}
