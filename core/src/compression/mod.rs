//! Per-chunk compression schemes of the xorb format.
//!
//! A xorb chunk is stored with one of three schemes (XET.md §7):
//!
//! - [`CompressionScheme::None`]: the raw bytes;
//! - [`CompressionScheme::Lz4`]: one LZ4 *frame* (the format of `lz4.frame` and
//!   `lz4_flex::frame`);
//! - [`CompressionScheme::ByteGrouping4Lz4`] (BG4): the bytes regrouped so that
//!   byte `i` goes to group `i % 4` (groups 0..3 concatenated), then one LZ4 frame.
//!
//! The frame layer is implemented here on top of `lz4_flex`'s block codec, so
//! that decoding writes straight into the caller's buffer and can never
//! allocate or produce more than the length the chunk header declares (the
//! stock `FrameDecoder` allocates buffers sized by the frame's own block-size
//! field, up to 4 MiB, before knowing how much data there is). Encoding
//! produces the same bytes as `lz4_flex::frame::FrameEncoder::new` (what the
//! reference client uses) for chunk-sized inputs; decoding accepts every frame
//! the reference decoder accepts except legacy-format frames (magic
//! `0x184C2102`), which no Xet writer produces.

use std::fmt;

use lz4_flex::block::CompressTable;

use crate::constants::MAX_CHUNK_UNCOMPRESSED_LEN;
use crate::error::{Error, Result};

mod bg4;
mod lz4_frame;

pub use bg4::{bg4_group_lens, bg4_may_help, bg4_regroup, bg4_split};
use bg4::{bg4_regroup_slices, bg4_split_slices};
use lz4_frame::{Reason, decode_lz4_frames, encode_lz4_frame, ensure_len, max_frame_len};

/// How a chunk's payload is encoded; the `scheme` byte of a xorb chunk header.
///
/// The reference implementation also has `Auto = 99`, a request to choose a
/// scheme per chunk; it never appears on the wire and is rejected here (see
/// [`CompressionPolicy::Auto`] for the equivalent request).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CompressionScheme {
    /// Stored as is.
    None = 0,
    /// One LZ4 frame.
    Lz4 = 1,
    /// Byte grouping by `i % 4`, then one LZ4 frame.
    ByteGrouping4Lz4 = 2,
}

impl CompressionScheme {
    /// Every scheme that may appear on the wire.
    pub const ALL: [CompressionScheme; 3] = [
        CompressionScheme::None,
        CompressionScheme::Lz4,
        CompressionScheme::ByteGrouping4Lz4,
    ];

    /// The scheme byte written in a chunk header.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The scheme for a header byte, or `None` if the byte names no known scheme.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(CompressionScheme::None),
            1 => Some(CompressionScheme::Lz4),
            2 => Some(CompressionScheme::ByteGrouping4Lz4),
            _ => None,
        }
    }

    /// The reference implementation's name: `none`, `lz4` or `bg4-lz4`.
    pub const fn name(self) -> &'static str {
        match self {
            CompressionScheme::None => "none",
            CompressionScheme::Lz4 => "lz4",
            CompressionScheme::ByteGrouping4Lz4 => "bg4-lz4",
        }
    }

    /// The scheme with the given [`name`](Self::name) (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl TryFrom<u8> for CompressionScheme {
    type Error = Error;

    /// Decodes a header byte; unknown bytes (including the internal `Auto = 99`)
    /// give [`Error::UnknownCompression`] with chunk index 0.
    fn try_from(byte: u8) -> Result<Self> {
        Self::from_u8(byte).ok_or(Error::UnknownCompression {
            index: 0,
            scheme: byte,
        })
    }
}

impl From<CompressionScheme> for u8 {
    fn from(s: CompressionScheme) -> u8 {
        s.as_u8()
    }
}

impl fmt::Display for CompressionScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which scheme a writer should use for each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompressionPolicy {
    /// Choose per chunk; see [`Compressor::compress_auto`] for the rule.
    #[default]
    Auto,
    /// Always try this scheme, but store the chunk as [`CompressionScheme::None`]
    /// whenever the result is not strictly smaller (as the reference writer does).
    Only(CompressionScheme),
}

impl CompressionPolicy {
    /// Parses `auto` or a scheme [name](CompressionScheme::name) (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        if name.trim().eq_ignore_ascii_case("auto") {
            Some(CompressionPolicy::Auto)
        } else {
            CompressionScheme::from_name(name).map(CompressionPolicy::Only)
        }
    }
}

// ---------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------

