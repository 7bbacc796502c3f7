//! `S3Store` against real S3-compatible servers, no mocks: the embedded s3s-fs
//! server ([`LocalS3`]) always, and Garage when `GARAGE_ENDPOINT` is set
//! (with `GARAGE_DEFAULT_ACCESS_KEY`, `GARAGE_DEFAULT_SECRET_KEY`,
//! `GARAGE_DEFAULT_BUCKET` and optionally `GARAGE_REGION`, default `garage`).
//!
//! Everything listens on 127.0.0.1; every wait is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cas_core::MerkleHash;
use cas_node::store::{
    ErrorClass, LocalS3, LocalS3Config, ObjectBody, S3Settings, S3Store, StoreError, shard_key,
    xorb_key,
};
use rand::RngCore as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const MIB: usize = 1024 * 1024;

/// One S3-compatible server under test and a store pointed at it.
struct Backend {
    settings: S3Settings,
    store: S3Store,
    local: Option<LocalS3>,
    _dir: Option<tempfile::TempDir>,
}

/// Logs to the test output with `RUST_LOG` (e.g. `cas_node=debug`), once per process.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl Backend {
    async fn local() -> Self {
        init_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let local = LocalS3::start(LocalS3Config::new(dir.path()))
            .await
            .expect("embedded S3 starts");
        let settings = local.settings();
        let store = S3Store::new(&settings).expect("store");
        Backend {
            settings,
            store,
            local: Some(local),
            _dir: Some(dir),
        }
    }

    /// Garage from the environment, or `None` (printing why) when it is not configured.
    fn garage() -> Option<Self> {
        init_logs();
        let Ok(endpoint) = std::env::var("GARAGE_ENDPOINT") else {
            eprintln!("skipped: GARAGE_ENDPOINT is not set, so there is no Garage to test against");
            return None;
        };
        let var = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("GARAGE_ENDPOINT is set, so {name} must be too"))
        };
        let settings = S3Settings {
            endpoint: Some(endpoint),
            region: std::env::var("GARAGE_REGION").unwrap_or_else(|_| "garage".to_owned()),
            bucket: var("GARAGE_DEFAULT_BUCKET"),
            access_key_id: var("GARAGE_DEFAULT_ACCESS_KEY"),
            secret_access_key: var("GARAGE_DEFAULT_SECRET_KEY"),
            // A fresh prefix per test keeps runs from seeing each other's objects.
            key_prefix: format!("cas-node-test-{:016x}/", rand::random::<u64>()),
            ..S3Settings::default()
        };
        let store = S3Store::new(&settings).expect("store");
        Some(Backend {
            settings,
            store,
            local: None,
            _dir: None,
        })
    }

    /// Another store on the same server with changed settings.
    fn store_with(&self, change: impl FnOnce(&mut S3Settings)) -> S3Store {
        let mut settings = self.settings.clone();
        change(&mut settings);
        S3Store::new(&settings).expect("store")
    }

    /// A plain aws-sdk-s3 client on the same server, to look past the store's API.
    fn raw_client(&self) -> aws_sdk_s3::Client {
        let s = &self.settings;
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(s.region.clone()))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                s.access_key_id.clone(),
                s.secret_access_key.clone(),
                None,
                None,
                "test",
            ))
            .endpoint_url(s.endpoint.clone().expect("test backends have an endpoint"))
            .force_path_style(true)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    async fn finish(self) {
        if let Some(local) = self.local {
            local.shutdown().await;
        }
    }
}

fn random_bytes(len: usize) -> Bytes {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    Bytes::from(data)
}

