//! The JSON bodies of the Xet CAS API, typed.
//!
//! Hashes appear in their Xet hex form (four little-endian u64 words) both as
//! values and as map keys; they are parsed into [`MerkleHash`] here, so a body
//! with a malformed hash does not parse.

use std::collections::HashMap;

use cas_core::MerkleHash;
use serde::{Deserialize, Serialize};

/// Serde for a [`MerkleHash`] field as its Xet hex string.
mod hex_hash {
    use cas_core::MerkleHash;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the hash as its hex string.
    pub fn serialize<S: Serializer>(h: &MerkleHash, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(h)
    }

    /// Reads a hash from its hex string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MerkleHash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        MerkleHash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde for a map keyed by [`MerkleHash`] hex strings.
mod hex_hash_map {
    use std::collections::HashMap;

    use cas_core::MerkleHash;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the map with hex-string keys.
    pub fn serialize<S: Serializer, V: Serialize>(
        m: &HashMap<MerkleHash, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k.to_string(), v)))
    }

    /// Reads a map with hex-string keys.
    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<HashMap<MerkleHash, V>, D::Error> {
        let raw = HashMap::<String, V>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                MerkleHash::from_hex(&k)
                    .map(|h| (h, v))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// A range of chunk indices in a xorb: `start..end`, end exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRange {
    /// First chunk index.
    pub start: u32,
    /// One past the last chunk index.
    pub end: u32,
}

impl ChunkRange {
    /// Whether `other` lies entirely inside this range.
    pub fn contains(&self, other: &ChunkRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Number of chunks (0 for an inverted range).
    pub fn len(&self) -> u32 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no chunks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A byte range as in an HTTP `Range` header: `start..=end`, end inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl HttpRange {
    /// Number of bytes (0 for an inverted range).
    pub fn len(&self) -> u64 {
        if self.end < self.start {
            0
        } else {
            self.end - self.start + 1
        }
    }

    /// Whether the range is inverted (an inclusive range is never empty otherwise).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One term of a reconstruction: a chunk range of one xorb.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconstructionTerm {
    /// The xorb holding the chunks.
    #[serde(with = "hex_hash")]
    pub hash: MerkleHash,
    /// Length of the decoded chunks of this term.
    pub unpacked_length: u64,
    /// The term's chunks in the xorb.
    pub range: ChunkRange,
}

/// One byte range of a xorb and the chunks it holds (v2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XorbRangeDescriptor {
    /// The chunks `[start, end)` the byte range holds.
    pub chunks: ChunkRange,
    /// The bytes of those chunks' records in the xorb (inclusive end).
    pub bytes: HttpRange,
}

/// A fetch URL and the byte ranges of one xorb it serves (v2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XorbFetch {
    /// The URL to GET, with a single-range `Range` header per range and no credentials.
    pub url: String,
    /// The ranges the URL serves, by chunk start.
    pub ranges: Vec<XorbRangeDescriptor>,
}

/// The answer of `GET /v2/reconstructions/{file_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconstructionV2 {
    /// Bytes to skip in the first term's decoded data.
    pub offset_into_first_range: u64,
    /// The terms, in file order.
    pub terms: Vec<ReconstructionTerm>,
    /// Per xorb, the URLs and byte ranges to fetch its terms from.
    #[serde(with = "hex_hash_map")]
    pub xorbs: HashMap<MerkleHash, Vec<XorbFetch>>,
}

/// One fetch entry of a v1 reconstruction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchInfoV1 {
    /// The chunks `[start, end)` the URL range holds.
    pub range: ChunkRange,
    /// The URL to GET.
    pub url: String,
    /// The bytes to ask for (inclusive end).
    pub url_range: HttpRange,
}

/// The answer of `GET /v1/reconstructions/{file_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconstructionV1 {
    /// Bytes to skip in the first term's decoded data.
    pub offset_into_first_range: u64,
    /// The terms, in file order.
    pub terms: Vec<ReconstructionTerm>,
    /// Per xorb, where to fetch its terms.
    #[serde(with = "hex_hash_map")]
    pub fetch_info: HashMap<MerkleHash, Vec<FetchInfoV1>>,
}

impl From<ReconstructionV1> for ReconstructionV2 {
    fn from(v1: ReconstructionV1) -> Self {
        let xorbs = v1
            .fetch_info
            .into_iter()
            .map(|(hash, infos)| {
                let fetches = infos
                    .into_iter()
                    .map(|i| XorbFetch {
                        url: i.url,
                        ranges: vec![XorbRangeDescriptor {
                            chunks: i.range,
                            bytes: i.url_range,
                        }],
                    })
                    .collect();
                (hash, fetches)
            })
            .collect();
        ReconstructionV2 {
            offset_into_first_range: v1.offset_into_first_range,
            terms: v1.terms,
            xorbs,
        }
    }
}

