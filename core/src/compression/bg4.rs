//! Byte grouping (BG4): byte `i` of a chunk goes to group `i % 4`, the groups
//! are concatenated, so that the similar bytes of 32-bit values sit together
//! and LZ4 finds more matches.

/// Lengths of the four BG4 groups of `n` bytes: group `k` has `n/4 + (k < n%4)` bytes.
#[inline]
pub const fn bg4_group_lens(n: usize) -> [usize; 4] {
    let q = n / 4;
    let r = n % 4;
    [
        q + (r > 0) as usize,
        q + (r > 1) as usize,
        q + (r > 2) as usize,
        q,
    ]
}

/// Transposes a 4x4 byte matrix held as four little-endian rows: returns the
/// columns. BG4 split and regroup are both this transform on 16-byte blocks.
#[inline(always)]
fn transpose4x4(r: [u32; 4]) -> [u32; 4] {
    const LO: u32 = 0x00FF_00FF;
    // Pair rows 0/1 and 2/3 byte by byte...
    let t0 = (r[0] & LO) | ((r[1] & LO) << 8);
    let t1 = ((r[0] >> 8) & LO) | (r[1] & !LO);
    let t2 = (r[2] & LO) | ((r[3] & LO) << 8);
    let t3 = ((r[2] >> 8) & LO) | (r[3] & !LO);
    // ...then the pairs half-word by half-word.
    [
        (t0 & 0xFFFF) | (t2 << 16),
        (t1 & 0xFFFF) | (t3 << 16),
        (t0 >> 16) | (t2 & 0xFFFF_0000),
        (t1 >> 16) | (t3 & 0xFFFF_0000),
    ]
}

/// Splits `src` into the four byte groups, written to `dst` (same length).
#[inline]
pub(super) fn bg4_split_slices(src: &[u8], dst: &mut [u8]) {
    debug_assert_eq!(src.len(), dst.len());
    let [l0, l1, l2, _] = bg4_group_lens(src.len());
    let (g0, rest) = dst.split_at_mut(l0);
    let (g1, rest) = rest.split_at_mut(l1);
    let (g2, g3) = rest.split_at_mut(l2);
    let q = src.len() / 4;
    // Sixteen bytes in, four to each group out, then single words; zipped
    // fixed-size chunks keep the loops free of bounds checks.
    let wide = q / 4;
    for ((((w, a), b), c), d) in src[..16 * wide]
        .chunks_exact(16)
        .zip(g0.chunks_exact_mut(4))
        .zip(g1.chunks_exact_mut(4))
        .zip(g2.chunks_exact_mut(4))
        .zip(g3.chunks_exact_mut(4))
    {
        let cols = transpose4x4([le32(&w[0..]), le32(&w[4..]), le32(&w[8..]), le32(&w[12..])]);
        a.copy_from_slice(&cols[0].to_le_bytes());
        b.copy_from_slice(&cols[1].to_le_bytes());
        c.copy_from_slice(&cols[2].to_le_bytes());
        d.copy_from_slice(&cols[3].to_le_bytes());
    }
    let body = src[16 * wide..].chunks_exact(4);
    let tail = body.remainder();
    for ((((w, a), b), c), d) in body
        .zip(g0[4 * wide..].iter_mut())
        .zip(g1[4 * wide..].iter_mut())
        .zip(g2[4 * wide..].iter_mut())
        .zip(g3[4 * wide..].iter_mut())
    {
        *a = w[0];
        *b = w[1];
        *c = w[2];
        *d = w[3];
    }
    for (k, &byte) in tail.iter().enumerate() {
        match k {
            0 => g0[q] = byte,
            1 => g1[q] = byte,
            _ => g2[q] = byte,
        }
    }
}