fn random_hash() -> MerkleHash {
    MerkleHash(rand::random())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Asserts `err` has `code` and `class`.
fn assert_error(err: &StoreError, code: &str, class: ErrorClass) {
    assert_eq!(err.code(), code, "unexpected error: {err}");
    assert_eq!(err.class(), class, "unexpected class of: {err}");
    assert_eq!(err.is_retryable(), class == ErrorClass::Transient);
}

// ---------------------------------------------------------------------------
// The suite every backend runs.

async fn round_trip(b: &Backend) {
    let key = xorb_key(&random_hash());
    let body = random_bytes(100_000);
    assert!(!b.store.exists(&key).await.expect("exists"));
    b.store.put_object(&key, body.clone()).await.expect("put");
    assert!(b.store.exists(&key).await.expect("exists"));
    assert_eq!(
        b.store.head_object(&key).await.expect("head"),
        Some(100_000)
    );
    assert_eq!(b.store.get_object(&key).await.expect("get"), body);

    let shard = shard_key(&random_hash());
    b.store
        .put_object(&shard, Bytes::new())
        .await
        .expect("put empty");
    assert_eq!(b.store.head_object(&shard).await.expect("head"), Some(0));
    assert!(b.store.get_object(&shard).await.expect("get").is_empty());

    b.store.delete_object(&key).await.expect("delete");
    assert!(!b.store.exists(&key).await.expect("exists"));
    assert_eq!(b.store.head_object(&key).await.expect("head"), None);
    // Deleting again is fine: S3 deletes are idempotent.
    b.store.delete_object(&key).await.expect("delete again");
}

async fn reput_is_idempotent(b: &Backend) {
    let key = xorb_key(&random_hash());
    let body = random_bytes(300_000);
    b.store.put_object(&key, body.clone()).await.expect("put");
    b.store
        .put_object(&key, body.clone())
        .await
        .expect("re-put");
    assert_eq!(
        b.store.head_object(&key).await.expect("head"),
        Some(300_000)
    );
    assert_eq!(b.store.get_object(&key).await.expect("get"), body);
}

async fn not_found_is_mapped(b: &Backend) {
    let key = xorb_key(&random_hash());
    let err = b.store.get_object(&key).await.expect_err("missing");
    assert_error(&err, "store_not_found", ErrorClass::NotFound);
    assert!(err.is_not_found());
    let err = b.store.get_range(&key, 0..10).await.expect_err("missing");
    assert_error(&err, "store_not_found", ErrorClass::NotFound);
    assert_eq!(b.store.head_object(&key).await.expect("head"), None);
    assert!(!b.store.exists(&key).await.expect("exists"));

    b.store.check_bucket().await.expect("bucket exists");
    let other = b.store_with(|s| s.bucket = format!("missing-{:08x}", rand::random::<u32>()));
    let err = other.check_bucket().await.expect_err("missing bucket");
    assert_error(&err, "store_no_such_bucket", ErrorClass::Permanent);
}

async fn ranged_gets(b: &Backend) {
    let key = xorb_key(&random_hash());
    let body = random_bytes(1000);
    b.store.put_object(&key, body.clone()).await.expect("put");
    for range in [0..1, 0..10, 400..600, 999..1000, 0..1000, 1..999] {
        let got = b.store.get_range(&key, range.clone()).await.expect("range");
        let want = body.slice(range.start as usize..range.end as usize);
        assert_eq!(got, want, "range {range:?}");
    }
    // Empty and reversed ranges are refused before any request.
    #[allow(clippy::reversed_empty_ranges)]
    for range in [5..5, 6..5] {
        let err = b
            .store
            .get_range(&key, range.clone())
            .await
            .expect_err("empty");
        assert_error(&err, "store_invalid_range", ErrorClass::Permanent);
    }
    // Starting at or past the end: 416 from the server.
    for range in [1000..1001, 2000..3000] {
        let err = b
            .store
            .get_range(&key, range.clone())
            .await
            .expect_err("past end");
        assert_error(&err, "store_invalid_range", ErrorClass::Permanent);
    }
    // Ending past the end: S3 would clamp; the store refuses and reports the size.
    let err = b
        .store
        .get_range(&key, 990..1010)
        .await
        .expect_err("end past end");
    assert_error(&err, "store_invalid_range", ErrorClass::Permanent);
    assert!(
        matches!(
            err,
            StoreError::InvalidRange {
                size: Some(1000),
                ..
            }
        ),
        "{err:?}"
    );
}

async fn multipart_upload(b: &Backend) {
    let key = xorb_key(&random_hash());
    let body = random_bytes(40 * MIB);
    let started = Instant::now();
    b.store
        .put_object(&key, body.clone())
        .await
        .expect("multipart put");
    eprintln!("40 MiB multipart put: {:?}", started.elapsed());
    assert_eq!(
        b.store.head_object(&key).await.expect("head"),
        Some(40 * MIB as u64)
    );
    let got = b.store.get_object(&key).await.expect("get");
    assert!(got == body, "40 MiB object read back differs");
    // A range across the first part boundary (parts are 8 MiB).
    let boundary = 8 * MIB as u64;
    let got = b
        .store
        .get_range(&key, boundary - 10..boundary + 10)
        .await
        .expect("range");
    assert_eq!(got, body.slice(8 * MIB - 10..8 * MIB + 10));
    // It really went through a multipart upload: S3's multipart ETag ends in `-<parts>`.
    let e_tag = raw_e_tag(b, &key).await;
    assert!(e_tag.ends_with("-5"), "ETag {e_tag:?} is not a 5-part ETag");
    // Re-putting a multipart object is as harmless as a single put.
    b.store
        .put_object(&key, body.clone())
        .await
        .expect("re-put");
    assert_eq!(
        b.store.head_object(&key).await.expect("head"),
        Some(40 * MIB as u64)
    );
    if let Some(local) = &b.local {
        assert_no_pending_uploads(local.root(), Duration::ZERO).await;
    }
}

/// A body in several segments (a xorb and its footer) is stored as their
/// concatenation, in a single PUT and in a multipart upload whose part
/// boundaries fall inside segments and between them.
async fn segmented_bodies(b: &Backend) {
    for (body_len, footer_len) in [(100_000, 3_000), (20 * MIB + 7, 4_096), (16 * MIB, 1)] {
        let body = random_bytes(body_len);
        let footer = random_bytes(footer_len);
        let joined: Vec<u8> = [&body[..], &footer[..]].concat();
        let key = xorb_key(&random_hash());
        let segments = ObjectBody::new([body.clone(), footer.clone()]);
        assert_eq!(segments.len(), joined.len());
        b.store.put_object(&key, segments).await.expect("put");
        assert_eq!(
            b.store.head_object(&key).await.expect("head"),
            Some(joined.len() as u64)
        );
        let got = b.store.get_object(&key).await.expect("get");
        assert!(
            got == joined,
            "{body_len} + {footer_len} bytes read back differ"
        );
    }
    // Many small segments, and a part boundary (8 MiB) inside one of them.
    let pieces: Vec<Bytes> = (0..9).map(|i| random_bytes(2 * MIB + i)).collect();
    let joined: Vec<u8> = pieces.concat();
    let key = xorb_key(&random_hash());
    b.store
        .put_object(&key, ObjectBody::new(pieces))
        .await
        .expect("put many");
    assert!(b.store.get_object(&key).await.expect("get") == joined);
    if let Some(local) = &b.local {
        assert_no_pending_uploads(local.root(), Duration::ZERO).await;
    }
}

/// The ETag S3 gives the object under `key`, without quotes (a multipart
/// upload's ends in `-<parts>`).
async fn raw_e_tag(b: &Backend, key: &str) -> String {
    let head = b
        .raw_client()
        .head_object()
        .bucket(&b.settings.bucket)
        .key(b.store.full_key(key))
        .send()
        .await
        .expect("raw head");
    head.e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}

/// An object written piece by piece: a single PUT while small, a multipart
/// upload (from the first part when the size hint says so) otherwise;
/// nothing visible before `finish`, nothing left after `abort`.
async fn streamed_writes(b: &Backend) {
    let body = random_bytes(21 * MIB + 5);
    // (size hint, bytes, parts expected; 0 = a single PUT)
    let cases = [
        (None, 21 * MIB + 5, 3),
        (Some(21 * MIB as u64 + 5), 21 * MIB + 5, 3),
        (None, 3 * MIB, 0),
        (None, 16 * MIB, 0),
        (Some(1000), 16 * MIB + 1, 3),
    ];
    for (hint, len, parts) in cases {
        let key = xorb_key(&random_hash());
        let mut writer = b.store.writer(&key, hint).expect("writer");
        let mut at = 0;
        for (i, piece) in [1, 777_777, 3 * MIB, 100].iter().cycle().enumerate() {
            if at >= len {
                break;
            }
            let end = len.min(at + piece);
            writer.write(body.slice(at..end)).await.expect("write");
            at = end;
            if i == 8 {
                assert!(
                    !b.store.exists(&key).await.expect("exists"),
                    "visible early"
                );
            }
        }
        assert_eq!(writer.written(), len as u64);
        assert!(
            !b.store.exists(&key).await.expect("exists"),
            "visible early"
        );
        assert_eq!(writer.finish().await.expect("finish"), len as u64);
        let got = b.store.get_object(&key).await.expect("get");
        assert!(got == body.slice(..len), "{len} bytes read back differ");
        let e_tag = raw_e_tag(b, &key).await;
        if parts == 0 {
            assert!(!e_tag.contains('-'), "{len} bytes: ETag {e_tag:?}");
        } else {
            assert!(
                e_tag.ends_with(&format!("-{parts}")),
                "{len} bytes: ETag {e_tag:?}"
            );
        }
    }
    // Given up after parts went out: nothing under the key, no upload left.
    let key = xorb_key(&random_hash());
    let mut writer = b.store.writer(&key, None).expect("writer");
    for i in 0..20 {
        writer
            .write(body.slice(i * MIB..(i + 1) * MIB))
            .await
            .expect("write");
    }
    writer.abort().await;
    assert!(!b.store.exists(&key).await.expect("exists"));
    if let Some(local) = &b.local {
        assert_no_pending_uploads(local.root(), Duration::ZERO).await;
    }
    let err = b.store.writer("../escape", None).expect_err("bad key");
    assert_eq!(err.code(), "store_invalid_key");
}

async fn presigned_urls(b: &Backend) {
    let key = xorb_key(&random_hash());
    let other = xorb_key(&random_hash());
    let body = random_bytes(10_000);
    b.store.put_object(&key, body.clone()).await.expect("put");
    b.store
        .put_object(&other, random_bytes(10))
        .await
        .expect("put");
    let url = b.store.presigned_get(&key).await.expect("presign");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(url.contains("X-Amz-Expires=3600"), "{url}");
    let http = http();

    // No Authorization header, no Range: the whole object.
    let resp = http.get(&url).send().await.expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body"), body);

    // Several single ranges against the same URL, as the Xet client does (XET.md §11).
    for (start, end) in [(0u64, 0u64), (10, 19), (5000, 9999), (9999, 9999)] {
        let resp = http
            .get(&url)
            .header("Range", format!("bytes={start}-{end}"))
            .send()
            .await
            .expect("ranged GET");
        assert_eq!(resp.status(), 206, "bytes={start}-{end}");
        let content_range = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(
            content_range.as_deref(),
            Some(format!("bytes {start}-{end}/10000").as_str())
        );
        assert_eq!(
            resp.bytes().await.expect("body"),
            body.slice(start as usize..end as usize + 1)
        );
    }

    // A range starting past the end: 416.
    let resp = http
        .get(&url)
        .header("Range", "bytes=10000-10010")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 416);

    // Tampering: another signature, another key, or no signature at all.
    let signature_at = url.find("X-Amz-Signature=").expect("signature") + "X-Amz-Signature=".len();
    let mut forged = url.clone().into_bytes();
    forged[signature_at] = if forged[signature_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let forged = String::from_utf8(forged).expect("ASCII URL");
    let full_key = b.store.full_key(&key);
    let other_full_key = b.store.full_key(&other);
    let moved = url.replacen(&full_key, &other_full_key, 1);
    assert_ne!(moved, url);
    let bare = url.split('?').next().expect("path").to_owned();
    for (what, tampered) in [("signature", forged), ("key", moved), ("unsigned", bare)] {
        let resp = http.get(&tampered).send().await.expect("GET");
        assert_eq!(resp.status(), 403, "{what} tampering was not refused");
    }

    // Expired URLs are refused: 403 from s3s (as from AWS), 400 from Garage. Clients
    // ask for a fresh reconstruction on either.
    let short = b.store_with(|s| s.presign_ttl = Duration::from_secs(1));
    let url = short.presigned_get(&key).await.expect("presign");
    assert_eq!(http.get(&url).send().await.expect("GET").status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = http.get(&url).send().await.expect("GET").status();
    assert!(
        status == 403 || status == 400,
        "expired URL not refused: {status}"
    );
}

async fn wrong_credentials_are_permanent(b: &Backend) {
    let key = xorb_key(&random_hash());
    b.store
        .put_object(&key, random_bytes(100))
        .await
        .expect("put");
    let wrong_secret = b.store_with(|s| s.secret_access_key.push('x'));
    let unknown_key = b.store_with(|s| s.access_key_id = "UNKNOWNKEY0000000000".to_owned());
    for store in [&wrong_secret, &unknown_key] {
        let started = Instant::now();
        let err = store
            .put_object(&xorb_key(&random_hash()), random_bytes(10))
            .await
            .expect_err("denied");
        assert_error(&err, "store_access_denied", ErrorClass::Permanent);
        // Permanent failures are not retried with backoff.
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = store.get_object(&key).await.expect_err("denied");
        assert_error(&err, "store_access_denied", ErrorClass::Permanent);
        let err = store.check_bucket().await.expect_err("denied");
        assert!(
            matches!(err.code(), "store_access_denied"),
            "unexpected error: {err}"
        );
    }
}

async fn invalid_keys_are_refused(b: &Backend) {
    for key in ["", "/abs", "dir/", "a/../b", "a//b"] {
        let err = b
            .store
            .put_object(key, Bytes::from_static(b"x"))
            .await
            .expect_err(key);
        assert_error(&err, "store_invalid_key", ErrorClass::Permanent);
        let err = b.store.presigned_get(key).await.expect_err(key);
        assert_eq!(err.code(), "store_invalid_key");
    }
}

async fn concurrent_writers(b: &Backend) {
    // Two writers of one content address, and several distinct objects at once.
    let key = xorb_key(&random_hash());
    let body = random_bytes(2 * MIB);
    let others: Vec<(String, Bytes)> = (0..6)
        .map(|_| (xorb_key(&random_hash()), random_bytes(256 * 1024)))
        .collect();
    let (a, c, rest) = tokio::join!(
        b.store.put_object(&key, body.clone()),
        b.store.put_object(&key, body.clone()),
        futures::future::join_all(others.iter().map(|(k, v)| b.store.put_object(k, v.clone()))),
    );
    a.expect("writer 1");
    c.expect("writer 2");
    rest.into_iter().for_each(|r| r.expect("put"));
    assert_eq!(b.store.get_object(&key).await.expect("get"), body);
    for (k, v) in &others {
        assert_eq!(&b.store.get_object(k).await.expect("get"), v);
    }
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::Backend::local().await;
                    super::$name(&backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod garage {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = super::Backend::garage() else { return };
                    super::$name(&backend).await;
                }
            )*
        }
    };
}

