//! Differential tests: the shard codec of cas-core (`cas_core::shard`) against the
//! Xet reference implementation (`xet-core-structures` 1.8.0, `metadata_shard`).
//!
//! A few hundred seeded random shards (files of several terms, with and without
//! verification entries and SHA-256, empty files, repeated file and xorb hashes,
//! repeated chunk hashes, colliding truncated keys, shards without xorbs, shards
//! with many xorbs) plus a handful of hand-built edge cases go both ways:
//!
//! - written by the reference, read by us: its full-shard writer
//!   (`MDBShardInfo::serialize_from`), the upload form hf_xet cuts from it, its
//!   HMAC-keyed export and its streaming writer (`MDBMinimalShard`) all parse to
//!   the expected content, and our writers reproduce their bytes;
//! - written by us, read by the reference: its footer reader, section readers,
//!   file lookup, chunk dedup queries (raw and HMAC-keyed) and its readers of
//!   uploaded shards all see our content.
//!
//! Bytes are compared wherever the two writers are defined to agree: after
//! [`Shard::canonicalize`] (the reference writes from `BTreeMap`s ordered by hash),
//! our footer form equals `serialize_from`, our upload form equals the upload,
//! our keyed form equals the keyed export, and our upload form equals the
//! streaming writer's output up to its footer.
//!
//! One known difference: `serialize_from` sorts the chunk lookup table with
//! `sort_unstable_by_key` on the truncated hash alone, so entries with equal keys
//! come in an unspecified order, while ours orders them by (xorb index, chunk
//! index). Where a shard has such ties, [`normalize_chunk_ties`] sorts the
//! reference's runs of equal keys before comparing; without ties the bytes are
//! compared as written. (The keyed export sorts stably, so its ties are already
//! in our order and its bytes are always compared as written.)
//!
//! `reference_keyed_export_quirks` records two reference bugs in its keyed export
//! that produce shards we reject (see there).

use std::collections::HashSet;
use std::io::Cursor;
use std::time::{Duration, UNIX_EPOCH};

use cas_core::MerkleHash;
use cas_core::shard::{
    CHUNK_FLAG_GLOBAL_DEDUP, FILE_FLAG_WITH_METADATA_EXT, FILE_FLAG_WITH_VERIFICATION, FileInfo,
    FileTerm, FooterOptions, LookupTables, NO_EXPIRY, ParsedShard, Shard, ShardFooter, XorbChunk,
    XorbInfo, parse_shard,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use xet_core_structures::merklehash::MerkleHash as RefHash;
use xet_core_structures::metadata_shard::file_structs::{
    FileDataSequenceEntry, FileDataSequenceHeader, FileMetadataExt, FileVerificationEntry,
    MDB_FILE_FLAG_WITH_METADATA_EXT, MDB_FILE_FLAG_WITH_VERIFICATION, MDBFileInfo,
};
use xet_core_structures::metadata_shard::shard_in_memory::MDBInMemoryShard;
use xet_core_structures::metadata_shard::streaming_shard::MDBMinimalShard;
use xet_core_structures::metadata_shard::xorb_structs::{
    MDB_CHUNK_WITH_GLOBAL_DEDUP_FLAG, MDBXorbInfo, XorbChunkSequenceEntry, XorbChunkSequenceHeader,
};
use xet_core_structures::metadata_shard::{MDBShardFileFooter, MDBShardInfo, Sha256};

// ---------------------------------------------------------------------------
// Conversions between our types and the reference's.

fn to_ref(h: &MerkleHash) -> RefHash {
    RefHash::from_slice(h.as_bytes()).expect("32 bytes")
}

fn from_ref(h: &RefHash) -> MerkleHash {
    MerkleHash::from_slice(h.as_bytes()).expect("32 bytes")
}

/// A SHA-256 as the reference stores it, back to the usual digest bytes, through the
/// reference's own hex form (independent of our `sha256_from_stored`).
fn sha256_from_ref(h: &Sha256) -> [u8; 32] {
    let hex = h.hex();
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digit");
    }
    out
}

fn ref_file(f: &FileInfo) -> MDBFileInfo {
    MDBFileInfo {
        metadata: FileDataSequenceHeader::new(
            to_ref(&f.file_hash),
            f.terms.len(),
            f.verification.is_some(),
            f.sha256.is_some(),
        ),
        segments: f
            .terms
            .iter()
            .map(|t| {
                FileDataSequenceEntry::new(
                    to_ref(&t.xorb_hash),
                    t.unpacked_bytes,
                    t.chunk_start,
                    t.chunk_end,
                )
            })
            .collect(),
        verification: f
            .verification
            .iter()
            .flatten()
            .map(|v| FileVerificationEntry::new(to_ref(v)))
            .collect(),
        metadata_ext: f
            .sha256
            .map(|d| FileMetadataExt::new(Sha256::from_be_bytes(d))),
    }
}

fn file_from_ref(f: &MDBFileInfo) -> FileInfo {
    let m = &f.metadata;
    assert_eq!(m._unused, 0, "file header reserved field");
    assert_eq!(m.num_entries as usize, f.segments.len());
    assert_eq!(
        m.file_flags & !(MDB_FILE_FLAG_WITH_VERIFICATION | MDB_FILE_FLAG_WITH_METADATA_EXT),
        0
    );
    FileInfo {
        file_hash: from_ref(&m.file_hash),
        terms: f
            .segments
            .iter()
            .map(|t| {
                assert_eq!(t.xorb_flags, 0, "term flags");
                FileTerm::new(
                    from_ref(&t.xorb_hash),
                    t.unpacked_segment_bytes,
                    t.chunk_index_start,
                    t.chunk_index_end,
                )
            })
            .collect(),
        verification: f.contains_verification().then(|| {
            f.verification
                .iter()
                .map(|v| from_ref(&v.range_hash))
                .collect()
        }),
        sha256: f.metadata_ext.as_ref().map(|e| sha256_from_ref(&e.sha256)),
    }
}

fn ref_xorb(x: &XorbInfo) -> MDBXorbInfo {
    let chunks: Vec<XorbChunkSequenceEntry> = x
        .chunks
        .iter()
        .map(|c| {
            XorbChunkSequenceEntry::new(to_ref(&c.hash), c.unpacked_bytes, c.byte_range_start)
                .with_global_dedup_flag(c.global_dedup)
        })
        .collect();
    let mut metadata =
        XorbChunkSequenceHeader::new(to_ref(&x.hash), chunks.len(), x.num_bytes_in_xorb);
    metadata.num_bytes_on_disk = x.num_bytes_on_disk;
    MDBXorbInfo { metadata, chunks }
}

