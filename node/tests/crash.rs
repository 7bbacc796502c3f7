//! Crash safety: `kill -9` a real node at chosen points of an upload (while a xorb
//! is being sent, after the xorbs were acknowledged but before the shard, while the
//! shard is being sent), over both APIs; restart it on the same data; check that
//! every acknowledged upload downloads byte-identical and that an unacknowledged one
//! is either absent or complete, never partial.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cas_client::transfer::{
    DedupAnswers, DownloadOptions, Remote, TransferError, Transport, UploadOptions, download_bytes,
    upload_paths,
};
use cas_client::xet::{ByteRange, Fetcher, ReconstructionV2, RetryPolicy};
use cas_core::hash::MerkleHash;
use rand::{Rng, SeedableRng};
use support::DemoNode;
use tokio::sync::Notify;

/// Where in an upload the node is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KillPoint {
    /// As the first xorb request starts.
    DuringXorb,
    /// Once every xorb was acknowledged, before the shard is sent.
    BeforeShard,
    /// As the shard request starts.
    DuringShard,
}

/// A transport that announces when the upload reaches its kill point (and, for
/// [`KillPoint::BeforeShard`], waits there until released).
struct Tripwire {
    inner: Remote,
    at: KillPoint,
    fired: AtomicBool,
    reached: Arc<Notify>,
    released: Arc<Notify>,
}

impl Tripwire {
    /// Announces the kill point, once.
    fn fire(&self, point: KillPoint) -> bool {
        let hit = self.at == point && !self.fired.swap(true, Ordering::SeqCst);
        if hit {
            self.reached.notify_one();
        }
        hit
    }
}

impl Transport for Tripwire {
    async fn query_dedup(&self, chunks: Vec<MerkleHash>, concurrency: usize) -> DedupAnswers {
        self.inner.query_dedup(chunks, concurrency).await
    }

    async fn upload_xorb(&self, hash: MerkleHash, bytes: Bytes) -> Result<bool, TransferError> {
        self.fire(KillPoint::DuringXorb);
        self.inner.upload_xorb(hash, bytes).await
    }

    async fn upload_shard(&self, shard: Bytes) -> Result<(), TransferError> {
        if self.fire(KillPoint::BeforeShard) {
            self.released.notified().await;
        }
        self.fire(KillPoint::DuringShard);
        self.inner.upload_shard(shard).await
    }

    async fn reconstruction(
        &self,
        file: MerkleHash,
        range: Option<ByteRange>,
    ) -> Result<ReconstructionV2, TransferError> {
        self.inner.reconstruction(file, range).await
    }

    fn fetcher(&self) -> &Fetcher {
        self.inner.fetcher()
    }
}

fn client(node: &DemoNode, grpc: bool) -> Remote {
    let endpoint = if grpc {
        &node.grpc_endpoint
    } else {
        &node.endpoint
    };
    Remote::connect(endpoint, Some(&node.token), RetryPolicy::none()).expect("client")
}

fn file(dir: &std::path::Path, i: u64) -> (PathBuf, Vec<u8>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + i);
    let mut data = vec![0u8; 1_000_000 + (i as usize % 7) * 300_000];
    rng.fill(&mut data[..]);
    let path = dir.join(format!("f{i}.bin"));
    std::fs::write(&path, &data).expect("write");
    (path, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_uploads_survive_kill_9() {
    let mut node = DemoNode::start();
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<(MerkleHash, Vec<u8>)> = Vec::new();
    // Unacknowledged uploads, and whether they must be absent (the shard was never sent).
    let mut in_doubt: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut next = 0u64;
    let rounds = [
        KillPoint::DuringXorb,
        KillPoint::BeforeShard,
        KillPoint::DuringShard,
    ];
    for (round, at) in rounds
        .into_iter()
        .flat_map(|p| [(0, p), (1, p)])
        .enumerate()
    {
        let grpc = round % 2 == 1;
        // A few uploads that complete.
        for _ in 0..2 {
            let (path, data) = file(dir.path(), next);
            next += 1;
            let report = upload_paths(&client(&node, grpc), &[path], &UploadOptions::default())
                .await
                .expect("upload");
            acknowledged.push((report.files[0].file_hash, data));
        }
        // One upload stopped at its kill point.
        let (path, data) = file(dir.path(), next);
        next += 1;
        let reached = Arc::new(Notify::new());
        let released = Arc::new(Notify::new());
        let wire = Tripwire {
            inner: client(&node, grpc),
            at: at.1,
            fired: AtomicBool::new(false),
            reached: reached.clone(),
            released: released.clone(),
        };
        let task =
            tokio::spawn(
                async move { upload_paths(&wire, &[path], &UploadOptions::default()).await },
            );
        tokio::time::timeout(Duration::from_secs(60), reached.notified())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the upload never reached {at:?}"));
        node.kill9();
        released.notify_one();
        let outcome = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("the upload ends once the node is gone")
            .expect("upload task");
        match (at.1, outcome) {
            (KillPoint::DuringShard, Ok(report)) => {
                acknowledged.push((report.files[0].file_hash, data))
            }
            (KillPoint::DuringShard, Err(_)) => in_doubt.push((data, false)),
            (_, Ok(_)) => panic!("round {round}: an upload killed at {at:?} was acknowledged"),
            (_, Err(_)) => in_doubt.push((data, true)),
        }
        node.restart();
    }

    let c = client(&node, false);
    for (hash, data) in &acknowledged {
        let (got, _) = download_bytes(&c, hash, None, &DownloadOptions::default())
            .await
            .unwrap_or_else(|e| panic!("acknowledged file {hash} lost after kill -9: {e}"));
        assert!(
            got == *data,
            "acknowledged file {hash} differs after kill -9"
        );
    }
    for (data, must_be_absent) in &in_doubt {
        let chunks = cas_core::chunking::chunk_and_hash(data);
        let hash = cas_core::chunking::file_hash_of_chunks(&chunks);
        match download_bytes(&c, &hash, None, &DownloadOptions::default()).await {
            Ok((got, _)) => {
                assert!(
                    !must_be_absent,
                    "file {hash} is visible though its shard was never sent"
                );
                assert!(
                    got == *data,
                    "an unacknowledged file is visible but differs"
                );
            }
            Err(e) => assert!(
                e.is_not_found(),
                "unexpected error for an unacknowledged file: {e}"
            ),
        }
    }
    // The node still takes writes after the crashes, over both APIs.
    for grpc in [false, true] {
        let (path, data) = file(dir.path(), next);
        next += 1;
        let c = client(&node, grpc);
        let report = upload_paths(&c, &[path], &UploadOptions::default())
            .await
            .expect("upload after restarts");
        let (got, _) = download_bytes(
            &c,
            &report.files[0].file_hash,
            None,
            &DownloadOptions::default(),
        )
        .await
        .unwrap();
        assert!(got == data);
    }
}
