//! The local shard cache against an in-memory server that, like ours, refuses a
//! shard naming a xorb it does not hold and answers no global-dedup query: what
//! an upload re-uses there, it learned from the cache alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use cas_client::cache::LocalCache;
use cas_client::transfer::{DedupAnswers, TransferError, Transport, UploadOptions, upload_paths};
use cas_client::xet::{ByteRange, Fetcher, ReconstructionV2, RetryPolicy, XetError};
use cas_compat::datasets;
use cas_core::MerkleHash;
use cas_core::shard::parse_shard;
use reqwest::StatusCode;
use sha2::Digest;

/// A CAS server in memory.
struct MemServer {
    /// Stored xorbs and their sizes.
    xorbs: Mutex<HashMap<MerkleHash, usize>>,
    /// Registered files: hash and SHA-256.
    files: Mutex<Vec<(MerkleHash, Option<[u8; 32]>)>>,
    fetcher: Fetcher,
}

impl MemServer {
    fn new() -> Self {
        MemServer {
            xorbs: Mutex::new(HashMap::new()),
            files: Mutex::new(Vec::new()),
            fetcher: Fetcher::new(reqwest::Client::new(), RetryPolicy::none()),
        }
    }

    /// Bytes of all stored xorbs (the bucket).
    fn stored_bytes(&self) -> usize {
        self.xorbs.lock().unwrap().values().sum()
    }

    /// Forgets every xorb and file (a different cluster behind the same address).
    fn reset(&self) {
        self.xorbs.lock().unwrap().clear();
        self.files.lock().unwrap().clear();
    }
}

impl Transport for MemServer {
    async fn query_dedup(&self, chunks: Vec<MerkleHash>, _concurrency: usize) -> DedupAnswers {
        let _ = chunks;
        DedupAnswers::default()
    }

    async fn upload_xorb(&self, hash: MerkleHash, bytes: Bytes) -> Result<bool, TransferError> {
        Ok(self
            .xorbs
            .lock()
            .unwrap()
            .insert(hash, bytes.len())
            .is_none())
    }

    async fn upload_shard(&self, shard: Bytes) -> Result<(), TransferError> {
        let parsed = parse_shard(&shard)?;
        let xorbs = self.xorbs.lock().unwrap();
        for f in &parsed.shard.files {
            for t in &f.terms {
                if !xorbs.contains_key(&t.xorb_hash) {
                    let body = format!(r#"{{"code":"unknown_xorb","message":"{}"}}"#, t.xorb_hash);
                    return Err(XetError::from_status(
                        StatusCode::BAD_REQUEST,
                        "/shards",
                        body.as_bytes(),
                    )
                    .into());
                }
            }
        }
        drop(xorbs);
        let mut files = self.files.lock().unwrap();
        files.extend(parsed.shard.files.iter().map(|f| (f.file_hash, f.sha256)));
        Ok(())
    }

    async fn reconstruction(
        &self,
        file: MerkleHash,
        _range: Option<ByteRange>,
    ) -> Result<ReconstructionV2, TransferError> {
        Err(XetError::from_status(StatusCode::NOT_FOUND, &file.to_hex(), b"").into())
    }

    fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }
}

fn opts(cache_root: &Path) -> UploadOptions {
    UploadOptions {
        cache: Some(LocalCache::new(cache_root, "http://mem", 64 << 20)),
        sha256: true,
        ..UploadOptions::default()
    }
}

/// A JSON-lines-like file of about `len` bytes.
fn lines(seed: u64, len: usize) -> Vec<u8> {
    datasets::text(seed, len)
}

