//! [`S3Store`]: content-addressed objects in one S3 bucket, through aws-sdk-s3.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use tracing::Instrument as _;

use super::body::ObjectBody;
use super::error::{body_error, classify};
use super::keys::validate_key;
use super::writer::ObjectWriter;
use super::{ErrorClass, S3Settings, StoreError};
use crate::telemetry::metrics::record_s3_call;

/// First retry delay; doubles per retry up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait for a TCP (and TLS) connection, if the request timeout is longer.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Content-addressed objects (xorbs, shards) in one S3 bucket.
///
/// Every key is relative to the configured `key_prefix` (see [`super::keys`]).
/// Every S3 call goes through one observation point that times it, records
/// `cas_s3_requests_total` / `cas_s3_request_duration_seconds` with the
/// outcome (`ok` or the [`StoreError::code`]) and emits a `s3_call` tracing
/// span carrying the latency.
///
/// Client settings, and why:
/// - checksums only `WhenRequired`, for requests and responses: Garage over
///   plain HTTP refuses the SDK's default streaming checksums, and AWS accepts
///   this setting too. Integrity in transit rests on TLS in production, and
///   xorbs are re-verified by hash when read back;
/// - PUT and part payloads unsigned (`UNSIGNED-PAYLOAD`, see
///   [`put_object`](Self::put_object)): no SHA-256 over every byte;
/// - path-style addressing whenever a custom endpoint is set;
/// - the SDK's standard retry strategy (exponential backoff with jitter, 5xx,
///   throttling, timeouts and connection errors) with `max_retries + 1`
///   attempts; each attempt bounded by `request_timeout`, the whole call by
///   the sum of the attempts and the backoff between them.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone, Debug)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    bucket: String,
    prefix: String,
    request_timeout: Duration,
    max_retries: u32,
    presign_ttl: Duration,
    multipart_threshold: u64,
    part_size: u64,
    concurrency: usize,
}