fn xorb_from_ref(x: &MDBXorbInfo) -> XorbInfo {
    assert_eq!(x.metadata.xorb_flags, 0, "xorb flags");
    assert_eq!(x.metadata.num_entries as usize, x.chunks.len());
    XorbInfo {
        hash: from_ref(&x.metadata.xorb_hash),
        chunks: x
            .chunks
            .iter()
            .map(|c| {
                assert_eq!(
                    c.flags & !MDB_CHUNK_WITH_GLOBAL_DEDUP_FLAG,
                    0,
                    "chunk flags"
                );
                assert_eq!(c._unused, 0, "chunk unused field");
                XorbChunk {
                    hash: from_ref(&c.chunk_hash),
                    byte_range_start: c.chunk_byte_range_start,
                    unpacked_bytes: c.unpacked_segment_bytes,
                    global_dedup: c.flags & MDB_CHUNK_WITH_GLOBAL_DEDUP_FLAG != 0,
                }
            })
            .collect(),
        num_bytes_in_xorb: x.metadata.num_bytes_in_xorb,
        num_bytes_on_disk: x.metadata.num_bytes_on_disk,
    }
}

/// The reference's in-memory shard with the same content, added in our order (it keeps
/// the last of repeated hashes and writes in hash order).
fn to_reference(s: &Shard) -> MDBInMemoryShard {
    let mut m = MDBInMemoryShard::default();
    for x in &s.xorbs {
        m.add_xorb_block(ref_xorb(x)).expect("add xorb");
    }
    for f in &s.files {
        m.add_file_reconstruction_info(ref_file(f))
            .expect("add file");
    }
    m
}

/// What the reference's streaming reader saw in a shard, converted to our types.
fn minimal_to_shard(m: &MDBMinimalShard) -> Shard {
    let files = (0..m.num_files())
        .map(|i| file_from_ref(&MDBFileInfo::from(m.file(i).expect("file view"))))
        .collect();
    let xorbs = (0..m.num_xorb())
        .map(|i| {
            let v = m.xorb(i).expect("xorb view");
            xorb_from_ref(&MDBXorbInfo {
                metadata: v.header().clone(),
                chunks: (0..v.num_entries()).map(|c| v.chunk(c)).collect(),
            })
        })
        .collect();
    Shard::new(files, xorbs)
}

// ---------------------------------------------------------------------------
// Helpers on shard bytes.