/// Reusable scratch space for compressing chunks (no allocation per chunk).
pub struct Compressor {
    table: CompressTable,
    lz4: Vec<u8>,
    grouped: Vec<u8>,
    bg4: Vec<u8>,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor").finish_non_exhaustive()
    }
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Compressor {
    /// A compressor with empty scratch buffers and the large LZ4 hash table
    /// (the one `lz4_flex::frame::FrameEncoder` uses, so payloads match the reference).
    pub fn new() -> Self {
        Compressor {
            table: CompressTable::large(),
            lz4: Vec::new(),
            grouped: Vec::new(),
            bg4: Vec::new(),
        }
    }

    /// LZ4-frames `data` into `self.lz4`; returns the frame length.
    fn lz4_frame(&mut self, data: &[u8]) -> usize {
        ensure_len(&mut self.lz4, max_frame_len(data.len()));
        encode_lz4_frame(&mut self.table, data, &mut self.lz4)
    }

    /// BG4-groups and LZ4-frames `data` into `self.bg4`; returns the frame length.
    fn bg4_frame(&mut self, data: &[u8]) -> usize {
        ensure_len(&mut self.grouped, data.len());
        bg4_split_slices(data, &mut self.grouped[..data.len()]);
        ensure_len(&mut self.bg4, max_frame_len(data.len()));
        encode_lz4_frame(&mut self.table, &self.grouped[..data.len()], &mut self.bg4)
    }

    /// Appends the payload of `data` encoded with exactly `scheme` to `out`
    /// (no fallback: the payload may be larger than `data`).
    pub fn compress_exact(&mut self, data: &[u8], scheme: CompressionScheme, out: &mut Vec<u8>) {
        match scheme {
            CompressionScheme::None => out.extend_from_slice(data),
            CompressionScheme::Lz4 => {
                let n = self.lz4_frame(data);
                out.extend_from_slice(&self.lz4[..n]);
            }
            CompressionScheme::ByteGrouping4Lz4 => {
                let n = self.bg4_frame(data);
                out.extend_from_slice(&self.bg4[..n]);
            }
        }
    }

    /// Appends the payload of `data` under `policy` to `out`; returns the scheme used.
    pub fn compress_append(
        &mut self,
        data: &[u8],
        policy: CompressionPolicy,
        out: &mut Vec<u8>,
    ) -> CompressionScheme {
        match policy {
            CompressionPolicy::Auto => self.compress_auto(data, out),
            CompressionPolicy::Only(CompressionScheme::None) => {
                out.extend_from_slice(data);
                CompressionScheme::None
            }
            CompressionPolicy::Only(CompressionScheme::Lz4) => {
                let n = self.lz4_frame(data);
                self.keep(data, out, CompressionScheme::Lz4, n)
            }
            CompressionPolicy::Only(CompressionScheme::ByteGrouping4Lz4) => {
                let n = self.bg4_frame(data);
                self.keep(data, out, CompressionScheme::ByteGrouping4Lz4, n)
            }
        }
    }

    /// Appends the chosen candidate, or the raw bytes when it is not strictly smaller.
    fn keep(
        &self,
        data: &[u8],
        out: &mut Vec<u8>,
        scheme: CompressionScheme,
        len: usize,
    ) -> CompressionScheme {
        match scheme {
            CompressionScheme::Lz4 if len < data.len() => out.extend_from_slice(&self.lz4[..len]),
            CompressionScheme::ByteGrouping4Lz4 if len < data.len() => {
                out.extend_from_slice(&self.bg4[..len])
            }
            _ => {
                out.extend_from_slice(data);
                return CompressionScheme::None;
            }
        }
        scheme
    }

    /// Appends the smallest encoding of `data` to `out`; returns its scheme.
    ///
    /// The rule: keep the smallest of the candidates tried, preferring
    /// `None`, then LZ4, on ties (so a chunk is compressed only when that makes
    /// it strictly smaller, as in the reference writer).
    /// - `None` and LZ4 are always candidates (LZ4 is fast on incompressible
    ///   data, so there is nothing to gain by guessing first).
    /// - BG4 is a candidate only when [`bg4_may_help`] says the four byte lanes
    ///   are distributed differently (an 8 KiB sampled histogram test). When
    ///   they look alike, grouping cannot create matches LZ4 does not already
    ///   see, so the second LZ4 pass is skipped.
    pub fn compress_auto(&mut self, data: &[u8], out: &mut Vec<u8>) -> CompressionScheme {
        let lz4_len = self.lz4_frame(data);
        if bg4_may_help(data) {
            let bg4_len = self.bg4_frame(data);
            if bg4_len < lz4_len {
                return self.keep(data, out, CompressionScheme::ByteGrouping4Lz4, bg4_len);
            }
        }
        self.keep(data, out, CompressionScheme::Lz4, lz4_len)
    }
}