impl ReconstructionV2 {
    /// The fetch URL and byte range holding `term`'s chunks: the first range of
    /// the term's xorb that contains the whole chunk range.
    pub fn locate(&self, term: &ReconstructionTerm) -> Option<(&str, &XorbRangeDescriptor)> {
        self.xorbs.get(&term.hash)?.iter().find_map(|f| {
            f.ranges
                .iter()
                .find(|r| r.chunks.contains(&term.range))
                .map(|r| (f.url.as_str(), r))
        })
    }

    /// Sum of the terms' decoded lengths.
    pub fn unpacked_len(&self) -> u64 {
        self.terms.iter().map(|t| t.unpacked_length).sum()
    }
}

/// The answer of `POST /v1/xorbs/{prefix}/{hash}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XorbUploadResponse {
    /// `false` when the server already had the xorb.
    pub was_inserted: bool,
}

/// The answer of `POST /v1/shards`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardUploadResponseV1 {
    /// 0 = the shard already existed, 1 = registered.
    pub result: u8,
    /// The hash the server stored the shard under, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_hash: Option<String>,
}

/// One NDJSON frame of `POST /v2/shards`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShardFrame {
    /// Verification progress.
    Validating {
        /// Verification tasks done.
        verified: u64,
        /// Verification tasks started so far.
        total: u64,
    },
    /// Durable write in progress (`uploading` or `syncing`).
    Committing {
        /// The sub-stage.
        stage: String,
    },
    /// Terminal success frame.
    Result {
        /// 0 = existed, 1 = registered, when the server says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<u8>,
    },
    /// Terminal failure frame.
    Error {
        /// What went wrong.
        #[serde(default)]
        message: String,
        /// Whether the client should upload again.
        #[serde(default)]
        retryable: bool,
    },
    /// A frame type this client does not know (ignored).
    #[serde(other)]
    Unknown,
}

impl ShardFrame {
    /// Whether the frame ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, ShardFrame::Result { .. } | ShardFrame::Error { .. })
    }
}

/// What a successful shard upload reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardUploadOutcome {
    /// The shard was registered (or the server did not say whether it existed).
    Registered,
    /// The server already had this shard.
    AlreadyExisted,
}

impl ShardUploadOutcome {
    /// The outcome for a `result` value (0 = existed, anything else = registered).
    pub fn from_result(result: Option<u8>) -> Self {
        match result {
            Some(0) => ShardUploadOutcome::AlreadyExisted,
            _ => ShardUploadOutcome::Registered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes `00 01 … 1f` in hex form: each 8-byte group reversed.
    const XORB_A: &str = "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918";

    #[test]
    fn hex_hash_follows_the_word_order() {
        let t: ReconstructionTerm = serde_json::from_str(&format!(
            r#"{{"hash":"{XORB_A}","unpacked_length":10,"range":{{"start":0,"end":1}}}}"#
        ))
        .unwrap();
        let bytes: Vec<u8> = (0..32).collect();
        assert_eq!(t.hash.as_bytes().as_slice(), bytes.as_slice());
        let back = serde_json::to_value(&t).unwrap();
        assert_eq!(back["hash"], XORB_A);
    }

    #[test]
    fn parses_v2_reconstruction() {
        let body = format!(
            r#"{{
              "offset_into_first_range": 65701,
              "terms": [
                {{"hash": "{XORB_A}", "unpacked_length": 1048576, "range": {{"start": 0, "end": 16}}}},
                {{"hash": "{XORB_A}", "unpacked_length": 131072, "range": {{"start": 40, "end": 41}}}}
              ],
              "xorbs": {{
                "{XORB_A}": [
                  {{"url": "https://cdn/x?X-Xet-Signed-Range=bytes%3D0-5117484%2C10495327-15692172",
                    "ranges": [
                      {{"chunks": {{"start": 0, "end": 16}}, "bytes": {{"start": 0, "end": 5117484}}}},
                      {{"chunks": {{"start": 40, "end": 60}}, "bytes": {{"start": 10495327, "end": 15692172}}}}
                    ]}}
                ]
              }}
            }}"#
        );
        let r: ReconstructionV2 = serde_json::from_str(&body).unwrap();
        assert_eq!(r.offset_into_first_range, 65701);
        assert_eq!(r.terms.len(), 2);
        assert_eq!(r.unpacked_len(), 1048576 + 131072);
        let (url, d) = r.locate(&r.terms[1]).unwrap();
        assert!(url.starts_with("https://cdn/x?"));
        assert_eq!(
            d.bytes,
            HttpRange {
                start: 10495327,
                end: 15692172
            }
        );
        assert_eq!(d.bytes.len(), 15692172 - 10495327 + 1);
        let (_, d0) = r.locate(&r.terms[0]).unwrap();
        assert_eq!(d0.chunks, ChunkRange { start: 0, end: 16 });
        // A term no range contains is not located.
        let mut outside = r.terms[1].clone();
        outside.range = ChunkRange { start: 59, end: 61 };
        assert!(r.locate(&outside).is_none());
    }

