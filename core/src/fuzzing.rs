//! Invariant checks shared by the cargo-fuzz targets (`core/fuzz`) and the
//! seed-corpus replay test, so both exercise exactly the same properties.
//!
//! Each check takes arbitrary bytes, must never panic on malformed input, and
//! panics only when an invariant of an accepted input is broken.

use crate::shard::parse_shard;

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
