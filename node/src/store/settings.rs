//! Plain settings of an [`S3Store`](super::S3Store); the node configuration maps into them.

use std::fmt;
use std::time::Duration;

use super::StoreError;
use super::keys::validate_prefix;

/// S3 only accepts multipart parts of at least 5 MiB (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3 accepts at most 10 000 parts per multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// SigV4 presigned URLs live at most 7 days.
pub const MAX_PRESIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest accepted `request_timeout`.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// How to reach the S3 bucket and how hard to try.
#[derive(Clone)]
pub struct S3Settings {
    /// Endpoint URL of an S3-compatible server (then path-style addressing is
    /// used); `None` means AWS S3 in `region`.
    pub endpoint: Option<String>,
    /// Region of the bucket (the SigV4 signing region).
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Access key id (static credentials).
    pub access_key_id: String,
    /// Secret access key; never printed by `Debug`.
    pub secret_access_key: String,
    /// Prefix of every object key: empty, or ending in `/` and not starting with `/`.
    pub key_prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`) even without a custom endpoint.
    pub force_path_style: bool,
    /// Timeout of one attempt of one S3 call (also bounds reading a GET body); at most 1 h.
    pub request_timeout: Duration,
    /// Retries after a failed first attempt, with exponential backoff and jitter.
    pub max_retries: u32,
    /// Lifetime of presigned GET URLs (1 s to 7 days).
    pub presign_ttl: Duration,
    /// Bodies larger than this are uploaded with a multipart upload.
    pub multipart_threshold: u64,
    /// Size of each multipart part (at least 5 MiB; grown if a body would need
    /// more than 10 000 parts).
    pub multipart_part_size: u64,
    /// Parts of one upload sent at the same time.
    pub multipart_concurrency: usize,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".to_owned(),
            bucket: "cas".to_owned(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            key_prefix: String::new(),
            force_path_style: false,
            request_timeout: Duration::from_secs(60),
            max_retries: 3,
            presign_ttl: Duration::from_secs(3_600),
            multipart_threshold: 16 * 1024 * 1024,
            multipart_part_size: 8 * 1024 * 1024,
            multipart_concurrency: 4,
        }
    }
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("force_path_style", &self.force_path_style)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("presign_ttl", &self.presign_ttl)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("multipart_part_size", &self.multipart_part_size)
            .field("multipart_concurrency", &self.multipart_concurrency)
            .finish()
    }
}

impl S3Settings {
    /// Whether requests use path-style addressing.
    pub fn path_style(&self) -> bool {
        self.force_path_style || self.endpoint.is_some()
    }

    /// Checks every field; the error names each refused one.
    pub fn validate(&self) -> Result<(), StoreError> {
        let mut errors = Vec::new();
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            errors.push(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            ));
        }
        if self.region.is_empty() {
            errors.push("region must not be empty".to_owned());
        }
        if self.bucket.is_empty() {
            errors.push("bucket must not be empty".to_owned());
        }
        if self.access_key_id.is_empty() || self.secret_access_key.is_empty() {
            errors.push("access_key_id and secret_access_key must both be set".to_owned());
        }
        if let Err(e) = validate_prefix(&self.key_prefix) {
            errors.push(format!("key_prefix {e}"));
        }
        if self.request_timeout.is_zero() || self.request_timeout > MAX_REQUEST_TIMEOUT {
            errors.push(format!(
                "request_timeout {:?} must be positive and at most 1h",
                self.request_timeout
            ));
        }
        if self.max_retries > 10 {
            errors.push(format!("max_retries {} is above 10", self.max_retries));
        }
        if self.presign_ttl < Duration::from_secs(1) || self.presign_ttl > MAX_PRESIGN_TTL {
            errors.push(format!(
                "presign_ttl {:?} must be between 1s and 7 days",
                self.presign_ttl
            ));
        }
        if self.multipart_part_size < MIN_PART_SIZE {
            errors.push(format!(
                "multipart_part_size {} is below S3's minimum of 5 MiB",
                self.multipart_part_size
            ));
        }
        if self.multipart_threshold < self.multipart_part_size {
            errors.push(format!(
                "multipart_threshold {} is below multipart_part_size {}",
                self.multipart_threshold, self.multipart_part_size
            ));
        }
        if self.multipart_concurrency == 0 {
            errors.push("multipart_concurrency must be at least 1".to_owned());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Config(errors.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> S3Settings {
        S3Settings {
            access_key_id: "AK".to_owned(),
            secret_access_key: "very-secret".to_owned(),
            ..S3Settings::default()
        }
    }

    #[test]
    fn defaults_with_credentials_are_valid() {
        valid().validate().expect("valid");
        assert!(!valid().path_style());
        let custom = S3Settings {
            endpoint: Some("http://127.0.0.1:9000".to_owned()),
            ..valid()
        };
        assert!(custom.path_style());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let text = format!("{:?}", valid());
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn every_refused_field_is_named() {
        let bad = S3Settings {
            endpoint: Some("localhost:9000".to_owned()),
            region: String::new(),
            bucket: String::new(),
            secret_access_key: String::new(),
            key_prefix: "cas".to_owned(),
            request_timeout: Duration::ZERO,
            max_retries: 11,
            presign_ttl: Duration::from_secs(8 * 24 * 3600),
            multipart_part_size: 1024,
            multipart_concurrency: 0,
            ..valid()
        };
        let err = bad.validate().expect_err("invalid");
        assert_eq!(err.code(), "store_config");
        let text = err.to_string();
        for field in [
            "endpoint",
            "region",
            "bucket",
            "secret_access_key",
            "key_prefix",
            "request_timeout",
            "max_retries",
            "presign_ttl",
            "multipart_part_size",
            "multipart_concurrency",
        ] {
            assert!(text.contains(field), "{field} not named in {text}");
        }
    }
}
