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

use lz4_flex::block::{
    CompressTable, DecompressError, compress_into_with_table, decompress_into,
    decompress_into_with_dict, get_maximum_output_size,
};

use crate::constants::MAX_CHUNK_UNCOMPRESSED_LEN;
use crate::error::{Error, Result};

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
// Byte grouping (BG4)
// ---------------------------------------------------------------------------

/// Lengths of the four BG4 groups of `n` bytes: group `k` has `n/4 + (k < n%4)` bytes.
#[inline]
pub const fn bg4_group_lens(n: usize) -> [usize; 4] {
    let q = n / 4;
    let r = n % 4;
    [
        q + (r > 0) as usize,
        q + (r > 1) as usize,
        q + (r > 2) as usize,
        q,
    ]
}

/// Transposes a 4x4 byte matrix held as four little-endian rows: returns the
/// columns. BG4 split and regroup are both this transform on 16-byte blocks.
#[inline(always)]
fn transpose4x4(r: [u32; 4]) -> [u32; 4] {
    const LO: u32 = 0x00FF_00FF;
    // Pair rows 0/1 and 2/3 byte by byte...
    let t0 = (r[0] & LO) | ((r[1] & LO) << 8);
    let t1 = ((r[0] >> 8) & LO) | (r[1] & !LO);
    let t2 = (r[2] & LO) | ((r[3] & LO) << 8);
    let t3 = ((r[2] >> 8) & LO) | (r[3] & !LO);
    // ...then the pairs half-word by half-word.
    [
        (t0 & 0xFFFF) | (t2 << 16),
        (t1 & 0xFFFF) | (t3 << 16),
        (t0 >> 16) | (t2 & 0xFFFF_0000),
        (t1 >> 16) | (t3 & 0xFFFF_0000),
    ]
}

/// Splits `src` into the four byte groups, written to `dst` (same length).
#[inline]
fn bg4_split_slices(src: &[u8], dst: &mut [u8]) {
    debug_assert_eq!(src.len(), dst.len());
    let [l0, l1, l2, _] = bg4_group_lens(src.len());
    let (g0, rest) = dst.split_at_mut(l0);
    let (g1, rest) = rest.split_at_mut(l1);
    let (g2, g3) = rest.split_at_mut(l2);
    let q = src.len() / 4;
    // Sixteen bytes in, four to each group out, then single words; zipped
    // fixed-size chunks keep the loops free of bounds checks.
    let wide = q / 4;
    for ((((w, a), b), c), d) in src[..16 * wide]
        .chunks_exact(16)
        .zip(g0.chunks_exact_mut(4))
        .zip(g1.chunks_exact_mut(4))
        .zip(g2.chunks_exact_mut(4))
        .zip(g3.chunks_exact_mut(4))
    {
        let cols = transpose4x4([le32(&w[0..]), le32(&w[4..]), le32(&w[8..]), le32(&w[12..])]);
        a.copy_from_slice(&cols[0].to_le_bytes());
        b.copy_from_slice(&cols[1].to_le_bytes());
        c.copy_from_slice(&cols[2].to_le_bytes());
        d.copy_from_slice(&cols[3].to_le_bytes());
    }
    let body = src[16 * wide..].chunks_exact(4);
    let tail = body.remainder();
    for ((((w, a), b), c), d) in body
        .zip(g0[4 * wide..].iter_mut())
        .zip(g1[4 * wide..].iter_mut())
        .zip(g2[4 * wide..].iter_mut())
        .zip(g3[4 * wide..].iter_mut())
    {
        *a = w[0];
        *b = w[1];
        *c = w[2];
        *d = w[3];
    }
    for (k, &byte) in tail.iter().enumerate() {
        match k {
            0 => g0[q] = byte,
            1 => g1[q] = byte,
            _ => g2[q] = byte,
        }
    }
}

/// Inverse of [`bg4_split_slices`]: interleaves the four groups of `src` into `dst`.
#[inline]
fn bg4_regroup_slices(src: &[u8], dst: &mut [u8]) {
    debug_assert_eq!(src.len(), dst.len());
    let [l0, l1, l2, _] = bg4_group_lens(src.len());
    let (g0, rest) = src.split_at(l0);
    let (g1, rest) = rest.split_at(l1);
    let (g2, g3) = rest.split_at(l2);
    let q = src.len() / 4;
    let (body, tail) = dst.split_at_mut(4 * q);
    let wide = q / 4;
    let (wide_body, body) = body.split_at_mut(16 * wide);
    for ((((w, a), b), c), d) in wide_body
        .chunks_exact_mut(16)
        .zip(g0.chunks_exact(4))
        .zip(g1.chunks_exact(4))
        .zip(g2.chunks_exact(4))
        .zip(g3.chunks_exact(4))
    {
        let rows = transpose4x4([le32(a), le32(b), le32(c), le32(d)]);
        w[0..4].copy_from_slice(&rows[0].to_le_bytes());
        w[4..8].copy_from_slice(&rows[1].to_le_bytes());
        w[8..12].copy_from_slice(&rows[2].to_le_bytes());
        w[12..16].copy_from_slice(&rows[3].to_le_bytes());
    }
    for ((((w, a), b), c), d) in body
        .chunks_exact_mut(4)
        .zip(g0[4 * wide..].iter())
        .zip(g1[4 * wide..].iter())
        .zip(g2[4 * wide..].iter())
        .zip(g3[4 * wide..].iter())
    {
        w[0] = *a;
        w[1] = *b;
        w[2] = *c;
        w[3] = *d;
    }
    for (k, out) in tail.iter_mut().enumerate() {
        *out = match k {
            0 => g0[q],
            1 => g1[q],
            _ => g2[q],
        };
    }
}

