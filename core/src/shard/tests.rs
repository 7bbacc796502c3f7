//! Shard tests: hand-built bytes, round trips, corruption, hostile counts, server checks.

use proptest::prelude::*;

use super::*;
use crate::constants::MAX_SHARD_BYTES;
use crate::error::Error;
use crate::hash::{MerkleHash, chunk_hash, verification_hash};
use crate::merkle::file_hash;

// ---------------------------------------------------------------- helpers

fn h(n: u8) -> MerkleHash {
    let mut b = [0u8; 32];
    for (i, x) in b.iter_mut().enumerate() {
        *x = n.wrapping_mul(31).wrapping_add(i as u8);
    }
    MerkleHash(b)
}

/// A hash whose truncated form (bytes 0..8 LE) is `key`.
fn h_key(key: u64, tail: u8) -> MerkleHash {
    let mut b = [tail; 32];
    b[..8].copy_from_slice(&key.to_le_bytes());
    MerkleHash(b)
}

/// An independent little-endian byte builder for hand-made shards.
#[derive(Default)]
struct Le(Vec<u8>);

impl Le {
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn hash(self, h: &MerkleHash) -> Self {
        self.raw(&h.0)
    }
    fn header(self, footer_size: u64) -> Self {
        self.raw(b"HFRepoMetaData")
            .raw(&[
                0, 0x55, 0x69, 0x67, 0x45, 0x6a, 0x7b, 0x81, 0x57, 0x83, 0xa5, 0xbd, 0xd9, 0x5c,
                0xcd, 0xd1, 0x4a, 0xa9,
            ])
            .u64(2)
            .u64(footer_size)
    }
    fn bookend(self) -> Self {
        self.raw(&[0xFF; 32]).raw(&[0; 16])
    }
    fn rec(self, h: &MerkleHash, w: [u32; 4]) -> Self {
        self.hash(h).u32(w[0]).u32(w[1]).u32(w[2]).u32(w[3])
    }
}

fn malformed_msg(r: Result<ParsedShard, Error>) -> String {
    match r {
        Err(Error::MalformedShard(m)) => m,
        other => panic!("expected MalformedShard, got {other:?}"),
    }
}

/// A small, fully-populated shard: two files (one with verification + sha256, one
/// empty), two xorbs.
fn sample_shard() -> Shard {
    let x1 = XorbInfo::from_chunks(h(1), &[(h(10), 100), (h(11), 200), (h(12), 300)]).unwrap();
    let mut x2 = XorbInfo::from_chunks(h(2), &[(h(20), 50)]).unwrap();
    x2.num_bytes_on_disk = 58;
    x2.chunks[0].global_dedup = true;
    let f1 = FileInfo {
        file_hash: h(100),
        terms: vec![
            FileTerm::new(h(1), 300, 0, 2),
            FileTerm::new(h(2), 50, 0, 1),
        ],
        verification: Some(vec![h(200), h(201)]),
        sha256: Some([7; 32]),
    };
    let f2 = FileInfo {
        file_hash: MerkleHash::ZERO,
        terms: vec![],
        verification: Some(vec![]),
        sha256: Some([0; 32]),
    };
    Shard::new(vec![f1, f2], vec![x1, x2])
}

// ---------------------------------------------------------------- layout

#[test]
fn shard_empty_without_footer_is_header_and_two_bookends() {
    let bytes = Shard::default().to_bytes().unwrap();
    let expected = Le::default().header(0).bookend().bookend().0;
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), 144);
    let p = parse_shard(&bytes).unwrap();
    assert_eq!(p, ParsedShard::default());
}

#[test]
fn shard_hand_built_records_match_writer_and_parser() {
    let shard = sample_shard();
    // A constant digest: the per-group reversal leaves it unchanged.
    let sha_stored = [7u8; 32];
    let expected = Le::default()
        .header(0)
        // file 1: header (flags 0xC0000000, 2 entries, u64 0)
        .rec(&h(100), [0xC000_0000, 2, 0, 0])
        .rec(&h(1), [0, 300, 0, 2])
        .rec(&h(2), [0, 50, 0, 1])
        .rec(&h(200), [0; 4])
        .rec(&h(201), [0; 4])
        .rec(&MerkleHash(sha_stored), [0; 4])
        // file 2: the empty file
        .rec(&MerkleHash::ZERO, [0xC000_0000, 0, 0, 0])
        .rec(&MerkleHash::ZERO, [0; 4])
        .bookend()
        // xorb 1
        .rec(&h(1), [0, 3, 600, 0])
        .rec(&h(10), [0, 100, 0, 0])
        .rec(&h(11), [100, 200, 0, 0])
        .rec(&h(12), [300, 300, 0, 0])
        // xorb 2 (global-dedup flag, on-disk size)
        .rec(&h(2), [0, 1, 50, 58])
        .rec(&h(20), [0, 50, 0x8000_0000, 0])
        .bookend()
        .0;
    let bytes = shard.to_bytes().unwrap();
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), shard.serialized_len_without_footer());
    let p = parse_shard(&expected).unwrap();
    assert_eq!(p.shard, shard);
    assert_eq!(p.footer, None);
}

