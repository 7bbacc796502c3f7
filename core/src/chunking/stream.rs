//! Streaming chunking over any reader, block by block.

use std::io::{self, Read};

use super::{Chunk, hash_chunks, segmented};
use crate::constants::MAX_CHUNK_SIZE;

/// Default size of the blocks read from a stream (64 MiB).
pub const DEFAULT_BLOCK_SIZE: usize = 64 * 1024 * 1024;

/// A block of a stream with its complete chunks.
#[derive(Debug)]
pub struct ChunkedBlock {
    /// Offset of `data[0]` in the stream.
    pub stream_offset: u64,
    /// The bytes of the block's chunks, back to back.
    pub data: Vec<u8>,
    /// The chunks, with offsets relative to `data`.
    pub chunks: Vec<Chunk>,
}

/// Reads a stream and yields its chunks block by block, with hashes.
///
/// Every chunk boundary is final when yielded (a cut depends only on bytes
/// before it), so the result is identical to chunking the whole stream at
/// once; the bytes of an unfinished chunk are carried into the next block.
pub struct ChunkedBlocks<R: Read> {
    reader: R,
    block_size: usize,
    threads: usize,
    carry: Vec<u8>,
    stream_offset: u64,
    eof: bool,
}

impl<R: Read> ChunkedBlocks<R> {
    /// Chunks `reader` in blocks of [`DEFAULT_BLOCK_SIZE`] with `threads` threads.
    pub fn new(reader: R, threads: usize) -> Self {
        Self::with_block_size(reader, threads, DEFAULT_BLOCK_SIZE)
    }

    /// Chunks `reader` in blocks of `block_size` bytes (raised to at least two maximal chunks).
    pub fn with_block_size(reader: R, threads: usize, block_size: usize) -> Self {
        ChunkedBlocks {
            reader,
            block_size: block_size.max(2 * MAX_CHUNK_SIZE),
            threads: threads.max(1),
            carry: Vec::new(),
            stream_offset: 0,
            eof: false,
        }
    }

    /// Reads until the buffer holds `block_size` new bytes or the stream ends.
    fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let target = buf.len() + self.block_size;
        while buf.len() < target {
            let n = (&mut self.reader)
                .take((target - buf.len()) as u64)
                .read_to_end(buf);
            match n {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkedBlocks<R> {
    type Item = io::Result<ChunkedBlock>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.eof && self.carry.is_empty() {
                return None;
            }
            let mut buf = std::mem::take(&mut self.carry);
            if !self.eof
                && let Err(e) = self.fill(&mut buf)
            {
                // Keep what was read: a caller that retries after the error loses nothing.
                self.carry = buf;
                return Some(Err(e));
            }
            let ends = segmented::boundaries(
                &buf,
                segmented::lanes_per_thread() * self.threads,
                self.threads,
                self.eof,
            );
            let used = ends.last().copied().unwrap_or(0);
            if used == 0 && self.eof {
                return None;
            }
            if used == 0 {
                // Not one whole chunk yet: read more.
                self.carry = buf;
                continue;
            }
            self.carry = buf[used..].to_vec();
            buf.truncate(used);
            let chunks = hash_chunks(&buf, &ends, self.threads);
            let block = ChunkedBlock {
                stream_offset: self.stream_offset,
                data: buf,
                chunks,
            };
            self.stream_offset += used as u64;
            return Some(Ok(block));
        }
    }
}