/// BG4 byte grouping: replaces `out`'s contents with the groups of `data`.
pub fn bg4_split(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(data.len(), 0);
    bg4_split_slices(data, out);
}

/// Inverse of [`bg4_split`]: replaces `out`'s contents with the interleaved bytes.
pub fn bg4_regroup(grouped: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(grouped.len(), 0);
    bg4_regroup_slices(grouped, out);
}

/// Sample size of the byte-grouping test (bytes, a multiple of 4).
const BG4_SAMPLE_BYTES: usize = 8192;
/// Length of each evenly spaced sample window (bytes, a multiple of 4).
const BG4_SAMPLE_WINDOW: usize = 256;
/// Below this size byte grouping is never tried.
const BG4_MIN_LEN: usize = 256;
/// Jensen-Shannon divergence (bits) between the four byte lanes above which
/// byte grouping is tried. Measured on 64 KiB chunks: random bytes 0.06-0.08
/// (estimator bias), text 0.01, f32 weights 0.75, bf16 0.9, small i32 1.1+.
const BG4_MIN_DIVERGENCE: f64 = 0.2;

/// Shannon entropy (bits) of a histogram with `total` samples.
fn entropy(hist: &[u32; 256], total: u32) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let t = f64::from(total);
    let sum: f64 = hist
        .iter()
        .filter(|&&c| c != 0)
        .map(|&c| {
            let c = f64::from(c);
            c * c.log2()
        })
        .sum();
    t.log2() - sum / t
}

/// The cheap test that byte grouping could help: the four byte lanes (`i % 4`)
/// of a sample are distributed differently.
///
/// It measures the Jensen-Shannon divergence between the lanes' byte
/// histograms (entropy of the mixture minus the mean lane entropy) on up to
/// 8 KiB sampled in evenly spaced 256-byte windows. Grouping can only create
/// new LZ4 matches when some lane is more predictable than the mixture; when
/// all lanes look alike (text, random bytes, most binaries) it only breaks up
/// existing matches.
pub fn bg4_may_help(data: &[u8]) -> bool {
    if data.len() < BG4_MIN_LEN {
        return false;
    }
    let mut hist = [[0u32; 256]; 4];
    let mut add = |window: &[u8]| {
        for w in window.chunks_exact(4) {
            hist[0][w[0] as usize] += 1;
            hist[1][w[1] as usize] += 1;
            hist[2][w[2] as usize] += 1;
            hist[3][w[3] as usize] += 1;
        }
    };
    if data.len() <= BG4_SAMPLE_BYTES {
        add(data);
    } else {
        let windows = BG4_SAMPLE_BYTES / BG4_SAMPLE_WINDOW;
        // Window starts stay multiples of 4 so lanes keep their meaning.
        let stride = (data.len() - BG4_SAMPLE_WINDOW) / (windows - 1) / 4 * 4;
        for i in 0..windows {
            let start = i * stride;
            add(&data[start..start + BG4_SAMPLE_WINDOW]);
        }
    }
    let per_lane: u32 = hist[0].iter().sum();
    let mut mixture = [0u32; 256];
    for lane in &hist {
        for (m, &c) in mixture.iter_mut().zip(lane.iter()) {
            *m += c;
        }
    }
    let mean_lane: f64 = hist.iter().map(|h| entropy(h, per_lane)).sum::<f64>() / 4.0;
    let divergence = entropy(&mixture, per_lane * 4) - mean_lane;
    divergence > BG4_MIN_DIVERGENCE
}

/// xxHash32 of `data` with seed 0, as the LZ4 frame format uses it.
#[inline]
fn xxh32(data: &[u8]) -> u32 {
    xxhash_rust::xxh32::xxh32(data, 0)
}

#[inline]
fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

// ---------------------------------------------------------------------------
// LZ4 frame format
// ---------------------------------------------------------------------------

