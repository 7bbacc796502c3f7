//! Chunking, chunk+hash and xorb-build throughput of cas-core next to the Xet
//! reference implementation, measured in the same run on the same data.
//!
//! Run: `cargo bench -p cas-compat --bench chunking` (env `BENCH_MB`, default 256).

use std::hint::black_box;
use std::time::{Duration, Instant};

use cas_compat::datasets;
use cas_core::chunking;
use cas_core::xorb::{AddChunk, XorbBuilder};

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

/// Packs chunks into xorbs with our builder (automatic compression); returns total serialized bytes.
fn ours_build_xorbs(data: &[u8], chunks: &[chunking::Chunk]) -> usize {
    let mut builder = XorbBuilder::new();
    let mut total = 0;
    for c in chunks {
        let bytes = &data[c.range()];
        if let Ok(AddChunk::Full) = builder.add_chunk_with_hash(bytes, c.hash) {
            total += builder.finish().expect("non-empty xorb").bytes.len();
            let added = builder
                .add_chunk_with_hash(bytes, c.hash)
                .expect("chunk fits an empty xorb");
            assert!(matches!(added, AddChunk::Added(_)));
        }
    }
    if !builder.is_empty() {
        total += builder.finish().expect("non-empty xorb").bytes.len();
    }
    total
}

/// Packs the same chunks with the reference serializer (its default: automatic, re-tested every 32 chunks).
fn reference_build_xorbs(chunks: &[xet_core_structures::xorb_object::Chunk]) -> usize {
    use xet_core_structures::xorb_object::{CompressionScheme, RawXorbData, SerializedXorbObject};
    let mut total = 0;
    let mut start = 0;
    let mut bytes = 0;
    let flush = |s: usize, e: usize| {
        let raw = RawXorbData::from_chunks(&chunks[s..e], vec![0]);
        let x = SerializedXorbObject::from_xorb_with_compression(
            raw,
            CompressionScheme::Auto,
            false,
            32,
        )
        .expect("reference serializes");
        x.serialized_data.len()
    };
    for (i, c) in chunks.iter().enumerate() {
        if bytes + c.data.len() > cas_core::constants::MAX_XORB_BYTES
            || i - start == cas_core::constants::MAX_XORB_CHUNKS
        {
            total += flush(start, i);
            start = i;
            bytes = 0;
        }
        bytes += c.data.len();
    }
    if start < chunks.len() {
        total += flush(start, chunks.len());
    }
    total
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

    let mut xorb_sizes = (0, 0);
    let xorb_rows: Vec<(&str, f64)> = vec![
        (
            "reference: xorb build (auto)",
            best_of(reps, || {
                xorb_sizes.1 = black_box(reference_build_xorbs(&reference));
            }),
        ),
        (
            "ours: xorb build (auto), 1 thread",
            best_of(reps, || {
                xorb_sizes.0 = black_box(ours_build_xorbs(&data, &ours));
            }),
        ),
    ];
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
    let rows: Vec<(&str, f64)> = rows.into_iter().chain(xorb_rows).collect();
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
    println!(
        "{:<52} {:>6.2}x",
        "xorb build / reference",
        get("reference: xorb build (auto)") / get("ours: xorb build (auto), 1 thread")
    );
    println!(
        "{:<52} {:>6.3}  ({} vs {} bytes)",
        "xorb bytes, ours / reference (lower is better)",
        xorb_sizes.0 as f64 / xorb_sizes.1 as f64,
        xorb_sizes.0,
        xorb_sizes.1
    );
}
