//! Differential tests: the xorb codec of cas-core (`cas_core::xorb`,
//! `cas_core::compression`) against the Xet reference implementation
//! (`xet-core-structures` 1.8.0, `xorb_object`).
//!
//! Inputs are the deterministic generators of [`datasets`], cut into real
//! content-defined chunks by [`chunking::chunk_and_hash`]: xorbs of one chunk,
//! a few chunks, every chunk of a couple of MB of each kind of data, tiny odd
//! lengths, and one large xorb of 1000+ chunks (a big file and many small ones).
//!
//! - Byte identity: with an explicit scheme (none, lz4, bg4-lz4) our builder
//!   writes exactly what the reference's `SerializedXorbObject` writes, both the
//!   upload form and the stored form with its footer.
//! - Ours -> reference: `validate_xorb_object` accepts our stored form under our
//!   hash and reads our footer; `reconstruct_xorb_with_footer` and
//!   `deserialize_chunks` accept our upload form, giving our hash, our stored
//!   bytes and the original data; its ranged reads of our xorbs and its nonce
//!   writer agree with ours. Auto-policy xorbs included.
//! - Reference -> ours: its xorbs, Auto (at several retest intervals and with
//!   file boundaries) and each scheme, with and without footer, parse and
//!   validate here to the same hash, chunk hashes, boundaries, schemes and data,
//!   and the footer we would store is the one it writes; range bodies cut from
//!   them decode with `decode_range_body` to what its chunk deserializer gives.
//! - Size: ours-Auto against reference-Auto (its client default, a scheme
//!   re-chosen every 32 chunks, and per chunk) over the data kinds, reported
//!   with `eprintln!`; ours must not be larger.

use std::io::Cursor;
use std::ops::Range;

