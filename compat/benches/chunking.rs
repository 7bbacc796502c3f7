//! Chunking, chunk+hash and xorb-build throughput of cas-core next to the Xet
//! reference implementation, measured in the same run on the same data.
//!
//! Run: `cargo bench -p cas-compat --bench chunking` (env `BENCH_MB`, default 256).

use std::hint::black_box;
use std::time::{Duration, Instant};

use cas_compat::datasets;
use cas_core::chunking;

/// Best of `reps` runs of `f`, in seconds.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

fn reference_chunk_only(data: &[u8]) -> usize {
    let mut chunker = xet_data::deduplication::Chunker::default();
    let mut pos = 0;
    let mut n = 0;
    while let Some(b) = chunker.next_boundary(&data[pos..]) {
        pos += b;
        n += 1;
    }
    n + usize::from(pos < data.len())
}

fn reference_chunk_and_hash(data: &[u8]) -> usize {
    let mut chunker = xet_data::deduplication::Chunker::default();
    chunker.next_block(data, true).len()
}

fn main() {
    let mb: usize = std::env::var("BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let threads = chunking::default_threads();
    let data = datasets::mixed(1, mb << 20);
    let gb = data.len() as f64 / 1e9;

    // Sanity: identical results before timing anything.
    let ours = chunking::chunk_and_hash(&data);
    let reference = xet_data::deduplication::Chunker::default().next_block(&data, true);
    assert_eq!(
        ours.len(),
        reference.len(),
        "chunk count differs from the reference"
    );
    assert!(
        ours.iter()
            .zip(&reference)
            .all(|(a, b)| a.len == b.data.len() && a.hash.0 == *b.hash.as_bytes())
    );
    assert_eq!(chunking::chunk_and_hash_parallel(&data, threads), ours);
    drop(reference);

    let rows: Vec<(&str, f64)> = vec![
        (
            "reference: chunk",
            best_of(reps, || {
                black_box(reference_chunk_only(&data));
            }),
        ),
        (
            "ours: chunk, 1 thread",
            best_of(reps, || {
                black_box(chunking::chunk_boundaries(&data));
            }),
        ),
        (
            "ours: chunk, all threads",
            best_of(reps, || {
                black_box(chunking::chunk_boundaries_parallel(&data, threads));
            }),
        ),
        (
            "reference: chunk+hash",
            best_of(reps, || {
                black_box(reference_chunk_and_hash(&data));
            }),
        ),
        (
            "ours: chunk+hash, 1 thread",
            best_of(reps, || {
                black_box(chunking::chunk_and_hash(&data));
            }),
        ),
        (
            "ours: chunk+hash, all threads",
            best_of(reps, || {
                black_box(chunking::chunk_and_hash_parallel(&data, threads));
            }),
        ),
    ];
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.0 == name)
            .map(|r| r.1)
            .unwrap_or(f64::NAN)
    };

    println!(
        "{} MB of mixed data, best of {reps}, {threads} threads available",
        mb
    );
    println!("{:<34} {:>10} {:>10}", "case", "seconds", "GB/s");
    for (name, secs) in &rows {
        println!("{name:<34} {secs:>10.3} {:>10.2}", gb / secs);
    }
    println!();
    println!("ratios (higher is better)");
    println!(
        "{:<52} {:>6.2}x",
        "chunk, 1 thread / reference",
        get("reference: chunk") / get("ours: chunk, 1 thread")
    );
    println!(
        "{:<52} {:>6.2}x",
        "chunk+hash, 1 thread / reference (target >= 1.3)",
        get("reference: chunk+hash") / get("ours: chunk+hash, 1 thread")
    );
    println!(
        "{:<52} {:>6.2}x",
        "chunk+hash, all threads / ours 1 thread (target >= 1.7)",
        get("ours: chunk+hash, 1 thread") / get("ours: chunk+hash, all threads")
    );
    println!(
        "{:<52} {:>6.2}x",
        "chunk+hash, all threads / reference",
        get("reference: chunk+hash") / get("ours: chunk+hash, all threads")
    );
}
