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

/// Advances `K` hash chains over their windows (each at least `n` bytes long)
/// and stops after the first step at which any chain matches the boundary
/// mask, or after `n` steps. Returns the number of steps taken.
#[inline]
fn advance<const K: usize>(windows: &[&[u8]; K], h: &mut [u64; K], n: usize) -> usize {
    // The SIMD kernels below read without bounds checks: this check is what makes them sound.
    assert!(windows.iter().all(|w| w.len() >= n));
    #[cfg(target_arch = "x86_64")]
    {
        if let (Ok(w), Ok(h8)) = (
            <&[&[u8]; 8]>::try_from(windows.as_slice()),
            <&mut [u64; 8]>::try_from(h.as_mut_slice()),
        ) && simd::has_avx512()
        {
            // SAFETY: AVX-512F is available (checked just above) and every
            // window holds at least `n` bytes (the caller's contract).
            return unsafe { simd::advance8_avx512(w, h8, n) };
        }
        if let (Ok(w), Ok(h4)) = (
            <&[&[u8]; 4]>::try_from(windows.as_slice()),
            <&mut [u64; 4]>::try_from(h.as_mut_slice()),
        ) && simd::has_avx2()
        {
            // SAFETY: AVX2 is available and every window holds at least `n` bytes.
            return unsafe { simd::advance4_avx2(w, h4, n) };
        }
    }
    advance_scalar(windows, h, n)
}

/// The portable form of [`advance`].
#[inline]
fn advance_scalar<const K: usize>(windows: &[&[u8]; K], h: &mut [u64; K], n: usize) -> usize {
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
    i
}

/// The preferred number of lanes scanned in lock-step on this CPU.
pub(crate) fn preferred_lanes() -> usize {
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx512() {
        return 8;
    }
    4
}

/// SIMD forms of [`advance`]: one 64-bit vector element per lane.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{CHUNK_BOUNDARY_MASK, TABLE};
    use std::arch::x86_64::*;

    /// Whether the CPU has AVX-512F (detection is cached by std).
    #[inline]
    pub(super) fn has_avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// Whether the CPU has AVX2 (detection is cached by std).
    #[inline]
    pub(super) fn has_avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    /// Table entry for byte `i` of window `w`.
    ///
    /// # Safety
    /// `i < w.len()`.
    #[inline(always)]
    unsafe fn entry(w: &[u8], i: usize) -> i64 {
        // SAFETY: the caller guarantees `i < w.len()`.
        TABLE[unsafe { *w.get_unchecked(i) } as usize] as i64
    }

    /// Eight lanes in one AVX-512 register.
    ///
    /// # Safety
    /// The CPU supports AVX-512F and every window holds at least `n` bytes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn advance8_avx512(w: &[&[u8]; 8], h: &mut [u64; 8], n: usize) -> usize {
        let mask = _mm512_set1_epi64(CHUNK_BOUNDARY_MASK as i64);
        // SAFETY: `h` is 8 contiguous u64 values; unaligned load.
        let mut v = unsafe { _mm512_loadu_si512(h.as_ptr().cast()) };
        let mut i = 0;
        while i < n {
            // SAFETY: i < n <= every window's length.
            let g = unsafe {
                _mm512_set_epi64(
                    entry(w[7], i),
                    entry(w[6], i),
                    entry(w[5], i),
                    entry(w[4], i),
                    entry(w[3], i),
                    entry(w[2], i),
                    entry(w[1], i),
                    entry(w[0], i),
                )
            };
            v = _mm512_add_epi64(_mm512_slli_epi64::<1>(v), g);
            i += 1;
            if _mm512_testn_epi64_mask(v, mask) != 0 {
                break;
            }
        }
        // SAFETY: `h` is 8 contiguous u64 values; unaligned store.
        unsafe { _mm512_storeu_si512(h.as_mut_ptr().cast(), v) };
        i
    }

    /// Four lanes in one AVX2 register.
    ///
    /// # Safety
    /// The CPU supports AVX2 and every window holds at least `n` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn advance4_avx2(w: &[&[u8]; 4], h: &mut [u64; 4], n: usize) -> usize {
        let mask = _mm256_set1_epi64x(CHUNK_BOUNDARY_MASK as i64);
        let zero = _mm256_setzero_si256();
        // SAFETY: `h` is 4 contiguous u64 values; unaligned load.
        let mut v = unsafe { _mm256_loadu_si256(h.as_ptr().cast()) };
        let mut i = 0;
        while i < n {
            // SAFETY: i < n <= every window's length.
            let g = unsafe {
                _mm256_set_epi64x(
                    entry(w[3], i),
                    entry(w[2], i),
                    entry(w[1], i),
                    entry(w[0], i),
                )
            };
            v = _mm256_add_epi64(_mm256_slli_epi64::<1>(v), g);
            i += 1;
            let hit = _mm256_cmpeq_epi64(_mm256_and_si256(v, mask), zero);
            if _mm256_movemask_epi8(hit) != 0 {
                break;
            }
        }
        // SAFETY: `h` is 4 contiguous u64 values; unaligned store.
        unsafe { _mm256_storeu_si256(h.as_mut_ptr().cast(), v) };
        i
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
        let i = advance(&windows, &mut h, n);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Every SIMD kernel stops at the same step with the same hashes as the portable one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_kernels_agree_with_scalar() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut data = vec![0u8; 1 << 20];
        rng.fill(&mut data[..]);
        for trial in 0..400 {
            let n = rng.random_range(0..200_000);
            let starts: [usize; 8] = std::array::from_fn(|_| rng.random_range(0..data.len() - n));
            let windows: [&[u8]; 8] = std::array::from_fn(|k| &data[starts[k]..starts[k] + n]);
            let h0: [u64; 8] =
                std::array::from_fn(|_| if trial % 2 == 0 { rng.random() } else { 0 });
            if simd::has_avx512() {
                let (mut a, mut b) = (h0, h0);
                let steps = advance_scalar(&windows, &mut a, n);
                // SAFETY: AVX-512F detected; windows are n bytes long.
                assert_eq!(unsafe { simd::advance8_avx512(&windows, &mut b, n) }, steps);
                assert_eq!(a, b);
            }
            if simd::has_avx2() {
                let w4: [&[u8]; 4] = std::array::from_fn(|k| windows[k]);
                let (mut a, mut b): ([u64; 4], [u64; 4]) = (
                    std::array::from_fn(|k| h0[k]),
                    std::array::from_fn(|k| h0[k]),
                );
                let steps = advance_scalar(&w4, &mut a, n);
                // SAFETY: AVX2 detected; windows are n bytes long.
                assert_eq!(unsafe { simd::advance4_avx2(&w4, &mut b, n) }, steps);
                assert_eq!(a, b);
            }
        }
    }
}