/// Inverse of [`bg4_split_slices`]: interleaves the four groups of `src` into `dst`.
#[inline]
pub(super) fn bg4_regroup_slices(src: &[u8], dst: &mut [u8]) {
    debug_assert_eq!(src.len(), dst.len());
    let [l0, l1, l2, _] = bg4_group_lens(src.len());
    let (g0, rest) = src.split_at(l0);
    let (g1, rest) = rest.split_at(l1);
    let (g2, g3) = rest.split_at(l2);
    let q = src.len() / 4;
    let (body, tail) = dst.split_at_mut(4 * q);
    let wide = q / 4;
    let (wide_body, body) = body.split_at_mut(16 * wide);
    for ((((w, a), b), c), d) in wide_body
        .chunks_exact_mut(16)
        .zip(g0.chunks_exact(4))
        .zip(g1.chunks_exact(4))
        .zip(g2.chunks_exact(4))
        .zip(g3.chunks_exact(4))
    {
        let rows = transpose4x4([le32(a), le32(b), le32(c), le32(d)]);
        w[0..4].copy_from_slice(&rows[0].to_le_bytes());
        w[4..8].copy_from_slice(&rows[1].to_le_bytes());
        w[8..12].copy_from_slice(&rows[2].to_le_bytes());
        w[12..16].copy_from_slice(&rows[3].to_le_bytes());
    }
    for ((((w, a), b), c), d) in body
        .chunks_exact_mut(4)
        .zip(g0[4 * wide..].iter())
        .zip(g1[4 * wide..].iter())
        .zip(g2[4 * wide..].iter())
        .zip(g3[4 * wide..].iter())
    {
        w[0] = *a;
        w[1] = *b;
        w[2] = *c;
        w[3] = *d;
    }
    for (k, out) in tail.iter_mut().enumerate() {
        *out = match k {
            0 => g0[q],
            1 => g1[q],
            _ => g2[q],
        };
    }
}

/// BG4 byte grouping: replaces `out`'s contents with the groups of `data`.
pub fn bg4_split(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(data.len(), 0);
    bg4_split_slices(data, out);
}

/// Inverse of [`bg4_split`]: replaces `out`'s contents with the interleaved bytes.
pub fn bg4_regroup(grouped: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(grouped.len(), 0);
    bg4_regroup_slices(grouped, out);
}

/// Sample size of the byte-grouping test (bytes, a multiple of 4).
const BG4_SAMPLE_BYTES: usize = 8192;
/// Length of each evenly spaced sample window (bytes, a multiple of 4).
const BG4_SAMPLE_WINDOW: usize = 256;
/// Below this size byte grouping is never tried.
const BG4_MIN_LEN: usize = 256;
/// Jensen-Shannon divergence (bits) between the four byte lanes above which
/// byte grouping is tried. Measured on 64 KiB chunks: random bytes 0.06-0.08
/// (estimator bias), text 0.01, f32 weights 0.75, bf16 0.9, small i32 1.1+.
const BG4_MIN_DIVERGENCE: f64 = 0.2;

/// Shannon entropy (bits) of a histogram with `total` samples.
fn entropy(hist: &[u32; 256], total: u32) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let t = f64::from(total);
    let sum: f64 = hist
        .iter()
        .filter(|&&c| c != 0)
        .map(|&c| {
            let c = f64::from(c);
            c * c.log2()
        })
        .sum();
    t.log2() - sum / t
}

/// The cheap test that byte grouping could help: the four byte lanes (`i % 4`)
/// of a sample are distributed differently.
///
/// It measures the Jensen-Shannon divergence between the lanes' byte
/// histograms (entropy of the mixture minus the mean lane entropy) on up to
/// 8 KiB sampled in evenly spaced 256-byte windows. Grouping can only create
/// new LZ4 matches when some lane is more predictable than the mixture; when
/// all lanes look alike (text, random bytes, most binaries) it only breaks up
/// existing matches.
pub fn bg4_may_help(data: &[u8]) -> bool {
    if data.len() < BG4_MIN_LEN {
        return false;
    }
    let mut hist = [[0u32; 256]; 4];
    let mut add = |window: &[u8]| {
        for w in window.chunks_exact(4) {
            hist[0][w[0] as usize] += 1;
            hist[1][w[1] as usize] += 1;
            hist[2][w[2] as usize] += 1;
            hist[3][w[3] as usize] += 1;
        }
    };
    if data.len() <= BG4_SAMPLE_BYTES {
        add(data);
    } else {
        let windows = BG4_SAMPLE_BYTES / BG4_SAMPLE_WINDOW;
        // Window starts stay multiples of 4 so lanes keep their meaning.
        let stride = (data.len() - BG4_SAMPLE_WINDOW) / (windows - 1) / 4 * 4;
        for i in 0..windows {
            let start = i * stride;
            add(&data[start..start + BG4_SAMPLE_WINDOW]);
        }
    }
    let per_lane: u32 = hist[0].iter().sum();
    let mut mixture = [0u32; 256];
    for lane in &hist {
        for (m, &c) in mixture.iter_mut().zip(lane.iter()) {
            *m += c;
        }
    }
    let mean_lane: f64 = hist.iter().map(|h| entropy(h, per_lane)).sum::<f64>() / 4.0;
    let divergence = entropy(&mixture, per_lane * 4) - mean_lane;
    divergence > BG4_MIN_DIVERGENCE
}

/// Reads a little-endian u32 from the first four bytes of `b`.
#[inline]
fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