/// `data` with one line near the middle rewritten (`insert`: a line added there instead).
fn edit(data: &[u8], insert: bool) -> Vec<u8> {
    let mid = data.len() / 2;
    let at = mid + data[mid..].iter().position(|&b| b == b'\n').unwrap_or(0) + 1;
    let mut out = data[..at].to_vec();
    out.extend_from_slice(b"{\"edited\": \"this line is new\"}\n");
    let skip = if insert {
        0
    } else {
        data[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
    };
    out.extend_from_slice(&data[at + skip..]);
    out
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[tokio::test]
async fn an_edited_file_reuses_every_xorb_of_its_first_version() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let server = MemServer::new();
    let v1 = lines(7, 24 << 20);
    let path = write(dir.path(), "data.jsonl", &v1);
    let first = upload_paths(&server, std::slice::from_ref(&path), &opts(&cache))
        .await
        .unwrap();
    assert!(first.xorbs_sent >= 1);
    let bucket_v1 = server.stored_bytes();

    let mut registered = Vec::new();
    for insert in [false, true] {
        std::fs::write(&path, edit(&v1, insert)).unwrap();
        let before = server.stored_bytes();
        let r = upload_paths(&server, std::slice::from_ref(&path), &opts(&cache))
            .await
            .unwrap();
        assert!(r.cache_shards_used >= 1 && !r.cache_dropped);
        // The fast path verified v1's chunks instead of chunking the file again.
        assert!(r.chunks_reused > 300, "{} chunks reused", r.chunks_reused);
        registered.push(server.files.lock().unwrap().last().copied().unwrap());
        // One or two chunks change: a few hundred KiB at most, against 24 MiB.
        assert!(
            r.bytes_sent() < 1 << 20,
            "insert={insert}: sent {} of {} bytes",
            r.bytes_sent(),
            r.bytes_read
        );
        assert!(r.new_bytes < 512 << 10, "new bytes {}", r.new_bytes);
        let grown = server.stored_bytes() - before;
        assert!(
            grown * 40 < bucket_v1,
            "bucket grew by {grown} after {bucket_v1}"
        );
    }

    // Without the cache, the same edits are packed and sent again whole (this
    // server answers no dedup query), and registered exactly as with it.
    for (insert, with_cache) in [false, true].into_iter().zip(registered) {
        std::fs::write(&path, edit(&v1, insert)).unwrap();
        let plain = upload_paths(
            &server,
            std::slice::from_ref(&path),
            &UploadOptions {
                sha256: true,
                ..UploadOptions::default()
            },
        )
        .await
        .unwrap();
        assert!(plain.new_bytes > 20 << 20 && plain.chunks_reused == 0);
        let without = server.files.lock().unwrap().last().copied().unwrap();
        assert_eq!(with_cache, without);
        assert_eq!(
            without.1.unwrap(),
            <[u8; 32]>::from(sha2::Sha256::digest(edit(&v1, insert)))
        );
    }

    // By default no SHA-256 is computed: the same file, registered without one,
    // from the manifest the uploads above left.
    let r = upload_paths(
        &server,
        std::slice::from_ref(&path),
        &UploadOptions {
            sha256: false,
            ..opts(&cache)
        },
    )
    .await
    .unwrap();
    assert!(r.chunks_reused > 300, "{} chunks reused", r.chunks_reused);
    let (hash, sha256) = server.files.lock().unwrap().last().copied().unwrap();
    assert_eq!(hash, r.files[0].file_hash);
    assert_eq!(sha256, None, "no SHA-256 unless asked for");
}

#[tokio::test]
async fn a_corrupt_cache_is_ignored_and_a_stale_one_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cache_root = dir.path().join("cache");
    let server = MemServer::new();
    let v1 = datasets::mixed(3, 6 << 20);
    let path = write(dir.path(), "f", &v1);
    let o = opts(&cache_root);
    upload_paths(&server, std::slice::from_ref(&path), &o)
        .await
        .unwrap();

    // Corrupt every cached shard: the upload succeeds, the files are removed.
    let shard_dir = o.cache.as_ref().unwrap().shards.dir().to_path_buf();
    let cached: Vec<_> = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!cached.is_empty());
    for p in &cached {
        let mut b = std::fs::read(p).unwrap();
        let n = b.len();
        b[n / 2] ^= 0xFF;
        std::fs::write(p, &b).unwrap();
    }
    let r = upload_paths(&server, std::slice::from_ref(&path), &o)
        .await
        .unwrap();
    assert_eq!(r.cache_shards_used, 0);
    // Removed, then written again whole by this upload (same xorbs, same shard).
    for p in &cached {
        if let Ok(b) = std::fs::read(p) {
            let name = cas_core::hash::shard_hash(&b).to_hex();
            assert_eq!(p.file_stem().unwrap().to_str(), Some(name.as_str()));
        }
    }

    // An unreadable cache directory (a file in its place) does not fail the upload.
    let blocked = tempfile::tempdir().unwrap();
    std::fs::write(blocked.path().join("shards"), b"not a directory").unwrap();
    upload_paths(&server, std::slice::from_ref(&path), &opts(blocked.path()))
        .await
        .unwrap();

    // A cache naming xorbs the server lost: refused once, dropped, uploaded whole.
    server.reset();
    let r = upload_paths(&server, std::slice::from_ref(&path), &o)
        .await
        .unwrap();
    assert!(r.cache_dropped);
    assert_eq!(r.new_bytes, v1.len() as u64);
    assert_eq!(server.files.lock().unwrap().len(), 1);
    // The cache now describes the new store and serves the next upload.
    let r = upload_paths(&server, &[path], &o).await.unwrap();
    assert!(!r.cache_dropped && r.cache_shards_used >= 1 && r.new_bytes == 0);
}
