//! Fuzz the shard parser: it must never panic, and whatever it accepts must
//! write back to bytes that parse to the same value.

#![no_main]

use cas_core::shard::parse_shard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
