//! Tests of the compression schemes, the LZ4 frame codec and BG4.

use std::io::Write;

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::lz4_frame::xxh32;
use super::*;

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn text_bytes(n: usize) -> Vec<u8> {
    let words = [
        "the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dog ", "xet ", "chunk ",
        "merkle ", "hash\n",
    ];
    let mut rng = StdRng::seed_from_u64(7);
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        v.extend_from_slice(words[rng.random_range(0..words.len())].as_bytes());
    }
    v.truncate(n);
    v
}

/// Little-endian f32 values drawn from N(0, 0.02), like model weights.
fn f32_weights(seed: u64, n_bytes: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(n_bytes + 4);
    while v.len() < n_bytes {
        let u1: f32 = rng.random::<f32>().max(1e-7);
        let u2: f32 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
        v.extend_from_slice(&(z * 0.02).to_le_bytes());
    }
    v.truncate(n_bytes);
    v
}

/// bf16 values (the high halves of f32 weights).
fn bf16_weights(seed: u64, n_bytes: usize) -> Vec<u8> {
    let f = f32_weights(seed, n_bytes * 2 + 4);
    let mut v: Vec<u8> = f.chunks_exact(4).flat_map(|w| [w[2], w[3]]).collect();
    v.truncate(n_bytes);
    v
}

fn reference_frame(data: &[u8], info: FrameInfo) -> Vec<u8> {
    let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn decode(payload: &[u8], scheme: CompressionScheme, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress(payload, scheme, len, &mut out)?;
    Ok(out)
}

fn decode_err(payload: &[u8], scheme: CompressionScheme, len: usize) -> String {
    match decode(payload, scheme, len) {
        Err(Error::Decompression { index: 0, reason }) => reason,
        other => panic!("expected a decompression error, got {other:?}"),
    }
}

#[test]
fn scheme_bytes_and_names() {
    for (byte, scheme, name) in [
        (0u8, CompressionScheme::None, "none"),
        (1, CompressionScheme::Lz4, "lz4"),
        (2, CompressionScheme::ByteGrouping4Lz4, "bg4-lz4"),
    ] {
        assert_eq!(CompressionScheme::try_from(byte), Ok(scheme));
        assert_eq!(u8::from(scheme), byte);
        assert_eq!(scheme.to_string(), name);
        assert_eq!(CompressionScheme::from_name(name), Some(scheme));
        assert_eq!(
            CompressionPolicy::from_name(&name.to_uppercase()),
            Some(CompressionPolicy::Only(scheme))
        );
    }
    assert_eq!(
        CompressionPolicy::from_name(" auto "),
        Some(CompressionPolicy::Auto)
    );
    assert_eq!(CompressionPolicy::from_name("zstd"), None);
    for bad in [3u8, 4, 65, 99, 255] {
        let e = CompressionScheme::try_from(bad).unwrap_err();
        assert_eq!(e.code(), "unknown_compression");
        assert_eq!(
            e,
            Error::UnknownCompression {
                index: 0,
                scheme: bad
            }
        );
    }
}

#[test]
fn bg4_known_layout() {
    assert_eq!(bg4_group_lens(0), [0, 0, 0, 0]);
    assert_eq!(bg4_group_lens(5), [2, 1, 1, 1]);
    assert_eq!(bg4_group_lens(6), [2, 2, 1, 1]);
    assert_eq!(bg4_group_lens(7), [2, 2, 2, 1]);
    assert_eq!(bg4_group_lens(8), [2, 2, 2, 2]);
    let data: Vec<u8> = (0..10).collect();
    let mut grouped = Vec::new();
    bg4_split(&data, &mut grouped);
    assert_eq!(grouped, [0, 4, 8, 1, 5, 9, 2, 6, 3, 7]);
    let mut back = vec![0xAA; 3];
    bg4_regroup(&grouped, &mut back);
    assert_eq!(back, data);
}

#[test]
fn xxh32_known_values() {
    assert_eq!(xxh32(b""), 0x02CC_5D05);
    assert_eq!(xxh32(b"a"), 0x550D_7456);
    assert_eq!(xxh32(b"abc"), 0x32D1_53FF);
    assert_eq!(
        xxh32(b"Nobody inspects the spammish repetition"),
        0xE229_3B2F
    );
}

#[test]
fn lz4_frames_are_byte_identical_to_the_reference_encoder() {
    let mut c = Compressor::new();
    for len in [
        0usize, 1, 13, 100, 4096, 65_535, 65_536, 65_537, 100_000, 131_072,
    ] {
        for data in [
            random_bytes(len as u64, len),
            text_bytes(len),
            vec![0u8; len],
        ] {
            let reference = reference_frame(&data, FrameInfo::new());
            let mut ours = Vec::new();
            c.compress_exact(&data, CompressionScheme::Lz4, &mut ours);
            assert_eq!(ours, reference, "len {len}");
            assert_eq!(compress(&data, CompressionScheme::Lz4), reference);
        }
    }
}

#[test]
fn decodes_every_reference_frame_flavour() {
    // Frames the reference decoder accepts: linked blocks, checksums, content
    // size, several block sizes, several blocks per frame.
    let data = text_bytes(MAX_CHUNK_UNCOMPRESSED_LEN);
    let weights = f32_weights(3, 90_001);
    for block_size in [
        BlockSize::Max64KB,
        BlockSize::Max256KB,
        BlockSize::Max1MB,
        BlockSize::Max4MB,
    ] {
        for linked in [false, true] {
            for checksums in [false, true] {
                for with_size in [false, true] {
                    let info = FrameInfo::new()
                        .block_size(block_size)
                        .block_mode(if linked {
                            BlockMode::Linked
                        } else {
                            BlockMode::Independent
                        })
                        .block_checksums(checksums)
                        .content_checksum(checksums);
                    for d in [&data, &weights] {
                        let info = info
                            .clone()
                            .content_size(with_size.then_some(d.len() as u64));
                        let frame = reference_frame(d, info);
                        assert_eq!(&decode(&frame, CompressionScheme::Lz4, d.len()).unwrap(), d);
                    }
                }
            }
        }
    }
}

#[test]
fn linked_blocks_reach_back_into_earlier_blocks() {
    // 64 KiB blocks of repeated random material: later blocks reference earlier ones.
    let unit = random_bytes(11, 20_000);
    let data: Vec<u8> = unit
        .iter()
        .cycle()
        .take(MAX_CHUNK_UNCOMPRESSED_LEN)
        .copied()
        .collect();
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Linked);
    let frame = reference_frame(&data, info);
    assert!(frame.len() < 30_000, "blocks should be linked");
    assert_eq!(
        decode(&frame, CompressionScheme::Lz4, data.len()).unwrap(),
        data
    );
}