fn load_info(bytes: &[u8]) -> MDBShardInfo {
    MDBShardInfo::load_from_reader(&mut Cursor::new(bytes)).expect("reference loads the footer")
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

/// The reference's full shard with each run of equal chunk lookup keys put in our
/// order, (xorb index, chunk index). Asserts first that the table is sorted by key,
/// so this only ever reorders entries that the reference's unstable sort left in an
/// unspecified order.
fn normalize_chunk_ties(bytes: &[u8]) -> Vec<u8> {
    let info = load_info(bytes);
    let start = info.metadata.chunk_lookup_offset as usize;
    let end = start + 16 * info.metadata.chunk_lookup_num_entry as usize;
    let mut entries: Vec<(u64, u32, u32)> = bytes[start..end]
        .chunks_exact(16)
        .map(|e| (le_u64(&e[..8]), le_u32(&e[8..12]), le_u32(&e[12..16])))
        .collect();
    assert!(
        entries.windows(2).all(|w| w[0].0 <= w[1].0),
        "reference chunk lookup table not sorted by key"
    );
    entries.sort_unstable();
    let mut out = bytes.to_vec();
    for (e, (k, x, c)) in out[start..end].chunks_exact_mut(16).zip(entries) {
        e[..8].copy_from_slice(&k.to_le_bytes());
        e[8..12].copy_from_slice(&x.to_le_bytes());
        e[12..16].copy_from_slice(&c.to_le_bytes());
    }
    out
}

fn has_chunk_key_ties(s: &Shard) -> bool {
    let t = LookupTables::build(&s.files, &s.xorbs).expect("tables");
    t.chunks.windows(2).any(|w| w[0].key == w[1].key)
}

/// The upload form cut from a full shard as hf_xet does it
/// (`MDBShardFile::read_shard_to_bytes_remove_footer`): everything before the
/// lookup tables, with the header's footer_size set to 0.
fn reference_upload_form(full: &[u8]) -> Vec<u8> {
    let info = load_info(full);
    let mut upload = full[..info.metadata.file_lookup_offset as usize].to_vec();
    upload[40..48].copy_from_slice(&0u64.to_le_bytes());
    upload
}

/// The shard with every chunk hash keyed, as a keyed shard stores it.
fn keyed_copy(s: &Shard, key: &MerkleHash) -> Shard {
    let mut k = s.clone();
    for x in &mut k.xorbs {
        for c in &mut x.chunks {
            c.hash = c.hash.hmac(key);
        }
    }
    k
}

fn parse(name: &str, bytes: &[u8]) -> ParsedShard {
    parse_shard(bytes).unwrap_or_else(|e| panic!("{name}: we reject reference bytes: {e}"))
}

fn expected_footer(s: &Shard, opts: &FooterOptions) -> ShardFooter {
    ShardFooter {
        hmac_key: opts.effective_key(),
        creation_timestamp: opts.creation_timestamp,
        key_expiry: opts.key_expiry,
        stored_bytes_on_disk: s.stored_bytes_on_disk(),
        materialized_bytes: s.materialized_bytes(),
        stored_bytes: s.stored_bytes(),
        has_file_lookup: !s.files.is_empty(),
        has_xorb_lookup: !s.xorbs.is_empty(),
        has_chunk_lookup: s.xorbs.iter().any(|x| !x.chunks.is_empty()),
    }
}

/// Both sides list global-dedup chunks once each, in an order of their own.
fn sorted(hashes: impl IntoIterator<Item = MerkleHash>) -> Vec<MerkleHash> {
    let mut v: Vec<MerkleHash> = hashes.into_iter().collect();
    v.sort_unstable_by_key(|h| h.0);
    v
}

// ---------------------------------------------------------------------------
// Dedup queries answered by the reference.

/// Checks one dedup answer against the shard's xorbs as stored (keyed in a keyed
/// shard) and the query as stored: the range must match the query's prefix and be as
/// long as possible from where it starts. `must_find`: the reference is expected to
/// find a match (None is then a failure); a query whose first chunk is not in the
/// shard must get None.
fn check_answer(
    what: &str,
    xorbs: &[XorbInfo],
    query: &[MerkleHash],
    answer: Option<(usize, FileDataSequenceEntry)>,
    must_find: bool,
) {
    let present = xorbs
        .iter()
        .any(|x| x.chunks.iter().any(|c| c.hash == query[0]));
    let Some((n, fse)) = answer else {
        assert!(!must_find, "{what}: the reference finds no match");
        return;
    };
    assert!(
        present,
        "{what}: a match for a chunk that is not in the shard"
    );
    let xh = from_ref(&fse.xorb_hash);
    let x = xorbs
        .iter()
        .find(|x| x.hash == xh)
        .unwrap_or_else(|| panic!("{what}: the match names xorb {xh}, not in the shard"));
    let (s, e) = (fse.chunk_index_start as usize, fse.chunk_index_end as usize);
    assert!(
        n >= 1 && s + n == e && e <= x.chunks.len() && n <= query.len(),
        "{what}: range {s}..{e} for {n} chunks"
    );
    for (i, (c, q)) in x.chunks[s..e].iter().zip(query).enumerate() {
        assert_eq!(c.hash, *q, "{what}: chunk {i} of the match");
    }
    assert!(
        e == x.chunks.len() || n == query.len() || x.chunks[e].hash != query[n],
        "{what}: the match stops early"
    );
    let bytes: u32 = x.chunks[s..e].iter().map(|c| c.unpacked_bytes).sum();
    assert_eq!(
        fse.unpacked_segment_bytes, bytes,
        "{what}: match length in bytes"
    );
    assert_eq!(fse.xorb_flags, 0);
}

/// Dedup queries against `bytes` (a shard with footer holding the raw shard `raw`,
/// keyed with `key` if given), through the reference's on-disk lookup
/// (`MDBShardInfo::chunk_hash_dedup_query`, queried with raw hashes as a client does)
/// and through its in-memory shard loaded from the bytes (queried with stored hashes,
/// as the wasm client does with a keyed shard).
fn check_dedup_queries(
    name: &str,
    rng: &mut StdRng,
    bytes: &[u8],
    raw: &Shard,
    key: Option<MerkleHash>,
) {
    let info = load_info(bytes);
    let stored_of = |h: &MerkleHash| key.map_or(*h, |k| h.hmac(&k));
    let stored = key.map_or_else(|| raw.clone(), |k| keyed_copy(raw, &k));
    let tables = LookupTables::build(&stored.files, &stored.xorbs).expect("tables");
    let memory = MDBInMemoryShard::from_reader(&mut Cursor::new(bytes))
        .unwrap_or_else(|e| panic!("{name}: reference in-memory load: {e}"));

    let ask = |what: String, raw_query: Vec<MerkleHash>| {
        let q_ref: Vec<RefHash> = raw_query.iter().map(to_ref).collect();
        let q_stored: Vec<MerkleHash> = raw_query.iter().map(stored_of).collect();
        let present = stored
            .xorbs
            .iter()
            .any(|x| x.chunks.iter().any(|c| c.hash == q_stored[0]));
        // The reference reads at most 8 entries of a truncated key.
        let findable = present && tables.chunks_with_key(q_stored[0].truncated()).len() <= 8;
        let answer = info
            .chunk_hash_dedup_query(&mut Cursor::new(bytes), &q_ref)
            .unwrap_or_else(|e| panic!("{what}: reference query fails: {e}"));
        check_answer(&what, &stored.xorbs, &q_stored, answer, findable);
        let q_stored_ref: Vec<RefHash> = q_stored.iter().map(to_ref).collect();
        let answer = memory.chunk_hash_dedup_query(&q_stored_ref);
        check_answer(
            &format!("{what} (in memory)"),
            &stored.xorbs,
            &q_stored,
            answer,
            present,
        );
    };

    for (xi, x) in raw.xorbs.iter().enumerate().take(60) {
        for qi in 0..3 {
            let n = x.chunks.len();
            let s = rng.random_range(0..n);
            let e = rng.random_range(s + 1..=n);
            let mut q: Vec<MerkleHash> = x.chunks[s..e].iter().map(|c| c.hash).collect();
            if rng.random_ratio(1, 3) {
                q.push(random_hash(rng));
            }
            ask(format!("{name}: xorb {xi} query {qi} (chunks {s}..{e})"), q);
        }
        // A hash sharing the truncated key of a chunk of this xorb, but not in the shard.
        if key.is_none() {
            let mut h = random_hash(rng);
            h.0[..8].copy_from_slice(&x.chunks[0].hash.0[..8]);
            ask(format!("{name}: xorb {xi} colliding absent chunk"), vec![h]);
        }
    }
    ask(format!("{name}: absent chunk"), vec![random_hash(rng)]);
}

// ---------------------------------------------------------------------------
// Seeded random shards.

fn random_hash(rng: &mut StdRng) -> MerkleHash {
    let mut b = [0u8; 32];
    rng.fill(&mut b);
    MerkleHash(b)
}

/// Draws the hashes of one shard: a quarter of them (when `collide`) take their
/// truncated key from a small pool, so lookup tables have runs of equal keys.
struct Gen {
    rng: StdRng,
    pool: [u64; 3],
    collide: bool,
    /// Chunk hashes drawn so far, to repeat some within and across xorbs.
    chunks: Vec<MerkleHash>,
}

impl Gen {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let pool = if rng.random_ratio(1, 2) {
            [0, rng.random(), u64::MAX]
        } else {
            rng.random()
        };
        let collide = rng.random_ratio(2, 3);
        Gen {
            rng,
            pool,
            collide,
            chunks: Vec::new(),
        }
    }

    fn hash(&mut self) -> MerkleHash {
        let mut h = random_hash(&mut self.rng);
        if self.collide && self.rng.random_ratio(1, 4) {
            let k = self.pool[self.rng.random_range(0..3)];
            h.0[..8].copy_from_slice(&k.to_le_bytes());
        }
        h
    }

    fn chunk_hash(&mut self) -> MerkleHash {
        if !self.chunks.is_empty() && self.rng.random_ratio(1, 10) {
            return self.chunks[self.rng.random_range(0..self.chunks.len())];
        }
        let mut h = self.hash();
        if self.rng.random_ratio(1, 16) {
            // hash % 1024 == 0: eligible for global dedup by value.
            h.0[24] = 0;
            h.0[25] &= 0xFC;
        }
        self.chunks.push(h);
        h
    }

    fn xorb(&mut self, hash: MerkleHash, n: usize) -> XorbInfo {
        let chunks: Vec<(MerkleHash, u32)> = (0..n)
            .map(|_| (self.chunk_hash(), self.rng.random_range(1..=131_072)))
            .collect();
        let mut x = XorbInfo::from_chunks(hash, &chunks).expect("xorb");
        for c in &mut x.chunks {
            c.global_dedup = self.rng.random_ratio(1, 4);
        }
        if self.rng.random_ratio(1, 3) {
            x.num_bytes_on_disk = self.rng.random_range(1..=x.num_bytes_in_xorb);
        }
        x
    }

    /// A file of `n` terms; terms point at `xorbs` (in range, with matching lengths)
    /// or at xorbs outside the shard.
    fn file(&mut self, n: usize, xorbs: &[XorbInfo], verification: bool) -> FileInfo {
        let terms: Vec<FileTerm> = (0..n)
            .map(|_| {
                if !xorbs.is_empty() && self.rng.random_ratio(2, 3) {
                    let x = &xorbs[self.rng.random_range(0..xorbs.len())];
                    let s = self.rng.random_range(0..x.chunks.len());
                    let e = self.rng.random_range(s + 1..=x.chunks.len());
                    let bytes = x.chunks[s..e].iter().map(|c| c.unpacked_bytes).sum();
                    FileTerm::new(x.hash, bytes, s as u32, e as u32)
                } else {
                    let s = self.rng.random_range(0..100);
                    let e = s + self.rng.random_range(1..50);
                    FileTerm::new(self.hash(), self.rng.random(), s, e)
                }
            })
            .collect();
        FileInfo {
            file_hash: self.hash(),
            verification: verification
                .then(|| (0..n).map(|_| random_hash(&mut self.rng)).collect()),
            sha256: self.rng.random_ratio(1, 2).then(|| self.rng.random()),
            terms,
        }
    }
}

