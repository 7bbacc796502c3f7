//! Deterministic synthetic inputs resembling what the store holds: random
//! (compressed) bytes, float tensors, text, zero runs and repeated blocks.

use rand::{Rng, SeedableRng, rngs::StdRng};

/// `len` uniformly random bytes from `seed`.
pub fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill(&mut v[..]);
    v
}

/// `len` zero bytes.
pub fn zeros(len: usize) -> Vec<u8> {
    vec![0u8; len]
}

/// A block of `period` random bytes repeated to `len` bytes.
pub fn repetitive(seed: u64, len: usize, period: usize) -> Vec<u8> {
    let block = random(seed, period.max(1));
    block.iter().copied().cycle().take(len).collect()
}

/// English-like text: words from a small vocabulary, spaces and newlines.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "weights",
        "tensor",
        "layer",
        "attention",
        "of",
        "and",
        "dataset",
        "shard",
        "version",
        "checkpoint",
        "gradient",
        "token",
        "embedding",
        "a",
        "is",
        "in",
        "with",
        "for",
        "training",
        "loss",
        "0.125",
        "42",
        "batch",
        "size",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        v.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
        v.push(if rng.random_range(0..12) == 0 {
            b'\n'
        } else {
            b' '
        });
    }
    v.truncate(len);
    v
}

/// Little-endian float32 values of a smooth, noisy distribution, like model weights.
pub fn float_tensor(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(len + 4);
    while v.len() < len {
        // Sum of uniforms: roughly normal, small magnitude, as trained weights are.
        let x: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 0.05;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A mix of all the kinds above in pieces of up to a few MB.
pub fn mixed(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = rng.random_range(1..4 << 20).min(len - v.len());
        let s = rng.random();
        match rng.random_range(0..10) {
            0 => v.extend(zeros(n)),
            1 => v.extend(repetitive(s, n, rng.random_range(1..200_000))),
            2 | 3 => v.extend(text(s, n)),
            4..=6 => v.extend(float_tensor(s, n)),
            _ => v.extend(random(s, n)),
        }
    }
    v
}
