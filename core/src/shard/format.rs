//! The plain data a shard carries: files, xorbs, and the footer's fields.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::{BOOKEND_HASH, FILE_FLAG_WITH_METADATA_EXT, FILE_FLAG_WITH_VERIFICATION, NO_EXPIRY};
use crate::constants::{MAX_XORB_BYTES, MAX_XORB_CHUNKS};
use crate::error::{Error, Result};
use crate::hash::MerkleHash;
use crate::merkle::xorb_hash;

/// One term of a file reconstruction: chunks `[chunk_start, chunk_end)` of one xorb.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FileTerm {
    /// The xorb the chunks come from.
    pub xorb_hash: MerkleHash,
    /// Total uncompressed length of the chunks in the range.
    pub unpacked_bytes: u32,
    /// Index of the first chunk in the xorb.
    pub chunk_start: u32,
    /// Index one past the last chunk in the xorb (exclusive).
    pub chunk_end: u32,
}

impl FileTerm {
    /// A term covering chunks `[chunk_start, chunk_end)` of `xorb_hash`.
    pub fn new(
        xorb_hash: MerkleHash,
        unpacked_bytes: u32,
        chunk_start: u32,
        chunk_end: u32,
    ) -> Self {
        FileTerm {
            xorb_hash,
            unpacked_bytes,
            chunk_start,
            chunk_end,
        }
    }

    /// Number of chunks in the range (0 if the range is inverted).
    pub fn num_chunks(&self) -> u32 {
        self.chunk_end.saturating_sub(self.chunk_start)
    }
}

/// One file: its hash, how to rebuild it, and the optional verification and SHA-256 records.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct FileInfo {
    /// The file hash (merkle hash of its chunks, keyed; zero for the empty file).
    pub file_hash: MerkleHash,
    /// The terms, in file order.
    pub terms: Vec<FileTerm>,
    /// One verification hash per term (flag bit 31), if present; must have `terms.len()` entries.
    pub verification: Option<Vec<MerkleHash>>,
    /// The file's SHA-256 digest in normal byte order (flag bit 30), if present.
    pub sha256: Option<[u8; 32]>,
}

impl FileInfo {
    /// A file with the given terms and neither verification entries nor SHA-256.
    pub fn new(file_hash: MerkleHash, terms: Vec<FileTerm>) -> Self {
        FileInfo {
            file_hash,
            terms,
            verification: None,
            sha256: None,
        }
    }

    /// The file's size: the sum of its terms' uncompressed lengths.
    pub fn size(&self) -> u64 {
        self.terms.iter().map(|t| u64::from(t.unpacked_bytes)).sum()
    }

    /// The flags word of the file's header record.
    pub fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.verification.is_some() {
            flags |= FILE_FLAG_WITH_VERIFICATION;
        }
        if self.sha256.is_some() {
            flags |= FILE_FLAG_WITH_METADATA_EXT;
        }
        flags
    }

    /// Number of 48-byte records the file occupies (header, terms, verification, extension).
    pub fn num_records(&self) -> usize {
        1 + self.terms.len()
            + if self.verification.is_some() {
                self.terms.len()
            } else {
                0
            }
            + usize::from(self.sha256.is_some())
    }
}

/// One chunk entry of a xorb's CAS-info block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct XorbChunk {
    /// The chunk hash as stored: raw, or HMAC-keyed in a shard whose footer has a key.
    pub hash: MerkleHash,
    /// Offset of the chunk in the xorb's *uncompressed* byte stream (cumulative lengths).
    pub byte_range_start: u32,
    /// Uncompressed length of the chunk.
    pub unpacked_bytes: u32,
    /// Whether the global-dedup flag (bit 31 of the entry's flags) is set.
    pub global_dedup: bool,
}

impl XorbChunk {
    /// The flags word written for this chunk.
    pub fn flags(&self) -> u32 {
        if self.global_dedup {
            super::CHUNK_FLAG_GLOBAL_DEDUP
        } else {
            0
        }
    }
}

/// One xorb's CAS-info block: its hash and chunk list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct XorbInfo {
    /// The xorb hash (merkle root of its chunks).
    pub hash: MerkleHash,
    /// The chunks, in xorb order.
    pub chunks: Vec<XorbChunk>,
    /// Sum of the chunks' uncompressed lengths.
    pub num_bytes_in_xorb: u32,
    /// Serialized size of the xorb (hf_xet writes 0).
    pub num_bytes_on_disk: u32,
}