on_every_backend!(
    round_trip,
    reput_is_idempotent,
    not_found_is_mapped,
    ranged_gets,
    multipart_upload,
    segmented_bodies,
    streamed_writes,
    presigned_urls,
    wrong_credentials_are_permanent,
    invalid_keys_are_refused,
    concurrent_writers,
);

// ---------------------------------------------------------------------------
// The embedded server itself, and failure modes made with local sockets.

/// The multipart upload state (upload records and part files) in an s3s-fs root.
fn pending_uploads(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .expect("read root")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload"))
        .collect()
}

/// Waits (bounded) until no multipart upload state is left in an s3s-fs root.
async fn assert_no_pending_uploads(root: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let pending = pending_uploads(root);
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "multipart state left behind: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_server_checks_signatures_and_shuts_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = LocalS3::start(LocalS3Config::new(dir.path()))
        .await
        .expect("starts");
    let addr = local.addr();
    assert!(addr.ip().is_loopback());
    assert_eq!(local.endpoint(), format!("http://{addr}"));
    assert!(dir.path().join(local.bucket()).is_dir(), "bucket created");

    // An unsigned request is refused.
    let resp = http()
        .get(format!("{}/{}/anything", local.endpoint(), local.bucket()))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 403);

    let store = S3Store::new(&S3Settings {
        max_retries: 1,
        request_timeout: Duration::from_secs(2),
        ..local.settings()
    })
    .expect("store");
    let key = shard_key(&random_hash());
    store.put_object(&key, random_bytes(10)).await.expect("put");

    let same_credentials = LocalS3Config {
        access_key_id: local.access_key_id().to_owned(),
        secret_access_key: local.secret_access_key().to_owned(),
        ..LocalS3Config::new(dir.path())
    };
    local.shutdown().await;
    // The port is closed once shutdown returns.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let err = store.get_object(&key).await.expect_err("server is gone");
    assert_error(&err, "store_unavailable", ErrorClass::Transient);

    // A restart on the same directory serves the same objects.
    let restarted = LocalS3::start(same_credentials).await.expect("restarts");
    let again = S3Store::new(&restarted.settings()).expect("store");
    assert_eq!(again.head_object(&key).await.expect("head"), Some(10));
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_stops_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = LocalS3::start(LocalS3Config::new(dir.path()))
        .await
        .expect("starts");
    let addr = local.addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(local);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the dropped server still accepts connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_server_refuses_bad_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = LocalS3::start(LocalS3Config {
        bucket: "Not_A_Bucket".to_owned(),
        ..LocalS3Config::new(dir.path())
    })
    .await
    .expect_err("bad bucket");
    assert_eq!(err.code(), "local_s3_invalid_bucket");
    let err = LocalS3::start(LocalS3Config {
        secret_access_key: String::new(),
        ..LocalS3Config::new(dir.path())
    })
    .await
    .expect_err("no secret");
    assert_eq!(err.code(), "local_s3_empty_credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_multipart_upload_is_reported_and_leaves_no_object() {
    // s3s-fs maps keys to paths, so completing `p/<hash>/x` fails when
    // `p/<hash>` is a file: a real server-side failure at the last step. (s3s-fs
    // drops the upload id before failing with 500, so the SDK's retry gets 403
    // and the store's abort is refused; the error is still reported.)
    let backend = Backend::local().await;
    let store = &backend.store;
    let parent = format!("p/{}", random_hash());
    store
        .put_object(&parent, random_bytes(10))
        .await
        .expect("put");
    let child = format!("{parent}/x");
    let err = store
        .put_object(&child, random_bytes(20 * MIB))
        .await
        .expect_err("completion fails");
    eprintln!("failed multipart upload: {err}");
    assert_ne!(err.class(), ErrorClass::NotFound, "{err}");
    assert!(!store.exists(&child).await.expect("exists"));
    assert_eq!(store.head_object(&parent).await.expect("head"), Some(10));
    let root = backend.local.as_ref().expect("local").root().to_owned();
    let parts: Vec<String> = std::fs::read_dir(&root)
        .expect("read root")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload_id-"))
        .collect();
    assert!(parts.is_empty(), "part files left behind: {parts:?}");
    backend.finish().await;
}