#[test]
fn concatenated_frames_decode_like_the_reference() {
    let a = text_bytes(1000);
    let b = random_bytes(1, 500);
    let mut payload = compress(&a, CompressionScheme::Lz4);
    payload.extend_from_slice(&compress(&b, CompressionScheme::Lz4));
    let out = decode(&payload, CompressionScheme::Lz4, 1500).unwrap();
    assert_eq!(&out[..1000], &a[..]);
    assert_eq!(&out[1000..], &b[..]);
}

#[test]
fn malformed_lz4_payloads_are_typed_errors() {
    let data = text_bytes(5000);
    let good = compress(&data, CompressionScheme::Lz4);
    let n = data.len();
    let lz4 = CompressionScheme::Lz4;

    assert!(decode_err(&[], lz4, n).contains("empty"));
    assert!(decode_err(b"not lz4 at all", lz4, n).contains("not an LZ4 frame"));
    assert!(decode_err(&0x184C_2102u32.to_le_bytes(), lz4, n).contains("legacy"));
    assert!(decode_err(&0x184D_2A53u32.to_le_bytes(), lz4, n).contains("skippable"));
    // Every truncation of a valid frame fails.
    for cut in 1..good.len() {
        decode_err(&good[..cut], lz4, n);
    }
    // Trailing garbage after a complete frame.
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk");
    assert!(decode_err(&trailing, lz4, n).contains("trailing"));
    // Header checksum.
    let mut bad_hc = good.clone();
    bad_hc[6] ^= 1;
    assert!(decode_err(&bad_hc, lz4, n).contains("header checksum"));
    // Declared length too small or too large.
    assert!(decode_err(&good, lz4, n - 1).contains("declared length"));
    assert!(decode_err(&good, lz4, n + 1).contains("declares"));
    // A None payload must have exactly the declared length.
    assert!(decode_err(&data, CompressionScheme::None, n + 1).contains("declares"));

    // Hand-built frames for the descriptor checks.
    let frame = |flg: u8, bd: u8, rest: &[u8]| {
        let mut f = 0x184D_2204u32.to_le_bytes().to_vec();
        f.extend_from_slice(&[flg, bd, (xxh32(&[flg, bd]) >> 8) as u8]);
        f.extend_from_slice(rest);
        f
    };
    let end = 0u32.to_le_bytes();
    assert!(decode_err(&frame(0x00, 0x40, &end), lz4, 0).contains("version"));
    assert!(decode_err(&frame(0x62, 0x40, &end), lz4, 0).contains("reserved"));
    assert!(decode_err(&frame(0x60, 0xC0, &end), lz4, 0).contains("reserved"));
    assert!(decode_err(&frame(0x61, 0x40, &end), lz4, 0).contains("dictionary"));
    assert!(decode_err(&frame(0x60, 0x30, &end), lz4, 0).contains("block size code"));
    assert_eq!(decode(&frame(0x60, 0x40, &end), lz4, 0).unwrap(), b"");
    // A stored block larger than the frame's block size.
    let mut big = (65_537u32 | 0x8000_0000).to_le_bytes().to_vec();
    big.extend(std::iter::repeat_n(0u8, 65_537));
    big.extend_from_slice(&end);
    assert!(decode_err(&frame(0x60, 0x40, &big), lz4, 65_537).contains("exceeds the frame"));
    // A stored block larger than the declared length.
    let mut stored = (10u32 | 0x8000_0000).to_le_bytes().to_vec();
    stored.extend_from_slice(&[7u8; 10]);
    stored.extend_from_slice(&end);
    assert!(decode_err(&frame(0x60, 0x40, &stored), lz4, 9).contains("declared length"));
    assert_eq!(
        decode(&frame(0x60, 0x40, &stored), lz4, 10).unwrap(),
        [7u8; 10]
    );

    // Content size and checksums that disagree with the content.
    let with_size = reference_frame(&data, FrameInfo::new().content_size(Some(n as u64)));
    let mut wrong_size = with_size.clone();
    wrong_size[6] ^= 1; // first byte of the content-size field
    let hc = (xxh32(&wrong_size[4..14]) >> 8) as u8;
    wrong_size[14] = hc;
    assert!(decode_err(&wrong_size, lz4, n).contains("content bytes"));
    let checked = reference_frame(&data, FrameInfo::new().content_checksum(true));
    let mut wrong_sum = checked.clone();
    *wrong_sum.last_mut().unwrap() ^= 1;
    assert!(decode_err(&wrong_sum, lz4, n).contains("content checksum"));
    let block_checked = reference_frame(&data, FrameInfo::new().block_checksums(true));
    let mut wrong_block = block_checked.clone();
    let len = wrong_block.len();
    wrong_block[len - 5] ^= 1; // last byte of the block checksum, before the end mark
    assert!(decode_err(&wrong_block, lz4, n).contains("block checksum"));

    // LZ4 block garbage inside a well-formed frame.
    let mut garbage = 20u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xF0; 20]);
    garbage.extend_from_slice(&end);
    decode_err(&frame(0x60, 0x40, &garbage), lz4, 1000);
}