fn random_shard(seed: u64) -> Shard {
    let mut g = Gen::new(seed);
    let n_xorbs = match g.rng.random_range(0..10) {
        0 => 0,
        9 => g.rng.random_range(8..40),
        _ => g.rng.random_range(1..=5),
    };
    let max_chunks = if g.rng.random_ratio(1, 5) { 40 } else { 8 };
    let mut xorbs = Vec::with_capacity(n_xorbs + 1);
    for _ in 0..n_xorbs {
        let n = g.rng.random_range(1..=max_chunks);
        let h = g.hash();
        xorbs.push(g.xorb(h, n));
    }
    // A repeated xorb hash (different chunks, same count): the reference keeps the last.
    if !xorbs.is_empty() && g.rng.random_ratio(1, 8) {
        let i = g.rng.random_range(0..xorbs.len());
        let (h, n) = (xorbs[i].hash, xorbs[i].chunks.len());
        let x = g.xorb(h, n);
        xorbs.push(x);
    }
    // Verification entries on all files, on none, or (rarely) on some.
    let policy = g.rng.random_range(0..5);
    let n_files = match g.rng.random_range(0..8) {
        0 => 0,
        _ => g.rng.random_range(1..=5),
    };
    let mut files = Vec::with_capacity(n_files + 1);
    for _ in 0..n_files {
        let n = match g.rng.random_range(0..10) {
            0 => 0,
            1 => g.rng.random_range(5..12),
            _ => g.rng.random_range(1..=4),
        };
        let verification = match policy {
            0 | 1 => true,
            2 | 3 => false,
            _ => g.rng.random_ratio(1, 2),
        };
        files.push(g.file(n, &xorbs, verification));
    }
    // A repeated file hash (different content): the reference keeps the last.
    if !files.is_empty() && g.rng.random_ratio(1, 8) {
        let i = g.rng.random_range(0..files.len());
        let h = files[i].file_hash;
        let mut f = g.file(2, &xorbs, files[i].verification.is_some());
        f.file_hash = h;
        files.push(f);
    }
    Shard::new(files, xorbs)
}

/// Hand-built edge cases.
fn special_shards() -> Vec<(String, Shard)> {
    let mut out = vec![("empty shard".to_string(), Shard::default())];
    let mut g = Gen::new(0xE0);
    g.collide = false;

    // Empty files: no terms, the zero file hash; with an empty verification list, with SHA-256.
    let empty_sha: [u8; 32] = [
        0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9,
        0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52,
        0xb8, 0x55,
    ];
    out.push((
        "one empty file".into(),
        Shard::new(vec![FileInfo::new(MerkleHash::ZERO, vec![])], vec![]),
    ));
    out.push((
        "empty files with verification and sha256".into(),
        Shard::new(
            vec![
                FileInfo {
                    file_hash: MerkleHash::ZERO,
                    terms: vec![],
                    verification: Some(vec![]),
                    sha256: Some(empty_sha),
                },
                FileInfo {
                    verification: Some(vec![]),
                    ..FileInfo::new(g.hash(), vec![])
                },
            ],
            vec![],
        ),
    ));

    // A fully deduplicated upload: files whose terms all point at xorbs stored elsewhere.
    let files = (0..4).map(|i| g.file(i + 1, &[], true)).collect();
    out.push(("no xorbs".into(), Shard::new(files, vec![])));

    // Many xorbs, many chunks, and one large xorb.
    let mut g = Gen::new(0xE1);
    let mut xorbs: Vec<XorbInfo> = (0..400)
        .map(|i| {
            let h = g.hash();
            g.xorb(h, 1 + i % 4)
        })
        .collect();
    let h = g.hash();
    xorbs.push(g.xorb(h, 2000));
    let files = (0..6).map(|i| g.file(3 + i, &xorbs, false)).collect();
    out.push(("many xorbs".into(), Shard::new(files, xorbs)));

    // The most collisions the reference's lookups handle: 7 files, 7 xorbs and
    // 8 chunks with one truncated key each (its file and xorb lookups fail from 8
    // on, its chunk lookup reads 8 entries); keys 0 and u64::MAX.
    let mut g = Gen::new(0xE2);
    g.collide = false;
    let with_key = |mut h: MerkleHash, k: u64| {
        h.0[..8].copy_from_slice(&k.to_le_bytes());
        h
    };
    let mut xorbs: Vec<XorbInfo> = (0..7)
        .map(|i| {
            let h = with_key(g.hash(), 0x1234);
            let mut x = g.xorb(h, 3);
            x.chunks[i % 3].hash = with_key(g.hash(), 0x5678);
            x
        })
        .collect();
    for k in [u64::MAX, 0] {
        let h = with_key(g.hash(), k);
        let mut x = g.xorb(h, 2);
        x.chunks[1].hash = with_key(g.hash(), if k == 0 { 0x5678 } else { k });
        xorbs.push(x);
    }
    let files = (0..7)
        .map(|i| {
            let mut f = g.file(1 + i % 3, &xorbs, true);
            f.file_hash = with_key(f.file_hash, 0x9abc);
            f
        })
        .collect();
    out.push(("colliding keys".into(), Shard::new(files, xorbs)));
    out
}

