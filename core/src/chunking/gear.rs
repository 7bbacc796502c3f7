//! The gear-hash boundary scanner: the innermost loop of the system.
//!
//! A [`Lane`] scans one region of the input for chunk boundaries. Because the
//! gear hash at a position depends only on the last [`GEAR_WINDOW`] bytes, a
//! lane skips the first `MIN_CHUNK_SIZE - GEAR_WINDOW` bytes of every chunk and
//! warms the hash up on the window before the first position that may cut;
//! the boundaries are identical to hashing every byte.
//!
//! [`scan_interleaved`] advances several lanes in lock-step inside one loop:
//! their hash chains are independent, so the CPU overlaps them and one core
//! scans several times faster than with a single dependency chain.

use crate::constants::{CHUNK_BOUNDARY_MASK, GEAR_WINDOW, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

/// The gear table of the Xet protocol (`DEFAULT_TABLE` of gearhash 0.1.4).
static TABLE: &[u64; 256] = &gearhash::DEFAULT_TABLE;

/// One gear step: the hash after adding byte `b`.
#[inline(always)]
fn step(h: u64, b: u8) -> u64 {
    (h << 1).wrapping_add(TABLE[b as usize])
}

/// A chunk being scanned inside the region `..end` of the input.
#[derive(Clone, Debug)]
pub(crate) struct Lane {
    /// Start of the chunk in progress.
    pub(crate) start: usize,
    /// Next byte to test for a boundary.
    pos: usize,
    /// Gear hash of the bytes before `pos`.
    h: u64,
    /// End of the region: no byte at or after it is read, no cut lies after it.
    end: usize,
    /// Set once no further cut can lie inside the region.
    done: bool,
}

impl Lane {
    /// A lane whose first chunk starts at `start`, scanning `data[..end]`.
    pub(crate) fn new(data: &[u8], start: usize, end: usize) -> Lane {
        debug_assert!(start <= end && end <= data.len());
        let mut lane = Lane {
            start,
            pos: start,
            h: 0,
            end,
            done: false,
        };
        lane.begin(data, start);
        lane
    }

    /// Starts a new chunk at `at`: skips ahead and warms the hash up.
    #[inline]
    fn begin(&mut self, data: &[u8], at: usize) {
        self.start = at;
        // The first position that may cut is the byte ending a MIN-sized chunk.
        let first_test = at + MIN_CHUNK_SIZE - 1;
        if first_test >= self.end {
            self.done = true;
            return;
        }
        let mut h = 0u64;
        for &b in &data[first_test + 1 - GEAR_WINDOW..first_test] {
            h = step(h, b);
        }
        self.h = h;
        self.pos = first_test;
    }

    /// The position the lane may scan up to before an event (forced cut or region end).
    #[inline]
    fn limit(&self) -> usize {
        (self.start + MAX_CHUNK_SIZE).min(self.end)
    }

    /// Handles reaching [`Lane::limit`] without a hash match.
    #[inline]
    fn at_limit(&mut self, data: &[u8]) -> Option<usize> {
        let forced = self.start + MAX_CHUNK_SIZE;
        if forced <= self.end {
            self.begin(data, forced);
            Some(forced)
        } else {
            self.done = true;
            None
        }
    }

    /// Whether no further cut can be found in the region.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The next boundary (exclusive chunk end) in the region, if any.
    pub(crate) fn next_cut(&mut self, data: &[u8]) -> Option<usize> {
        if self.done {
            return None;
        }
        let lim = self.limit();
        let mut h = self.h;
        for (i, &b) in data[self.pos..lim].iter().enumerate() {
            h = step(h, b);
            if h & CHUNK_BOUNDARY_MASK == 0 {
                let cut = self.pos + i + 1;
                self.begin(data, cut);
                return Some(cut);
            }
        }
        self.pos = lim;
        self.h = h;
        self.at_limit(data)
    }
}

/// Scans `K` lanes in lock-step, appending each lane's cuts to `cuts[k]`.
///
/// On return every lane is done; its `start` is the start of its last,
/// unfinished chunk.
pub(crate) fn scan_interleaved<const K: usize>(
    data: &[u8],
    lanes: &mut [Lane; K],
    cuts: &mut [Vec<usize>; K],
) {
    while !lanes.iter().any(Lane::is_done) {
        let n = lanes.iter().map(|l| l.limit() - l.pos).min().unwrap_or(0);
        let windows: [&[u8]; K] = std::array::from_fn(|k| &data[lanes[k].pos..lanes[k].pos + n]);
        let mut h: [u64; K] = std::array::from_fn(|k| lanes[k].h);
        let mut i = 0;
        while i < n {
            for k in 0..K {
                h[k] = step(h[k], windows[k][i]);
            }
            i += 1;
            if (0..K).any(|k| h[k] & CHUNK_BOUNDARY_MASK == 0) {
                break;
            }
        }
        for k in 0..K {
            let lane = &mut lanes[k];
            lane.pos += i;
            lane.h = h[k];
            if i > 0 && h[k] & CHUNK_BOUNDARY_MASK == 0 {
                let cut = lane.pos;
                lane.begin(data, cut);
                cuts[k].push(cut);
            } else if lane.pos == lane.limit()
                && let Some(cut) = lane.at_limit(data)
            {
                cuts[k].push(cut);
            }
        }
    }
    for (lane, out) in lanes.iter_mut().zip(cuts.iter_mut()) {
        while let Some(cut) = lane.next_cut(data) {
            out.push(cut);
        }
    }
}