#[test]
fn huge_declared_lengths_are_refused_before_allocating() {
    let mut out = Vec::new();
    for scheme in CompressionScheme::ALL {
        let e = decompress(b"x", scheme, 1 << 30, &mut out).unwrap_err();
        assert_eq!(e.code(), "decompression_failed");
        assert_eq!(out.capacity(), 0, "nothing may be allocated");
    }
    // A frame claiming a 4 MiB block size decodes into no more than the declared length.
    let data = random_bytes(5, 1000);
    let frame = reference_frame(&data, FrameInfo::new().block_size(BlockSize::Max4MB));
    let mut out = Vec::new();
    decompress(&frame, CompressionScheme::Lz4, 1000, &mut out).unwrap();
    assert_eq!(out, data);
    assert!(out.capacity() < 4096);
}

#[test]
fn decompress_appends_and_restores_on_error() {
    let data = text_bytes(3000);
    let payload = compress(&data, CompressionScheme::ByteGrouping4Lz4);
    let mut out = b"prefix".to_vec();
    decompress(
        &payload,
        CompressionScheme::ByteGrouping4Lz4,
        3000,
        &mut out,
    )
    .unwrap();
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], &data[..]);
    let mut out = b"prefix".to_vec();
    decompress(
        &payload,
        CompressionScheme::ByteGrouping4Lz4,
        2999,
        &mut out,
    )
    .unwrap_err();
    assert_eq!(out, b"prefix");
    // BG4 payload read as plain LZ4 gives the grouped bytes, not the data.
    let grouped = decode(&payload, CompressionScheme::Lz4, 3000).unwrap();
    let mut expect = Vec::new();
    bg4_split(&data, &mut expect);
    assert_eq!(grouped, expect);
}