    #[test]
    fn parses_v1_reconstruction_and_converts() {
        let body = format!(
            r#"{{"offset_into_first_range": 0,
                "terms": [{{"hash": "{XORB_A}", "unpacked_length": 5, "range": {{"start": 2, "end": 3}}}}],
                "fetch_info": {{"{XORB_A}": [{{"range": {{"start": 0, "end": 4}}, "url": "http://h/f?t=1",
                                               "url_range": {{"start": 0, "end": 99}}}}]}}}}"#
        );
        let v1: ReconstructionV1 = serde_json::from_str(&body).unwrap();
        let v2 = ReconstructionV2::from(v1);
        let (url, d) = v2.locate(&v2.terms[0]).unwrap();
        assert_eq!(url, "http://h/f?t=1");
        assert_eq!(d.bytes, HttpRange { start: 0, end: 99 });
    }

    #[test]
    fn bad_hash_key_is_rejected() {
        let body = r#"{"offset_into_first_range":0,"terms":[],"xorbs":{"nothex":[]}}"#;
        assert!(serde_json::from_str::<ReconstructionV2>(body).is_err());
    }

    #[test]
    fn parses_upload_responses() {
        let x: XorbUploadResponse = serde_json::from_str(r#"{"was_inserted":true}"#).unwrap();
        assert!(x.was_inserted);
        let x: XorbUploadResponse = serde_json::from_str(r#"{"was_inserted":false}"#).unwrap();
        assert!(!x.was_inserted);
        for (body, outcome) in [
            (r#"{"result":0}"#, ShardUploadOutcome::AlreadyExisted),
            (r#"{"result":1}"#, ShardUploadOutcome::Registered),
            (
                &format!(r#"{{"result":1,"shard_hash":"{XORB_A}"}}"#) as &str,
                ShardUploadOutcome::Registered,
            ),
        ] {
            let s: ShardUploadResponseV1 = serde_json::from_str(body).unwrap();
            assert_eq!(ShardUploadOutcome::from_result(Some(s.result)), outcome);
        }
    }

    #[test]
    fn parses_shard_frames() {
        let cases = [
            (
                r#"{"type":"validating","verified":3,"total":7}"#,
                ShardFrame::Validating {
                    verified: 3,
                    total: 7,
                },
            ),
            (
                r#"{"type":"committing","stage":"uploading"}"#,
                ShardFrame::Committing {
                    stage: "uploading".into(),
                },
            ),
            (
                r#"{"type":"committing","stage":"syncing"}"#,
                ShardFrame::Committing {
                    stage: "syncing".into(),
                },
            ),
            (
                r#"{"type":"result","result":1}"#,
                ShardFrame::Result { result: Some(1) },
            ),
            (r#"{"type":"result"}"#, ShardFrame::Result { result: None }),
            (
                r#"{"type":"error","message":"xorb missing","retryable":false}"#,
                ShardFrame::Error {
                    message: "xorb missing".into(),
                    retryable: false,
                },
            ),
            (
                r#"{"type":"error","message":"busy","retryable":true}"#,
                ShardFrame::Error {
                    message: "busy".into(),
                    retryable: true,
                },
            ),
            (
                r#"{"type":"error","message":"boom"}"#,
                ShardFrame::Error {
                    message: "boom".into(),
                    retryable: false,
                },
            ),
            (r#"{"type":"heartbeat","n":{"x":1}}"#, ShardFrame::Unknown),
        ];
        for (text, frame) in cases {
            let parsed: ShardFrame = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, frame, "{text}");
            assert_eq!(
                parsed.is_terminal(),
                text.contains("\"result\"") || text.contains("\"error\"")
            );
        }
    }
}