impl S3Store {
    /// Builds a client from `settings` (validated first); makes no network call.
    pub fn new(settings: &S3Settings) -> Result<Self, StoreError> {
        settings.validate()?;
        let attempts = settings.max_retries + 1;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.request_timeout.min(MAX_CONNECT_TIMEOUT))
            .operation_attempt_timeout(settings.request_timeout)
            .operation_timeout(settings.request_timeout * attempts + MAX_BACKOFF * attempts)
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(attempts)
            .with_initial_backoff(INITIAL_BACKOFF)
            .with_max_backoff(MAX_BACKOFF);
        let credentials = Credentials::new(
            settings.access_key_id.clone(),
            settings.secret_access_key.clone(),
            None,
            None,
            "cas-node-settings",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(settings.path_style())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(retries)
            .timeout_config(timeouts);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint.clone());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client: Client::from_conf(config.build()),
                bucket: settings.bucket.clone(),
                prefix: settings.key_prefix.clone(),
                request_timeout: settings.request_timeout,
                max_retries: settings.max_retries,
                presign_ttl: settings.presign_ttl,
                multipart_threshold: settings.multipart_threshold,
                part_size: settings.multipart_part_size,
                concurrency: settings.multipart_concurrency,
            }),
        })
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The prefix prepended to every key.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The full S3 key (prefix included) of a relative key.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// Lifetime of the URLs [`presigned_get`](Self::presigned_get) returns.
    pub fn presign_ttl(&self) -> Duration {
        self.inner.presign_ttl
    }

    /// Checks that the bucket exists and the credentials may use it (HeadBucket).
    pub async fn check_bucket(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        observe("head_bucket", "", &inner.bucket, async {
            inner
                .client
                .head_bucket()
                .bucket(&inner.bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| match classify("head_bucket", "", &inner.bucket, e) {
                    // HeadBucket has no body, so a missing bucket is a bare 404.
                    StoreError::NotFound { .. } => StoreError::NoSuchBucket {
                        op: "head_bucket",
                        key: String::new(),
                        bucket: inner.bucket.clone(),
                    },
                    other => other,
                })
        })
        .await
    }

    /// Stores `body` under `key`, replacing any object there.
    ///
    /// Keys are content addresses, so a re-put writes the same bytes and is
    /// harmless; no conditional PUT is used (Garage ignores `If-None-Match`).
    /// Bodies above `multipart_threshold` go through a multipart upload whose
    /// parts are sent concurrently; on failure the upload is aborted, and if
    /// the returned future is dropped midway the abort is spawned on the
    /// runtime. (A bucket lifecycle rule `AbortIncompleteMultipartUpload`
    /// catches what a crash leaves behind.)
    ///
    /// The body may be several segments (e.g. a xorb and its footer): they are
    /// streamed one after the other, never joined. Payloads are not signed
    /// (`UNSIGNED-PAYLOAD`): hashing every byte with SHA-256 for SigV4 was a
    /// fifth of the node's CPU on uploads, and cost the S3 server a second
    /// hash to check it. TLS protects the bytes in transit, and every xorb is
    /// re-verified by its hash when read back.
    pub async fn put_object(
        &self,
        key: &str,
        body: impl Into<ObjectBody>,
    ) -> Result<(), StoreError> {
        let body = body.into();
        validate_key(&self.inner.prefix, key)?;
        if body.len() as u64 > self.inner.multipart_threshold {
            let mut writer = ObjectWriter::new(self.clone(), key, Some(body.len() as u64));
            for segment in body.segments() {
                writer.write(segment.clone()).await?;
            }
            writer.finish().await?;
            return Ok(());
        }
        self.put_single(key, &self.full_key(key), body).await
    }

    /// A writer storing the object under `key` as its bytes arrive (see
    /// [`ObjectWriter`]); `size_hint` is the expected size, if known: past the
    /// multipart threshold, parts are sent from the first one on.
    pub fn writer(&self, key: &str, size_hint: Option<u64>) -> Result<ObjectWriter, StoreError> {
        validate_key(&self.inner.prefix, key)?;
        Ok(ObjectWriter::new(self.clone(), key, size_hint))
    }

    /// One PUT of the whole body.
    pub(super) async fn put_single(
        &self,
        key: &str,
        full: &str,
        body: ObjectBody,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let length = content_length("put_object", key, body.len())?;
        observe("put_object", key, &inner.bucket, async {
            inner
                .client
                .put_object()
                .bucket(&inner.bucket)
                .key(full)
                .content_length(length)
                .body(ByteStream::new(body.into_sdk_body()))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("put_object", key, &inner.bucket, e))
        })
        .await
    }

    /// `(part size, multipart threshold)` from the settings.
    pub(super) fn multipart_sizes(&self) -> (u64, u64) {
        (self.inner.part_size, self.inner.multipart_threshold)
    }

    /// How many parts of one upload may be in flight at once.
    pub(super) fn multipart_concurrency(&self) -> usize {
        self.inner.concurrency
    }

    /// The whole object stored under `key`.
    pub async fn get_object(&self, key: &str) -> Result<Bytes, StoreError> {
        validate_key(&self.inner.prefix, key)?;
        self.get("get_object", key, None).await
    }

    /// Bytes `range.start..range.end` (end exclusive) of the object under `key`.
    ///
    /// An empty range, or one reaching past the end of the object, is
    /// [`StoreError::InvalidRange`]: S3 would silently shorten the latter.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        validate_key(&self.inner.prefix, key)?;
        if range.start >= range.end {
            return Err(StoreError::InvalidRange {
                key: key.to_owned(),
                start: range.start,
                end: range.end,
                size: None,
            });
        }
        self.get("get_range", key, Some(range)).await
    }

    /// The size of the object under `key`, or `None` if there is none.
    pub async fn head_object(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let inner = &self.inner;
        validate_key(&inner.prefix, key)?;
        let full = self.full_key(key);
        let result = observe("head_object", key, &inner.bucket, async {
            let out = inner
                .client
                .head_object()
                .bucket(&inner.bucket)
                .key(&full)
                .send()
                .await
                .map_err(|e| classify("head_object", key, &inner.bucket, e))?;
            out.content_length()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| StoreError::Unavailable {
                    op: "head_object",
                    key: key.to_owned(),
                    status: None,
                    message: "response without a valid Content-Length".to_owned(),
                })
        })
        .await;
        match result {
            Ok(size) => Ok(Some(size)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether an object is stored under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.head_object(key).await?.is_some())
    }

    /// Deletes the object under `key`; deleting a missing object succeeds.
    pub async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        let inner = &self.inner;
        validate_key(&inner.prefix, key)?;
        let full = self.full_key(key);
        observe("delete_object", key, &inner.bucket, async {
            inner
                .client
                .delete_object()
                .bucket(&inner.bucket)
                .key(&full)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("delete_object", key, &inner.bucket, e))
        })
        .await
    }

    /// A self-authorising URL for GETs of the object under `key`, valid for
    /// `presign_ttl`.
    ///
    /// SigV4 query authentication; only `host` is signed, so the Xet client may
    /// add any `Range: bytes=S-E` header and sends no `Authorization` header
    /// (XET.md §11). Makes no network call and does not check that the object
    /// exists.
    pub async fn presigned_get(&self, key: &str) -> Result<String, StoreError> {
        let inner = &self.inner;
        validate_key(&inner.prefix, key)?;
        let config = PresigningConfig::expires_in(inner.presign_ttl)
            .map_err(|e| StoreError::Config(format!("presign_ttl: {e}")))?;
        let request = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(self.full_key(key))
            .presigned(config)
            .await
            .map_err(|e| classify("presign_get_object", key, &inner.bucket, e))?;
        tracing::trace!(key, "presigned GET URL issued");
        Ok(request.uri().to_owned())
    }

    /// One GET (whole or ranged), retried as a whole when the body breaks off
    /// after the headers arrived (the SDK retries only up to the headers).
    async fn get(
        &self,
        op: &'static str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Bytes, StoreError> {
        let inner = &self.inner;
        let full = self.full_key(key);
        let mut attempt = 0u32;
        loop {
            let mut body_broke = false;
            let result = observe(op, key, &inner.bucket, async {
                let mut request = inner.client.get_object().bucket(&inner.bucket).key(&full);
                if let Some(r) = &range {
                    request = request.range(format!("bytes={}-{}", r.start, r.end - 1));
                }
                let out = request.send().await.map_err(|e| {
                    match classify(op, key, &inner.bucket, e) {
                        StoreError::Rejected {
                            status: Some(416), ..
                        } => StoreError::InvalidRange {
                            key: key.to_owned(),
                            start: range.as_ref().map_or(0, |r| r.start),
                            end: range.as_ref().map_or(0, |r| r.end),
                            size: None,
                        },
                        other => other,
                    }
                })?;
                let content_range = out.content_range().map(str::to_owned);
                let body =
                    match tokio::time::timeout(inner.request_timeout, out.body.collect()).await {
                        Ok(Ok(data)) => data.into_bytes(),
                        Ok(Err(e)) => {
                            body_broke = true;
                            return Err(body_error(op, key, e));
                        }
                        Err(_) => {
                            body_broke = true;
                            return Err(StoreError::Timeout {
                                op,
                                key: key.to_owned(),
                                message: format!(
                                    "reading the body took longer than {:?}",
                                    inner.request_timeout
                                ),
                            });
                        }
                    };
                match &range {
                    None => Ok(body),
                    Some(r) => checked_range(key, r, content_range.as_deref(), body),
                }
            })
            .await;
            match result {
                Err(e) if body_broke && attempt < inner.max_retries => {
                    attempt += 1;
                    let delay = backoff(attempt);
                    tracing::debug!(op, key, attempt, ?delay, error = %e, "retrying a broken GET body");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Starts a multipart upload; returns its id.
    pub(super) async fn create_upload(&self, key: &str, full: &str) -> Result<String, StoreError> {
        let inner = &self.inner;
        let created = observe("create_multipart_upload", key, &inner.bucket, async {
            inner
                .client
                .create_multipart_upload()
                .bucket(&inner.bucket)
                .key(full)
                .send()
                .await
                .map_err(|e| classify("create_multipart_upload", key, &inner.bucket, e))
        })
        .await?;
        created
            .upload_id()
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Unavailable {
                op: "create_multipart_upload",
                key: key.to_owned(),
                status: None,
                message: "response without an upload id".to_owned(),
            })
    }

    /// The abort guard of a started multipart upload.
    pub(super) fn pending_upload(&self, key: &str, full: &str, upload_id: String) -> PendingUpload {
        PendingUpload {
            client: self.inner.client.clone(),
            bucket: self.inner.bucket.clone(),
            key: key.to_owned(),
            full_key: full.to_owned(),
            upload_id,
            armed: true,
        }
    }

    /// Completes a multipart upload from its parts, in part-number order.
    pub(super) async fn complete_upload(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        observe("complete_multipart_upload", key, &inner.bucket, async {
            inner
                .client
                .complete_multipart_upload()
                .bucket(&inner.bucket)
                .key(full)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("complete_multipart_upload", key, &inner.bucket, e))
        })
        .await
    }

    /// Uploads part `number` of a multipart upload.
    pub(super) async fn upload_part(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        number: i32,
        chunk: ObjectBody,
    ) -> Result<CompletedPart, StoreError> {
        let inner = &self.inner;
        let length = content_length("upload_part", key, chunk.len())?;
        let out = observe("upload_part", key, &inner.bucket, async {
            inner
                .client
                .upload_part()
                .bucket(&inner.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(length)
                .body(ByteStream::new(chunk.into_sdk_body()))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| classify("upload_part", key, &inner.bucket, e))
        })
        .await?;
        let e_tag = out.e_tag().ok_or_else(|| StoreError::Unavailable {
            op: "upload_part",
            key: key.to_owned(),
            status: None,
            message: format!("part {number}: response without an ETag"),
        })?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(e_tag)
            .build())
    }
}