/// The payload of `data` encoded with exactly `scheme` (may be larger than `data`).
pub fn compress(data: &[u8], scheme: CompressionScheme) -> Vec<u8> {
    let mut out = Vec::new();
    Compressor::new().compress_exact(data, scheme, &mut out);
    out
}

/// The smallest encoding of `data` and its scheme (see [`Compressor::compress_auto`]).
pub fn compress_auto(data: &[u8]) -> (CompressionScheme, Vec<u8>) {
    let mut out = Vec::new();
    let scheme = Compressor::new().compress_auto(data, &mut out);
    (scheme, out)
}

// ---------------------------------------------------------------------------
// Decompression
// ---------------------------------------------------------------------------

/// Reusable scratch space for decompressing chunks (BG4 needs one extra buffer).
#[derive(Debug, Default)]
pub struct Decompressor {
    grouped: Vec<u8>,
}

impl Decompressor {
    /// A decompressor with an empty scratch buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes chunk `index`'s payload into exactly `dst` (its declared uncompressed length).
    ///
    /// `dst.len()` must already be bounded by the caller (the chunk header check).
    pub(crate) fn decompress_into(
        &mut self,
        index: usize,
        payload: &[u8],
        scheme: CompressionScheme,
        dst: &mut [u8],
    ) -> Result<()> {
        let fail = |reason: Reason| Error::Decompression { index, reason };
        match scheme {
            CompressionScheme::None => {
                if payload.len() != dst.len() {
                    return Err(fail(format!(
                        "uncompressed payload is {} bytes, header declares {}",
                        payload.len(),
                        dst.len()
                    )));
                }
                dst.copy_from_slice(payload);
            }
            CompressionScheme::Lz4 => decode_lz4_frames(payload, dst).map_err(fail)?,
            CompressionScheme::ByteGrouping4Lz4 => {
                ensure_len(&mut self.grouped, dst.len());
                let grouped = &mut self.grouped[..dst.len()];
                decode_lz4_frames(payload, grouped).map_err(fail)?;
                bg4_regroup_slices(grouped, dst);
            }
        }
        Ok(())
    }

    /// Decodes chunk `index`'s payload and appends exactly `expected_len` bytes to `out`.
    ///
    /// `expected_len` above [`MAX_CHUNK_UNCOMPRESSED_LEN`] is rejected before
    /// anything is allocated; on error `out` is left as it was.
    pub fn decompress_chunk(
        &mut self,
        index: usize,
        payload: &[u8],
        scheme: CompressionScheme,
        expected_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if expected_len > MAX_CHUNK_UNCOMPRESSED_LEN {
            return Err(Error::Decompression {
                index,
                reason: format!(
                    "declared length {expected_len} exceeds the {MAX_CHUNK_UNCOMPRESSED_LEN}-byte chunk limit"
                ),
            });
        }
        let start = out.len();
        if scheme == CompressionScheme::None {
            // Checked before growing `out`, so nothing is zero-filled needlessly.
            if payload.len() != expected_len {
                return Err(Error::Decompression {
                    index,
                    reason: format!(
                        "uncompressed payload is {} bytes, header declares {expected_len}",
                        payload.len()
                    ),
                });
            }
            out.extend_from_slice(payload);
            return Ok(());
        }
        out.resize(start + expected_len, 0);
        let result = self.decompress_into(index, payload, scheme, &mut out[start..]);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}

/// Decodes a chunk payload and appends exactly `expected_len` bytes to `out`.
///
/// Errors are [`Error::Decompression`] with chunk index 0: a payload that is
/// not a valid frame, has trailing bytes, or decodes to any other length, or an
/// `expected_len` above [`MAX_CHUNK_UNCOMPRESSED_LEN`] (rejected before any
/// allocation). Never writes more than `expected_len` bytes; on error `out` is
/// unchanged.
pub fn decompress(
    payload: &[u8],
    scheme: CompressionScheme,
    expected_len: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    Decompressor::new().decompress_chunk(0, payload, scheme, expected_len, out)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod default_tests {
    use super::*;

    #[test]
    fn default_compressor_is_the_reference_compressor() {
        let data: Vec<u8> = (0..20_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 97) as u8)
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        Compressor::default().compress_exact(&data, CompressionScheme::Lz4, &mut a);
        Compressor::new().compress_exact(&data, CompressionScheme::Lz4, &mut b);
        assert_eq!(a, b);
        assert_eq!(a, compress(&data, CompressionScheme::Lz4));
    }
}