/// The shards every test runs over: the edge cases and a few hundred random ones.
fn shards() -> Vec<(String, Shard)> {
    let mut out = special_shards();
    out.extend((0..240).map(|i| (format!("random shard {i}"), random_shard(0x5EED_0000 + i))));
    out
}

fn canonical(s: &Shard) -> Shard {
    let mut c = s.clone();
    c.canonicalize();
    c
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn format_constants_agree() {
    assert_eq!(FILE_FLAG_WITH_VERIFICATION, MDB_FILE_FLAG_WITH_VERIFICATION);
    assert_eq!(FILE_FLAG_WITH_METADATA_EXT, MDB_FILE_FLAG_WITH_METADATA_EXT);
    assert_eq!(CHUNK_FLAG_GLOBAL_DEDUP, MDB_CHUNK_WITH_GLOBAL_DEDUP_FLAG);
    assert_eq!(
        Shard::default()
            .to_bytes_with_footer(&FooterOptions::default())
            .expect("write"),
        MDBInMemoryShard::default()
            .to_bytes()
            .expect("reference write"),
        "empty shard"
    );
}

/// Our footer form equals the reference's full-shard writer, and we parse its bytes.
#[test]
fn footer_form_matches_reference_writer() {
    let mut with_ties = 0;
    for (name, s) in shards() {
        let reference = to_reference(&s);
        let ref_bytes = reference.to_bytes().expect("reference write");
        let c = canonical(&s);
        let ours = c
            .to_bytes_with_footer(&FooterOptions::default())
            .expect("write");
        if has_chunk_key_ties(&c) {
            with_ties += 1;
            assert_eq!(
                ours,
                normalize_chunk_ties(&ref_bytes),
                "{name}: footer form differs beyond the order of equal chunk keys"
            );
        } else {
            assert_eq!(ours, ref_bytes, "{name}: footer form");
        }

        let p = parse(&name, &ref_bytes);
        assert_eq!(p.shard, c, "{name}: content of the reference's shard");
        let opts = FooterOptions::default();
        assert_eq!(p.footer, Some(expected_footer(&c, &opts)), "{name}: footer");

        // With an expiry, the reference stamps now + validity (and no creation time).
        let mut expiring = Vec::new();
        MDBShardInfo::serialize_from(&mut expiring, &reference, Some(Duration::from_secs(86_400)))
            .expect("reference write");
        let key_expiry = load_info(&expiring).metadata.shard_key_expiry;
        let opts = FooterOptions {
            key_expiry,
            ..FooterOptions::default()
        };
        assert_eq!(
            c.to_bytes_with_footer(&opts).expect("write"),
            normalize_chunk_ties(&expiring),
            "{name}: footer form with expiry"
        );
        assert_eq!(
            parse(&name, &expiring).footer,
            Some(expected_footer(&c, &opts)),
            "{name}: footer with expiry"
        );
    }
    assert!(
        with_ties >= 20,
        "only {with_ties} shards with equal chunk keys"
    );
}

/// Our upload form is what hf_xet uploads, and the reference's readers of uploaded
/// shards (the streaming reader a server uses, the in-memory loader) read ours.
#[test]
fn upload_form_matches_hf_xet_upload() {
    for (name, s) in shards() {
        let c = canonical(&s);
        let ref_bytes = to_reference(&s).to_bytes().expect("reference write");
        let upload = reference_upload_form(&ref_bytes);
        let ours = c.to_bytes().expect("write");
        assert_eq!(ours, upload, "{name}: upload form");
        let p = parse(&name, &upload);
        assert_eq!(
            (p.shard, p.footer),
            (c.clone(), None),
            "{name}: upload content"
        );

        let minimal = MDBMinimalShard::from_reader(&mut Cursor::new(&ours), true, true)
            .unwrap_or_else(|e| panic!("{name}: reference streaming reader: {e}"));
        assert_eq!(
            minimal_to_shard(&minimal),
            c,
            "{name}: streaming reader content"
        );

        let memory = MDBInMemoryShard::from_reader(&mut Cursor::new(&ours))
            .unwrap_or_else(|e| panic!("{name}: reference in-memory loader: {e}"));
        assert_eq!(memory.num_file_entries(), c.files.len(), "{name}");
        assert_eq!(memory.num_xorb_entries(), c.xorbs.len(), "{name}");
        for f in &c.files {
            let got = memory
                .get_file_reconstruction_info(&to_ref(&f.file_hash))
                .unwrap_or_else(|| panic!("{name}: file {} not found in memory", f.file_hash));
            assert_eq!(&file_from_ref(&got), f, "{name}: file {}", f.file_hash);
        }
        for x in &c.xorbs {
            let got = &memory.xorb_content[&to_ref(&x.hash)];
            // The in-memory loader recomputes the header and drops num_bytes_on_disk.
            let expected = XorbInfo {
                num_bytes_on_disk: 0,
                ..x.clone()
            };
            assert_eq!(xorb_from_ref(got), expected, "{name}: xorb {}", x.hash);
        }
    }
}

/// The reference reads our footer form: same footer, sections, lookup tables; it finds
/// every file and answers chunk dedup queries.
#[test]
fn reference_reads_our_footer_form() {
    let mut rng = StdRng::seed_from_u64(0xD0);
    for (name, s) in shards() {
        let c = canonical(&s);
        let ours = c
            .to_bytes_with_footer(&FooterOptions::default())
            .expect("write");
        let ref_bytes = to_reference(&s).to_bytes().expect("reference write");
        let info = load_info(&ours);
        assert_eq!(info, load_info(&ref_bytes), "{name}: header and footer");
        let r = &mut Cursor::new(&ours);

        let files: Vec<FileInfo> = info
            .read_all_file_info_sections(r)
            .expect("reference reads files")
            .iter()
            .map(file_from_ref)
            .collect();
        assert_eq!(files, c.files, "{name}: files");
        let xorbs: Vec<XorbInfo> = info
            .read_all_xorb_blocks_full(r)
            .expect("reference reads xorbs")
            .iter()
            .map(xorb_from_ref)
            .collect();
        assert_eq!(xorbs, c.xorbs, "{name}: xorbs");

        // The reference's integrity check: the chunk lookup table holds exactly the chunks.
        let mut from_table = info.read_all_truncated_hashes(r).expect("chunk table");
        let mut from_sections = Vec::new();
        let mut index = 0u32;
        for x in &c.xorbs {
            for (ci, ch) in x.chunks.iter().enumerate() {
                from_sections.push((ch.hash.truncated(), (index, ci as u32)));
            }
            index += 1 + x.chunks.len() as u32;
        }
        from_table.sort_unstable();
        from_sections.sort_unstable();
        assert_eq!(from_table, from_sections, "{name}: chunk lookup table");
        let tables = LookupTables::build(&c.files, &c.xorbs).expect("tables");
        let xorb_table: Vec<(u64, u32)> = tables.xorbs.iter().map(|e| (e.key, e.index)).collect();
        assert_eq!(
            info.read_full_xorb_lookup(r).expect("xorb table"),
            xorb_table,
            "{name}"
        );

        for (fi, f) in c.files.iter().enumerate() {
            let got = info
                .get_file_reconstruction_info(r, &to_ref(&f.file_hash))
                .unwrap_or_else(|e| panic!("{name}: file lookup fails: {e}"))
                .unwrap_or_else(|| panic!("{name}: the reference cannot find file {fi}"));
            assert_eq!(&file_from_ref(&got), f, "{name}: file {fi}");
            let mut absent = random_hash(&mut rng);
            absent.0[..8].copy_from_slice(&f.file_hash.0[..8]);
            let got = info.get_file_reconstruction_info(r, &to_ref(&absent));
            assert!(
                matches!(got, Ok(None)),
                "{name}: absent file found: {got:?}"
            );
        }
        for x in &c.xorbs {
            let expected: Vec<u32> = tables
                .xorbs_with_key(x.hash.truncated())
                .iter()
                .map(|e| e.index)
                .collect();
            // The reference's file and xorb lookups fail from 8 equal keys on.
            if expected.len() >= 8 {
                continue;
            }
            let mut indices = [0u32; 8];
            let n = info
                .get_xorb_info_index_by_hash(r, &to_ref(&x.hash), &mut indices)
                .unwrap_or_else(|e| panic!("{name}: xorb lookup fails: {e}"));
            let mut got = indices[..n].to_vec();
            got.sort_unstable();
            assert_eq!(got, expected, "{name}: xorb lookup of {}", x.hash);
        }

        check_dedup_queries(&name, &mut rng, &ours, &c, None);
    }
}

/// HMAC-keyed shards: our keyed form equals the reference's keyed export (the form a
/// global-dedup query answers), we parse its export, and the reference reads our keyed
/// shards (key, times, keyed dedup queries, global-dedup chunks).
#[test]
fn keyed_shards_match_reference_export() {
    let mut rng = StdRng::seed_from_u64(0xC0);
    for (i, (name, s)) in shards().into_iter().enumerate() {
        let c = canonical(&s);
        let ref_bytes = to_reference(&s).to_bytes().expect("reference write");
        let key = random_hash(&mut rng);
        let valid_for = rng.random_range(0..10_000_000);
        let mut exported = Vec::new();
        MDBShardInfo::export_as_keyed_shard_streaming(
            &mut Cursor::new(&ref_bytes),
            &mut exported,
            to_ref(&key),
            Duration::from_secs(valid_for),
            true,
            true,
            true,
        )
        .expect("reference keyed export");

        let p = parse(&name, &exported);
        let footer = p.footer.expect("footer");
        assert_eq!(footer.hmac_key, Some(key), "{name}: key");
        assert_eq!(
            footer.key_expiry,
            footer.creation_timestamp + valid_for,
            "{name}: expiry"
        );
        let keyed = keyed_copy(&c, &key);
        assert_eq!(p.shard, keyed, "{name}: keyed content");
        let opts = FooterOptions {
            hmac_key: Some(key),
            chunk_hashes_already_keyed: false,
            creation_timestamp: footer.creation_timestamp,
            key_expiry: footer.key_expiry,
        };
        assert_eq!(footer, expected_footer(&c, &opts), "{name}: keyed footer");
        let ours = c.to_bytes_with_footer(&opts).expect("write");
        assert_eq!(ours, exported, "{name}: keyed form");
        assert_eq!(
            p.shard
                .to_bytes_with_footer(&footer.options())
                .expect("write"),
            exported,
            "{name}: parsed keyed shard written again"
        );

        // The reference reads our keyed shard, and exports our plain one (checking our
        // footer's offsets against what it reads, in debug builds).
        let info = load_info(&ours);
        assert_eq!(info.chunk_hmac_key(), Some(to_ref(&key)), "{name}");
        assert_eq!(
            info.metadata.shard_creation_timestamp,
            footer.creation_timestamp
        );
        assert_eq!(info.metadata.shard_key_expiry, footer.key_expiry);
        let plain = c
            .to_bytes_with_footer(&FooterOptions::default())
            .expect("write");
        let mut again = Vec::new();
        load_info(&plain)
            .export_as_keyed_shard(
                &mut Cursor::new(&plain),
                &mut again,
                to_ref(&key),
                Duration::from_secs(valid_for),
                true,
                true,
                true,
            )
            .expect("reference export of our shard");
        let again_footer = parse(&name, &again).footer.expect("footer");
        let opts_again = FooterOptions {
            creation_timestamp: again_footer.creation_timestamp,
            key_expiry: again_footer.key_expiry,
            ..opts
        };
        assert_eq!(
            again,
            c.to_bytes_with_footer(&opts_again).expect("write"),
            "{name}: reference export of our shard"
        );
        check_dedup_queries(&name, &mut rng, &ours, &c, Some(key));

        let minimal = MDBMinimalShard::from_reader(&mut Cursor::new(&ours), true, true)
            .expect("reference streaming reader");
        assert_eq!(
            sorted(minimal.global_dedup_eligible_chunks().iter().map(from_ref)),
            sorted(p.shard.global_dedup_eligible_chunks()),
            "{name}: global-dedup chunks of the keyed shard"
        );

        // Exports with parts left out (the forms a server may answer with).
        if i % 4 == 0 {
            let (files, xorb_table, chunk_table) = (i % 8 == 0, i % 3 != 0, i % 12 != 0);
            let mut partial = Vec::new();
            MDBShardInfo::export_as_keyed_shard_streaming(
                &mut Cursor::new(&ref_bytes),
                &mut partial,
                to_ref(&key),
                Duration::from_secs(valid_for),
                files,
                xorb_table,
                chunk_table,
            )
            .expect("reference keyed export");
            let p = parse(&name, &partial);
            let f = p.footer.expect("footer");
            let expected = Shard::new(
                if files { keyed.files.clone() } else { vec![] },
                keyed.xorbs.clone(),
            );
            assert_eq!(p.shard, expected, "{name}: partial export content");
            assert_eq!(
                (f.has_file_lookup, f.has_xorb_lookup, f.has_chunk_lookup),
                (
                    files && !c.files.is_empty(),
                    xorb_table && !c.xorbs.is_empty(),
                    chunk_table && !c.xorbs.is_empty()
                ),
                "{name}: partial export tables"
            );
        }

        // The zero key means no key: the export is the plain footer form.
        if i % 5 == 0 {
            let mut plain = Vec::new();
            MDBShardInfo::export_as_keyed_shard_streaming(
                &mut Cursor::new(&ref_bytes),
                &mut plain,
                RefHash::default(),
                Duration::from_secs(valid_for),
                true,
                true,
                true,
            )
            .expect("reference export");
            let f = parse(&name, &plain).footer.expect("footer");
            let opts = FooterOptions {
                hmac_key: Some(MerkleHash::ZERO),
                chunk_hashes_already_keyed: false,
                creation_timestamp: f.creation_timestamp,
                key_expiry: f.key_expiry,
            };
            assert_eq!(f.hmac_key, None);
            assert_eq!(
                c.to_bytes_with_footer(&opts).expect("write"),
                plain,
                "{name}: export with the zero key"
            );
        }
    }
}

/// Every footer field we write reads back the same in the reference, for assorted
/// keys and times (no key, zero key, a key, already-keyed hashes; 0, large, NO_EXPIRY).
#[test]
fn reference_reads_our_footer_fields() {
    let mut rng = StdRng::seed_from_u64(0xF0);
    for (name, s) in shards().into_iter().step_by(5) {
        let c = canonical(&s);
        for k in 0..4 {
            let key = random_hash(&mut rng);
            let times = [0, rng.random_range(1..u64::MAX), NO_EXPIRY];
            let opts = FooterOptions {
                hmac_key: [None, Some(MerkleHash::ZERO), Some(key), Some(key)][k],
                chunk_hashes_already_keyed: k == 3,
                creation_timestamp: times[rng.random_range(0..3)],
                key_expiry: times[rng.random_range(0..3)],
            };
            let ours = c.to_bytes_with_footer(&opts).expect("write");
            let info = load_info(&ours);
            let tables = LookupTables::build(&c.files, &c.xorbs).expect("tables");
            let expected_key = opts.effective_key().map(|k| to_ref(&k)).unwrap_or_default();
            let m = &info.metadata;
            let sections = c.serialized_len_without_footer() as u64;
            let file_lookup = sections + 12 * tables.files.len() as u64;
            let xorb_lookup = file_lookup + 12 * tables.xorbs.len() as u64;
            let footer_offset = xorb_lookup + 16 * tables.chunks.len() as u64;
            let expected = MDBShardFileFooter {
                version: 1,
                file_info_offset: 48,
                xorb_info_offset: m.xorb_info_offset,
                file_lookup_offset: sections,
                file_lookup_num_entry: tables.files.len() as u64,
                xorb_lookup_offset: file_lookup,
                xorb_lookup_num_entry: tables.xorbs.len() as u64,
                chunk_lookup_offset: xorb_lookup,
                chunk_lookup_num_entry: tables.chunks.len() as u64,
                chunk_hash_hmac_key: expected_key,
                shard_creation_timestamp: opts.creation_timestamp,
                shard_key_expiry: opts.key_expiry,
                _buffer: [0; 6],
                stored_bytes_on_disk: c.stored_bytes_on_disk(),
                materialized_bytes: c.materialized_bytes(),
                stored_bytes: c.stored_bytes(),
                footer_offset,
            };
            assert_eq!(m, &expected, "{name}: footer with {opts:?}");
            assert_eq!(info.header.footer_size, 200);
            assert_eq!(info.num_bytes(), ours.len() as u64, "{name}");
            let (xs, xe) = info.xorb_info_byte_range();
            let xorb_records: usize = c.xorbs.iter().map(|x| 1 + x.chunks.len()).sum();
            assert_eq!(
                xe - xs,
                48 * (xorb_records as u64 + 1),
                "{name}: CAS-info range"
            );
        }
    }
}

/// The reference's streaming writer (`MDBMinimalShard::serialize`, how a server
/// rewrites an uploaded shard with global-dedup flags) and its xorb-only subset: we
/// parse both, and our upload form of the same content equals its output up to the
/// footer. The global-dedup chunk lists agree.
#[test]
fn reference_streaming_writer_output_parses() {
    let mut rng = StdRng::seed_from_u64(0xB0);
    for (name, s) in shards() {
        // The streaming reader keeps the first of repeated file hashes and writes in
        // input order: feed it unique hashes, in our order when they are, else canonical.
        let unique = s
            .files
            .iter()
            .map(|f| f.file_hash)
            .collect::<HashSet<_>>()
            .len()
            == s.files.len();
        let s = if unique { s } else { canonical(&s) };
        let upload = s.to_bytes().expect("write");
        let minimal = MDBMinimalShard::from_reader(&mut Cursor::new(&upload), true, true)
            .unwrap_or_else(|e| panic!("{name}: reference streaming reader: {e}"));

        assert_eq!(
            sorted(minimal.global_dedup_eligible_chunks().iter().map(from_ref)),
            sorted(s.global_dedup_eligible_chunks()),
            "{name}: global-dedup chunks"
        );
        let filtered = MDBShardInfo::filter_cas_chunks_for_global_dedup(&mut Cursor::new(&upload))
            .expect("reference global-dedup filter");
        assert_eq!(
            sorted(filtered.iter().map(from_ref)),
            sorted(s.global_dedup_eligible_chunks()),
            "{name}: global-dedup filter"
        );

        let mut marked = s.clone();
        marked.mark_file_start_chunks();
        let all_verified = s.files.iter().all(|f| f.verification.is_some());
        for with_verification in [false, true] {
            if with_verification && !all_verified {
                continue;
            }
            let ts = rng.random();
            let mut out = Vec::new();
            minimal
                .serialize(&mut out, with_verification, Some(ts))
                .expect("reference streaming writer");
            let p = parse(&name, &out);
            let mut expected = marked.clone();
            if !with_verification {
                for f in &mut expected.files {
                    f.verification = None;
                }
            }
            assert_eq!(p.shard, expected, "{name}: streaming writer content");
            let footer = p.footer.expect("footer");
            assert_eq!(
                footer,
                ShardFooter {
                    hmac_key: None,
                    creation_timestamp: ts,
                    key_expiry: 0,
                    stored_bytes_on_disk: expected.stored_bytes_on_disk(),
                    materialized_bytes: expected.materialized_bytes(),
                    stored_bytes: expected.stored_bytes(),
                    has_file_lookup: false,
                    has_xorb_lookup: false,
                    has_chunk_lookup: false,
                },
                "{name}: streaming writer footer"
            );
            let mut body = out[..out.len() - 200].to_vec();
            body[40..48].copy_from_slice(&0u64.to_le_bytes());
            assert_eq!(
                body,
                expected.to_bytes().expect("write"),
                "{name}: streaming writer sections"
            );
        }

        // Xorb-only subset, as a global-dedup answer built from stored shards.
        let keep = |h: &MerkleHash| h.0[31].is_multiple_of(2);
        let mut out = Vec::new();
        minimal
            .serialize_xorb_subset_only(&mut out, None, |v| keep(&from_ref(&v.xorb_hash())))
            .expect("reference subset writer");
        let p = parse(&name, &out);
        let expected = Shard::new(
            vec![],
            marked
                .xorbs
                .iter()
                .filter(|x| keep(&x.hash))
                .cloned()
                .collect(),
        );
        assert_eq!(p.shard, expected, "{name}: xorb subset");
        assert_eq!(p.footer.map(|f| f.creation_timestamp), Some(0), "{name}");

        // What the reference's simulated CAS answers a global-dedup query with: all
        // xorbs, no files, no lookup tables, stamped with creation time and expiry.
        let (created, expiry) = (rng.random_range(0..1 << 40), rng.random_range(0..1 << 40));
        let mut out = Vec::new();
        minimal
            .serialize_xorb_subset_with_expiry(
                &mut out,
                Some(UNIX_EPOCH + Duration::from_secs(expiry)),
                Some(created),
                |_| true,
            )
            .expect("reference subset writer");
        let p = parse(&name, &out);
        assert_eq!(p.shard, Shard::new(vec![], marked.xorbs.clone()), "{name}");
        let footer = p.footer.expect("footer");
        assert_eq!(
            (
                footer.creation_timestamp,
                footer.key_expiry,
                footer.hmac_key
            ),
            (created, expiry, None),
            "{name}: global-dedup answer footer"
        );
        assert_eq!(
            (
                footer.has_file_lookup,
                footer.has_xorb_lookup,
                footer.has_chunk_lookup
            ),
            (false, false, false)
        );
    }
}

/// Two places where the reference's keyed export (`export_as_keyed_shard*`) writes
/// shards that we reject. Both are reference bugs that hf_xet's own flows avoid; the
/// assertions record the current behaviour on both sides.
///
/// 1. It copies the input header verbatim: exporting a shard in upload form
///    (footer_size 0) gives a shard with lookup tables and footer whose header still
///    says footer_size 0. The reference reads it (it takes the footer from the end of
///    the bytes without looking at footer_size); our parser trusts the header and
///    rejects the trailing bytes.
/// 2. It writes the file and xorb lookup tables in section order without sorting
///    them, so a shard whose sections are not in hash order (anything not written from
///    the reference's `BTreeMap`s, e.g. an upload by another client, stored through the
///    streaming writer, which keeps the upload's order) gets unsorted tables. The
///    reference's own interpolation search then misses files; our parser rejects the
///    unsorted table.
#[test]
fn reference_keyed_export_quirks() {
    let key = to_ref(&random_hash(&mut StdRng::seed_from_u64(0xA0)));
    let export = |input: &[u8]| {
        let mut out = Vec::new();
        MDBShardInfo::export_as_keyed_shard_streaming(
            &mut Cursor::new(input),
            &mut out,
            key,
            Duration::from_secs(3600),
            true,
            true,
            true,
        )
        .expect("reference keyed export");
        out
    };
    let mut checked = 0;
    for (name, s) in shards().into_iter().take(60) {
        let c = canonical(&s);

        let from_upload = export(&c.to_bytes().expect("write"));
        assert_eq!(le_u64(&from_upload[40..48]), 0, "{name}: header copied");
        let info = load_info(&from_upload);
        for f in &c.files {
            let got = info.get_file_reconstruction_info(
                &mut Cursor::new(&from_upload),
                &to_ref(&f.file_hash),
            );
            assert!(matches!(got, Ok(Some(_))), "{name}: reference lookup");
        }
        assert!(
            parse_shard(&from_upload).is_err(),
            "{name}: footer_size 0 with a footer"
        );

        // Sections out of hash order, stored as the reference's CAS stores uploads.
        let files_unsorted = c
            .files
            .windows(2)
            .any(|w| w[0].file_hash.truncated() != w[1].file_hash.truncated());
        let xorbs_unsorted = c
            .xorbs
            .windows(2)
            .any(|w| w[0].hash.truncated() != w[1].hash.truncated());
        if !files_unsorted && !xorbs_unsorted {
            continue;
        }
        checked += 1;
        let mut reversed = c.clone();
        reversed.files.reverse();
        reversed.xorbs.reverse();
        let minimal = MDBMinimalShard::from_reader(
            &mut Cursor::new(&reversed.to_bytes().expect("write")),
            true,
            true,
        )
        .expect("reference streaming reader");
        let mut stored = Vec::new();
        minimal
            .serialize(&mut stored, false, None)
            .expect("reference streaming writer");
        let exported = export(&stored);
        let err = parse_shard(&exported)
            .expect_err("unsorted lookup table")
            .to_string();
        assert!(err.contains("not sorted by key"), "{name}: {err}");
        if files_unsorted {
            let info = load_info(&exported);
            let found = reversed
                .files
                .iter()
                .filter(|f| {
                    matches!(
                        info.get_file_reconstruction_info(
                            &mut Cursor::new(&exported),
                            &to_ref(&f.file_hash)
                        ),
                        Ok(Some(_))
                    )
                })
                .count();
            assert!(
                found < reversed.files.len(),
                "{name}: the reference finds all files"
            );
        }
    }
    assert!(
        checked >= 20,
        "only {checked} shards with unsorted sections"
    );
}