#[test]
fn auto_choice_on_typical_data() {
    let n = 65_536;
    // Random bytes: stored raw, and byte grouping is not even tried.
    let random = random_bytes(9, n);
    assert!(!bg4_may_help(&random));
    assert_eq!(
        compress_auto(&random),
        (CompressionScheme::None, random.clone())
    );
    // Text: lanes alike, LZ4 wins.
    let text = text_bytes(n);
    assert!(!bg4_may_help(&text));
    assert_eq!(compress_auto(&text).0, CompressionScheme::Lz4);
    // Zeros: LZ4.
    assert_eq!(compress_auto(&vec![0u8; n]).0, CompressionScheme::Lz4);
    // Float weights: lanes differ and byte grouping wins.
    for data in [f32_weights(1, n), bf16_weights(2, n)] {
        assert!(bg4_may_help(&data));
        let (scheme, payload) = compress_auto(&data);
        assert_eq!(scheme, CompressionScheme::ByteGrouping4Lz4);
        assert!(payload.len() < compress(&data, CompressionScheme::Lz4).len());
        assert_eq!(decode(&payload, scheme, n).unwrap(), data);
    }
    // Tiny inputs never grow.
    assert_eq!(
        compress_auto(b"abc"),
        (CompressionScheme::None, b"abc".to_vec())
    );
    assert_eq!(compress_auto(b""), (CompressionScheme::None, Vec::new()));
}

#[test]
fn only_policy_falls_back_to_none() {
    let mut c = Compressor::new();
    let random = random_bytes(4, 10_000);
    for scheme in CompressionScheme::ALL {
        let mut out = Vec::new();
        let used = c.compress_append(&random, CompressionPolicy::Only(scheme), &mut out);
        assert_eq!(used, CompressionScheme::None);
        assert_eq!(out, random);
    }
    let zeros = vec![0u8; 10_000];
    for scheme in [CompressionScheme::Lz4, CompressionScheme::ByteGrouping4Lz4] {
        let mut out = Vec::new();
        let used = c.compress_append(&zeros, CompressionPolicy::Only(scheme), &mut out);
        assert_eq!(used, scheme);
        assert_eq!(decode(&out, used, zeros.len()).unwrap(), zeros);
    }
}

