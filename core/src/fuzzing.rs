//! Invariant checks shared by the cargo-fuzz targets (`core/fuzz`) and the
//! seed-corpus replay test, so both exercise exactly the same properties.
//!
//! Each check takes arbitrary bytes, must never panic on malformed input, and
//! panics only when an invariant of an accepted input is broken.

use crate::compression::CompressionPolicy;
use crate::shard::parse_shard;
use crate::xorb::{AddChunk, XorbBuilder, decode_range_body, parse_xorb_with, validate_xorb};

/// Shard parser: never panics; whatever it accepts writes back to bytes that
/// parse to the same value (identical bytes for the footer-less form).
pub fn check_shard_bytes(data: &[u8]) {
    let Ok(parsed) = parse_shard(data) else {
        return;
    };
    let bytes = match &parsed.footer {
        None => parsed.shard.to_bytes(),
        Some(footer) => parsed.shard.to_bytes_with_footer(&footer.options()),
    }
    .expect("a parsed shard can be written");
    let again = parse_shard(&bytes).expect("a written shard parses");
    assert_eq!(again.shard, parsed.shard);
    if parsed.footer.is_none() {
        // Without a footer the format has no freedom: the bytes are identical.
        assert_eq!(bytes, data);
    }
}

/// Xorb parser: never panics; an accepted xorb's chunks, packed again, give a
/// xorb with the same hash and data, and its chunk records decode as a range
/// body to the same bytes.
pub fn check_xorb_bytes(data: &[u8]) {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let Ok(parsed) = parse_xorb_with(data, |_, bytes| chunks.push(bytes.to_vec())) else {
        return;
    };
    assert_eq!(chunks.len(), parsed.num_chunks());
    assert!(validate_xorb(data, &parsed.hash).is_ok());

    let mut builder = XorbBuilder::with_policy(CompressionPolicy::Auto);
    for c in &chunks {
        assert!(
            matches!(builder.add_chunk(c), Ok(AddChunk::Added(_))),
            "an accepted chunk fits again"
        );
    }
    let rebuilt = builder.finish().expect("a non-empty xorb");
    assert_eq!(rebuilt.hash, parsed.hash);
    let reparsed = validate_xorb(&rebuilt.to_bytes_with_footer(), &parsed.hash)
        .expect("rebuilt xorb is valid");
    assert_eq!(reparsed.chunks.len(), chunks.len());

    let mut decoded = Vec::new();
    decode_range_body(&data[..parsed.body_len], &mut decoded)
        .expect("the records decode as a range body");
    assert_eq!(decoded, chunks.concat());
}