impl XorbInfo {
    /// Builds a block from `(chunk hash, uncompressed length)` pairs, computing the
    /// cumulative offsets and total as hf_xet does (`num_bytes_on_disk` = 0).
    pub fn from_chunks(hash: MerkleHash, chunks: &[(MerkleHash, u32)]) -> Result<Self> {
        let mut out = Vec::with_capacity(chunks.len());
        let mut pos: u32 = 0;
        for (i, &(h, len)) in chunks.iter().enumerate() {
            out.push(XorbChunk {
                hash: h,
                byte_range_start: pos,
                unpacked_bytes: len,
                global_dedup: false,
            });
            pos = pos.checked_add(len).ok_or_else(|| {
                Error::MalformedShard(format!(
                    "xorb {hash}: chunk {i} makes the xorb larger than 4 GiB"
                ))
            })?;
        }
        Ok(XorbInfo {
            hash,
            chunks: out,
            num_bytes_in_xorb: pos,
            num_bytes_on_disk: 0,
        })
    }

    /// Like [`XorbInfo::from_chunks`], computing the xorb hash from the chunks.
    pub fn from_chunks_hashed(chunks: &[(MerkleHash, u32)]) -> Result<Self> {
        let leaves: Vec<(MerkleHash, u64)> =
            chunks.iter().map(|&(h, l)| (h, u64::from(l))).collect();
        Self::from_chunks(xorb_hash(&leaves), chunks)
    }

    /// The `(chunk hash, uncompressed length)` leaves of the xorb's merkle tree.
    pub fn leaves(&self) -> Vec<(MerkleHash, u64)> {
        self.chunks
            .iter()
            .map(|c| (c.hash, u64::from(c.unpacked_bytes)))
            .collect()
    }

    /// Checks the block against the protocol: 1..=8192 chunks, at most 64 MiB,
    /// offsets cumulative from 0, and `num_bytes_in_xorb` their total.
    pub fn check_offsets(&self) -> Result<()> {
        let bad = |msg: String| Error::MalformedShard(format!("xorb {}: {msg}", self.hash));
        if self.chunks.is_empty() {
            return Err(bad("has no chunks".into()));
        }
        if self.chunks.len() > MAX_XORB_CHUNKS {
            return Err(bad(format!(
                "has {} chunks, more than the limit of {MAX_XORB_CHUNKS}",
                self.chunks.len()
            )));
        }
        let mut pos: u64 = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            if u64::from(c.byte_range_start) != pos {
                return Err(bad(format!(
                    "chunk {i} starts at byte {}, but the chunks before it add up to {pos}",
                    c.byte_range_start
                )));
            }
            if c.unpacked_bytes == 0 {
                return Err(bad(format!("chunk {i} is empty")));
            }
            pos += u64::from(c.unpacked_bytes);
        }
        if pos > MAX_XORB_BYTES as u64 {
            return Err(bad(format!(
                "holds {pos} bytes, more than the limit of {MAX_XORB_BYTES}"
            )));
        }
        if u64::from(self.num_bytes_in_xorb) != pos {
            return Err(bad(format!(
                "declares {} bytes, but its chunks add up to {pos}",
                self.num_bytes_in_xorb
            )));
        }
        Ok(())
    }
}

/// A whole shard: file reconstructions and xorb chunk lists, in the order they are written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shard {
    /// The file-info section.
    pub files: Vec<FileInfo>,
    /// The CAS-info section.
    pub xorbs: Vec<XorbInfo>,
}

impl Shard {
    /// A shard with these files and xorbs.
    pub fn new(files: Vec<FileInfo>, xorbs: Vec<XorbInfo>) -> Self {
        Shard { files, xorbs }
    }