#[test]
fn shard_footer_layout_and_lookup_tables_by_hand() {
    // File hashes chosen so the lookup order differs from the section order.
    let x = XorbInfo::from_chunks(h_key(9, 1), &[(h_key(7, 2), 10), (h_key(3, 3), 20)]).unwrap();
    let fa = FileInfo {
        file_hash: h_key(50, 4),
        terms: vec![FileTerm::new(x.hash, 30, 0, 2)],
        verification: Some(vec![h(1)]),
        sha256: Some([1; 32]),
    };
    let fb = FileInfo::new(h_key(40, 5), vec![FileTerm::new(x.hash, 10, 0, 1)]);
    let shard = Shard::new(vec![fa.clone(), fb.clone()], vec![x.clone()]);
    let opts = FooterOptions {
        hmac_key: None,
        chunk_hashes_already_keyed: false,
        creation_timestamp: 1_700_000_000,
        key_expiry: 1_700_086_400,
    };
    let bytes = shard.to_bytes_with_footer(&opts).unwrap();

    // Sections: header 48, fa 4 records, fb 2 records, bookend, xorb 3 records, bookend.
    let xorb_info_offset = 48 + 48 * 7;
    let file_lookup_offset = xorb_info_offset + 48 * 4;
    let xorb_lookup_offset = file_lookup_offset + 2 * 12;
    let chunk_lookup_offset = xorb_lookup_offset + 12;
    let footer_offset = chunk_lookup_offset + 2 * 16;
    let mut expected = Le::default().header(200);
    expected = expected.raw(&shard.to_bytes().unwrap()[48..]);
    let expected = expected
        // file lookup, sorted by key: fb (key 40, index 4) before fa (key 50, index 0)
        .u64(40)
        .u32(4)
        .u64(50)
        .u32(0)
        // xorb lookup
        .u64(9)
        .u32(0)
        // chunk lookup sorted by key: chunk 1 (key 3) then chunk 0 (key 7)
        .u64(3)
        .u32(0)
        .u32(1)
        .u64(7)
        .u32(0)
        .u32(0)
        // footer
        .u64(1)
        .u64(48)
        .u64(xorb_info_offset as u64)
        .u64(file_lookup_offset as u64)
        .u64(2)
        .u64(xorb_lookup_offset as u64)
        .u64(1)
        .u64(chunk_lookup_offset as u64)
        .u64(2)
        .raw(&[0; 32])
        .u64(1_700_000_000)
        .u64(1_700_086_400)
        .raw(&[0; 48])
        .u64(0) // stored_bytes_on_disk
        .u64(40) // materialized_bytes: 30 + 10
        .u64(30) // stored_bytes
        .u64(footer_offset as u64)
        .0;
    assert_eq!(bytes, expected);

    let p = parse_shard(&bytes).unwrap();
    assert_eq!(p.shard, shard);
    assert_eq!(
        p.footer,
        Some(ShardFooter {
            hmac_key: None,
            creation_timestamp: 1_700_000_000,
            key_expiry: 1_700_086_400,
            stored_bytes_on_disk: 0,
            materialized_bytes: 40,
            stored_bytes: 30,
            has_file_lookup: true,
            has_xorb_lookup: true,
            has_chunk_lookup: true,
        })
    );
    let tables = LookupTables::build(&p.shard.files, &p.shard.xorbs).unwrap();
    assert_eq!(
        tables.files_with_key(40),
        &[FileLookupEntry { key: 40, index: 4 }]
    );
    assert_eq!(tables.chunks_with_key(3)[0].chunk_index, 1);
    assert!(tables.xorbs_with_key(8).is_empty());
}

#[test]
fn shard_hmac_keys_every_chunk_hash_and_lookup_key() {
    let shard = sample_shard();
    let key = h(77);
    let opts = FooterOptions {
        hmac_key: Some(key),
        ..FooterOptions::default()
    };
    let bytes = shard.to_bytes_with_footer(&opts).unwrap();
    let p = parse_shard(&bytes).unwrap();
    let footer = p.footer.unwrap();
    assert_eq!(footer.hmac_key, Some(key));
    assert_eq!(footer.key_expiry, NO_EXPIRY);
    for (xp, xo) in p.shard.xorbs.iter().zip(&shard.xorbs) {
        assert_eq!(xp.hash, xo.hash, "xorb hashes are never keyed");
        for (cp, co) in xp.chunks.iter().zip(&xo.chunks) {
            assert_eq!(cp.hash, co.hash.hmac(&key));
            assert_eq!(
                cp.hash,
                MerkleHash(*blake3::keyed_hash(&key.0, &co.hash.0).as_bytes())
            );
        }
    }
    // Lookup keys are the truncated keyed hashes (the parser checked the table, but
    // check one by hand too).
    let tables = LookupTables::build(&p.shard.files, &p.shard.xorbs).unwrap();
    let k = shard.xorbs[0].chunks[1].hash.hmac(&key).truncated();
    assert_eq!(tables.chunks_with_key(k).len(), 1);
    let raw = &bytes[bytes.len() - 200 - 16 * tables.chunks.len()..bytes.len() - 200];
    let keys: Vec<u64> = raw
        .chunks_exact(16)
        .map(|e| u64::from_le_bytes(e[..8].try_into().unwrap()))
        .collect();
    assert!(keys.contains(&k));
    assert!(!keys.contains(&shard.xorbs[0].chunks[1].hash.truncated()));
    // File info is untouched by the key.
    assert_eq!(p.shard.files, shard.files);
    // Writing the parsed shard again with its own options reproduces the bytes.
    assert_eq!(
        p.shard.to_bytes_with_footer(&footer.options()).unwrap(),
        bytes
    );
    // A zero key means no key.
    let zero = FooterOptions {
        hmac_key: Some(MerkleHash::ZERO),
        ..FooterOptions::default()
    };
    let p0 = parse_shard(&shard.to_bytes_with_footer(&zero).unwrap()).unwrap();
    assert_eq!(p0.shard, shard);
    assert_eq!(p0.footer.unwrap().hmac_key, None);
}

