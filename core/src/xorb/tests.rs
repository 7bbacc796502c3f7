//! Tests of the xorb builder, parser, range decoder and footer.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::*;
use crate::compression::{CompressionPolicy, compress};
use crate::constants::{
    MAX_CHUNK_UNCOMPRESSED_LEN, MAX_SERIALIZED_XORB_BYTES, MAX_XORB_BYTES, MAX_XORB_CHUNKS,
};
use crate::error::Error;
use crate::hash::chunk_hash;
use crate::merkle::xorb_hash;

fn random_bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// Chunk contents of several kinds, so every scheme gets chosen.
fn sample_chunk(rng: &mut StdRng, n: usize) -> Vec<u8> {
    match rng.random_range(0..4) {
        0 => random_bytes(rng, n),
        1 => (0..n).map(|i| b"xorb chunk text "[i % 16]).collect(),
        2 => (0..n)
            .map(|i| if i % 4 == 3 { 0x3c } else { rng.random() })
            .collect(),
        _ => vec![rng.random(); n],
    }
}

fn build(chunks: &[Vec<u8>]) -> SerializedXorb {
    let mut b = XorbBuilder::new();
    for c in chunks {
        assert!(matches!(b.add_chunk(c).unwrap(), AddChunk::Added(_)));
    }
    b.finish().unwrap()
}

/// Chunks of one of each scheme.
fn mixed_chunks() -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(42);
    let floats: Vec<u8> = (0..4000)
        .flat_map(|_| (rng.random::<f32>() * 0.02 - 0.01).to_le_bytes())
        .collect();
    vec![
        b"hello".to_vec(),
        random_bytes(&mut rng, 3000),
        b"abcd".repeat(1000),
        floats,
    ]
}

/// Decodes every chunk of a whole xorb through `parse_xorb_with`.
fn decoded_chunks(bytes: &[u8]) -> crate::Result<(ParsedXorb, Vec<Vec<u8>>)> {
    let mut data = Vec::new();
    let parsed = parse_xorb_with(bytes, |_, d| data.push(d.to_vec()))?;
    Ok((parsed, data))
}

/// Checks `bytes` with a [`XorbValidator`] fed pieces of `piece` bytes,
/// checking records whenever `batch` bytes are pending, as a server does.
fn stream_validate(bytes: &[u8], piece: usize, batch: usize) -> crate::Result<ParsedXorb> {
    let mut v = XorbValidator::new();
    let mut pending = Vec::new();
    let mut passed_on = 0;
    for p in bytes.chunks(piece.max(1)) {
        pending.extend_from_slice(p);
        if pending.len() >= batch && !v.footer_started() {
            let n = v.check_records(&pending)?;
            assert_eq!(v.records_len(), passed_on + n);
            passed_on += n;
            pending.drain(..n);
        }
    }
    let parsed = v.finish(&pending)?;
    assert!(parsed.body_len >= passed_on);
    Ok(parsed)
}

/// A hand-made chunk record.
fn record(version: u8, scheme: u8, payload: &[u8], uncompressed_len: usize) -> Vec<u8> {
    let c = (payload.len() as u32).to_le_bytes();
    let u = (uncompressed_len as u32).to_le_bytes();
    let mut r = vec![version, c[0], c[1], c[2], scheme, u[0], u[1], u[2]];
    r.extend_from_slice(payload);
    r
}

fn code(bytes: &[u8]) -> &'static str {
    parse_xorb(bytes).unwrap_err().code()
}

#[test]
fn known_small_xorb() {
    let x = build(&[b"hello".to_vec(), b"world!".to_vec()]);
    let mut expect = vec![0, 5, 0, 0, 0, 5, 0, 0];
    expect.extend_from_slice(b"hello");
    expect.extend_from_slice(&[0, 6, 0, 0, 0, 6, 0, 0]);
    expect.extend_from_slice(b"world!");
    assert_eq!(x.bytes, expect);
    let leaves = [(chunk_hash(b"hello"), 5), (chunk_hash(b"world!"), 6)];
    assert_eq!(x.hash, xorb_hash(&leaves));
    assert_eq!(
        x.chunks[1],
        ChunkInfo {
            hash: chunk_hash(b"world!"),
            scheme: CompressionScheme::None,
            serialized_offset: 13,
            serialized_len: 14,
            uncompressed_offset: 5,
            uncompressed_len: 6,
        }
    );
    assert_eq!(x.raw_len(), 11);
    assert_eq!(x.byte_range(0..2), Some(0..27));
    assert_eq!(x.byte_range(1..2), Some(13..27));
    assert_eq!(x.byte_range(1..1), None);
    assert_eq!(x.byte_range(1..3), None);
    assert_eq!(chunk_range_len(&x.chunks, 0..2), Some(11));
    // A single chunk's xorb hash is its chunk hash.
    assert_eq!(build(&[b"hello".to_vec()]).hash, chunk_hash(b"hello"));
    let parsed = validate_xorb(&x.bytes, &x.hash).unwrap();
    assert_eq!(parsed.chunks, x.chunks);
    assert_eq!(parsed.body_len, 27);
    assert_eq!(parsed.footer, None);
}