    /// Whether the shard has neither files nor xorbs.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.xorbs.is_empty()
    }

    /// The footer's `materialized_bytes`: sum of all files' term lengths.
    pub fn materialized_bytes(&self) -> u64 {
        self.files.iter().map(FileInfo::size).sum()
    }

    /// The footer's `stored_bytes`: sum of all xorbs' `num_bytes_in_xorb`.
    pub fn stored_bytes(&self) -> u64 {
        self.xorbs
            .iter()
            .map(|x| u64::from(x.num_bytes_in_xorb))
            .sum()
    }

    /// The footer's `stored_bytes_on_disk`: sum of all xorbs' `num_bytes_on_disk`.
    pub fn stored_bytes_on_disk(&self) -> u64 {
        self.xorbs
            .iter()
            .map(|x| u64::from(x.num_bytes_on_disk))
            .sum()
    }

    /// The first file with this hash.
    pub fn file(&self, file_hash: &MerkleHash) -> Option<&FileInfo> {
        self.files.iter().find(|f| &f.file_hash == file_hash)
    }

    /// The first xorb block with this hash.
    pub fn xorb(&self, xorb_hash: &MerkleHash) -> Option<&XorbInfo> {
        self.xorbs.iter().find(|x| &x.hash == xorb_hash)
    }

    /// A map from xorb hash to its block (the first one when a hash repeats).
    pub fn xorb_map(&self) -> HashMap<MerkleHash, &XorbInfo> {
        let mut map = HashMap::with_capacity(self.xorbs.len());
        for x in &self.xorbs {
            map.entry(x.hash).or_insert(x);
        }
        map
    }

    /// Puts files and xorbs in the reference's order (its in-memory shard is a map
    /// ordered by [`reference_cmp`]) and drops repeated hashes, keeping the last one
    /// as the reference's map insert does. Written after this, a shard is
    /// byte-identical to what hf_xet produces for the same content.
    pub fn canonicalize(&mut self) {
        fn sort_dedup_last<T>(v: &mut Vec<T>, key: impl Fn(&T) -> MerkleHash) {
            // Stable sort keeps equal hashes in input order; keep the last of each run.
            v.sort_by(|a, b| reference_cmp(&key(a), &key(b)));
            let mut out: Vec<T> = Vec::with_capacity(v.len());
            for item in v.drain(..) {
                if out.last().is_some_and(|prev| key(prev) == key(&item)) {
                    out.pop();
                }
                out.push(item);
            }
            *v = out;
        }
        sort_dedup_last(&mut self.files, |f| f.file_hash);
        sort_dedup_last(&mut self.xorbs, |x| x.hash);
    }

    /// Structural checks beyond the byte format, as a server applies them to an
    /// uploaded shard: every xorb block passes [`XorbInfo::check_offsets`]; no hash
    /// is the bookend pattern; every term has a non-empty range; a term into a xorb
    /// described in this shard stays in bounds and its length matches the chunks;
    /// verification entries are on every file or on none (as the reference CAS requires).
    pub fn check_consistency(&self) -> Result<()> {
        for x in &self.xorbs {
            if x.hash == BOOKEND_HASH {
                return Err(Error::MalformedShard(
                    "a xorb hash equals the bookend pattern (all 0xFF)".into(),
                ));
            }
            x.check_offsets()?;
        }
        let xorbs = self.xorb_map();
        for (fi, f) in self.files.iter().enumerate() {
            let bad =
                |msg: String| Error::MalformedShard(format!("file {fi} ({}): {msg}", f.file_hash));
            if f.file_hash == BOOKEND_HASH {
                return Err(bad("its hash equals the bookend pattern (all 0xFF)".into()));
            }
            if let Some(v) = &f.verification
                && v.len() != f.terms.len()
            {
                return Err(bad(format!(
                    "{} verification entries for {} terms",
                    v.len(),
                    f.terms.len()
                )));
            }
            for (ti, t) in f.terms.iter().enumerate() {
                if t.chunk_start >= t.chunk_end {
                    return Err(bad(format!(
                        "term {ti} has an empty chunk range [{}, {})",
                        t.chunk_start, t.chunk_end
                    )));
                }
                if let Some(x) = xorbs.get(&t.xorb_hash) {
                    super::verify::term_chunks(&f.file_hash, ti, t, x)?;
                }
            }
        }
        if let Some(first) = self.files.first() {
            let with = first.verification.is_some();
            if let Some(fi) = self
                .files
                .iter()
                .position(|f| f.verification.is_some() != with)
            {
                return Err(Error::MalformedShard(format!(
                    "file {fi} {} verification entries but file 0 {}: all files or none must have them",
                    if with { "lacks" } else { "has" },
                    if with { "has them" } else { "does not" },
                )));
            }
        }
        Ok(())
    }

    /// Sets the global-dedup flag on every chunk that starts a file of this shard
    /// (the first term's first chunk, when that xorb is in the shard), as the
    /// reference CAS does when it stores an uploaded shard.
    pub fn mark_file_start_chunks(&mut self) {
        let starts: Vec<(MerkleHash, u32)> = self
            .files
            .iter()
            .filter_map(|f| f.terms.first().map(|t| (t.xorb_hash, t.chunk_start)))
            .collect();
        for (xh, idx) in starts {
            for x in self.xorbs.iter_mut().filter(|x| x.hash == xh) {
                if let Some(c) = x.chunks.get_mut(idx as usize) {
                    c.global_dedup = true;
                }
            }
        }
    }
}

