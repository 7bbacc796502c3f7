//! Crash safety: `kill -9` a real node while uploads are in flight, restart it on the
//! same data, and check that every acknowledged upload downloads byte-identical and
//! that an unacknowledged one is either absent or complete, never partial.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use cas_client::transfer::{DownloadOptions, UploadOptions, download_bytes, upload_paths};
use cas_client::xet::{RetryPolicy, XetClient, XetClientConfig};
use cas_core::hash::MerkleHash;
use rand::{Rng, SeedableRng};
use support::DemoNode;

fn client(node: &DemoNode) -> XetClient {
    let config = XetClientConfig::new(&node.endpoint)
        .with_token(&node.token)
        .with_retry(RetryPolicy::none());
    XetClient::with_config(config).expect("client")
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
    let mut in_doubt: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut next = 0u64;
    for round in 0..3u64 {
        // A few uploads that complete.
        for _ in 0..3 {
            let (path, data) = file(dir.path(), next);
            next += 1;
            let report = upload_paths(&client(&node), &[path], &UploadOptions::default())
                .await
                .expect("upload");
            acknowledged.push((report.files[0].file_hash, data));
        }
        // One upload in flight when the node is killed.
        let (path, data) = file(dir.path(), next);
        next += 1;
        let c = client(&node);
        let p = path.clone();
        let task =
            tokio::spawn(async move { upload_paths(&c, &[p], &UploadOptions::default()).await });
        tokio::time::sleep(Duration::from_millis(5 + 20 * round)).await;
        node.kill9();
        match task.await.expect("upload task") {
            Ok(report) => acknowledged.push((report.files[0].file_hash, data)),
            Err(_) => in_doubt.push((path, data)),
        }
        node.restart();
    }

    let c = client(&node);
    for (hash, data) in &acknowledged {
        let (got, _) = download_bytes(&c, hash, None, &DownloadOptions::default())
            .await
            .unwrap_or_else(|e| panic!("acknowledged file {hash} lost after kill -9: {e}"));
        assert!(
            got == *data,
            "acknowledged file {hash} differs after kill -9"
        );
    }
    for (_, data) in &in_doubt {
        let chunks = cas_core::chunking::chunk_and_hash(data);
        let hash = cas_core::chunking::file_hash_of_chunks(&chunks);
        match download_bytes(&c, &hash, None, &DownloadOptions::default()).await {
            Ok((got, _)) => assert!(
                got == *data,
                "an unacknowledged file is visible but differs"
            ),
            Err(e) => assert!(
                e.is_not_found(),
                "unexpected error for an unacknowledged file: {e}"
            ),
        }
    }
    // The node still takes writes after the crashes.
    let (path, data) = file(dir.path(), next);
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