#[test]
fn known_footer_layout() {
    let x = build(&[b"hello".to_vec()]);
    let f = x.footer();
    let b = f.to_bytes();
    assert_eq!(b.len(), 136);
    assert_eq!(f.encoded_len(), 136);
    assert_eq!(&b[0..8], b"XETBLOB\x01");
    assert_eq!(&b[8..40], x.hash.as_bytes());
    assert_eq!(&b[40..48], b"XBLBHSH\x00");
    assert_eq!(&b[48..52], &1u32.to_le_bytes());
    assert_eq!(&b[52..84], chunk_hash(b"hello").as_bytes());
    assert_eq!(&b[84..92], b"XBLBBND\x01");
    assert_eq!(&b[92..96], &1u32.to_le_bytes());
    assert_eq!(&b[96..100], &13u32.to_le_bytes()); // serialized end
    assert_eq!(&b[100..104], &5u32.to_le_bytes()); // uncompressed end
    assert_eq!(&b[104..108], &1u32.to_le_bytes());
    assert_eq!(&b[108..112], &92u32.to_le_bytes()); // hashes section to end
    assert_eq!(&b[112..116], &48u32.to_le_bytes()); // boundary section to end
    assert_eq!(&b[116..132], &[0u8; 16]);
    assert_eq!(&b[132..136], &132u32.to_le_bytes());
    assert_eq!(XorbFooter::parse(&b).unwrap(), f);

    let stored = x.to_bytes_with_footer();
    let (g, body) = XorbFooter::from_stored(&stored).unwrap();
    assert_eq!((g, body), (f.clone(), 13));
    let parsed = validate_xorb(&stored, &x.hash).unwrap();
    assert_eq!(parsed.footer, Some(f.clone()));
    assert_eq!(parsed.body_len, 13);
    assert_eq!(parsed.storage_footer(), f);

    // The nonce is kept and ignored.
    let mut nonced = f.clone();
    nonced.set_nonce([1, 2, 3, 4]);
    assert_eq!(nonced.nonce(), [1, 2, 3, 4]);
    let mut stored = x.bytes.clone();
    nonced.write_to(&mut stored);
    let parsed = validate_xorb(&stored, &x.hash).unwrap();
    assert_eq!(parsed.storage_footer().to_bytes(), nonced.to_bytes());
}

#[test]
fn every_scheme_appears_and_round_trips() {
    let chunks = mixed_chunks();
    let x = build(&chunks);
    let schemes: Vec<_> = x.chunks.iter().map(|c| c.scheme).collect();
    assert_eq!(
        schemes,
        [
            CompressionScheme::None,
            CompressionScheme::None,
            CompressionScheme::Lz4,
            CompressionScheme::ByteGrouping4Lz4
        ]
    );
    let (parsed, data) = decoded_chunks(&x.bytes).unwrap();
    assert_eq!(parsed.hash, x.hash);
    assert_eq!(parsed.chunks, x.chunks);
    assert_eq!(data, chunks);
    for policy in [
        CompressionPolicy::Only(CompressionScheme::None),
        CompressionPolicy::Only(CompressionScheme::Lz4),
        CompressionPolicy::Only(CompressionScheme::ByteGrouping4Lz4),
    ] {
        let mut b = XorbBuilder::with_policy(policy);
        for c in &chunks {
            let _ = b.add_chunk(c).unwrap();
        }
        let y = b.finish().unwrap();
        assert_eq!(y.hash, x.hash, "the hash does not depend on compression");
        let (_, data) = decoded_chunks(&y.bytes).unwrap();
        assert_eq!(data, chunks);
    }
}

