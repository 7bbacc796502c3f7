//! The 8-byte header in front of every chunk payload.

use crate::compression::CompressionScheme;
use crate::constants::{MAX_CHUNK_COMPRESSED_LEN, MAX_CHUNK_UNCOMPRESSED_LEN};
use crate::error::{Error, Result};

use super::footer::FOOTER_IDENT;

/// Length of a chunk header.
pub const CHUNK_HEADER_LEN: usize = 8;
/// The only chunk header version.
pub const CHUNK_HEADER_VERSION: u8 = 0;

/// A chunk header: `version` (0), `compressed_len` (u24 LE), `scheme`, `uncompressed_len` (u24 LE).
///
/// A valid header has a known scheme, `1 <= uncompressed_len <= 131072` and
/// `compressed_len <= 262144`; [`ChunkHeader::new`] and [`ChunkHeader::parse`]
/// both enforce this, so every `ChunkHeader` value is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkHeader {
    scheme: CompressionScheme,
    compressed_len: u32,
    uncompressed_len: u32,
}

/// Whether `bytes` starts with the footer marker `XETBLOB` (where a header was expected).
pub fn is_footer_marker(bytes: &[u8]) -> bool {
    bytes.starts_with(&FOOTER_IDENT)
}

impl ChunkHeader {
    /// A header for a payload of `compressed_len` bytes decoding to `uncompressed_len` bytes.
    pub fn new(
        scheme: CompressionScheme,
        compressed_len: usize,
        uncompressed_len: usize,
    ) -> Result<Self> {
        check_lengths(None, compressed_len, uncompressed_len)?;
        Ok(ChunkHeader {
            scheme,
            compressed_len: compressed_len as u32,
            uncompressed_len: uncompressed_len as u32,
        })
    }

    /// Decodes and checks the header of chunk `index` (the index only labels errors).
    ///
    /// Errors: the footer marker or a version other than 0 give
    /// [`Error::MalformedXorb`]; an unknown scheme [`Error::UnknownCompression`];
    /// lengths out of bounds [`Error::MalformedXorb`].
    pub fn parse(bytes: &[u8; CHUNK_HEADER_LEN], index: usize) -> Result<Self> {
        if is_footer_marker(bytes) {
            return Err(Error::MalformedXorb(format!(
                "chunk {index}: found the footer marker where a chunk header was expected"
            )));
        }
        if bytes[0] != CHUNK_HEADER_VERSION {
            return Err(Error::MalformedXorb(format!(
                "chunk {index}: unsupported chunk header version {}",
                bytes[0]
            )));
        }
        let scheme = CompressionScheme::from_u8(bytes[4]).ok_or(Error::UnknownCompression {
            index,
            scheme: bytes[4],
        })?;
        let compressed_len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], 0]);
        let uncompressed_len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], 0]);
        check_lengths(
            Some(index),
            compressed_len as usize,
            uncompressed_len as usize,
        )?;
        Ok(ChunkHeader {
            scheme,
            compressed_len,
            uncompressed_len,
        })
    }

    /// The 8 header bytes.
    pub fn to_bytes(&self) -> [u8; CHUNK_HEADER_LEN] {
        let c = self.compressed_len.to_le_bytes();
        let u = self.uncompressed_len.to_le_bytes();
        [
            CHUNK_HEADER_VERSION,
            c[0],
            c[1],
            c[2],
            self.scheme.as_u8(),
            u[0],
            u[1],
            u[2],
        ]
    }

    /// The payload's compression scheme.
    pub fn scheme(&self) -> CompressionScheme {
        self.scheme
    }

    /// The payload length (bytes after the header).
    pub fn compressed_len(&self) -> usize {
        self.compressed_len as usize
    }

    /// The chunk's uncompressed length.
    pub fn uncompressed_len(&self) -> usize {
        self.uncompressed_len as usize
    }

    /// Header plus payload length.
    pub fn record_len(&self) -> usize {
        CHUNK_HEADER_LEN + self.compressed_len()
    }
}

fn check_lengths(index: Option<usize>, compressed: usize, uncompressed: usize) -> Result<()> {
    let who = || index.map_or_else(|| "chunk".to_string(), |i| format!("chunk {i}"));
    if uncompressed == 0 {
        return Err(Error::MalformedXorb(format!(
            "{}: a chunk must not be empty",
            who()
        )));
    }
    if uncompressed > MAX_CHUNK_UNCOMPRESSED_LEN {
        return Err(Error::MalformedXorb(format!(
            "{}: uncompressed length {uncompressed} exceeds {MAX_CHUNK_UNCOMPRESSED_LEN}",
            who()
        )));
    }
    if compressed > MAX_CHUNK_COMPRESSED_LEN {
        return Err(Error::MalformedXorb(format!(
            "{}: compressed length {compressed} exceeds {MAX_CHUNK_COMPRESSED_LEN}",
            who()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bytes() {
        // compressed 66051 = 0x010203, uncompressed 131072 = 0x020000, LZ4.
        let h = ChunkHeader::new(CompressionScheme::Lz4, 66_051, 131_072).unwrap();
        let b = h.to_bytes();
        assert_eq!(b, [0, 0x03, 0x02, 0x01, 1, 0x00, 0x00, 0x02]);
        assert_eq!(ChunkHeader::parse(&b, 0).unwrap(), h);
        assert_eq!(h.record_len(), 66_059);
        assert_eq!(h.compressed_len(), 66_051);
        assert_eq!(h.uncompressed_len(), 131_072);
        assert_eq!(h.scheme(), CompressionScheme::Lz4);
    }

    #[test]
    fn reader_checks() {
        let ok = [0u8, 10, 0, 0, 0, 10, 0, 0];
        assert!(ChunkHeader::parse(&ok, 0).is_ok());
        let code = |b: [u8; 8]| ChunkHeader::parse(&b, 3).unwrap_err().code();
        // Version.
        assert_eq!(code([1, 10, 0, 0, 0, 10, 0, 0]), "malformed_xorb");
        // Unknown scheme, including the internal "auto".
        for s in [3u8, 99, 255] {
            assert_eq!(
                ChunkHeader::parse(&[0, 10, 0, 0, s, 10, 0, 0], 3).unwrap_err(),
                Error::UnknownCompression {
                    index: 3,
                    scheme: s
                }
            );
        }
        // Uncompressed length: 0 and 131073 rejected, 131072 accepted.
        assert_eq!(code([0, 10, 0, 0, 1, 0, 0, 0]), "malformed_xorb");
        assert_eq!(code([0, 10, 0, 0, 1, 0x01, 0x00, 0x02]), "malformed_xorb");
        assert!(ChunkHeader::parse(&[0, 10, 0, 0, 1, 0x00, 0x00, 0x02], 0).is_ok());
        // Compressed length: 262145 rejected, 262144 accepted.
        assert_eq!(code([0, 0x01, 0x00, 0x04, 1, 10, 0, 0]), "malformed_xorb");
        assert!(ChunkHeader::parse(&[0, 0x00, 0x00, 0x04, 1, 10, 0, 0], 0).is_ok());
        // The footer marker.
        assert!(is_footer_marker(b"XETBLOB\x01"));
        assert_eq!(code(*b"XETBLOB\x01"), "malformed_xorb");
        // The constructor applies the same limits.
        assert!(ChunkHeader::new(CompressionScheme::None, 0, 0).is_err());
        assert!(ChunkHeader::new(CompressionScheme::None, 1 << 20, 5).is_err());
        assert!(ChunkHeader::new(CompressionScheme::None, 5, 1 << 20).is_err());
    }
}