use bytes::Bytes;
use cas_compat::datasets;
use cas_core::MerkleHash;
use cas_core::chunking::{self, Chunk};
use cas_core::compression::{CompressionPolicy, CompressionScheme};
use cas_core::constants::{MAX_XORB_BYTES, MAX_XORB_CHUNKS};
use cas_core::xorb::{
    AddChunk, ParsedXorb, SerializedXorb, XorbBuilder, XorbFooter, decode_range_body, parse_xorb,
    parse_xorb_with, validate_xorb,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use xet_core_structures::merklehash::MerkleHash as RefHash;
use xet_core_structures::xorb_object::{
    self as refxorb, Chunk as RefChunk, CompressionScheme as RefScheme, RawXorbData,
    SerializedXorbObject, XorbObject,
};

// ---------------------------------------------------------------------------
// Conversions and comparisons.

fn to_ref(h: &MerkleHash) -> RefHash {
    RefHash::from_slice(h.as_bytes()).expect("32 bytes")
}

fn from_ref(h: &RefHash) -> MerkleHash {
    MerkleHash::from_slice(h.as_bytes()).expect("32 bytes")
}

fn ref_scheme(s: CompressionScheme) -> RefScheme {
    match s {
        CompressionScheme::None => RefScheme::None,
        CompressionScheme::Lz4 => RefScheme::LZ4,
        CompressionScheme::ByteGrouping4Lz4 => RefScheme::ByteGrouping4LZ4,
    }
}

/// Asserts two byte strings are equal, naming the first difference instead of
/// printing megabytes.
fn assert_same_bytes(what: &str, ours: &[u8], theirs: &[u8]) {
    if ours == theirs {
        return;
    }
    let first = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    panic!(
        "{what}: ours is {} bytes, the reference's {} bytes; first difference at offset {first}",
        ours.len(),
        theirs.len()
    );
}

fn u32s(v: impl IntoIterator<Item = usize>) -> Vec<u32> {
    v.into_iter()
        .map(|x| u32::try_from(x).expect("fits u32"))
        .collect()
}

// ---------------------------------------------------------------------------
// Inputs: data cut into content-defined chunks, one or more files per xorb.

/// The chunks of one xorb and the data they cover.
struct Input {
    name: String,
    /// The xorb's raw bytes: its chunks, concatenated.
    data: Vec<u8>,
    /// The chunks; offsets into `data`.
    chunks: Vec<Chunk>,
    /// Index of the first chunk of each file (the reference's Auto heuristic
    /// chooses a scheme per file).
    file_starts: Vec<usize>,
}

impl Input {
    /// One file, chunked.
    fn file(name: impl Into<String>, data: Vec<u8>) -> Self {
        Self::files(name, vec![data])
    }

    /// Several files, each chunked on its own, in one xorb.
    fn files(name: impl Into<String>, files: Vec<Vec<u8>>) -> Self {
        let mut input = Input {
            name: name.into(),
            data: Vec::with_capacity(files.iter().map(Vec::len).sum()),
            chunks: Vec::new(),
            file_starts: Vec::new(),
        };
        for file in files {
            input.file_starts.push(input.chunks.len());
            let base = input.data.len();
            input
                .chunks
                .extend(chunking::chunk_and_hash(&file).into_iter().map(|c| Chunk {
                    offset: base + c.offset,
                    ..c
                }));
            input.data.extend_from_slice(&file);
        }
        assert!(!input.chunks.is_empty(), "{}: no chunks", input.name);
        input
    }

    /// The first `n` chunks (all if fewer).
    fn prefix(&self, n: usize) -> Self {
        let chunks = self.chunks[..n.min(self.chunks.len())].to_vec();
        let end = chunks.last().expect("a chunk").range().end;
        Input {
            name: format!("{} [{} chunks]", self.name, chunks.len()),
            data: self.data[..end].to_vec(),
            file_starts: self
                .file_starts
                .iter()
                .copied()
                .filter(|&s| s < chunks.len())
                .collect(),
            chunks,
        }
    }

    fn chunk_data(&self, i: usize) -> &[u8] {
        &self.data[self.chunks[i].range()]
    }

    /// Uncompressed end of each chunk, as the footer stores them.
    fn uncompressed_ends(&self) -> Vec<u32> {
        u32s(self.chunks.iter().map(|c| c.range().end))
    }

    /// The chunks as the reference holds them (hashed again by the reference).
    fn ref_chunks(&self) -> Vec<RefChunk> {
        let all = Bytes::copy_from_slice(&self.data);
        let chunks: Vec<RefChunk> = self
            .chunks
            .iter()
            .map(|c| RefChunk::new(all.slice(c.range())))
            .collect();
        for (i, (a, b)) in self.chunks.iter().zip(&chunks).enumerate() {
            assert_eq!(a.hash, from_ref(&b.hash), "{}: chunk {i} hash", self.name);
        }
        chunks
    }

    /// Sub-ranges of chunks to fetch: all, the first, the last and a few seeded ones.
    fn chunk_ranges(&self, seed: u64) -> Vec<Range<usize>> {
        let n = self.chunks.len();
        let mut ranges = vec![0..n, 0..1, n - 1..n];
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..4 {
            let s = rng.random_range(0..n);
            let e = rng.random_range(s + 1..=n.min(s + 40));
            ranges.push(s..e);
        }
        ranges
    }
}

/// One input of each kind of data, `len` bytes each.
fn kinds(len: usize) -> Vec<Input> {
    vec![
        Input::file("random", datasets::random(11, len)),
        Input::file("zeros", datasets::zeros(len)),
        Input::file("repetitive 4 KiB", datasets::repetitive(12, len, 4096)),
        Input::file(
            "repetitive 300 KiB",
            datasets::repetitive(13, len, 300 << 10),
        ),
        Input::file("text", datasets::text(14, len)),
        Input::file("float tensor", datasets::float_tensor(15, len)),
        Input::file("mixed", datasets::mixed(16, len)),
    ]
}

/// Single-chunk inputs of tiny and odd lengths (BG4 with a length not a
/// multiple of 4, payloads that do not shrink).
fn tiny_inputs() -> Vec<Input> {
    let mut v = Vec::new();
    for len in [1, 2, 3, 4, 5, 7, 63, 64, 65, 1001, 8191, 8193] {
        v.push(Input::file(
            format!("random {len} B"),
            datasets::random(len as u64, len),
        ));
        v.push(Input::file(format!("zeros {len} B"), datasets::zeros(len)));
        v.push(Input::file(
            format!("text {len} B"),
            datasets::text(len as u64, len),
        ));
        v.push(Input::file(
            format!("float tensor {len} B"),
            datasets::float_tensor(len as u64, len),
        ));
    }
    v
}

/// `n` small files (up to 30 kB) of every kind in turn.
fn small_files(seed: u64, n: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let len = rng.random_range(1..30_000);
            let s = seed << 32 | i;
            match i % 5 {
                0 => datasets::random(s, len),
                1 => datasets::text(s, len),
                2 => datasets::float_tensor(s, len),
                3 => datasets::repetitive(s, len, rng.random_range(1..5000)),
                _ => datasets::zeros(len),
            }
        })
        .collect()
}