#[test]
fn builder_hash_inputs_and_reuse() {
    let chunks = mixed_chunks();
    let mut b = XorbBuilder::new();
    assert!(b.is_empty());
    assert_eq!(b.finish().unwrap_err().code(), "malformed_xorb");
    for c in &chunks {
        let _ = b.add_chunk_with_hash(c, chunk_hash(c)).unwrap();
    }
    assert_eq!(b.num_chunks(), 4);
    assert_eq!(b.raw_len(), chunks.iter().map(Vec::len).sum::<usize>());
    let with_hashes = b.finish().unwrap();
    assert!(b.is_empty() && b.raw_len() == 0 && b.serialized_len() == 0);
    assert_eq!(with_hashes, build(&chunks));
    // The builder is reusable after finish.
    let _ = b.add_chunk(b"again").unwrap();
    assert_eq!(b.finish().unwrap().hash, chunk_hash(b"again"));
    // Invalid chunks are errors, not "full".
    assert_eq!(b.add_chunk(b"").unwrap_err().code(), "malformed_xorb");
    let too_big = vec![0u8; MAX_CHUNK_UNCOMPRESSED_LEN + 1];
    assert_eq!(b.add_chunk(&too_big).unwrap_err().code(), "malformed_xorb");
    assert_eq!(
        b.add_chunk(&too_big[1..]).unwrap(),
        AddChunk::Added(0),
        "an empty builder takes a 128 KiB chunk"
    );
}

#[test]
fn builder_cuts_at_the_chunk_limit() {
    let mut b = XorbBuilder::new();
    for i in 0..MAX_XORB_CHUNKS {
        assert_eq!(
            b.add_chunk(&(i as u32).to_le_bytes()).unwrap(),
            AddChunk::Added(i)
        );
    }
    assert!(!b.has_room_for(1));
    assert_eq!(b.add_chunk(b"one more").unwrap(), AddChunk::Full);
    let x = b.finish().unwrap();
    assert_eq!(x.num_chunks(), MAX_XORB_CHUNKS);
    assert_eq!(parse_xorb(&x.bytes).unwrap().hash, x.hash);
    // One more record makes it too large.
    let mut bytes = x.bytes.clone();
    bytes.extend_from_slice(&record(0, 0, b"x", 1));
    assert_eq!(code(&bytes), "xorb_too_large");
}

#[test]
fn builder_cuts_at_the_byte_limit() {
    let chunk = vec![7u8; MAX_CHUNK_UNCOMPRESSED_LEN];
    let per_xorb = MAX_XORB_BYTES / chunk.len();
    let mut b = XorbBuilder::new();
    for i in 0..per_xorb {
        assert_eq!(b.add_chunk(&chunk).unwrap(), AddChunk::Added(i));
    }
    assert_eq!(b.raw_len(), MAX_XORB_BYTES);
    assert_eq!(b.add_chunk(b"x").unwrap(), AddChunk::Full);
    let x = b.finish().unwrap();
    let parsed = parse_xorb(&x.bytes).unwrap();
    assert_eq!(parsed.raw_len(), MAX_XORB_BYTES);
    // One more byte of raw data makes it too large.
    let mut bytes = x.bytes.clone();
    bytes.extend_from_slice(&record(0, 0, b"x", 1));
    assert_eq!(code(&bytes), "xorb_too_large");
}