const LZ4F_MAGIC: u32 = 0x184D_2204;
const LZ4F_LEGACY_MAGIC: u32 = 0x184C_2102;
const LZ4F_SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const LZ4F_SKIPPABLE_BASE: u32 = 0x184D_2A50;
const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_INDEPENDENT: u8 = 0b0010_0000;
const FLG_BLOCK_CHECKSUM: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_RESERVED: u8 = 0b0000_0010;
const FLG_DICT_ID: u8 = 0b0000_0001;
const BD_RESERVED: u8 = 0b1000_1111;
const BLOCK_UNCOMPRESSED_BIT: u32 = 0x8000_0000;
/// Magic, FLG, BD and header checksum of the frames this module writes.
const FRAME_HEADER_LEN: usize = 7;
/// Block-size word and end mark.
const WORD: usize = 4;
/// lz4_flex's LZ4 match window; linked blocks may reach this far back.
const LZ4_WINDOW: usize = 64 * 1024;

/// Block-size code and size the reference encoder picks for a whole input of `n`
/// bytes (`lz4_flex`'s `BlockSize::from_buf_length`).
#[inline]
const fn frame_block_size(n: usize) -> (u8, usize) {
    if n <= 64 * 1024 {
        (4, 64 * 1024)
    } else if n <= 256 * 1024 {
        (5, 256 * 1024)
    } else {
        (7, 4 * 1024 * 1024)
    }
}

/// Largest LZ4 frame [`encode_lz4_frame`] can produce for `n` input bytes.
#[inline]
const fn max_frame_len(n: usize) -> usize {
    let (_, block) = frame_block_size(n);
    let blocks = n.div_ceil(block);
    let per_block = get_maximum_output_size(block);
    FRAME_HEADER_LEN + blocks * (WORD + per_block) + WORD
}

/// Writes one LZ4 frame of `data` into `out` (at least [`max_frame_len`] long);
/// returns its length. Independent blocks, no checksums, no content size: the
/// settings of `FrameEncoder::new`.
fn encode_lz4_frame(table: &mut CompressTable, data: &[u8], out: &mut [u8]) -> usize {
    let (code, block_size) = frame_block_size(data.len());
    let flg = FLG_VERSION_01 | FLG_INDEPENDENT;
    let bd = code << 4;
    out[..4].copy_from_slice(&LZ4F_MAGIC.to_le_bytes());
    out[4] = flg;
    out[5] = bd;
    out[6] = (xxh32(&[flg, bd]) >> 8) as u8;
    let mut pos = FRAME_HEADER_LEN;
    for block in data.chunks(block_size) {
        let body = pos + WORD;
        let compressed = compress_into_with_table(block, &mut out[body..], table);
        let word = match compressed {
            Ok(n) if n < block.len() => {
                pos = body + n;
                n as u32
            }
            // Incompressible (or, impossibly, out of room): store the block raw.
            _ => {
                out[body..body + block.len()].copy_from_slice(block);
                pos = body + block.len();
                block.len() as u32 | BLOCK_UNCOMPRESSED_BIT
            }
        };
        out[body - WORD..body].copy_from_slice(&word.to_le_bytes());
    }
    out[pos..pos + WORD].copy_from_slice(&0u32.to_le_bytes());
    pos + WORD
}

/// Grows `v` to at least `len` bytes (zero-filled once; later calls reuse it).
#[inline]
fn ensure_len(v: &mut Vec<u8>, len: usize) {
    if v.len() < len {
        v.resize(len, 0);
    }
}

/// Reads the little-endian u32 at `pos`, if there are 4 bytes there.
#[inline]
fn read_u32(src: &[u8], pos: usize) -> Option<u32> {
    src.get(pos..pos.checked_add(4)?).map(le32)
}

/// A reason a payload failed to decode; becomes [`Error::Decompression`].
type Reason = String;

fn describe_block_error(e: DecompressError, room: usize) -> Reason {
    match e {
        DecompressError::OutputTooSmall { .. } => {
            format!(
                "LZ4 block decodes past the declared length or the frame's block size \
                 (room for {room} bytes)"
            )
        }
        other => format!("invalid LZ4 block: {other}"),
    }
}