/// What [`faulty_proxy`] does to a connection whose client sends the poison.
#[derive(Clone, Copy)]
enum Fault {
    /// Close it.
    Cut,
    /// Keep it open and forward nothing more.
    Stall,
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that applies `fault` to
/// every connection whose client side sends `poison` (e.g. an `UploadPart`
/// query), counting them.
async fn faulty_proxy(
    upstream: SocketAddr,
    poison: &'static [u8],
    fault: Fault,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if buf[..n].windows(poison.len()).any(|w| w == poison) {
                        counter.fetch_add(1, Ordering::SeqCst);
                        if let Fault::Stall = fault {
                            // Hold the connection until the client gives up on it.
                            while !matches!(client_read.read(&mut buf).await, Ok(0) | Err(_)) {}
                        }
                        break;
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_part_uploads_abort_the_multipart_upload() {
    let backend = Backend::local().await;
    let local = backend.local.as_ref().expect("local");
    let (proxy, cuts) = faulty_proxy(local.addr(), b"partNumber=", Fault::Cut).await;
    let store = backend.store_with(|s| s.endpoint = Some(format!("http://{proxy}")));
    let key = xorb_key(&random_hash());
    let err = store
        .put_object(&key, random_bytes(20 * MIB))
        .await
        .expect_err("parts cannot be uploaded");
    assert_error(&err, "store_unavailable", ErrorClass::Transient);
    // Every attempt of the failed part was cut: 1 attempt + 3 retries (others may be cut too).
    assert!(
        cuts.load(Ordering::SeqCst) >= 4,
        "cuts: {}",
        cuts.load(Ordering::SeqCst)
    );
    // The abort happened before `put_object` returned.
    assert_no_pending_uploads(local.root(), Duration::ZERO).await;
    assert!(!backend.store.exists(&key).await.expect("exists"));
    // Small objects do not use multipart and get through the same proxy.
    store
        .put_object(&key, random_bytes(1000))
        .await
        .expect("single put");
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_multipart_upload_is_aborted() {
    let backend = Backend::local().await;
    let local = backend.local.as_ref().expect("local");
    // Part uploads stall in the proxy, so the upload is surely in flight when dropped.
    let (proxy, stalled) = faulty_proxy(local.addr(), b"partNumber=", Fault::Stall).await;
    let store = backend.store_with(|s| s.endpoint = Some(format!("http://{proxy}")));
    let key = xorb_key(&random_hash());
    let mut upload = Box::pin(store.put_object(&key, random_bytes(20 * MIB)));
    let in_flight = async {
        for _ in 0..1000 {
            if stalled.load(Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no part upload reached the proxy within 10 s");
    };
    tokio::select! {
        result = &mut upload => panic!("the upload ended before being dropped: {result:?}"),
        () = in_flight => {}
    }
    assert!(!pending_uploads(local.root()).is_empty(), "upload started");
    drop(upload);
    // The abort is spawned on the runtime and goes through (it is not a part upload).
    assert_no_pending_uploads(local.root(), Duration::from_secs(10)).await;
    assert!(!backend.store.exists(&key).await.expect("exists"));
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_writer_is_aborted() {
    let backend = Backend::local().await;
    let local = backend.local.as_ref().expect("local");
    let key = xorb_key(&random_hash());
    let mut writer = backend
        .store
        .writer(&key, Some(40 * MIB as u64))
        .expect("writer");
    writer.write(random_bytes(20 * MIB)).await.expect("write");
    assert!(!pending_uploads(local.root()).is_empty(), "upload started");
    drop(writer);
    assert_no_pending_uploads(local.root(), Duration::from_secs(10)).await;
    assert!(!backend.store.exists(&key).await.expect("exists"));
    backend.finish().await;
}

/// A TCP server on 127.0.0.1 that answers every request with `response`
/// (after reading its headers) and counts the requests, or never answers.
async fn canned_server(response: Option<&'static str>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            match response {
                Some(text) => {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = socket.write_all(text.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
                // Keep the socket open and silent.
                None => held.push(socket),
            }
        }
    });
    (addr, count)
}

fn settings_for(addr: SocketAddr) -> S3Settings {
    S3Settings {
        endpoint: Some(format!("http://{addr}")),
        access_key_id: "AK".to_owned(),
        secret_access_key: "SK".to_owned(),
        max_retries: 2,
        request_timeout: Duration::from_millis(300),
        ..S3Settings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let (addr, requests) = canned_server(Some(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ))
    .await;
    let store = S3Store::new(&settings_for(addr)).expect("store");
    let err = store
        .head_object(&xorb_key(&random_hash()))
        .await
        .expect_err("503");
    assert_error(&err, "store_unavailable", ErrorClass::Transient);
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3, "1 attempt + 2 retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_servers_time_out() {
    let (addr, requests) = canned_server(None).await;
    let store = S3Store::new(&settings_for(addr)).expect("store");
    let started = Instant::now();
    let err = store
        .get_object(&xorb_key(&random_hash()))
        .await
        .expect_err("timeout");
    assert_error(&err, "store_timeout", ErrorClass::Transient);
    // 3 attempts of 300 ms plus backoff, far from any default timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(requests.load(Ordering::SeqCst) >= 1);
}

#[test]
fn bad_settings_are_refused() {
    let err = S3Store::new(&S3Settings::default()).expect_err("no credentials");
    assert_error(&err, "store_config", ErrorClass::Permanent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_s3_call_is_observed_in_metrics() {
    // The only test in this binary that installs the process-wide recorder.
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("recorder");
    let backend = Backend::local().await;
    let key = xorb_key(&random_hash());
    backend
        .store
        .put_object(&key, random_bytes(10))
        .await
        .expect("put");
    let missing = xorb_key(&random_hash());
    let _ = backend
        .store
        .get_object(&missing)
        .await
        .expect_err("missing");
    let text = handle.render();
    for series in [
        "cas_s3_requests_total{operation=\"put_object\",outcome=\"ok\"}",
        "cas_s3_requests_total{operation=\"get_object\",outcome=\"store_not_found\"}",
        "cas_s3_request_duration_seconds",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    backend.finish().await;
}

/// A TCP server on 127.0.0.1 that reads each request (headers and a body of
/// its `Content-Length`), records the header block, and answers `response`.
async fn recording_server(
    response: &'static str,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                let end = loop {
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while got.len() < end + length {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().expect("lock").push(head);
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, heads)
}

/// PUT payloads are not hashed: no SigV4 payload SHA-256 and no checksum, and
/// a body of several segments is sent with its exact length and replayed
/// whole on a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_are_unsigned_and_segmented_bodies_are_replayed() {
    let (addr, heads) = recording_server(
        "HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let store = S3Store::new(&settings_for(addr)).expect("store");
    let body = ObjectBody::new([random_bytes(70_000), random_bytes(123)]);
    store
        .put_object(&xorb_key(&random_hash()), body)
        .await
        .expect("put");
    let head = heads.lock().expect("lock")[0].clone();
    assert!(head.starts_with("put "), "{head}");
    assert!(
        head.contains("x-amz-content-sha256: unsigned-payload"),
        "{head}"
    );
    assert!(head.contains("content-length: 70123"), "{head}");
    assert!(!head.contains("x-amz-checksum-"), "{head}");

    let (addr, heads) = recording_server(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let store = S3Store::new(&settings_for(addr)).expect("store");
    let body = ObjectBody::new([random_bytes(50_000), random_bytes(10)]);
    let err = store
        .put_object(&xorb_key(&random_hash()), body)
        .await
        .expect_err("503");
    assert_error(&err, "store_unavailable", ErrorClass::Transient);
    // Every attempt carried the whole body (the server read all of it).
    assert_eq!(
        heads.lock().expect("lock").len(),
        3,
        "1 attempt + 2 retries"
    );
}