#[test]
fn malformed_xorbs_give_typed_errors() {
    let x = build(&mixed_chunks());
    let good = &x.bytes;
    let lz4_chunk = x.chunks[2];
    assert_eq!(lz4_chunk.scheme, CompressionScheme::Lz4);

    // Empty input and a footer alone.
    assert_eq!(code(&[]), "malformed_xorb");
    assert_eq!(
        code(&build(&[b"a".to_vec()]).footer().to_bytes()),
        "malformed_xorb"
    );
    // Truncated header, truncated payload, trailing bytes.
    for cut in [1, 3, 7, 8, 9] {
        assert_eq!(
            code(&good[..good.len() - cut]),
            "malformed_xorb",
            "cut {cut}"
        );
    }
    let mut t = good.clone();
    t.extend_from_slice(b"abc");
    assert_eq!(code(&t), "malformed_xorb");
    t.extend_from_slice(b"defgh");
    assert_eq!(code(&t), "malformed_xorb");
    // Header fields.
    let mut bad = good.clone();
    bad[0] = 1;
    assert_eq!(code(&bad), "malformed_xorb");
    let mut bad = good.clone();
    bad[4] = 7;
    assert_eq!(
        parse_xorb(&bad).unwrap_err(),
        Error::UnknownCompression {
            index: 0,
            scheme: 7
        }
    );
    assert_eq!(code(&record(0, 0, b"", 0)), "malformed_xorb");
    assert_eq!(
        code(&record(0, 1, b"x", MAX_CHUNK_UNCOMPRESSED_LEN + 1)),
        "malformed_xorb"
    );
    assert_eq!(code(&record(0, 0, &[0u8; 262_145], 5)), "malformed_xorb");
    // A huge declared length is refused by the header check, before decoding.
    assert_eq!(
        code(&[0, 1, 0, 0, 1, 0xff, 0xff, 0xff, 0]),
        "malformed_xorb"
    );
    // LZ4 garbage, and a payload decoding to another length than declared.
    assert_eq!(
        code(&record(0, 1, b"garbage!", 100)),
        "decompression_failed"
    );
    assert_eq!(
        code(&record(0, 2, b"garbage!", 100)),
        "decompression_failed"
    );
    let payload = &good[lz4_chunk.serialized_range()][8..];
    let n = lz4_chunk.uncompressed_len;
    assert_eq!(code(&record(0, 1, payload, n + 1)), "decompression_failed");
    assert_eq!(code(&record(0, 1, payload, n - 1)), "decompression_failed");
    assert!(parse_xorb(&record(0, 1, payload, n)).is_ok());
    // A stored chunk whose lengths differ.
    assert_eq!(code(&record(0, 0, b"abcd", 3)), "decompression_failed");
    let e = parse_xorb(&[good.as_slice(), &record(0, 0, b"abcd", 5)].concat()).unwrap_err();
    assert!(matches!(e, Error::Decompression { index: 4, .. }), "{e:?}");
    // Oversized input is refused up front.
    let huge = vec![0u8; MAX_SERIALIZED_XORB_BYTES + 1];
    assert_eq!(code(&huge), "xorb_too_large");
    // The wrong name.
    let e = validate_xorb(good, &chunk_hash(b"other")).unwrap_err();
    assert_eq!(e.code(), "xorb_hash_mismatch");
    assert_eq!(
        e,
        Error::XorbHashMismatch {
            expected: chunk_hash(b"other"),
            actual: x.hash
        }
    );
}

#[test]
fn malformed_footers_are_rejected() {
    let x = build(&mixed_chunks());
    let footer = x.footer();
    let stored = x.to_bytes_with_footer();
    let body = x.bytes.len();
    assert!(parse_xorb(&stored).is_ok());
    // Any change to the footer outside the reserved bytes is rejected.
    let reserved = stored.len() - 20..stored.len() - 4;
    for i in body..stored.len() {
        if reserved.contains(&i) {
            continue;
        }
        let mut bad = stored.clone();
        bad[i] ^= 0x40;
        assert_eq!(
            code(&bad),
            "malformed_xorb",
            "byte {} of the footer",
            i - body
        );
    }
    // A footer for other chunks, or naming another hash.
    let other = build(&[b"hello".to_vec()]);
    assert_eq!(
        code(&[x.bytes.as_slice(), &other.footer().to_bytes()].concat()),
        "malformed_xorb"
    );
    let mut fewer = x.clone();
    fewer.chunks.pop();
    assert_eq!(
        code(&[x.bytes.as_slice(), &fewer.footer().to_bytes()].concat()),
        "malformed_xorb"
    );
    let wrong_hash = XorbFooter::from_chunks(chunk_hash(b"?"), &x.chunks);
    assert_eq!(
        code(&[x.bytes.as_slice(), &wrong_hash.to_bytes()].concat()),
        "malformed_xorb"
    );
    // Truncated footers and extra bytes after one.
    for cut in [1, 4, 50, footer.encoded_len() - 1] {
        assert_eq!(code(&stored[..stored.len() - cut]), "malformed_xorb");
    }
    assert_eq!(code(&[stored.as_slice(), b"\0"].concat()), "malformed_xorb");
    // A footer in a range body.
    assert_eq!(
        decode_range_body(&stored, &mut Vec::new())
            .unwrap_err()
            .code(),
        "malformed_xorb"
    );
    // A footer whose counts claim more chunks than the limit does not allocate.
    let mut bad = footer.to_bytes();
    bad[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        XorbFooter::parse(&bad).unwrap_err().code(),
        "malformed_xorb"
    );
    // from_stored checks the body length and the trailer.
    assert!(XorbFooter::from_stored(&stored[1..]).is_err());
    assert!(XorbFooter::from_stored(&[1, 2, 3]).is_err());
    assert!(XorbFooter::from_stored(&[0xff; 8]).is_err());
    // Version 0 footers are not supported.
    let mut v0 = stored.clone();
    v0[body + 7] = 0;
    assert_eq!(code(&v0), "malformed_xorb");
}