/// Decodes one or more concatenated LZ4 frames from `src` into exactly `dst`.
///
/// Never writes outside `dst` and allocates nothing. Fails if the frames are
/// malformed, truncated, followed by anything that is not another frame,
/// fail a checksum, or decode to more or fewer than `dst.len()` bytes.
fn decode_lz4_frames(src: &[u8], dst: &mut [u8]) -> std::result::Result<(), Reason> {
    if src.is_empty() {
        return Err("empty LZ4 payload".into());
    }
    let mut ip = 0usize;
    let mut op = 0usize;
    let mut frames = 0usize;
    while ip < src.len() {
        let magic = read_u32(src, ip).ok_or("truncated LZ4 frame header")?;
        if magic != LZ4F_MAGIC {
            return Err(if frames > 0 {
                format!("{} trailing bytes after the LZ4 frame", src.len() - ip)
            } else if magic == LZ4F_LEGACY_MAGIC {
                "legacy LZ4 frames are not supported".into()
            } else if magic & LZ4F_SKIPPABLE_MASK == LZ4F_SKIPPABLE_BASE {
                "skippable LZ4 frames are not supported".into()
            } else {
                format!("not an LZ4 frame (magic {magic:#010x})")
            });
        }
        frames += 1;
        let desc_start = ip + 4;
        let (&flg, &bd) = match src.get(desc_start..desc_start + 2) {
            Some([f, b]) => (f, b),
            _ => return Err("truncated LZ4 frame header".into()),
        };
        if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
            return Err(format!(
                "unsupported LZ4 frame version bits {:#04x}",
                flg >> 6
            ));
        }
        if flg & FLG_RESERVED != 0 || bd & BD_RESERVED != 0 {
            return Err("LZ4 frame header has reserved bits set".into());
        }
        if flg & FLG_DICT_ID != 0 {
            return Err("LZ4 frames with a dictionary are not supported".into());
        }
        let block_max = match (bd >> 4) & 0x7 {
            4 => 64 * 1024,
            5 => 256 * 1024,
            6 => 1024 * 1024,
            7 => 4 * 1024 * 1024,
            code => return Err(format!("invalid LZ4 block size code {code}")),
        };
        let linked = flg & FLG_INDEPENDENT == 0;
        let block_checksums = flg & FLG_BLOCK_CHECKSUM != 0;
        let mut desc_end = desc_start + 2;
        let content_size = if flg & FLG_CONTENT_SIZE != 0 {
            let bytes = src
                .get(desc_end..desc_end + 8)
                .ok_or("truncated LZ4 frame header")?;
            desc_end += 8;
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            Some(u64::from_le_bytes(b))
        } else {
            None
        };
        let hc = *src.get(desc_end).ok_or("truncated LZ4 frame header")?;
        if (xxh32(&src[desc_start..desc_end]) >> 8) as u8 != hc {
            return Err("LZ4 frame header checksum mismatch".into());
        }
        ip = desc_end + 1;

        let frame_start = op;
        loop {
            let word = read_u32(src, ip).ok_or("truncated LZ4 frame (missing end mark)")?;
            ip += WORD;
            if word == 0 {
                break;
            }
            let stored = word & BLOCK_UNCOMPRESSED_BIT != 0;
            let len = (word & !BLOCK_UNCOMPRESSED_BIT) as usize;
            if len > block_max {
                return Err(format!(
                    "LZ4 block of {len} bytes exceeds the frame's {block_max}-byte block size"
                ));
            }
            let block = src.get(ip..ip + len).ok_or("truncated LZ4 block")?;
            ip += len;
            if block_checksums {
                let sum = read_u32(src, ip).ok_or("truncated LZ4 block checksum")?;
                ip += WORD;
                if xxh32(block) != sum {
                    return Err("LZ4 block checksum mismatch".into());
                }
            }
            let room = (dst.len() - op).min(block_max);
            let n = if stored {
                if len > room {
                    return Err("LZ4 stored block exceeds the declared length".into());
                }
                dst[op..op + len].copy_from_slice(block);
                len
            } else if linked && op > frame_start {
                let (head, tail) = dst.split_at_mut(op);
                let dict = &head[frame_start.max(op.saturating_sub(LZ4_WINDOW))..];
                decompress_into_with_dict(block, &mut tail[..room], dict)
                    .map_err(|e| describe_block_error(e, room))?
            } else {
                decompress_into(block, &mut dst[op..op + room])
                    .map_err(|e| describe_block_error(e, room))?
            };
            op += n;
        }
        if let Some(expected) = content_size
            && (op - frame_start) as u64 != expected
        {
            return Err(format!(
                "LZ4 frame declares {expected} content bytes but holds {}",
                op - frame_start
            ));
        }
        if flg & FLG_CONTENT_CHECKSUM != 0 {
            let sum = read_u32(src, ip).ok_or("truncated LZ4 content checksum")?;
            ip += WORD;
            if xxh32(&dst[frame_start..op]) != sum {
                return Err("LZ4 content checksum mismatch".into());
            }
        }
    }
    if op != dst.len() {
        return Err(format!(
            "payload decodes to {op} bytes, header declares {}",
            dst.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------

/// Reusable scratch space for compressing chunks (no allocation per chunk).
#[derive(Default)]
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

impl Compressor {
    /// A compressor with empty scratch buffers.
    pub fn new() -> Self {
        Compressor {
            table: CompressTable::large(),
            ..Default::default()
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
#[path = "compression_tests.rs"]
mod tests;
