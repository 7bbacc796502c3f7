//! The LZ4 frame format on top of `lz4_flex`'s block codec, decoding straight
//! into a buffer of exactly the declared length (see the parent module).

use lz4_flex::block::{
    CompressTable, DecompressError, compress_into_with_table, decompress_into,
    decompress_into_with_dict, get_maximum_output_size,
};

/// xxHash32 of `data` with seed 0, as the LZ4 frame format uses it.
#[inline]
pub(super) fn xxh32(data: &[u8]) -> u32 {
    xxhash_rust::xxh32::xxh32(data, 0)
}

/// Reads a little-endian u32 from the first four bytes of `b`.
#[inline]
fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

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
pub(super) const fn max_frame_len(n: usize) -> usize {
    let (_, block) = frame_block_size(n);
    let blocks = n.div_ceil(block);
    let per_block = get_maximum_output_size(block);
    FRAME_HEADER_LEN + blocks * (WORD + per_block) + WORD
}

/// Writes one LZ4 frame of `data` into `out` (at least [`max_frame_len`] long);
/// returns its length. Independent blocks, no checksums, no content size: the
/// settings of `FrameEncoder::new`.
pub(super) fn encode_lz4_frame(table: &mut CompressTable, data: &[u8], out: &mut [u8]) -> usize {
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
pub(super) fn ensure_len(v: &mut Vec<u8>, len: usize) {
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
pub(super) type Reason = String;

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
pub(super) fn decode_lz4_frames(src: &[u8], dst: &mut [u8]) -> std::result::Result<(), Reason> {
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