#[test]
fn range_bodies_decode_with_boundaries() {
    let chunks = mixed_chunks();
    let x = build(&chunks);
    for s in 0..chunks.len() {
        for e in s + 1..=chunks.len() {
            let range = x.byte_range(s..e).unwrap();
            let mut out = b"head".to_vec();
            let bounds = decode_range_body(&x.bytes[range.clone()], &mut out).unwrap();
            let expect: Vec<u8> = chunks[s..e].concat();
            assert_eq!(&out[4..], &expect[..]);
            assert_eq!(bounds.len(), e - s + 1);
            for (k, c) in chunks[s..e].iter().enumerate() {
                assert_eq!(&out[4 + bounds[k]..4 + bounds[k + 1]], &c[..]);
            }
            // The same through the callback form.
            let mut seen = Vec::new();
            let n = decode_chunk_records(&x.bytes[range], |c| {
                seen.extend_from_slice(c.data);
                Ok::<(), Error>(())
            })
            .unwrap();
            assert_eq!((n, seen), (e - s, expect));
        }
    }
    // Errors leave the output untouched; empty bodies are errors.
    let mut out = b"head".to_vec();
    let cut = &x.bytes[..x.bytes.len() - 1];
    assert_eq!(
        decode_range_body(cut, &mut out).unwrap_err().code(),
        "malformed_xorb"
    );
    assert_eq!(out, b"head");
    assert_eq!(
        decode_range_body(&[], &mut out).unwrap_err().code(),
        "malformed_xorb"
    );
    // The callback can stop decoding with its own error.
    let r = decode_chunk_records(&x.bytes, |c| {
        if c.index == 1 {
            Err(Error::MalformedXorb("stop".into()))
        } else {
            Ok(())
        }
    });
    assert_eq!(r, Err(Error::MalformedXorb("stop".into())));
}

#[test]
fn complete_records_prefix_of_a_streaming_body() {
    let chunks = mixed_chunks();
    let x = build(&chunks);
    let ends: Vec<usize> = x
        .chunks
        .iter()
        .map(|c| c.serialized_offset + c.serialized_len)
        .collect();
    // Every cut point: the prefix ends at the last record boundary at or before it.
    for cut in 0..=x.bytes.len() {
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let want = if whole == 0 { 0 } else { ends[whole - 1] };
        assert_eq!(
            complete_records_len(&x.bytes[..cut], 0, usize::MAX),
            Ok((want, whole)),
            "cut {cut}"
        );
    }
    // Decoding the prefixes one after the other gives the whole body.
    let mut out = Vec::new();
    let (mut pos, mut index) = (0, 0);
    for cut in (0..=x.bytes.len()).step_by(7_001).chain([x.bytes.len()]) {
        let (n, records) = complete_records_len(&x.bytes[pos..cut], index, 200_000).unwrap();
        if n > 0 {
            let bounds = decode_range_body(&x.bytes[pos..pos + n], &mut out).unwrap();
            assert_eq!(bounds.len() - 1, records);
            index += records;
            pos += n;
        }
    }
    assert_eq!((pos, index), (x.bytes.len(), chunks.len()));
    assert_eq!(out, chunks.concat());
    // The raw budget: as many records as fit in it, and always the first.
    let raw2 = x.chunks[0].uncompressed_len + x.chunks[1].uncompressed_len;
    assert_eq!(complete_records_len(&x.bytes, 0, raw2), Ok((ends[1], 2)));
    assert_eq!(
        complete_records_len(&x.bytes, 0, raw2 - 1),
        Ok((ends[0], 1))
    );
    assert_eq!(complete_records_len(&x.bytes, 0, 0), Ok((ends[0], 1)));
    // A bad header is an error, named by its index in the whole body.
    let mut bad = x.bytes.clone();
    bad[x.chunks[2].serialized_offset] = 9;
    let err =
        complete_records_len(&bad[x.chunks[1].serialized_offset..], 1, usize::MAX).unwrap_err();
    assert_eq!(err.code(), "malformed_xorb");
    assert!(err.to_string().contains("chunk 2"), "{err}");
}