/// Data generators for the property tests: random, text-like, repetitive, float-like.
fn any_data() -> impl Strategy<Value = Vec<u8>> {
    (0usize..4, any::<u64>(), 0usize..3000).prop_map(|(kind, seed, len)| match kind {
        0 => random_bytes(seed, len),
        1 => text_bytes(len),
        2 => {
            let unit = random_bytes(seed, 1 + (seed % 50) as usize);
            unit.iter().cycle().take(len).copied().collect()
        }
        _ => f32_weights(seed, len),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_scheme_round_trips(data in any_data()) {
        for scheme in CompressionScheme::ALL {
            let payload = compress(&data, scheme);
            prop_assert_eq!(decode(&payload, scheme, data.len()).unwrap(), data.clone());
        }
    }

    #[test]
    fn bg4_round_trips_any_length(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut grouped = Vec::new();
        bg4_split(&data, &mut grouped);
        let lens = bg4_group_lens(data.len());
        let mut at = 0;
        for (k, &l) in lens.iter().enumerate() {
            let expect: Vec<u8> = data.iter().skip(k).step_by(4).copied().collect();
            prop_assert_eq!(&grouped[at..at + l], &expect[..]);
            at += l;
        }
        let mut back = Vec::new();
        bg4_regroup(&grouped, &mut back);
        prop_assert_eq!(back, data);
    }

    #[test]
    fn auto_keeps_the_smallest_candidate(data in any_data()) {
        let (scheme, payload) = compress_auto(&data);
        prop_assert_eq!(decode(&payload, scheme, data.len()).unwrap(), data.clone());
        prop_assert!(payload.len() <= data.len());
        if scheme != CompressionScheme::None {
            prop_assert!(payload.len() < data.len());
        }
        let lz4 = compress(&data, CompressionScheme::Lz4).len();
        prop_assert!(payload.len() <= lz4);
        if bg4_may_help(&data) {
            prop_assert!(payload.len() <= compress(&data, CompressionScheme::ByteGrouping4Lz4).len());
        }
    }

    #[test]
    fn garbage_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        scheme in 0u8..3,
        len in 0usize..300,
    ) {
        let scheme = CompressionScheme::from_u8(scheme).unwrap();
        let mut out = vec![1, 2, 3];
        match decompress(&payload, scheme, len, &mut out) {
            Ok(()) => prop_assert_eq!(out.len(), 3 + len),
            Err(e) => {
                prop_assert_eq!(e.code(), "decompression_failed");
                prop_assert_eq!(out, vec![1, 2, 3]);
            }
        }
    }

    #[test]
    fn corrupted_frames_never_panic(data in any_data(), at in any::<usize>(), bit in 0u8..8) {
        let mut payload = compress(&data, CompressionScheme::Lz4);
        let i = at % payload.len();
        payload[i] ^= 1 << bit;
        let mut out = Vec::new();
        if decompress(&payload, CompressionScheme::Lz4, data.len(), &mut out).is_ok() {
            prop_assert_eq!(out.len(), data.len());
        }
    }
}

/// Prints sizes and timings of the automatic choice against trying everything.
/// Run with `cargo test -p cas-core --release -- --ignored --nocapture auto_report`.
#[test]
#[ignore]
fn auto_report() {
    let n = 65_536;
    let sets: Vec<(&str, Vec<u8>)> = vec![
        ("random", random_bytes(1, n * 64)),
        ("text", text_bytes(n * 64)),
        ("zeros", vec![0u8; n * 64]),
        ("f32", f32_weights(1, n * 64)),
        ("bf16", bf16_weights(1, n * 64)),
        (
            "i32 small",
            (0..n * 16)
                .flat_map(|i| ((i % 1000) as i32).to_le_bytes())
                .collect(),
        ),
    ];
    let mut c = Compressor::new();
    for (name, data) in sets {
        let t = std::time::Instant::now();
        let mut total = 0;
        let mut counts = [0usize; 3];
        for chunk in data.chunks(n) {
            let mut out = Vec::new();
            let s = c.compress_auto(chunk, &mut out);
            counts[s as usize] += 1;
            total += out.len();
        }
        let auto_time = t.elapsed();
        let best: usize = data
            .chunks(n)
            .map(|chunk| {
                let l = compress(chunk, CompressionScheme::Lz4).len();
                let b = compress(chunk, CompressionScheme::ByteGrouping4Lz4).len();
                l.min(b).min(chunk.len())
            })
            .sum();
        let t = std::time::Instant::now();
        let mut grouped = Vec::new();
        for chunk in data.chunks(n) {
            bg4_split(chunk, &mut grouped);
        }
        let split_time = t.elapsed();
        let t = std::time::Instant::now();
        let mut regrouped = Vec::new();
        for chunk in data.chunks(n) {
            bg4_regroup(chunk, &mut regrouped);
        }
        let regroup_time = t.elapsed();
        let t = std::time::Instant::now();
        let mut hits = 0;
        for chunk in data.chunks(n) {
            hits += bg4_may_help(chunk) as usize;
        }
        let test_time = t.elapsed();
        println!(
            "{name:10} auto {total:>9} best {best:>9} counts {counts:?} auto {:>6.0} MB/s split {:>6.0} MB/s regroup {:>6.0} MB/s test {:>6.0} MB/s ({hits} hits)",
            data.len() as f64 / auto_time.as_secs_f64() / 1e6,
            data.len() as f64 / split_time.as_secs_f64() / 1e6,
            data.len() as f64 / regroup_time.as_secs_f64() / 1e6,
            data.len() as f64 / test_time.as_secs_f64() / 1e6,
        );
    }
}