/// A xorb of 1000+ chunks and ~30 MB: one large mixed file, then many small
/// files of every kind (each ending in a short chunk), as a client packs them.
fn large_input() -> Input {
    let mut files = vec![datasets::mixed(21, 12 << 20)];
    files.extend(small_files(22, 1100));
    let input = Input::files("large", files);
    assert!(input.chunks.len() >= 1000, "{} chunks", input.chunks.len());
    assert!(input.data.len() <= MAX_XORB_BYTES && input.chunks.len() <= MAX_XORB_CHUNKS);
    input
}

// ---------------------------------------------------------------------------
// Building xorbs both ways.

fn build_ours(input: &Input, policy: CompressionPolicy) -> SerializedXorb {
    let mut b = XorbBuilder::with_policy(policy);
    for (i, c) in input.chunks.iter().enumerate() {
        assert_eq!(
            b.add_chunk_with_hash(input.chunk_data(i), c.hash)
                .expect("valid chunk"),
            AddChunk::Added(i),
            "{}: chunk {i}",
            input.name
        );
    }
    let x = b.finish().expect("at least one chunk");
    assert_eq!(x.raw_len(), input.data.len());
    x
}

/// The reference's serialization; `retest` is its Auto re-choice interval
/// (0: once per file).
fn build_ref(
    input: &Input,
    chunks: &[RefChunk],
    scheme: RefScheme,
    footer: bool,
    retest: usize,
) -> SerializedXorbObject {
    let raw = RawXorbData::from_chunks(chunks, input.file_starts.clone());
    let x = SerializedXorbObject::from_xorb_with_compression(raw, scheme, footer, retest)
        .expect("reference serializes");
    assert_eq!(x.num_chunks, input.chunks.len());
    assert_eq!(x.raw_num_bytes, input.data.len() as u64);
    x
}

/// The reference's view of a stored xorb's footer.
fn ref_footer(stored: &[u8]) -> XorbObject {
    XorbObject::deserialize(&mut Cursor::new(stored)).expect("reference reads the footer")
}

// ---------------------------------------------------------------------------
// The checks.

/// Counts of chunks stored with each scheme (None, LZ4, BG4).
#[derive(Debug, Default, Clone, Copy)]
struct SchemeCounts([usize; 3]);

impl SchemeCounts {
    fn add(&mut self, x: &SerializedXorb) {
        for c in &x.chunks {
            self.0[c.scheme.as_u8() as usize] += 1;
        }
    }
}

/// Our xorb with an explicit scheme is the reference's, byte for byte, in both
/// forms; returns ours.
fn check_explicit_identical(
    input: &Input,
    chunks: &[RefChunk],
    scheme: CompressionScheme,
    both_forms: bool,
) -> SerializedXorb {
    let what = format!("{} / {scheme}", input.name);
    let ours = build_ours(input, CompressionPolicy::Only(scheme));
    let stored = build_ref(input, chunks, ref_scheme(scheme), true, 0);
    assert_eq!(ours.hash, from_ref(&stored.hash), "{what}: xorb hash");
    assert_eq!(
        stored.footer_start,
        Some(ours.bytes.len() as u64),
        "{what}: footer start"
    );
    assert_same_bytes(
        &format!("{what}: stored form"),
        &ours.to_bytes_with_footer(),
        &stored.serialized_data,
    );
    if both_forms {
        let upload = build_ref(input, chunks, ref_scheme(scheme), false, 0);
        assert_eq!(upload.footer_start, None);
        assert_same_bytes(
            &format!("{what}: upload form"),
            &ours.bytes,
            &upload.serialized_data,
        );
    }
    ours
}