#[test]
fn streaming_validation_matches_whole_parse() {
    let x = build(&mixed_chunks());
    let stored = x.to_bytes_with_footer();
    for bytes in [&x.bytes, &stored] {
        let whole = parse_xorb(bytes).unwrap();
        for (piece, batch) in [
            (1, 1),
            (3, 10),
            (7, 8),
            (1000, 2000),
            (4096, 1),
            (1 << 20, 0),
        ] {
            assert_eq!(
                stream_validate(bytes, piece, batch).as_ref(),
                Ok(&whole),
                "piece {piece} batch {batch}"
            );
        }
    }
    // A record is passed on only once whole, and its header is checked as
    // soon as it is there.
    let mut v = XorbValidator::new();
    let first_end = x.chunks[0].serialized_range().end;
    assert_eq!(v.check_records(&x.bytes[..first_end - 1]), Ok(0));
    assert_eq!(v.check_records(&x.bytes[..first_end + 7]), Ok(first_end));
    let mut bad = x.bytes[first_end..].to_vec();
    bad[0] = 9;
    assert_eq!(
        v.check_records(&bad[..8]).map_err(|e| e.code()),
        Err("malformed_xorb")
    );
    // A footer: what follows it is not walked, finish parses it.
    let mut v = XorbValidator::new();
    assert_eq!(v.check_records(&stored), Ok(x.bytes.len()));
    assert!(v.footer_started());
    assert_eq!(v.check_records(b"more"), Ok(0));
    let parsed = v.finish(&stored[x.bytes.len()..]).unwrap();
    assert_eq!(parsed.footer, Some(x.footer()));
    // Errors are those of the whole parse, by the same index.
    let mut bad = x.bytes.clone();
    bad[x.chunks[3].serialized_offset + 4] = 7;
    let e = stream_validate(&bad, 100, 200).unwrap_err();
    assert_eq!(e, parse_xorb(&bad).unwrap_err());
    assert_eq!(
        e,
        Error::UnknownCompression {
            index: 3,
            scheme: 7
        }
    );
    assert_eq!(
        stream_validate(&[], 1, 1).map_err(|e| e.code()),
        Err("malformed_xorb")
    );
    // Too many bytes are refused before any is looked at, once they are there
    // (before, a bad record in them may be found first).
    let huge = vec![0u8; MAX_SERIALIZED_XORB_BYTES + 1];
    assert_eq!(
        stream_validate(&huge, huge.len(), 1).map_err(|e| e.code()),
        Err("xorb_too_large")
    );
    let mut v = XorbValidator::new();
    let n = v.check_records(&stored).unwrap();
    assert_eq!(
        v.finish(&huge[..MAX_SERIALIZED_XORB_BYTES - n + 1])
            .map_err(|e| e.code()),
        Err("xorb_too_large")
    );
}

#[test]
fn records_walk_without_decoding() {
    let x = build(&mixed_chunks());
    let stored = x.to_bytes_with_footer();
    let mut records = ChunkRecords::with_footer(&stored);
    let walked: Vec<RawChunk<'_>> = records.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(records.footer_start(), Some(x.bytes.len()));
    assert_eq!(records.raw_len(), x.raw_len());
    for (r, c) in walked.iter().zip(&x.chunks) {
        assert_eq!(r.offset, c.serialized_offset);
        assert_eq!(r.header.record_len(), c.serialized_len);
        assert_eq!(r.uncompressed_offset, c.uncompressed_offset);
        assert_eq!(r.header.scheme(), c.scheme);
    }
    // After an error the iterator ends.
    let mut bad = ChunkRecords::new(&stored);
    assert_eq!(bad.by_ref().filter(|r| r.is_err()).count(), 1);
    assert!(bad.next().is_none());
}

