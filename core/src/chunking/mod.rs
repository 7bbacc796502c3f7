//! Gear-hash content-defined chunking, byte-identical to the Xet protocol.
//!
//! Boundaries depend only on content: 8 KiB minimum, 64 KiB target, 128 KiB
//! maximum (see [`crate::constants`]). Three ways to get them, all with the
//! same result:
//! - [`chunk_boundaries`]: one thread, several interleaved lanes;
//! - [`chunk_boundaries_parallel`]: segments scanned on several threads and
//!   stitched exactly;
//! - [`ChunkedBlocks`]: streaming over any [`std::io::Read`], block by block.
//!
//! [`chunk_and_hash`] and [`chunk_and_hash_parallel`] also hash each chunk;
//! [`rechunk`] finds the same chunks for a new version of an input from the
//! old version's chunk list, re-scanning only around what changed.

mod gear;
mod incremental;
mod segmented;
mod stream;

pub use incremental::{Rechunked, rechunk, rechunk_with};
pub use stream::{ChunkedBlock, ChunkedBlocks, DEFAULT_BLOCK_SIZE};

use crate::hash::{MerkleHash, chunk_hash};
use gear::Lane;

/// One chunk of an input: where it lies and its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of the chunk's first byte in the input.
    pub offset: usize,
    /// Length of the chunk in bytes.
    pub len: usize,
    /// The chunk hash (keyed blake3 of its bytes).
    pub hash: MerkleHash,
}

impl Chunk {
    /// The byte range of the chunk in its input.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// The number of threads to use by default: the machine's available parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Chunk boundaries of a whole input, one lane at a time: the plain sequential
/// algorithm, kept as the reference the faster forms are tested against.
///
/// Returns the exclusive end of every chunk; an empty input has no chunks.
pub fn chunk_boundaries_sequential(data: &[u8]) -> Vec<usize> {
    let mut lane = Lane::new(data, 0, data.len());
    let mut out = Vec::with_capacity(data.len() / (64 * 1024) + 2);
    while let Some(cut) = lane.next_cut(data) {
        out.push(cut);
    }
    if out.last().copied().unwrap_or(0) < data.len() {
        out.push(data.len());
    }
    out
}

/// Chunk boundaries of a whole input on the calling thread (exclusive ends).
pub fn chunk_boundaries(data: &[u8]) -> Vec<usize> {
    segmented::boundaries(data, segmented::lanes_per_thread(), 1, true)
}

/// Chunk boundaries of a whole input using up to `threads` threads; identical
/// to [`chunk_boundaries_sequential`].
pub fn chunk_boundaries_parallel(data: &[u8], threads: usize) -> Vec<usize> {
    segmented::boundaries(
        data,
        segmented::lanes_per_thread() * threads.max(1),
        threads.max(1),
        true,
    )
}

/// Hashes the chunks delimited by `boundaries` (exclusive ends), on up to `threads` threads.
pub fn hash_chunks(data: &[u8], boundaries: &[usize], threads: usize) -> Vec<Chunk> {
    let mut start = 0;
    let spans: Vec<Chunk> = boundaries
        .iter()
        .map(|&end| {
            let c = Chunk {
                offset: start,
                len: end - start,
                hash: MerkleHash::ZERO,
            };
            start = end;
            c
        })
        .collect();
    let hashes = map_chunks(data, &spans, threads, chunk_hash);
    spans
        .into_iter()
        .zip(hashes)
        .map(|(c, hash)| Chunk { hash, ..c })
        .collect()
}

/// `f` of each chunk's bytes, in chunk order, computed on up to `threads`
/// threads (each takes a contiguous share of the chunks).
pub fn map_chunks<T: Send>(
    data: &[u8],
    chunks: &[Chunk],
    threads: usize,
    f: impl Fn(&[u8]) -> T + Sync,
) -> Vec<T> {
    let f = &f;
    let of = move |part: &[Chunk]| -> Vec<T> { part.iter().map(|c| f(&data[c.range()])).collect() };
    let threads = threads.clamp(1, chunks.len().max(1));
    if threads == 1 {
        return of(chunks);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .chunks(chunks.len().div_ceil(threads))
            .map(|part| scope.spawn(move || of(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Chunks and hashes a whole input on the calling thread.
pub fn chunk_and_hash(data: &[u8]) -> Vec<Chunk> {
    hash_chunks(data, &chunk_boundaries(data), 1)
}

/// Chunks and hashes a whole input on up to `threads` threads.
pub fn chunk_and_hash_parallel(data: &[u8], threads: usize) -> Vec<Chunk> {
    hash_chunks(data, &chunk_boundaries_parallel(data, threads), threads)
}

/// The Xet file hash of an input from its chunks.
pub fn file_hash_of_chunks(chunks: &[Chunk]) -> MerkleHash {
    let leaves: Vec<(MerkleHash, u64)> = chunks.iter().map(|c| (c.hash, c.len as u64)).collect();
    crate::merkle::file_hash(&leaves)
}

#[cfg(test)]
mod tests;
