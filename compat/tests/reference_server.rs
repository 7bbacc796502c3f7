//! Our HTTP transport, uploads and downloads against the reference CAS server
//! (the Xet reference implementation's `LocalServer`, in process on a loopback
//! port, storing into a temporary directory): what we upload it accepts and
//! serves back byte for byte, its global-dedup answers save our uploads, and
//! its errors come back typed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cas_client::transfer::{
    DownloadOptions, TransferError, UploadOptions, UploadReport, download_bytes, download_to_file,
    upload_paths,
};
use cas_client::xet::{ByteRange, RetryPolicy, XetClient, XetClientConfig, XetError};
use cas_compat::datasets;
use cas_core::MerkleHash;
use cas_core::chunking::{chunk_and_hash, file_hash_of_chunks};
use tempfile::TempDir;
use xet_client::cas_client::{LocalTestServer, LocalTestServerBuilder};

/// A reference server storing into its own temporary directory (dropped after the server).
struct Server {
    server: LocalTestServer,
    _store: TempDir,
}

impl Server {
    async fn start() -> Self {
        let store = tempfile::tempdir().expect("tempdir");
        let server = LocalTestServerBuilder::new()
            .with_disk_location(store.path())
            .start()
            .await;
        Server {
            server,
            _store: store,
        }
    }

    fn endpoint(&self) -> &str {
        self.server.http_endpoint()
    }

    /// Our client for this server, with quick retries.
    fn client(&self) -> XetClient {
        XetClient::with_config(
            XetClientConfig::new(self.endpoint())
                .with_token("test-token")
                .with_retry(RetryPolicy {
                    max_attempts: 3,
                    base_delay: Duration::from_millis(10),
                    max_delay: Duration::from_millis(100),
                }),
        )
        .expect("client")
    }

