//! Splitting one input into segments scanned independently, and stitching
//! their boundaries back into exactly the sequential result.
//!
//! A lane started at an arbitrary offset `s` (as if a chunk began there)
//! finds candidate cuts. Content-defined boundaries resynchronise: as soon as
//! the true chunking (continued from the previous segment) cuts at a position
//! that is also one of the segment's candidates, both scanners are in the same
//! state (a chunk starts there with a fresh hash), so every later candidate is
//! a true boundary too. Stitching re-scans only the few chunks before that
//! meeting point; if they never meet, it re-scans the whole segment, so the
//! result is exact whatever the data.

use super::gear::{Lane, preferred_lanes, scan_interleaved};

/// Smallest segment worth scanning on its own (smaller ones cost more to stitch than they save).
pub(crate) const MIN_SEGMENT: usize = 8 * 1024 * 1024;

/// Candidate cuts of one segment, as found by a lane started at its beginning.
#[derive(Debug, Default)]
pub(crate) struct SegmentScan {
    /// First byte of the segment.
    start: usize,
    /// End of the segment (exclusive).
    end: usize,
    /// Cuts found, ascending.
    cuts: Vec<usize>,
    /// Start of the lane's unfinished last chunk.
    pending: usize,
}

/// Splits `[0, len)` into `n` near-equal segments and returns their starts.
fn segment_starts(len: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| len / n * i).collect()
}

/// Scans a group of consecutive segments on this thread, as many in lock-step as the CPU likes.
fn scan_group(data: &[u8], bounds: &[(usize, usize)]) -> Vec<SegmentScan> {
    let lanes = preferred_lanes();
    let mut out = Vec::with_capacity(bounds.len());
    let mut rest = bounds;
    while !rest.is_empty() {
        let take = [8, 4, 2, 1]
            .into_iter()
            .find(|&k| k <= lanes && k <= rest.len())
            .unwrap_or(1);
        let (group, tail) = rest.split_at(take);
        match take {
            8 => out.extend(scan_k::<8>(data, group)),
            4 => out.extend(scan_k::<4>(data, group)),
            2 => out.extend(scan_k::<2>(data, group)),
            _ => out.extend(scan_k::<1>(data, group)),
        }
        rest = tail;
    }
    out
}

/// Segments worth giving each thread: as many as it scans in lock-step.
pub(crate) fn lanes_per_thread() -> usize {
    preferred_lanes()
}

/// Scans exactly `K` segments with `K` interleaved lanes.
fn scan_k<const K: usize>(data: &[u8], bounds: &[(usize, usize)]) -> [SegmentScan; K] {
    let mut lanes: [Lane; K] = std::array::from_fn(|k| Lane::new(data, bounds[k].0, bounds[k].1));
    let mut cuts: [Vec<usize>; K] =
        std::array::from_fn(|k| Vec::with_capacity((bounds[k].1 - bounds[k].0) / (64 * 1024) + 8));
    scan_interleaved(data, &mut lanes, &mut cuts);
    let mut cuts = cuts.into_iter();
    std::array::from_fn(|k| SegmentScan {
        start: bounds[k].0,
        end: bounds[k].1,
        cuts: cuts.next().unwrap_or_default(),
        pending: lanes[k].start,
    })
}

/// Chunk boundaries of `data` (exclusive ends, the last one `data.len()` when
/// `data` is non-empty), scanned in `segments` segments on `threads` threads.
///
/// When `is_final` is false the unfinished last chunk is left out: its start is
/// the last boundary returned (or 0), and more data may still extend it.
pub(crate) fn boundaries(
    data: &[u8],
    segments: usize,
    threads: usize,
    is_final: bool,
) -> Vec<usize> {
    boundaries_with(data, segments, threads, is_final, MIN_SEGMENT)
}

/// [`boundaries`] with an explicit smallest segment size (tests use tiny ones to stress stitching).
pub(crate) fn boundaries_with(
    data: &[u8],
    segments: usize,
    threads: usize,
    is_final: bool,
    min_segment: usize,
) -> Vec<usize> {
    let len = data.len();
    let segments = segments.clamp(1, (len / min_segment.max(1)).max(1));
    let starts = segment_starts(len, segments);
    let bounds: Vec<(usize, usize)> = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, starts.get(i + 1).copied().unwrap_or(len)))
        .collect();

    let threads = threads.clamp(1, segments);
    let scans: Vec<SegmentScan> = if threads == 1 {
        scan_group(data, &bounds)
    } else {
        let per_thread = bounds.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = bounds
                .chunks(per_thread)
                .map(|group| scope.spawn(move || scan_group(data, group)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut out = stitch(data, scans);
    let last = out.last().copied().unwrap_or(0);
    if is_final && last < len {
        out.push(len);
    }
    out
}

/// Joins per-segment candidates into the exact sequential boundaries.
///
/// Returns every cut; the final unfinished chunk (if any) is not included.
fn stitch(data: &[u8], scans: Vec<SegmentScan>) -> Vec<usize> {
    let mut scans = scans.into_iter();
    let Some(first) = scans.next() else {
        return Vec::new();
    };
    // The first segment starts at a true chunk start, so its cuts are exact.
    let mut out = first.cuts;
    let mut pending = first.pending;
    for seg in scans {
        if pending == seg.start {
            out.extend_from_slice(&seg.cuts);
            pending = seg.pending;
            continue;
        }
        // Continue the true chunking from `pending` until it meets a candidate.
        let mut lane = Lane::new(data, pending, seg.end);
        let mut j = 0;
        let mut synced = false;
        while let Some(cut) = lane.next_cut(data) {
            out.push(cut);
            while j < seg.cuts.len() && seg.cuts[j] < cut {
                j += 1;
            }
            if seg.cuts.get(j) == Some(&cut) {
                out.extend_from_slice(&seg.cuts[j + 1..]);
                pending = seg.pending;
                synced = true;
                break;
            }
        }
        if !synced {
            pending = lane.start;
        }
    }
    out
}
