//! The content-addressed key layout: the one place object keys are spelled.
//!
//! Keys here are relative: [`S3Store`](super::S3Store) prepends the configured
//! `key_prefix` to every key it sends, so the full S3 key of a xorb is
//! `<key_prefix>xorbs/default/<xorb hash>` and of a shard
//! `<key_prefix>shards/<shard hash>`. Hashes are in the Xet string form
//! (XET.md §1, [`MerkleHash`]'s `Display`), the same text as in API paths, so an
//! operator can go from a URL to the object without conversion. `default` is
//! the Xet xorb namespace (`/v1/xorbs/default/{hash}`).

use cas_core::hash::MerkleHash;

use super::StoreError;

/// Directory (relative to the key prefix) of xorb objects.
pub const XORB_DIR: &str = "xorbs/default/";
/// Directory (relative to the key prefix) of shard objects.
pub const SHARD_DIR: &str = "shards/";

/// S3's limit on the length of a full object key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The key (relative to the prefix) of the xorb named `hash`.
pub fn xorb_key(hash: &MerkleHash) -> String {
    format!("{XORB_DIR}{hash}")
}

/// The key (relative to the prefix) of the shard named `hash`.
pub fn shard_key(hash: &MerkleHash) -> String {
    format!("{SHARD_DIR}{hash}")
}

/// Checks a relative key: non-empty, no leading or trailing `/`, no empty, `.`
/// or `..` segments, no control characters, and within S3's length limit once
/// `prefix` is prepended.
///
/// Trailing `/` and prefix-of-another-key paths matter beyond S3 itself:
/// file-backed servers (s3s-fs) map keys to paths, where `a` and `a/b` cannot
/// both exist. The layout above never produces such pairs.
pub fn validate_key(prefix: &str, key: &str) -> Result<(), StoreError> {
    let refuse = |reason| {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return refuse("empty");
    }
    if prefix.len() + key.len() > MAX_KEY_BYTES {
        return refuse("longer than 1024 bytes with the prefix");
    }
    if key.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return refuse("starts or ends with '/'");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return refuse("has an empty, '.' or '..' segment");
    }
    Ok(())
}

/// Longest key prefix, in bytes (the keys under it need the rest of S3's 1024).
pub const MAX_PREFIX_BYTES: usize = 512;

/// Checks a key prefix, the one rule for it (the configuration check uses it too):
/// empty, or `a/b/` style: printable ASCII without spaces, no leading `/`, ending
/// with `/`, no empty, `.` or `..` segment, at most [`MAX_PREFIX_BYTES`].
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(format!(
            "must be at most {MAX_PREFIX_BYTES} bytes (got {})",
            prefix.len()
        ));
    }
    if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{prefix:?} must be printable ASCII without spaces"));
    }
    let shape = || {
        format!(
            "{prefix:?} must not start with `/`, must end with `/` and must not contain \
             `//`, `.` or `..` segments (e.g. \"cas/\")"
        )
    };
    let Some(body) = prefix.strip_suffix('/') else {
        return Err(shape());
    };
    validate_key("", body).map_err(|_| shape())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_uses_the_xet_string_form() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        let hash = MerkleHash(bytes);
        // XET.md §1's example, whose third group lacks its final "10".
        let hex = "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918";
        assert_eq!(xorb_key(&hash), format!("xorbs/default/{hex}"));
        assert_eq!(shard_key(&hash), format!("shards/{hex}"));
        assert!(validate_key("cas/", &xorb_key(&hash)).is_ok());
    }

    #[test]
    fn refuses_bad_keys_and_prefixes() {
        for key in ["", "/a", "a/", "a//b", "a/./b", "../a", "a\nb"] {
            let err = validate_key("", key).expect_err(key);
            assert_eq!(err.code(), "store_invalid_key", "{key:?}");
        }
        assert!(validate_key("", &"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(validate_key("p/", &"k".repeat(MAX_KEY_BYTES - 1)).is_err());
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("cas/").is_ok());
        assert!(validate_prefix("a/b/").is_ok());
        for bad in ["cas", "/cas/", "a//", "../"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
