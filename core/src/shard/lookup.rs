//! The lookup tables between the CAS-info section and the footer.
//!
//! Keys are truncated hashes (bytes 0..8 as a little-endian u64). Indices count
//! 48-byte records from the start of their section: a file's index is the
//! position of its header record in the file-info section (verification and
//! extension records count), a xorb's index the position of its header record
//! in the CAS-info section. Each table is sorted by key; among equal keys this
//! implementation orders by index (the reference sorts chunks with an unstable
//! sort, so its order among colliding keys is unspecified).

use super::format::{FileInfo, XorbInfo};
use crate::error::{Error, Result};

/// One entry of the file lookup table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileLookupEntry {
    /// Truncated file hash.
    pub key: u64,
    /// Record index of the file's header in the file-info section.
    pub index: u32,
}

/// One entry of the xorb lookup table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XorbLookupEntry {
    /// Truncated xorb hash.
    pub key: u64,
    /// Record index of the xorb's header in the CAS-info section.
    pub index: u32,
}

/// One entry of the chunk lookup table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkLookupEntry {
    /// Truncated chunk hash, as stored (HMAC-keyed in a keyed shard).
    pub key: u64,
    /// Record index of the chunk's xorb header in the CAS-info section.
    pub xorb_index: u32,
    /// Index of the chunk within its xorb.
    pub chunk_index: u32,
}

/// The three lookup tables of a shard with footer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct LookupTables {
    /// File lookup, sorted.
    pub files: Vec<FileLookupEntry>,
    /// Xorb lookup, sorted.
    pub xorbs: Vec<XorbLookupEntry>,
    /// Chunk lookup, sorted.
    pub chunks: Vec<ChunkLookupEntry>,
}

fn index_u32(index: usize, what: &str) -> Result<u32> {
    u32::try_from(index).map_err(|_| {
        Error::MalformedShard(format!(
            "{what} record index {index} does not fit a lookup table's u32"
        ))
    })
}

impl LookupTables {
    /// Builds the tables for these sections, with the chunk hashes as they are written.
    pub fn build(files: &[FileInfo], xorbs: &[XorbInfo]) -> Result<Self> {
        let mut file_table = Vec::with_capacity(files.len());
        let mut index = 0usize;
        for f in files {
            file_table.push(FileLookupEntry {
                key: f.file_hash.truncated(),
                index: index_u32(index, "file")?,
            });
            index += f.num_records();
        }

        let mut xorb_table = Vec::with_capacity(xorbs.len());
        let mut chunk_table = Vec::with_capacity(xorbs.iter().map(|x| x.chunks.len()).sum());
        let mut index = 0usize;
        for x in xorbs {
            let xorb_index = index_u32(index, "xorb")?;
            xorb_table.push(XorbLookupEntry {
                key: x.hash.truncated(),
                index: xorb_index,
            });
            for (ci, c) in x.chunks.iter().enumerate() {
                chunk_table.push(ChunkLookupEntry {
                    key: c.hash.truncated(),
                    xorb_index,
                    chunk_index: index_u32(ci, "chunk")?,
                });
            }
            index += 1 + x.chunks.len();
        }

        file_table.sort_unstable();
        xorb_table.sort_unstable();
        chunk_table.sort_unstable();
        Ok(LookupTables {
            files: file_table,
            xorbs: xorb_table,
            chunks: chunk_table,
        })
    }

    /// The file entries whose key is `key` (truncated file hash).
    pub fn files_with_key(&self, key: u64) -> &[FileLookupEntry] {
        let lo = self.files.partition_point(|e| e.key < key);
        let hi = self.files.partition_point(|e| e.key <= key);
        &self.files[lo..hi]
    }

    /// The xorb entries whose key is `key` (truncated xorb hash).
    pub fn xorbs_with_key(&self, key: u64) -> &[XorbLookupEntry] {
        let lo = self.xorbs.partition_point(|e| e.key < key);
        let hi = self.xorbs.partition_point(|e| e.key <= key);
        &self.xorbs[lo..hi]
    }

    /// The chunk entries whose key is `key` (truncated stored chunk hash).
    pub fn chunks_with_key(&self, key: u64) -> &[ChunkLookupEntry] {
        let lo = self.chunks.partition_point(|e| e.key < key);
        let hi = self.chunks.partition_point(|e| e.key <= key);
        &self.chunks[lo..hi]
    }

    /// Serialized size of the three tables.
    pub fn byte_len(&self) -> usize {
        self.files.len() * super::FILE_LOOKUP_ENTRY_SIZE
            + self.xorbs.len() * super::XORB_LOOKUP_ENTRY_SIZE
            + self.chunks.len() * super::CHUNK_LOOKUP_ENTRY_SIZE
    }
}