    /// Sets one of the reference server's simulation switches.
    async fn set_config(&self, config: &str, value: &str) {
        let url = format!(
            "{}/simulation/set_config?config={config}&value={value}",
            self.endpoint()
        );
        let resp = reqwest::Client::new()
            .post(url)
            .send()
            .await
            .expect("set_config");
        assert!(resp.status().is_success(), "set_config {config}={value}");
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write test file");
    p
}

fn expected_hash(data: &[u8]) -> MerkleHash {
    file_hash_of_chunks(&chunk_and_hash(data))
}

fn opts() -> UploadOptions {
    UploadOptions {
        chunk_threads: 2,
        ..UploadOptions::default()
    }
}

async fn upload(client: &XetClient, paths: &[PathBuf]) -> UploadReport {
    upload_paths(client, paths, &opts()).await.expect("upload")
}

async fn download(client: &XetClient, hash: &MerkleHash, range: Option<ByteRange>) -> Vec<u8> {
    download_bytes(client, hash, range, &DownloadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("download {hash} {range:?}: {e}"))
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_download_files_and_ranges() {
    let server = Server::start().await;
    let client = server.client();
    let work = tempfile::tempdir().expect("tempdir");
    let data_dir = work.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let random = datasets::random(1, 5_000_000);
    let zeros = datasets::zeros(3 << 20);
    let files = [
        write(&data_dir, "a-random", &random),
        write(&data_dir, "b-zeros", &zeros),
        write(&data_dir, "c-empty", b""),
    ];
    let contents = [&random[..], &zeros[..], b""];

    let report = upload(&client, std::slice::from_ref(&data_dir)).await;
    assert_eq!(
        report.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
        files.iter().collect::<Vec<_>>(),
        "directory walked in sorted order"
    );
    for (f, data) in report.files.iter().zip(contents) {
        assert_eq!(f.file_hash, expected_hash(data), "{}", f.path.display());
        assert_eq!(f.size, data.len() as u64);
    }
    assert_eq!(report.files[2].file_hash, MerkleHash::ZERO);
    let total = (random.len() + zeros.len()) as u64;
    assert_eq!(report.bytes_read, total);
    // The zero run is one 128 KiB chunk repeated: everything after it deduplicates.
    assert_eq!(report.new_bytes, random.len() as u64 + (128 << 10));
    assert_eq!(report.deduplicated_bytes, total - report.new_bytes);
    assert_eq!(report.shards_sent, 1);
    assert!(report.xorbs_sent >= 1 && report.xorbs_already_stored == 0);
    assert!(report.bytes_sent() < total, "sent {}", report.bytes_sent());
    assert!(report.dedup_queries >= 1, "first chunks are queried");
    assert_eq!(report.dedup_hits, 0, "an empty server knows nothing");

    // Whole files, in memory and to disk; whole downloads are verified.
    for (f, data) in report.files.iter().zip(contents) {
        let (got, r) = download_bytes(&client, &f.file_hash, None, &DownloadOptions::default())
            .await
            .expect("download");
        assert_eq!(got, data, "{}", f.path.display());
        assert!(r.verified);
        assert_eq!(r.bytes_written, data.len() as u64);
    }
    let out_dir = work.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("random.bin");
    let r = download_to_file(
        &client,
        &report.files[0].file_hash,
        None,
        &out,
        // Flushed before the rename, as `cas download --sync` asks.
        &DownloadOptions {
            sync: true,
            ..DownloadOptions::default()
        },
    )
    .await
    .expect("download to file");
    assert!(r.verified && r.fetches >= 1);
    assert_eq!(std::fs::read(&out).unwrap(), random);
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        1,
        "no temporary file left behind"
    );

    // Byte ranges, including ones starting and ending mid-chunk.
    let len = random.len() as u64;
    let h = report.files[0].file_hash;
    let cases = [
        ByteRange::inclusive(0, 0).unwrap(),
        ByteRange::inclusive(1_000_001, 2_500_000).unwrap(),
        ByteRange::inclusive(70_000, 70_099).unwrap(),
        ByteRange::inclusive(len - 10, len - 1).unwrap(),
        ByteRange::from_start(4_000_000),
        ByteRange::inclusive(0, len - 1).unwrap(),
        ByteRange::inclusive(4_999_000, len + 1000).unwrap(),
    ];
    for range in cases {
        let want = range.clamp(len).unwrap();
        let got = download(&client, &h, Some(range)).await;
        assert_eq!(
            got,
            &random[want.start as usize..want.end as usize],
            "range {range}"
        );
    }
    // Ranges of the repeated zero chunk.
    let zr = ByteRange::inclusive(200_000, 2_000_000).unwrap();
    assert_eq!(
        download(&client, &report.files[1].file_hash, Some(zr)).await,
        &zeros[200_000..=2_000_000]
    );
    // A range starting at the end of the file is refused.
    let err = download_bytes(
        &client,
        &h,
        Some(ByteRange::from_start(len)),
        &DownloadOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.is_range_not_satisfiable(), "{err}");

    // A hash the server does not know: a typed not-found, and no output file.
    let unknown = expected_hash(b"never uploaded");
    let err = download_bytes(&client, &unknown, None, &DownloadOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(matches!(err, TransferError::Xet(XetError::NotFound { .. })));
    let missing_out = out_dir.join("unknown.bin");
    let err = download_to_file(
        &client,
        &unknown,
        None,
        &missing_out,
        &DownloadOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.is_not_found());
    assert!(!missing_out.exists());
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 1);

    server.server.verify_integrity().await.expect("integrity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_copy_is_deduplicated_through_global_dedup() {
    let server = Server::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let base = datasets::random(7, 5 << 20);
    let first = upload(&server.client(), &[write(work.path(), "base", &base)]).await;
    assert_eq!(first.new_bytes, base.len() as u64);

    // A fresh client and upload: only the server's dedup answer can tell it about `base`.
    let mut edited = base.clone();
    edited[2_600_000] ^= 0xFF;
    let client = server.client();
    let second = upload(&client, &[write(work.path(), "edited", &edited)]).await;
    assert!(second.dedup_hits >= 1, "{second:?}");
    assert!(
        second.new_bytes <= 2 * (128 << 10),
        "re-packed {} bytes",
        second.new_bytes
    );
    assert!(
        second.bytes_sent() < edited.len() as u64 / 10,
        "sent {} bytes for a one-byte edit of {} bytes",
        second.bytes_sent(),
        edited.len()
    );
    let h = second.files[0].file_hash;
    assert_eq!(h, expected_hash(&edited));
    let recon = client
        .reconstruction(&h, None)
        .await
        .expect("reconstruction");
    assert!(
        recon.terms.len() >= 3,
        "old, new, old: {} terms",
        recon.terms.len()
    );
    assert_eq!(download(&client, &h, None).await, edited);
    // One URL per range: the terms of `base`'s xorb come from two fetch entries.
    server.server.client().set_max_ranges_per_fetch(1);
    let recon = client
        .reconstruction(&h, None)
        .await
        .expect("reconstruction");
    assert!(recon.xorbs.values().any(|fetches| fetches.len() >= 2));
    assert_eq!(download(&client, &h, None).await, edited);
    let r = ByteRange::inclusive(2_500_000, 2_700_000).unwrap();
    assert_eq!(
        download(&client, &h, Some(r)).await,
        &edited[2_500_000..=2_700_000]
    );

    // Answers that carry a key expiry (the server cuts them down to their xorbs) work too.
    server
        .server
        .client()
        .set_global_dedup_shard_expiration(Some(Duration::from_secs(3600)));
    let mut again = base.clone();
    again[1_000_000] ^= 0x55;
    let third = upload(&server.client(), &[write(work.path(), "again", &again)]).await;
    assert!(third.dedup_hits >= 1, "{third:?}");
    assert!(third.bytes_sent() < again.len() as u64 / 10, "{third:?}");
    assert_eq!(
        download(&client, &third.files[0].file_hash, None).await,
        again
    );

    // Uploading the same file again sends no xorb at all.
    let repeat = upload(&server.client(), &[work.path().join("base")]).await;
    assert_eq!(repeat.new_bytes, 0);
    assert_eq!(repeat.xorbs_sent, 0);
    assert_eq!(repeat.files[0].file_hash, first.files[0].file_hash);
    server.server.verify_integrity().await.expect("integrity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_send_one_shard_each_and_dedup_across_batches() {
    let server = Server::start().await;
    let client = server.client();
    let work = tempfile::tempdir().expect("tempdir");
    let a = datasets::random(21, 3 << 20);
    let c = datasets::mixed(22, 2 << 20);
    let paths = [
        write(work.path(), "a", &a),
        write(work.path(), "b-copy-of-a", &a),
        write(work.path(), "c", &c),
    ];
    let small_batches = UploadOptions {
        batch_bytes: 1 << 20,
        ..opts()
    };
    let report = upload_paths(&client, &paths, &small_batches)
        .await
        .expect("upload");
    assert_eq!(report.shards_sent, 3, "{report:?}");
    assert_eq!(
        report.files[1].new_bytes, 0,
        "the copy dedups against batch 1"
    );
    assert_eq!(report.files[0].file_hash, report.files[1].file_hash);
    for (f, data) in report.files.iter().zip([&a, &a, &c]) {
        assert_eq!(&download(&client, &f.file_hash, None).await, data);
    }
    server.server.verify_integrity().await.expect("integrity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_v1_endpoints() {
    let server = Server::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let data = datasets::mixed(3, 2 << 20);
    let path = write(work.path(), "mixed", &data);

    // 501: both shard uploads and reconstructions fall back, and remember it.
    server.server.client().disable_v2_endpoints(501);
    let client = server.client();
    let report = upload(&client, std::slice::from_ref(&path)).await;
    assert!(client.uses_v1_shards());
    let h = report.files[0].file_hash;
    assert_eq!(download(&client, &h, None).await, data);
    assert!(client.uses_v1_reconstructions());
    let r = ByteRange::inclusive(12_345, 1_234_567).unwrap();
    assert_eq!(
        download(&client, &h, Some(r)).await,
        &data[12_345..=1_234_567]
    );

    // 404 on /v2/shards: shard uploads fall back too.
    server.server.client().disable_v2_endpoints(404);
    let other = datasets::text(4, 1 << 20);
    let fresh = server.client();
    let report = upload(&fresh, &[write(work.path(), "text", &other)]).await;
    assert!(fresh.uses_v1_shards());
    assert!(!fresh.uses_v1_reconstructions());

    server.server.client().disable_v2_endpoints(0);
    assert_eq!(
        download(&fresh, &report.files[0].file_hash, None).await,
        other
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_error_frames_are_typed_errors() {
    let server = Server::start().await;
    let client = server.client();
    let work = tempfile::tempdir().expect("tempdir");
    let path = write(work.path(), "f", &datasets::random(5, 300_000));

    server.set_config("shard_upload_error_frame", "fatal").await;
    let err = upload_paths(&client, std::slice::from_ref(&path), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Xet(XetError::ShardRejected {
                retryable: false,
                ..
            })
        ),
        "{err}"
    );

    server
        .set_config("shard_upload_error_frame", "retryable")
        .await;
    let err = upload_paths(&client, std::slice::from_ref(&path), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Xet(XetError::ShardRejected {
                retryable: true,
                ..
            })
        ),
        "{err}"
    );

    server.set_config("shard_upload_error_frame", "off").await;
    let report = upload(&client, &[path]).await;
    assert_eq!(report.shards_sent, 1);
    assert!(!client.uses_v1_shards());
    let h = report.files[0].file_hash;
    assert_eq!(
        download(&client, &h, None).await,
        datasets::random(5, 300_000)
    );
}