/// The property the server relies on: a corrupted xorb is rejected with a
/// typed error or, if it still parses, it decodes to exactly the same content
/// (a flip in a field that does not change the data, e.g. an LZ4 frame's block
/// size field whose 8-bit header checksum happens to still match, or a match
/// offset in repetitive data). It never panics.
fn check_flip(bytes: &[u8], original: &[Vec<u8>], hash: &MerkleHash, pos: usize, bit: u8) {
    let mut flipped = bytes.to_vec();
    flipped[pos] ^= 1 << bit;
    match validate_xorb(&flipped, hash) {
        Ok(_) => {
            let (_, data) = decoded_chunks(&flipped).unwrap();
            assert_eq!(
                data, original,
                "a flip at {pos} changed the content undetected"
            );
        }
        Err(e) => assert!(
            [
                "malformed_xorb",
                "xorb_too_large",
                "xorb_hash_mismatch",
                "unknown_compression",
                "decompression_failed"
            ]
            .contains(&e.code()),
            "{e:?}"
        ),
    }
}

#[test]
fn every_single_bit_flip_is_caught() {
    let chunks = mixed_chunks();
    let x = build(&chunks);
    let total = x.bytes.len() * 8;
    let mut benign = 0;
    for pos in 0..x.bytes.len() {
        for bit in 0..8 {
            check_flip(&x.bytes, &chunks, &x.hash, pos, bit);
            let mut f = x.bytes.clone();
            f[pos] ^= 1 << bit;
            if validate_xorb(&f, &x.hash).is_ok() {
                // Only inside LZ4 block data (e.g. a match offset into
                // repetitive data), never in a header, a frame header or a
                // stored chunk.
                benign += 1;
                let c = x
                    .chunks
                    .iter()
                    .find(|c| c.serialized_range().contains(&pos))
                    .unwrap();
                assert_ne!(c.scheme, CompressionScheme::None, "flip at {pos}");
                assert!(pos - c.serialized_offset >= 8 + 7 + 4, "flip at {pos}");
            }
        }
    }
    assert!(benign * 1000 < total, "{benign} benign flips of {total}");
}