/// A started multipart upload that is aborted unless disarmed, also when the
/// future driving it is dropped.
#[derive(Debug)]
pub(super) struct PendingUpload {
    client: Client,
    bucket: String,
    key: String,
    full_key: String,
    upload_id: String,
    armed: bool,
}

impl PendingUpload {
    /// The upload id.
    pub(super) fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// The object's key (relative to the prefix).
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// The upload completed: nothing to abort.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }

    /// Aborts the upload now.
    pub(super) async fn abort(mut self) {
        self.armed = false;
        abort_upload(
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.full_key),
            std::mem::take(&mut self.upload_id),
        )
        .await;
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let abort = abort_upload(
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.full_key),
            std::mem::take(&mut self.upload_id),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(abort);
            }
            Err(_) => tracing::warn!(
                key = self.key,
                "multipart upload dropped outside a runtime; left for the bucket lifecycle rule"
            ),
        }
    }
}

async fn abort_upload(
    client: Client,
    bucket: String,
    key: String,
    full_key: String,
    upload_id: String,
) {
    let result = observe("abort_multipart_upload", &key, &bucket, async {
        client
            .abort_multipart_upload()
            .bucket(&bucket)
            .key(&full_key)
            .upload_id(&upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("abort_multipart_upload", &key, &bucket, e))
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(
            key,
            upload_id,
            code = e.code(),
            error = %e,
            "multipart upload not aborted; left for the bucket lifecycle rule"
        );
    }
}

/// The one place S3 call outcomes are observed: times `call`, records the
/// `cas_s3_*` metrics with the outcome (`ok` or the error code) and emits a
/// `s3_call` span with the latency.
async fn observe<T>(
    op: &'static str,
    key: &str,
    bucket: &str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let span = tracing::debug_span!(
        "s3_call",
        op,
        key,
        bucket,
        elapsed_ms = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    record_s3_call(op, outcome, elapsed);
    let elapsed_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
    span.record("elapsed_ms", elapsed_ms);
    span.record("outcome", outcome);
    span.in_scope(|| match &result {
        Err(e) if e.class() != ErrorClass::NotFound => {
            tracing::warn!(op, key, elapsed_ms, code = outcome, error = %e, "S3 call failed");
        }
        // Inside the (debug) span, which carries the fields.
        _ => tracing::debug!("S3 call"),
    });
    result
}

/// Delay before retry `attempt` (1-based): exponential, capped, with jitter.
fn backoff(attempt: u32) -> Duration {
    let base = INITIAL_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let jitter_ms = rand::random_range(0..=base.as_millis() as u64 / 2);
    base + Duration::from_millis(jitter_ms)
}

fn content_length(op: &'static str, key: &str, len: usize) -> Result<i64, StoreError> {
    i64::try_from(len).map_err(|_| StoreError::Rejected {
        op,
        key: key.to_owned(),
        status: None,
        message: format!("body of {len} bytes is too large"),
    })
}

/// Checks a ranged GET's body against the range asked for.
///
/// With `Content-Range` (206) the body must be exactly the range: a shorter
/// one means S3 clamped a range reaching past the end. Without it (200) the
/// server ignored `Range` and sent the whole object, which is sliced here.
fn checked_range(
    key: &str,
    range: &Range<u64>,
    content_range: Option<&str>,
    body: Bytes,
) -> Result<Bytes, StoreError> {
    let invalid = |size| StoreError::InvalidRange {
        key: key.to_owned(),
        start: range.start,
        end: range.end,
        size,
    };
    match content_range {
        Some(header) => {
            if body.len() as u64 == range.end - range.start {
                Ok(body)
            } else {
                Err(invalid(total_size(header)))
            }
        }
        None => {
            let size = body.len() as u64;
            if range.end > size {
                return Err(invalid(Some(size)));
            }
            let start = usize::try_from(range.start).map_err(|_| invalid(Some(size)))?;
            let end = usize::try_from(range.end).map_err(|_| invalid(Some(size)))?;
            Ok(body.slice(start..end))
        }
    }
}

/// The total size in a `Content-Range: bytes S-E/T` header.
fn total_size(header: &str) -> Option<u64> {
    header.rsplit_once('/')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = backoff(1);
        assert!(first >= INITIAL_BACKOFF && first <= INITIAL_BACKOFF * 3 / 2);
        let late = backoff(30);
        assert!(late >= MAX_BACKOFF && late <= MAX_BACKOFF * 3 / 2);
    }

    #[test]
    fn ranged_bodies_are_checked() {
        let body = Bytes::from_static(b"0123456789");
        // 206 with the exact range.
        let ok = checked_range("k", &(2..5), Some("bytes 2-4/10"), body.slice(2..5));
        assert_eq!(ok.expect("exact"), Bytes::from_static(b"234"));
        // 206 clamped by the server: the range reached past the end.
        let err = checked_range("k", &(8..12), Some("bytes 8-9/10"), body.slice(8..10))
            .expect_err("clamped");
        assert!(matches!(
            err,
            StoreError::InvalidRange { size: Some(10), .. }
        ));
        // 200: the server ignored Range; slice locally.
        let sliced = checked_range("k", &(3..6), None, body.clone()).expect("sliced");
        assert_eq!(sliced, Bytes::from_static(b"345"));
        let err = checked_range("k", &(3..11), None, body).expect_err("past the end");
        assert_eq!(err.code(), "store_invalid_range");
    }
}