/// The reference reads our xorb: validates the stored form, rebuilds the
/// stored form from the upload form, decodes the upload form and ranges of the
/// stored form, and writes the nonce where we do.
fn check_reference_reads_ours(input: &Input, ours: &SerializedXorb, seed: u64) {
    let what = &input.name;
    let stored = ours.to_bytes_with_footer();
    let obj = XorbObject::validate_xorb_object(&mut Cursor::new(&stored), &to_ref(&ours.hash))
        .expect("no I/O error")
        .unwrap_or_else(|| panic!("{what}: the reference rejects our stored xorb"));
    assert_eq!(from_ref(&obj.info.xorb_hash), ours.hash, "{what}");
    assert_eq!(obj.info.num_chunks as usize, input.chunks.len(), "{what}");
    let hashes: Vec<MerkleHash> = obj.info.chunk_hashes.iter().map(from_ref).collect();
    let expected: Vec<MerkleHash> = input.chunks.iter().map(|c| c.hash).collect();
    assert_eq!(hashes, expected, "{what}: footer chunk hashes");
    assert_eq!(
        obj.info.chunk_boundary_offsets,
        u32s(ours.chunks.iter().map(|c| c.serialized_range().end)),
        "{what}: footer serialized ends"
    );
    assert_eq!(
        obj.info.unpacked_chunk_offsets,
        input.uncompressed_ends(),
        "{what}: footer uncompressed ends"
    );

    // What a server does with an upload: rebuild the stored form.
    let mut rebuilt = Vec::new();
    let (_, hash) = refxorb::reconstruct_xorb_with_footer(&mut rebuilt, &ours.bytes)
        .unwrap_or_else(|e| panic!("{what}: the reference rejects our upload: {e}"));
    assert_eq!(from_ref(&hash), ours.hash, "{what}: reconstructed hash");
    assert_same_bytes(&format!("{what}: reconstructed"), &stored, &rebuilt);

    // What a client does with a download: decode the chunks.
    let (data, bounds) = refxorb::deserialize_chunks(&mut Cursor::new(&ours.bytes))
        .unwrap_or_else(|e| panic!("{what}: the reference cannot decode our upload: {e}"));
    assert!(data == input.data, "{what}: data decoded by the reference");
    let mut expected_bounds = vec![0];
    expected_bounds.extend(input.uncompressed_ends());
    assert_eq!(bounds, expected_bounds, "{what}: chunk bounds");

    // Ranged reads through our footer.
    for r in input.chunk_ranges(seed) {
        let (s, e) = (r.start as u32, r.end as u32);
        let (bs, be) = obj.get_byte_offset(s, e).expect("valid range");
        assert_eq!(
            Some(bs as usize..be as usize),
            ours.byte_range(r.clone()),
            "{what}: {r:?}"
        );
        let got = obj
            .get_bytes_by_chunk_range(&mut Cursor::new(&stored), s, e)
            .expect("ranged read");
        let want = &input.data[input.chunks[r.start].offset..input.chunks[r.end - 1].range().end];
        assert!(got == want, "{what}: reference ranged read {r:?}");
    }

    // The uniqueness nonce: written at the same place, ignored by both readers.
    let nonce = (seed as u32).to_le_bytes();
    let mut footer = ours.footer();
    footer.set_nonce(nonce);
    let mut ours_nonced = ours.bytes.clone();
    footer.write_to(&mut ours_nonced);
    let mut theirs_nonced = stored.clone();
    XorbObject::overwrite_uniqueness_nonce(&mut theirs_nonced, nonce).expect("nonce written");
    assert_same_bytes(&format!("{what}: nonce"), &ours_nonced, &theirs_nonced);
    if nonce != [0; 4] {
        assert_ne!(ours_nonced, stored);
    }
    let (parsed, start) = XorbFooter::from_stored(&theirs_nonced).expect("we read its footer");
    assert_eq!(
        (parsed.nonce(), start),
        (nonce, ours.bytes.len()),
        "{what}: nonce"
    );
    assert_eq!(
        ref_footer(&ours_nonced).info.uniqueness_nonce(),
        nonce,
        "{what}: the reference reads our nonce"
    );
}