fn arb_chunks() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (any::<u64>(), 1usize..12).prop_map(|(seed, n)| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let len = if rng.random_bool(0.1) {
                    rng.random_range(1..=MAX_CHUNK_UNCOMPRESSED_LEN)
                } else {
                    rng.random_range(1..2000)
                };
                sample_chunk(&mut rng, len)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn build_then_parse_round_trips(chunks in arb_chunks(), footer in any::<bool>()) {
        let x = build(&chunks);
        let leaves: Vec<_> = chunks.iter().map(|c| (chunk_hash(c), c.len() as u64)).collect();
        prop_assert_eq!(x.hash, xorb_hash(&leaves));
        let bytes = if footer { x.to_bytes_with_footer() } else { x.bytes.clone() };
        let (parsed, data) = decoded_chunks(&bytes).unwrap();
        prop_assert_eq!(parsed.hash, x.hash);
        prop_assert_eq!(&parsed.chunks, &x.chunks);
        prop_assert_eq!(parsed.body_len, x.bytes.len());
        prop_assert_eq!(parsed.footer.is_some(), footer);
        prop_assert_eq!(&data, &chunks);
        // Footer round trip.
        let f = x.footer();
        prop_assert_eq!(XorbFooter::parse(&f.to_bytes()).unwrap(), f.clone());
        prop_assert_eq!(parsed.storage_footer(), f);
        // Whole-body range decode.
        let mut out = Vec::new();
        decode_range_body(&x.bytes, &mut out).unwrap();
        prop_assert_eq!(out, chunks.concat());
    }

    #[test]
    fn single_byte_corruption_never_slips_through(
        chunks in arb_chunks(),
        footer in any::<bool>(),
        at in any::<usize>(),
        value in 1u8..=255,
        piece in 1usize..4096,
        batch in 0usize..16_384,
    ) {
        let x = build(&chunks);
        let bytes = if footer { x.to_bytes_with_footer() } else { x.bytes.clone() };
        let pos = at % bytes.len();
        let mut flipped = bytes.clone();
        flipped[pos] ^= value;
        // Checked as it streams in, in any pieces and batches, each of the
        // intact, flipped and truncated bytes gives what the whole parse
        // gives: the same xorb, or the same kind of error.
        for b in [&bytes[..], &flipped[..], &bytes[..pos]] {
            prop_assert_eq!(
                stream_validate(b, piece, batch).map_err(|e| e.code()),
                parse_xorb(b).map_err(|e| e.code())
            );
        }
        match validate_xorb(&flipped, &x.hash) {
            Ok(_) => {
                let (_, data) = decoded_chunks(&flipped).unwrap();
                prop_assert_eq!(data, chunks);
            }
            Err(e) => prop_assert!(e.code() != "invalid_hash"),
        }
        // A truncated xorb is rejected; cut at a record boundary it still
        // parses but names another hash. The one valid cut is the body of a
        // stored xorb without its footer.
        let truncated = validate_xorb(&bytes[..pos], &x.hash);
        if footer && pos == x.bytes.len() {
            prop_assert!(truncated.is_ok());
        } else {
            prop_assert!(truncated.is_err());
            let at_boundary = x.chunks.iter().any(|c| c.serialized_range().end == pos);
            prop_assert_eq!(parse_xorb(&bytes[..pos]).is_ok(), at_boundary);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_xorb(&bytes);
        let _ = decode_range_body(&bytes, &mut Vec::new());
        let _ = XorbFooter::parse(&bytes);
        let _ = XorbFooter::from_stored(&bytes);
    }

    #[test]
    fn plausible_records_never_panic(
        parts in proptest::collection::vec(
            (0u8..2, 0u8..4, proptest::collection::vec(any::<u8>(), 0..64), 0usize..100),
            1..6,
        )
    ) {
        // Headers that pass most checks, with random payloads.
        let bytes: Vec<u8> = parts
            .iter()
            .flat_map(|(v, s, p, u)| record(*v, *s, p, *u))
            .collect();
        let _ = parse_xorb(&bytes);
        let _ = decode_range_body(&bytes, &mut Vec::new());
        // And with real LZ4 payloads declared with random lengths.
        let lz4: Vec<u8> = parts
            .iter()
            .flat_map(|(_, s, p, u)| record(0, s % 3, &compress(p, CompressionScheme::Lz4), *u))
            .collect();
        let _ = parse_xorb(&lz4);
    }
}

/// Prints build, parse and range-decode throughput on full 64 MiB xorbs.
/// Run with `cargo test -p cas-core --release -- --ignored --nocapture xorb_throughput`.
#[test]
#[ignore]
fn xorb_throughput() {
    let mut rng = StdRng::seed_from_u64(1);
    type Make = fn(&mut StdRng, usize) -> Vec<u8>;
    let kinds: [(&str, Make); 3] = [
        ("random", |r, n| random_bytes(r, n)),
        ("text", |_, n| {
            (0..n)
                .map(|i| b"some text of a file, some text\n"[i % 31] ^ (i / 997) as u8)
                .collect()
        }),
        ("f32", |r, n| {
            (0..n / 4)
                .flat_map(|_| (r.random::<f32>() * 0.02 - 0.01).to_le_bytes())
                .collect()
        }),
    ];
    for (name, make) in kinds {
        let data = make(&mut rng, MAX_XORB_BYTES);
        let chunks: Vec<&[u8]> = data.chunks(65_536).collect();
        let hashes: Vec<MerkleHash> = chunks.iter().map(|c| chunk_hash(c)).collect();
        let t = std::time::Instant::now();
        let mut b = XorbBuilder::new();
        for (c, h) in chunks.iter().zip(&hashes) {
            let _ = b.add_chunk_with_hash(c, *h).unwrap();
        }
        let x = b.finish().unwrap();
        let build = t.elapsed();
        let t = std::time::Instant::now();
        let parsed = validate_xorb(&x.bytes, &x.hash).unwrap();
        let parse = t.elapsed();
        assert_eq!(parsed.num_chunks(), chunks.len());
        let t = std::time::Instant::now();
        let mut out = Vec::with_capacity(MAX_XORB_BYTES);
        decode_range_body(&x.bytes, &mut out).unwrap();
        let decode = t.elapsed();
        assert_eq!(out, data);
        let mbs = |d: std::time::Duration| MAX_XORB_BYTES as f64 / d.as_secs_f64() / 1e6;
        println!(
            "{name:7} ratio {:.3} build {:>6.0} MB/s  validate {:>6.0} MB/s  range decode {:>6.0} MB/s",
            x.bytes.len() as f64 / MAX_XORB_BYTES as f64,
            mbs(build),
            mbs(parse),
            mbs(decode)
        );
    }
}
