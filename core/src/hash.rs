//! The 32-byte hash type and the keyed blake3 hashes of the Xet protocol.

use std::fmt;
use std::str::FromStr;

use crate::constants::{DATA_KEY, FILE_HASH_KEY, INTERNAL_NODE_KEY, VERIFICATION_KEY};
use crate::error::{Error, Result};

/// A 32-byte content hash (chunk, xorb, file, shard or verification hash).
///
/// Its text form is the Xet hex string: each 8-byte group is read as a
/// little-endian u64 and printed as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MerkleHash(pub [u8; 32]);

impl MerkleHash {
    /// The all-zero hash (the hash of no chunks, and the empty file's hash).
    pub const ZERO: MerkleHash = MerkleHash([0; 32]);

    /// Wraps raw bytes as a hash.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        MerkleHash(bytes)
    }

    /// Reads a hash from the first 32 bytes of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .get(..32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::InvalidHash(format!("need 32 bytes, got {}", bytes.len())))?;
        Ok(MerkleHash(arr))
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The `i`-th 8-byte group read as a little-endian u64 (`i` in 0..4).
    #[inline]
    pub fn word(&self, i: usize) -> u64 {
        u64::from_le_bytes(self.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    }

    /// The protocol's "hash % n": bytes 24..32 as a little-endian u64, modulo `n`.
    #[inline]
    pub fn modulo(&self, n: u64) -> u64 {
        self.word(3) % n
    }

    /// The truncated hash used as a shard lookup-table key: bytes 0..8 as a little-endian u64.
    #[inline]
    pub fn truncated(&self) -> u64 {
        self.word(0)
    }

    /// Whether this is the all-zero hash.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }

    /// The Xet hex string (64 lowercase hex digits).
    pub fn to_hex(&self) -> String {
        let mut out = [0u8; 64];
        self.write_hex(&mut out);
        // The buffer holds only ASCII hex digits.
        String::from_utf8(out.to_vec()).expect("hex is ascii")
    }

    /// Writes the Xet hex string into `out`.
    #[inline]
    pub fn write_hex(&self, out: &mut [u8; 64]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for g in 0..4 {
            let w = self.word(g);
            for k in 0..16 {
                out[g * 16 + k] = DIGITS[((w >> (60 - 4 * k)) & 0xF) as usize];
            }
        }
    }

    /// Parses a Xet hex string.
    pub fn from_hex(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(Error::InvalidHash(format!(
                "a hash is 64 hex digits, got {} characters",
                b.len()
            )));
        }
        let mut out = [0u8; 32];
        for g in 0..4 {
            let mut w = 0u64;
            for &c in &b[g * 16..g * 16 + 16] {
                let d = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    b'A'..=b'F' => c - b'A' + 10,
                    _ => {
                        return Err(Error::InvalidHash(format!(
                            "not a hex digit: {:?}",
                            c as char
                        )));
                    }
                };
                w = (w << 4) | d as u64;
            }
            out[g * 8..g * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        Ok(MerkleHash(out))
    }

    /// This hash keyed with a shard's HMAC key: `blake3::keyed_hash(key, self)`.
    pub fn hmac(&self, key: &MerkleHash) -> MerkleHash {
        MerkleHash(*blake3::keyed_hash(&key.0, &self.0).as_bytes())
    }
}

impl fmt::Display for MerkleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 64];
        self.write_hex(&mut out);
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for MerkleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerkleHash({self})")
    }
}

impl FromStr for MerkleHash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        MerkleHash::from_hex(s)
    }
}

impl From<[u8; 32]> for MerkleHash {
    fn from(b: [u8; 32]) -> Self {
        MerkleHash(b)
    }
}

/// The hash of one chunk: `blake3::keyed_hash(DATA_KEY, data)`.
#[inline]
pub fn chunk_hash(data: &[u8]) -> MerkleHash {
    MerkleHash(*blake3::keyed_hash(&DATA_KEY, data).as_bytes())
}

/// The hash of a merkle internal node from its text form.
#[inline]
pub fn internal_node_hash(text: &[u8]) -> MerkleHash {
    MerkleHash(*blake3::keyed_hash(&INTERNAL_NODE_KEY, text).as_bytes())
}

/// The name of a shard: `blake3::keyed_hash(DATA_KEY, shard_bytes)`.
pub fn shard_hash(shard_bytes: &[u8]) -> MerkleHash {
    chunk_hash(shard_bytes)
}

/// Turns a merkle root over a file's chunks into the file hash (zero for an empty file).
pub fn file_hash_from_root(root: &MerkleHash, is_empty: bool) -> MerkleHash {
    if is_empty {
        return MerkleHash::ZERO;
    }
    MerkleHash(*blake3::keyed_hash(&FILE_HASH_KEY, &root.0).as_bytes())
}

/// The verification hash of a term: keyed blake3 over the raw chunk hashes it covers.
pub fn verification_hash(chunk_hashes: &[MerkleHash]) -> MerkleHash {
    let mut h = blake3::Hasher::new_keyed(&VERIFICATION_KEY);
    for c in chunk_hashes {
        h.update(&c.0);
    }
    MerkleHash(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_spec_example() {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8;
        }
        let h = MerkleHash(b);
        let s = "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918";
        assert_eq!(h.to_hex(), s);
        assert_eq!(h.to_string(), s);
        assert_eq!(MerkleHash::from_hex(s).unwrap(), h);
        assert_eq!(MerkleHash::from_hex(&s.to_uppercase()).unwrap(), h);
    }

    #[test]
    fn bad_hex_is_rejected_with_a_code() {
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            let e = MerkleHash::from_hex(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_hash");
        }
    }

    #[test]
    fn modulo_and_truncation_read_little_endian_words() {
        let mut b = [0u8; 32];
        b[24] = 0x00;
        b[25] = 0x04; // word 3 = 1024
        b[0] = 7;
        let h = MerkleHash(b);
        assert_eq!(h.modulo(1024), 0);
        assert_eq!(h.word(3), 1024);
        assert_eq!(h.truncated(), 7);
    }
}