/// What [`Shard::to_bytes_with_footer`] records beyond the shard's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FooterOptions {
    /// Key chunk hashes with this HMAC key (`None`, or the zero hash, means no key).
    pub hmac_key: Option<MerkleHash>,
    /// The shard's chunk hashes are already keyed with `hmac_key` (e.g. they come from
    /// parsing a keyed shard): write them as they are and only record the key.
    pub chunk_hashes_already_keyed: bool,
    /// Creation time, seconds since the Unix epoch (the reference writes 0 for uploads).
    pub creation_timestamp: u64,
    /// Time after which the client stops using the shard, seconds since the Unix epoch
    /// ([`NO_EXPIRY`] = never).
    pub key_expiry: u64,
}

impl Default for FooterOptions {
    fn default() -> Self {
        FooterOptions {
            hmac_key: None,
            chunk_hashes_already_keyed: false,
            creation_timestamp: 0,
            key_expiry: NO_EXPIRY,
        }
    }
}

impl FooterOptions {
    /// The key actually applied: `None` for no key or the zero key.
    pub fn effective_key(&self) -> Option<MerkleHash> {
        self.hmac_key.filter(|k| !k.is_zero())
    }
}

/// The footer of a parsed shard (everything in it that is not implied by the content).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardFooter {
    /// The HMAC key of the chunk hashes, `None` if the footer's key is zero.
    pub hmac_key: Option<MerkleHash>,
    /// Creation time, seconds since the Unix epoch.
    pub creation_timestamp: u64,
    /// Key expiry, seconds since the Unix epoch ([`NO_EXPIRY`] = never).
    pub key_expiry: u64,
    /// The footer's `stored_bytes_on_disk` as written.
    pub stored_bytes_on_disk: u64,
    /// The footer's `materialized_bytes` as written.
    pub materialized_bytes: u64,
    /// The footer's `stored_bytes` as written.
    pub stored_bytes: u64,
    /// Whether the file lookup table is present (it is either complete or empty).
    pub has_file_lookup: bool,
    /// Whether the xorb lookup table is present (it is either complete or empty).
    pub has_xorb_lookup: bool,
    /// Whether the chunk lookup table is present (it is either complete or empty).
    pub has_chunk_lookup: bool,
}

impl ShardFooter {
    /// Options that write this shard again with the same key and times; the chunk
    /// hashes of a parsed keyed shard are already keyed.
    pub fn options(&self) -> FooterOptions {
        FooterOptions {
            hmac_key: self.hmac_key,
            chunk_hashes_already_keyed: true,
            creation_timestamp: self.creation_timestamp,
            key_expiry: self.key_expiry,
        }
    }

    /// Whether the shard's key has expired at `now` (seconds since the epoch); the
    /// reference client uses a shard while `now <= key_expiry`.
    pub fn is_expired(&self, now: u64) -> bool {
        now > self.key_expiry
    }
}

/// A parsed shard and, if it had one, its footer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ParsedShard {
    /// Files and xorbs, in the order they were stored.
    pub shard: Shard,
    /// The footer, if the header declared one.
    pub footer: Option<ShardFooter>,
}

/// The reference's order of hashes: the four 8-byte groups compared as little-endian u64s.
///
/// This is the order of the reference's shard maps, so sorting by it reproduces its
/// file and xorb order (and, since group 0 is the truncated hash, sorted lookup tables).
pub fn reference_cmp(a: &MerkleHash, b: &MerkleHash) -> Ordering {
    (0..4)
        .map(|i| a.word(i).cmp(&b.word(i)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Converts a normal SHA-256 digest to the form stored in a shard (each 8-byte group
/// reversed), so that the stored bytes' Xet hex string is the usual hex digest.
pub fn sha256_to_stored(digest: &[u8; 32]) -> MerkleHash {
    let mut out = *digest;
    for group in out.chunks_exact_mut(8) {
        group.reverse();
    }
    MerkleHash(out)
}

/// Converts the SHA-256 stored in a shard back to the normal digest.
pub fn sha256_from_stored(stored: &MerkleHash) -> [u8; 32] {
    // The per-group reversal is its own inverse.
    sha256_to_stored(&stored.0).0
}