#[test]
fn shard_sha256_stored_form_prints_as_the_normal_digest() {
    // SHA-256 of the empty string.
    let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let mut digest = [0u8; 32];
    for (i, d) in digest.iter_mut().enumerate() {
        *d = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let stored = sha256_to_stored(&digest);
    assert_eq!(stored.to_hex(), hex);
    assert_eq!(
        &stored.0[..8],
        &[0x14, 0x1c, 0xfc, 0x98, 0x42, 0xc4, 0xb0, 0xe3]
    );
    assert_eq!(sha256_from_stored(&stored), digest);

    // And in a shard the stored bytes are what the record holds.
    let f = FileInfo {
        file_hash: h(1),
        terms: vec![],
        verification: None,
        sha256: Some(digest),
    };
    let bytes = Shard::new(vec![f.clone()], vec![]).to_bytes().unwrap();
    assert_eq!(&bytes[96..128], &stored.0);
    assert_eq!(parse_shard(&bytes).unwrap().shard.files[0], f);
}

#[test]
fn shard_reference_order_compares_little_endian_words() {
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    a[7] = 1; // word 0 = 1 << 56
    b[0] = 2; // word 0 = 2
    let (a, b) = (MerkleHash(a), MerkleHash(b));
    // Byte order and reference order disagree here: a sorts first by bytes, last by words.
    assert!(a < b);
    assert_eq!(reference_cmp(&a, &b), std::cmp::Ordering::Greater);
    let mut c = b;
    c.0[31] = 1;
    assert_eq!(reference_cmp(&b, &c), std::cmp::Ordering::Less);
    assert_eq!(reference_cmp(&c, &c), std::cmp::Ordering::Equal);
}

#[test]
fn shard_canonicalize_sorts_by_reference_order_and_keeps_last_duplicate() {
    let xa = XorbInfo::from_chunks(h_key(300, 1), &[(h(1), 1)]).unwrap();
    let xb = XorbInfo::from_chunks(h_key(2, 1), &[(h(2), 2)]).unwrap();
    let xb2 = XorbInfo::from_chunks(h_key(2, 1), &[(h(3), 3)]).unwrap();
    let fa = FileInfo::new(h_key(1 << 40, 0), vec![]);
    let fb = FileInfo::new(h_key(1, 0), vec![]);
    let mut s = Shard::new(
        vec![fa.clone(), fb.clone()],
        vec![xb.clone(), xa.clone(), xb2.clone()],
    );
    s.canonicalize();
    assert_eq!(s.files, vec![fb, fa]);
    assert_eq!(s.xorbs, vec![xb2, xa]);
}

// ---------------------------------------------------------------- rejection

#[test]
fn shard_rejects_bad_header() {
    let good = sample_shard().to_bytes().unwrap();

    let mut b = good.clone();
    b[3] ^= 1;
    assert!(malformed_msg(parse_shard(&b)).contains("tag"));

    let mut b = good.clone();
    b[32] = 1;
    assert!(malformed_msg(parse_shard(&b)).contains("header version 1"));

    let mut b = good.clone();
    b[40] = 100;
    assert!(malformed_msg(parse_shard(&b)).contains("footer_size 100"));

    // footer_size 200 on a shard without one.
    let mut b = good.clone();
    b[40] = 200;
    parse_shard(&b).unwrap_err();

    for n in [0, 1, 47] {
        assert!(malformed_msg(parse_shard(&good[..n])).contains("shorter than its 48-byte header"));
    }
}

#[test]
fn shard_rejects_truncation_and_trailing_bytes() {
    let good = sample_shard().to_bytes().unwrap();
    let m = malformed_msg(parse_shard(&good[..good.len() - 48]));
    assert!(
        m.contains("CAS-info section") && m.contains("cut short"),
        "{m}"
    );
    let mut b = good.clone();
    b.push(0);
    let m = malformed_msg(parse_shard(&b));
    assert!(m.contains("1 unexpected bytes"), "{m}");
}

#[test]
fn shard_rejects_nonzero_reserved_fields_and_unknown_flags() {
    let good = sample_shard().to_bytes().unwrap();
    // Offsets of records in the sample: file 1 header at 48, terms at 96/144,
    // verification at 192/240, ext at 288, empty-file header 336, its ext 384,
    // bookend 432, xorb 1 header 480, chunks 528.., xorb 2 header 672, chunk 720, bookend 768.
    let cases: &[(usize, &str)] = &[
        (48 + 32, "unknown flag bits"),     // file flags low byte
        (48 + 40, "reserved u64"),          // file header reserved
        (48 + 47, "reserved u64"),          // file header reserved, last byte
        (96 + 32, "flags"),                 // term flags
        (192 + 40, "verification entry 0"), // verification padding
        (288 + 33, "metadata extension"),   // ext padding
        (432 + 32, "file-info bookend"),    // bookend padding
        (480 + 32, "flags"),                // xorb flags
        (528 + 40, "unknown flag bits"),    // chunk flags low byte
        (528 + 44, "unused u32"),           // chunk unused
        (768 + 47, "CAS-info bookend"),     // bookend padding
    ];
    for &(pos, needle) in cases {
        let mut b = good.clone();
        b[pos] ^= 0x01;
        let m = malformed_msg(parse_shard(&b));
        assert!(m.contains(needle), "byte {pos}: {m}");
    }
    // The chunk flag bit 31 is meaningful, not rejected.
    let mut b = good.clone();
    b[528 + 43] ^= 0x80;
    let p = parse_shard(&b).unwrap();
    assert!(p.shard.xorbs[0].chunks[0].global_dedup);
}

#[test]
fn shard_hostile_counts_fail_before_allocating() {
    // num_entries = u32::MAX in a file header (with and without verification), and
    // in a xorb header. Allocating for such a count would need hundreds of GB and
    // abort the test process; the parser must refuse first.
    for flags in [0u32, 0x8000_0000, 0xC000_0000] {
        let b = Le::default()
            .header(0)
            .rec(&h(1), [flags, u32::MAX, 0, 0])
            .bookend()
            .bookend()
            .0;
        let m = malformed_msg(parse_shard(&b));
        assert!(
            m.contains("4294967295 terms") && m.contains("file 0"),
            "{m}"
        );
    }
    let b = Le::default()
        .header(0)
        .bookend()
        .rec(&h(1), [0, u32::MAX, 0, 0])
        .bookend()
        .0;
    let m = malformed_msg(parse_shard(&b));
    assert!(
        m.contains("4294967295 chunks") && m.contains("xorb 0"),
        "{m}"
    );

    // One entry more than the bytes hold.
    let b = Le::default()
        .header(0)
        .bookend()
        .rec(&h(1), [0, 2, 0, 0])
        .rec(&h(2), [0, 1, 0, 0])
        .0;
    let m = malformed_msg(parse_shard(&b));
    assert!(m.contains("declares 2 chunks"), "{m}");

    // Huge footer counts.
    let good = sample_shard()
        .to_bytes_with_footer(&FooterOptions::default())
        .unwrap();
    let footer = good.len() - 200;
    for field in [4usize, 6, 8] {
        let mut b = good.clone();
        b[footer + 8 * field..footer + 8 * field + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let m = malformed_msg(parse_shard(&b));
        assert!(m.contains("runs past the footer"), "field {field}: {m}");
    }
}

#[test]
fn shard_rejects_footer_offsets_out_of_bounds() {
    let shard = sample_shard();
    let good = shard
        .to_bytes_with_footer(&FooterOptions::default())
        .unwrap();
    let footer = good.len() - 200;
    let set = |b: &mut Vec<u8>, field: usize, v: u64| {
        b[footer + 8 * field..footer + 8 * field + 8].copy_from_slice(&v.to_le_bytes());
    };
    let cases: &[(usize, u64, &str)] = &[
        (0, 2, "footer version 2"),
        (1, 0, "file_info_offset"),
        (2, u64::MAX, "xorb_info_offset"),
        (3, u64::MAX, "file lookup offset"),
        (3, good.len() as u64 + 1000, "file lookup offset"),
        (5, 0, "xorb lookup offset"),
        (7, u64::MAX - 3, "chunk lookup offset"),
        (24, good.len() as u64, "footer_offset"),
        (24, u64::MAX, "footer_offset"),
        (15, 1, "reserved"),
    ];
    for &(field, v, needle) in cases {
        let mut b = good.clone();
        set(&mut b, field, v);
        let m = malformed_msg(parse_shard(&b));
        assert!(m.contains(needle), "field {field} = {v}: {m}");
    }
    // Fewer entries than the table holds leaves unexplained bytes before the footer.
    let mut b = good.clone();
    set(&mut b, 8, 1);
    parse_shard(&b).unwrap_err();

    // A footer-declaring shard too short for a footer.
    let b = Le::default().header(200).bookend().bookend().0;
    assert!(malformed_msg(parse_shard(&b)).contains("only 144 bytes"));
}

#[test]
fn shard_lookup_tables_must_be_sorted_complete_or_empty() {
    let shard = sample_shard();
    let good = shard
        .to_bytes_with_footer(&FooterOptions::default())
        .unwrap();
    let tables = LookupTables::build(&shard.files, &shard.xorbs).unwrap();
    let footer = good.len() - 200;
    let chunk_off = footer - 16 * tables.chunks.len();

    // Swap two chunk entries: unsorted.
    let mut b = good.clone();
    let (first, second) = b[chunk_off..chunk_off + 32].split_at_mut(16);
    first.swap_with_slice(second);
    assert!(malformed_msg(parse_shard(&b)).contains("not sorted"));

    // Wrong chunk index.
    let mut b = good.clone();
    b[chunk_off + 12] ^= 1;
    assert!(malformed_msg(parse_shard(&b)).contains("does not match"));

    // Empty tables are accepted (the reference's streaming serializer writes them).
    let sections = shard.to_bytes().unwrap();
    let end = sections.len() as u64;
    let empty = Le::default()
        .raw(&sections[..40])
        .u64(200)
        .raw(&sections[48..])
        .u64(1)
        .u64(48)
        .u64(end - 48 * 7) // xorb_info_offset: xorb 1 (4 records), xorb 2 (2), bookend
        .u64(end)
        .u64(0)
        .u64(end)
        .u64(0)
        .u64(end)
        .u64(0)
        .raw(&[0; 32])
        .u64(5)
        .u64(0)
        .raw(&[0; 48])
        .u64(1)
        .u64(2)
        .u64(3)
        .u64(end)
        .0;
    let p = parse_shard(&empty).unwrap();
    assert_eq!(p.shard, shard);
    let f = p.footer.unwrap();
    assert!(!f.has_file_lookup && !f.has_xorb_lookup && !f.has_chunk_lookup);
    assert_eq!(
        (f.creation_timestamp, f.key_expiry, f.stored_bytes_on_disk),
        (5, 0, 1)
    );
    assert!(f.is_expired(1));
    assert!(!f.is_expired(0));
}

#[test]
fn shard_size_limit_is_checked_first() {
    let big = vec![0u8; MAX_SHARD_BYTES + 1];
    assert_eq!(
        parse_shard(&big).unwrap_err(),
        Error::ShardTooLarge {
            size: MAX_SHARD_BYTES + 1,
            limit: MAX_SHARD_BYTES
        }
    );
    let good = sample_shard().to_bytes().unwrap();
    let e = parse_shard_with_limit(&good, good.len() - 1).unwrap_err();
    assert_eq!(e.code(), "shard_too_large");
    parse_shard_with_limit(&good, good.len()).unwrap();
}

#[test]
fn shard_writer_refuses_unwritable_shards() {
    let mut s = sample_shard();
    s.files[0].verification = Some(vec![h(1)]);
    assert!(matches!(s.to_bytes(), Err(Error::MalformedShard(_))));
    let mut s = sample_shard();
    s.files[1].file_hash = BOOKEND_HASH;
    assert!(matches!(s.to_bytes(), Err(Error::MalformedShard(_))));
    let mut s = sample_shard();
    s.xorbs[1].hash = BOOKEND_HASH;
    assert!(matches!(
        s.to_bytes_with_footer(&FooterOptions::default()),
        Err(Error::MalformedShard(_))
    ));
}

// ---------------------------------------------------------------- server checks

/// A real xorb of `n` chunks with lengths 1000 + i, built from chunk contents.
fn real_xorb(seed: u8, n: usize) -> XorbInfo {
    let chunks: Vec<(MerkleHash, u32)> = (0..n)
        .map(|i| (chunk_hash(&[seed, i as u8, 0xAB]), 1000 + i as u32))
        .collect();
    XorbInfo::from_chunks_hashed(&chunks).unwrap()
}

/// A file over the given ranges of xorbs, with correct hash and verification.
fn real_file(parts: &[(&XorbInfo, u32, u32)]) -> FileInfo {
    let mut leaves = Vec::new();
    let mut terms = Vec::new();
    let mut verification = Vec::new();
    for &(x, s, e) in parts {
        let cs = &x.chunks[s as usize..e as usize];
        leaves.extend(cs.iter().map(|c| (c.hash, u64::from(c.unpacked_bytes))));
        terms.push(FileTerm::new(
            x.hash,
            cs.iter().map(|c| c.unpacked_bytes).sum(),
            s,
            e,
        ));
        verification.push(verification_hash(
            &cs.iter().map(|c| c.hash).collect::<Vec<_>>(),
        ));
    }
    FileInfo {
        file_hash: file_hash(&leaves),
        terms,
        verification: Some(verification),
        sha256: Some([3; 32]),
    }
}

#[test]
fn shard_check_file_accepts_a_correct_file_and_names_each_fault() {
    let xa = real_xorb(1, 5);
    let xb = real_xorb(2, 3);
    let file = real_file(&[(&xa, 1, 4), (&xb, 0, 3), (&xa, 0, 1)]);
    let shard = Shard::new(vec![file.clone()], vec![xa.clone(), xb.clone()]);
    let map = shard.xorb_map();
    let lookup = |x: &MerkleHash| map.get(x).copied();

    check_file(&file, lookup).unwrap();
    check_file_hash(&file, lookup).unwrap();
    assert_eq!(
        term_verification_hashes(&file, lookup).unwrap(),
        file.verification.clone().unwrap()
    );
    shard.check_consistency().unwrap();

    // The empty file: no terms, zero hash.
    let empty = FileInfo {
        file_hash: MerkleHash::ZERO,
        terms: vec![],
        verification: Some(vec![]),
        sha256: Some([0; 32]),
    };
    check_file(&empty, lookup).unwrap();

    // Wrong file hash.
    let mut f = file.clone();
    f.file_hash = h(9);
    assert!(matches!(
        check_file(&f, lookup),
        Err(Error::FileHashMismatch { expected, .. }) if expected == h(9)
    ));
    // Terms in a different order give a different hash.
    let mut f = file.clone();
    f.terms.swap(0, 1);
    f.verification.as_mut().unwrap().swap(0, 1);
    assert_eq!(
        check_file(&f, lookup).unwrap_err().code(),
        "file_hash_mismatch"
    );
    // Unknown xorb.
    let mut f = file.clone();
    f.terms[1].xorb_hash = h(8);
    assert_eq!(
        check_file(&f, lookup).unwrap_err(),
        Error::UnknownXorb(h(8))
    );
    // Out of bounds, empty range, wrong length.
    let mut f = file.clone();
    f.terms[1].chunk_end = 4;
    assert!(
        check_file(&f, lookup)
            .unwrap_err()
            .to_string()
            .contains("out of bounds")
    );
    let mut f = file.clone();
    f.terms[0].chunk_start = 4;
    assert!(
        check_file(&f, lookup)
            .unwrap_err()
            .to_string()
            .contains("empty chunk range")
    );
    let mut f = file.clone();
    f.terms[2].unpacked_bytes += 1;
    assert!(
        check_file(&f, lookup)
            .unwrap_err()
            .to_string()
            .contains("declares 1001 bytes")
    );
    // Verification entry that does not match.
    let mut f = file.clone();
    f.verification.as_mut().unwrap()[2] = h(5);
    let e = check_file(&f, lookup).unwrap_err().to_string();
    assert!(e.contains("term 2") && e.contains("verification"), "{e}");
    // Without verification entries the rest is still checked.
    let mut f = file.clone();
    f.verification = None;
    check_file(&f, lookup).unwrap();
}

#[test]
fn shard_check_consistency_names_each_fault() {
    let xa = real_xorb(1, 3);
    let file = real_file(&[(&xa, 0, 3)]);
    let good = Shard::new(vec![file.clone()], vec![xa.clone()]);
    good.check_consistency().unwrap();

    let mut s = good.clone();
    s.xorbs[0].chunks[1].byte_range_start += 1;
    assert!(
        s.check_consistency()
            .unwrap_err()
            .to_string()
            .contains("chunk 1 starts at byte")
    );
    let mut s = good.clone();
    s.xorbs[0].num_bytes_in_xorb += 1;
    assert!(
        s.check_consistency()
            .unwrap_err()
            .to_string()
            .contains("declares")
    );
    let mut s = good.clone();
    s.xorbs[0].chunks.clear();
    s.xorbs[0].num_bytes_in_xorb = 0;
    assert!(
        s.check_consistency()
            .unwrap_err()
            .to_string()
            .contains("no chunks")
    );
    let mut s = good.clone();
    s.files[0].terms[0].chunk_end = 5;
    assert!(
        s.check_consistency()
            .unwrap_err()
            .to_string()
            .contains("out of bounds")
    );
    let mut s = good.clone();
    s.files.push(FileInfo::new(h(3), vec![]));
    assert!(
        s.check_consistency()
            .unwrap_err()
            .to_string()
            .contains("lacks verification")
    );
    // A term into a xorb not in this shard is not this check's business.
    let mut s = good.clone();
    s.files[0].terms[0].xorb_hash = h(4);
    s.check_consistency().unwrap();
}

#[test]
fn shard_global_dedup_eligible_chunks_follow_the_server_rule() {
    let mut x =
        XorbInfo::from_chunks(h(1), &[(h(10), 1), (h(11), 1), (h(12), 1), (h(13), 1)]).unwrap();
    // Chunk 3: hash % 1024 == 0 (bytes 24..32 as LE u64).
    x.chunks[3].hash.0[24..32].copy_from_slice(&(5u64 * 1024).to_le_bytes());
    // Chunk 1: flagged.
    x.chunks[1].global_dedup = true;
    for c in &x.chunks[..3] {
        assert_ne!(c.hash.modulo(1024), 0);
    }
    // File starting at chunk 2 of x; another file starting in a xorb not in the shard.
    let f1 = FileInfo::new(h(50), vec![FileTerm::new(h(1), 2, 2, 4)]);
    let f2 = FileInfo::new(h(51), vec![FileTerm::new(h(2), 1, 0, 1)]);
    // A file whose second term starts at chunk 0: not a file start.
    let f3 = FileInfo::new(
        h(52),
        vec![FileTerm::new(h(2), 1, 0, 1), FileTerm::new(h(1), 1, 0, 1)],
    );
    let mut s = Shard::new(vec![f1, f2, f3], vec![x.clone()]);
    let got = s.global_dedup_eligible_chunks();
    assert_eq!(
        got,
        vec![x.chunks[1].hash, x.chunks[2].hash, x.chunks[3].hash]
    );

    s.mark_file_start_chunks();
    let flags: Vec<bool> = s.xorbs[0].chunks.iter().map(|c| c.global_dedup).collect();
    assert_eq!(flags, vec![false, true, true, false]);
    // After marking, the flags alone carry the file-start rule.
    s.files.clear();
    assert_eq!(s.global_dedup_eligible_chunks(), got);
}

// ---------------------------------------------------------------- corruption

/// Every single-byte flip of `bytes` gives an error or a parse different from `orig`.
fn assert_flips_detected(bytes: &[u8], orig: &ParsedShard, masks: &[u8]) {
    let mut b = bytes.to_vec();
    for pos in 0..b.len() {
        for &m in masks {
            b[pos] ^= m;
            if let Ok(p) = parse_shard(&b) {
                assert_ne!(&p, orig, "flip of byte {pos} with {m:#04x} went unnoticed");
            }
            b[pos] ^= m;
        }
    }
}

#[test]
fn shard_every_byte_flip_is_detected() {
    let shard = sample_shard();
    let plain = shard.to_bytes().unwrap();
    assert_flips_detected(&plain, &parse_shard(&plain).unwrap(), &[0x01, 0x80, 0xFF]);
    for opts in [
        FooterOptions::default(),
        FooterOptions {
            hmac_key: Some(h(9)),
            chunk_hashes_already_keyed: false,
            creation_timestamp: 12345,
            key_expiry: 67890,
        },
    ] {
        let bytes = shard.to_bytes_with_footer(&opts).unwrap();
        assert_flips_detected(&bytes, &parse_shard(&bytes).unwrap(), &[0x01, 0x80, 0xFF]);
    }
}

#[test]
fn shard_every_truncation_is_rejected() {
    let shard = sample_shard();
    for bytes in [
        shard.to_bytes().unwrap(),
        shard
            .to_bytes_with_footer(&FooterOptions::default())
            .unwrap(),
    ] {
        for n in 0..bytes.len() {
            let e = parse_shard(&bytes[..n]).unwrap_err();
            assert_eq!(e.code(), "malformed_shard", "truncated to {n}");
        }
    }
}

// ---------------------------------------------------------------- properties

fn arb_hash() -> impl Strategy<Value = MerkleHash> {
    any::<[u8; 32]>().prop_map(MerkleHash)
}

fn arb_file() -> impl Strategy<Value = FileInfo> {
    (
        arb_hash(),
        prop::collection::vec(
            (arb_hash(), any::<u32>(), any::<u32>(), any::<u32>())
                .prop_map(|(x, n, s, e)| FileTerm::new(x, n, s, e)),
            0..5,
        ),
        any::<bool>(),
        prop::option::of(any::<[u8; 32]>()),
    )
        .prop_flat_map(|(hash, terms, with_v, sha)| {
            let n = terms.len();
            let v = if with_v {
                prop::collection::vec(arb_hash(), n..=n)
                    .prop_map(Some)
                    .boxed()
            } else {
                Just(None).boxed()
            };
            (Just(hash), Just(terms), v, Just(sha)).prop_map(
                |(file_hash, terms, verification, sha256)| FileInfo {
                    file_hash,
                    terms,
                    verification,
                    sha256,
                },
            )
        })
}

fn arb_xorb() -> impl Strategy<Value = XorbInfo> {
    (
        arb_hash(),
        prop::collection::vec(
            (arb_hash(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(hash, s, n, g)| {
                XorbChunk {
                    hash,
                    byte_range_start: s,
                    unpacked_bytes: n,
                    global_dedup: g,
                }
            }),
            0..6,
        ),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(hash, chunks, num_bytes_in_xorb, num_bytes_on_disk)| XorbInfo {
                hash,
                chunks,
                num_bytes_in_xorb,
                num_bytes_on_disk,
            },
        )
}

fn arb_shard() -> impl Strategy<Value = Shard> {
    (
        prop::collection::vec(arb_file(), 0..4),
        prop::collection::vec(arb_xorb(), 0..4),
    )
        .prop_map(|(files, xorbs)| Shard { files, xorbs })
}

fn arb_opts() -> impl Strategy<Value = FooterOptions> {
    (
        prop::option::of(arb_hash()),
        any::<u64>(),
        prop_oneof![Just(NO_EXPIRY), any::<u64>()],
    )
        .prop_map(|(hmac_key, creation_timestamp, key_expiry)| FooterOptions {
            hmac_key,
            chunk_hashes_already_keyed: false,
            creation_timestamp,
            key_expiry,
        })
}

fn keyed(shard: &Shard, key: Option<MerkleHash>) -> Shard {
    let mut s = shard.clone();
    if let Some(k) = key {
        for x in &mut s.xorbs {
            for c in &mut x.chunks {
                c.hash = c.hash.hmac(&k);
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn shard_roundtrip_without_footer(shard in arb_shard()) {
        let bytes = shard.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), shard.serialized_len_without_footer());
        let p = parse_shard(&bytes).unwrap();
        prop_assert_eq!(&p.shard, &shard);
        prop_assert_eq!(p.footer, None);
        prop_assert_eq!(p.shard.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn shard_roundtrip_with_footer(shard in arb_shard(), opts in arb_opts()) {
        let bytes = shard.to_bytes_with_footer(&opts).unwrap();
        let p = parse_shard(&bytes).unwrap();
        prop_assert_eq!(&p.shard, &keyed(&shard, opts.hmac_key));
        let f = p.footer.unwrap();
        prop_assert_eq!(f.hmac_key, opts.hmac_key);
        prop_assert_eq!(f.creation_timestamp, opts.creation_timestamp);
        prop_assert_eq!(f.key_expiry, opts.key_expiry);
        prop_assert_eq!(f.materialized_bytes, shard.materialized_bytes());
        prop_assert_eq!(f.stored_bytes, shard.stored_bytes());
        prop_assert_eq!(f.stored_bytes_on_disk, shard.stored_bytes_on_disk());
        prop_assert_eq!(f.has_file_lookup, !shard.files.is_empty());
        prop_assert_eq!(f.has_chunk_lookup, shard.xorbs.iter().any(|x| !x.chunks.is_empty()));
        // The sections are exactly the footer-less form (apart from footer_size).
        let plain = keyed(&shard, opts.hmac_key).to_bytes().unwrap();
        prop_assert_eq!(&bytes[48..plain.len()], &plain[48..]);
        // Re-writing the parsed shard reproduces the bytes.
        prop_assert_eq!(p.shard.to_bytes_with_footer(&f.options()).unwrap(), bytes);
    }

    #[test]
    fn shard_random_flip_or_truncation_never_panics(
        shard in arb_shard(),
        opts in arb_opts(),
        with_footer in any::<bool>(),
        pos in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = if with_footer {
            shard.to_bytes_with_footer(&opts).unwrap()
        } else {
            shard.to_bytes().unwrap()
        };
        let orig = parse_shard(&bytes).unwrap();
        let mut b = bytes.clone();
        let at = pos.index(b.len());
        b[at] ^= mask;
        if let Ok(p) = parse_shard(&b) {
            prop_assert_ne!(p, orig);
        }
        let n = cut.index(bytes.len());
        prop_assert!(parse_shard(&bytes[..n]).is_err());
    }

    #[test]
    fn shard_random_bytes_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..600),
        footer in any::<bool>(),
    ) {
        // With a valid header, so the fuzzing reaches the sections.
        let mut b = Le::default().header(if footer { 200 } else { 0 }).0;
        b.extend_from_slice(&tail);
        let _ = parse_shard(&b);
        let _ = parse_shard(&tail);
    }

    #[test]
    fn shard_canonical_form_is_sorted_and_stable(shard in arb_shard()) {
        let mut a = shard.clone();
        a.canonicalize();
        for w in a.files.windows(2) {
            prop_assert_eq!(reference_cmp(&w[0].file_hash, &w[1].file_hash), std::cmp::Ordering::Less);
        }
        for w in a.xorbs.windows(2) {
            prop_assert_eq!(reference_cmp(&w[0].hash, &w[1].hash), std::cmp::Ordering::Less);
        }
        let mut b = a.clone();
        b.canonicalize();
        prop_assert_eq!(&a, &b);
        // In canonical order, the file and xorb lookup indices increase with the key,
        // as in the reference's (map-ordered) writer.
        let t = LookupTables::build(&a.files, &a.xorbs).unwrap();
        prop_assert!(t.files.windows(2).all(|w| w[0].index < w[1].index));
        prop_assert!(t.xorbs.windows(2).all(|w| w[0].index < w[1].index));
    }
}

// ---------------------------------------------------------------- fuzz corpus

/// Writes the seed corpus of the `shard_parse` fuzz target. Run with
/// `cargo test -p cas-core shard_write_fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn shard_write_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/shard_parse");
    std::fs::create_dir_all(&dir).unwrap();
    let shard = sample_shard();
    let plain = shard.to_bytes().unwrap();
    let footer = shard
        .to_bytes_with_footer(&FooterOptions {
            creation_timestamp: 1_700_000_000,
            ..FooterOptions::default()
        })
        .unwrap();
    let hmac = shard
        .to_bytes_with_footer(&FooterOptions {
            hmac_key: Some(h(42)),
            chunk_hashes_already_keyed: false,
            creation_timestamp: 1_700_000_000,
            key_expiry: 1_700_086_400,
        })
        .unwrap();
    let xorbs_only = Shard::new(vec![], shard.xorbs.clone())
        .to_bytes_with_footer(&FooterOptions::default())
        .unwrap();
    let mut hostile = plain.clone();
    hostile[48 + 36..48 + 40].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_offset = footer.clone();
    let fo = bad_offset.len() - 200;
    bad_offset[fo + 56..fo + 64].copy_from_slice(&u64::MAX.to_le_bytes());
    let truncated = plain[..plain.len() - 20].to_vec();
    let files: [(&str, &[u8]); 8] = [
        ("valid_no_footer", &plain),
        ("valid_empty", &Shard::default().to_bytes().unwrap()),
        ("valid_footer", &footer),
        ("valid_hmac", &hmac),
        ("valid_xorbs_only_footer", &xorbs_only),
        ("bad_hostile_count", &hostile),
        ("bad_footer_offset", &bad_offset),
        ("bad_truncated", &truncated),
    ];
    for (name, bytes) in files {
        let ok = parse_shard(bytes).is_ok();
        assert_eq!(ok, name.starts_with("valid"), "{name}");
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