/// We read a xorb the reference wrote, in its stored form and its upload form.
fn check_we_read_reference(input: &Input, stored: &[u8], upload: &[u8], seed: u64) {
    let what = &input.name;
    let hash = from_ref(&ref_footer(stored).info.xorb_hash);
    assert_same_bytes(
        &format!("{what}: reference upload form is its stored form's body"),
        upload,
        &stored[..upload.len()],
    );

    let parse = |bytes: &[u8], form: &str| -> ParsedXorb {
        let mut data = Vec::with_capacity(input.data.len());
        let parsed = parse_xorb_with(bytes, |info, chunk| {
            assert_eq!(info.uncompressed_offset, data.len());
            data.extend_from_slice(chunk);
        })
        .unwrap_or_else(|e| panic!("{what}: we reject the reference's {form}: {e}"));
        assert!(data == input.data, "{what}: {form} data");
        assert_eq!(parsed.hash, hash, "{what}: {form} hash");
        assert_eq!(
            validate_xorb(bytes, &hash).map(|p| p.hash).ok(),
            Some(hash),
            "{what}: {form} validates"
        );
        parsed
    };
    let from_stored = parse(stored, "stored form");
    let from_upload = parse(upload, "upload form");
    assert_eq!(from_stored.chunks, from_upload.chunks, "{what}");
    assert_eq!(from_upload.footer, None);
    assert_eq!(from_upload.body_len, upload.len());
    assert_eq!(from_stored.body_len, upload.len());

    // Chunks: hashes, boundaries and schemes as the reference wrote them.
    let obj = ref_footer(stored);
    let chunks = &from_upload.chunks;
    assert_eq!(chunks.len(), input.chunks.len(), "{what}: chunk count");
    for (i, (c, want)) in chunks.iter().zip(&input.chunks).enumerate() {
        assert_eq!(c.hash, want.hash, "{what}: chunk {i} hash");
        assert_eq!(
            c.uncompressed_range(),
            want.range(),
            "{what}: chunk {i} data range"
        );
        assert_eq!(
            c.serialized_range().end as u32,
            obj.info.chunk_boundary_offsets[i],
            "{what}: chunk {i} serialized end"
        );
        let head: [u8; 8] = upload[c.serialized_range()][..8]
            .try_into()
            .expect("8 bytes");
        let theirs = refxorb::parse_chunk_header(head)
            .and_then(|h| h.get_compression_scheme())
            .expect("reference reads its header");
        assert_eq!(c.scheme.as_u8(), theirs as u8, "{what}: chunk {i} scheme");
    }
    let footer = from_stored.footer.as_ref().expect("a footer");
    assert_eq!(footer.hash(), hash);
    assert_eq!(
        footer.serialized_ends(),
        &obj.info.chunk_boundary_offsets[..]
    );
    assert_eq!(
        footer.uncompressed_ends(),
        &obj.info.unpacked_chunk_offsets[..]
    );
    let ref_hashes: Vec<MerkleHash> = obj.info.chunk_hashes.iter().map(from_ref).collect();
    assert_eq!(footer.chunk_hashes(), &ref_hashes[..]);

    // The footer we would store for this upload is the one the reference writes.
    let mut ours_stored = upload.to_vec();
    from_upload.storage_footer().write_to(&mut ours_stored);
    assert_same_bytes(
        &format!("{what}: our footer for its upload"),
        &ours_stored,
        stored,
    );
    assert_eq!(XorbFooter::from_stored(stored).expect("footer").0, *footer);

    // Range bodies decode as the reference's chunk deserializer decodes them.
    for r in input.chunk_ranges(seed) {
        let body = &upload[from_upload.byte_range(r.clone()).expect("in range")];
        let mut out = b"prefix".to_vec();
        let bounds = decode_range_body(body, &mut out)
            .unwrap_or_else(|e| panic!("{what}: range body {r:?}: {e}"));
        let (ref_data, ref_bounds) = refxorb::deserialize_chunks(&mut Cursor::new(body))
            .expect("reference decodes the body");
        assert!(out[6..] == ref_data[..], "{what}: range body {r:?} data");
        assert_eq!(u32s(bounds), ref_bounds, "{what}: range body {r:?} bounds");
        let want = &input.data[input.chunks[r.start].offset..input.chunks[r.end - 1].range().end];
        assert!(ref_data == want, "{what}: range body {r:?} content");
    }
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn limits_match_reference() {
    assert_eq!(MAX_XORB_BYTES, *refxorb::constants::MAX_XORB_BYTES);
    assert_eq!(MAX_XORB_CHUNKS, *refxorb::constants::MAX_XORB_CHUNKS);
}

#[test]
fn explicit_schemes_byte_identical_to_reference() {
    let mut counts = [SchemeCounts::default(); 3];
    let mut inputs = Vec::new();
    for input in kinds(2 << 20) {
        inputs.push(input.prefix(1));
        inputs.push(input.prefix(3));
        inputs.push(input);
    }
    inputs.extend(tiny_inputs());
    for input in &inputs {
        let chunks = input.ref_chunks();
        for (k, scheme) in CompressionScheme::ALL.into_iter().enumerate() {
            let ours = check_explicit_identical(input, &chunks, scheme, true);
            counts[k].add(&ours);
        }
    }
    // Every scheme was used, and LZ4 and BG4 also fell back to None.
    eprintln!("chunks stored as [none, lz4, bg4] per policy none/lz4/bg4: {counts:?}");
    assert_eq!(counts[0].0[1..], [0, 0]);
    assert!(counts[1].0[0] > 0 && counts[1].0[1] > 0 && counts[1].0[2] == 0);
    assert!(counts[2].0[0] > 0 && counts[2].0[1] == 0 && counts[2].0[2] > 0);
}

#[test]
fn reference_accepts_our_xorbs() {
    let policies = [
        CompressionPolicy::Auto,
        CompressionPolicy::Only(CompressionScheme::None),
        CompressionPolicy::Only(CompressionScheme::Lz4),
        CompressionPolicy::Only(CompressionScheme::ByteGrouping4Lz4),
    ];
    let mut auto = SchemeCounts::default();
    for (seed, input) in kinds(2 << 20).iter().enumerate() {
        for small in [input.prefix(1), input.prefix(3)] {
            check_reference_reads_ours(&small, &build_ours(&small, CompressionPolicy::Auto), 1);
        }
        for policy in policies {
            let ours = build_ours(input, policy);
            if policy == CompressionPolicy::Auto {
                auto.add(&ours);
            }
            check_reference_reads_ours(input, &ours, seed as u64);
        }
    }
    for input in tiny_inputs().iter().step_by(3) {
        check_reference_reads_ours(input, &build_ours(input, CompressionPolicy::Auto), 7);
    }
    // Our Auto used every scheme.
    assert!(auto.0.iter().all(|&n| n > 0), "{auto:?}");

    // The reference's validator can say no: a wrong name, a corrupted chunk.
    let input = Input::file("text", datasets::text(30, 300_000));
    let ours = build_ours(&input, CompressionPolicy::Auto);
    let stored = ours.to_bytes_with_footer();
    let other = to_ref(&input.chunks[0].hash);
    assert!(
        XorbObject::validate_xorb_object(&mut Cursor::new(&stored), &other)
            .expect("no I/O error")
            .is_none()
    );
    let mut corrupt = stored.clone();
    corrupt[ours.chunks[1].serialized_offset + 20] ^= 1;
    assert!(
        XorbObject::validate_xorb_object(&mut Cursor::new(&corrupt), &to_ref(&ours.hash))
            .map(|v| v.is_none())
            .unwrap_or(true)
    );
    assert!(parse_xorb(&corrupt).is_err());
}

#[test]
fn we_accept_reference_xorbs() {
    // (scheme, retest interval): Auto once per file, every chunk, every 32 chunks
    // (the reference client's default), and each explicit scheme.
    let configs = [
        (RefScheme::Auto, 0),
        (RefScheme::Auto, 1),
        (RefScheme::Auto, 32),
        (RefScheme::None, 0),
        (RefScheme::LZ4, 0),
        (RefScheme::ByteGrouping4LZ4, 0),
    ];
    let mut inputs = Vec::new();
    for input in kinds(2 << 20) {
        inputs.push(input.prefix(1));
        inputs.push(input.prefix(3));
        inputs.push(input);
    }
    inputs.extend(tiny_inputs().into_iter().step_by(5));
    // Several files in one xorb: the reference's Auto chooses per file.
    inputs.push(Input::files(
        "files of each kind",
        vec![
            datasets::float_tensor(40, 300_000),
            datasets::text(41, 200_000),
            datasets::random(42, 100_000),
            datasets::float_tensor(43, 5_000),
            datasets::zeros(70_000),
        ],
    ));
    let mut used = [0usize; 3];
    for (seed, input) in inputs.iter().enumerate() {
        let chunks = input.ref_chunks();
        for (scheme, retest) in configs {
            let stored = build_ref(input, &chunks, scheme, true, retest);
            let upload = build_ref(input, &chunks, scheme, false, retest);
            check_we_read_reference(
                input,
                &stored.serialized_data,
                &upload.serialized_data,
                seed as u64,
            );
            if scheme == RefScheme::Auto {
                for c in parse_xorb(&upload.serialized_data).expect("parsed").chunks {
                    used[c.scheme.as_u8() as usize] += 1;
                }
            }
        }
    }
    // The reference's Auto used every scheme.
    assert!(used.iter().all(|&n| n > 0), "{used:?}");
}

#[test]
fn large_xorb_both_ways() {
    let input = large_input();
    let chunks = input.ref_chunks();
    for scheme in CompressionScheme::ALL {
        check_explicit_identical(&input, &chunks, scheme, false);
    }
    let ours = build_ours(&input, CompressionPolicy::Auto);
    check_reference_reads_ours(&input, &ours, 4);
    let stored = build_ref(&input, &chunks, RefScheme::Auto, true, 32);
    let body = stored.footer_start.expect("a footer") as usize;
    check_we_read_reference(
        &input,
        &stored.serialized_data,
        &stored.serialized_data[..body],
        5,
    );
    eprintln!(
        "large xorb ({} chunks, {} files, {} raw bytes): ours Auto {} bytes, reference Auto {} bytes",
        input.chunks.len(),
        input.file_starts.len(),
        input.data.len(),
        ours.bytes.len(),
        body
    );
    assert!(ours.bytes.len() <= body);
}

#[test]
fn auto_not_larger_than_reference_auto() {
    let (mut ours_total, mut ref32_total, mut ref1_total, mut raw_total) = (0, 0, 0, 0);
    eprintln!(
        "{:<20} {:>10} {:>12} {:>12} {:>12}",
        "upload size", "raw", "ours Auto", "ref Auto/32", "ref Auto/1"
    );
    let mut inputs = kinds(4 << 20);
    // Files of different kinds in one xorb: the schemes that suit them differ
    // from chunk to chunk.
    inputs.push(Input::files("small files", small_files(23, 300)));
    // One file whose kind changes every 512 KiB (an archive, a checkpoint with
    // tensors of several dtypes): the reference's 32-chunk blocks straddle kinds.
    let piece = 512 << 10;
    let interleaved: Vec<u8> = (0..8u64)
        .flat_map(|i| match i % 4 {
            0 => datasets::text(24 + i, piece),
            1 => datasets::float_tensor(24 + i, piece),
            2 => datasets::random(24 + i, piece),
            _ => datasets::repetitive(24 + i, piece, 1000),
        })
        .collect();
    inputs.push(Input::file("interleaved kinds", interleaved));
    for input in inputs {
        let chunks = input.ref_chunks();
        let ours = build_ours(&input, CompressionPolicy::Auto).bytes.len();
        let ref32 = build_ref(&input, &chunks, RefScheme::Auto, false, 32)
            .serialized_data
            .len();
        let ref1 = build_ref(&input, &chunks, RefScheme::Auto, false, 1)
            .serialized_data
            .len();
        eprintln!(
            "{:<20} {:>10} {:>12} {:>12} {:>12}",
            input.name,
            input.data.len(),
            ours,
            ref32,
            ref1
        );
        assert!(
            ours <= ref1,
            "{}: ours {ours} > reference {ref1}",
            input.name
        );
        assert!(ref1 <= ref32, "{}", input.name);
        ours_total += ours;
        ref32_total += ref32;
        ref1_total += ref1;
        raw_total += input.data.len();
    }
    eprintln!(
        "{:<20} {raw_total:>10} {ours_total:>12} {ref32_total:>12} {ref1_total:>12}",
        "total"
    );
    eprintln!(
        "ours Auto is {:.3}% smaller than the reference's Auto (client default), {:.3}% smaller than its per-chunk Auto",
        100.0 * (1.0 - ours_total as f64 / ref32_total as f64),
        100.0 * (1.0 - ours_total as f64 / ref1_total as f64)
    );
    assert!(ours_total <= ref32_total && ours_total <= ref1_total);
}
