//! Compatibility with the real Xet client, `hf_xet` from PyPI, against a real
//! `cas-node demo` process: uploads by either client download byte-identical with the
//! other, and a second upload of an edited file is deduplicated.
//!
//! Needs `python3` with `hf_xet` installed (`scripts/setup.sh` does it).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cas_client::transfer::{DownloadOptions, UploadOptions, download_bytes, upload_paths};
use cas_client::xet::XetClient;
use cas_core::hash::MerkleHash;
use cas_core::shard::parse_shard;
use rand::{Rng, SeedableRng};
use support::{DemoNode, ExternalS3};

/// The driver script, in the checkout being tested (cargo's run-time
/// `CARGO_MANIFEST_DIR`, falling back to the compile-time one).
fn driver_script() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("tests/python/hf_xet_driver.py")
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Runs the driver; panics with its stderr on failure.
fn driver(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(driver_script())
        .args(args)
        .env(
            "HF_XET_CACHE",
            std::env::temp_dir().join("cas-hf-xet-test-cache"),
        )
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "hf_xet {:?} failed: {}",
        args.first(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Uploads with hf_xet; returns (hash, size) per file.
fn hf_upload(node: &DemoNode, files: &[PathBuf]) -> Vec<(String, u64)> {
    let mut args = vec!["upload", &node.endpoint, &node.token];
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    driver(&args)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("driver JSON");
            (
                v["hash"].as_str().unwrap().to_owned(),
                v["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn hf_download(node: &DemoNode, hash: &str, size: u64, out: &Path) -> Vec<u8> {
    driver(&[
        "download",
        &node.endpoint,
        &node.token,
        hash,
        &size.to_string(),
        &out.display().to_string(),
    ]);
    std::fs::read(out).expect("downloaded file")
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        total += if p.is_dir() {
            dir_bytes(&p)
        } else {
            e.metadata().map(|m| m.len()).unwrap_or(0)
        };
    }
    total
}

fn write_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut zeros_then_random = vec![0u8; 1_500_000];
    zeros_then_random.extend_from_slice(&random_bytes(2_000_000, 11));
    let text: Vec<u8> = (0..200_000)
        .flat_map(|i| format!("line {i}: some text\n").into_bytes())
        .collect();
    let files = vec![
        ("random.bin", random_bytes(6_000_000, 10)),
        ("mixed.bin", zeros_then_random),
        ("text.txt", text),
        ("small.txt", b"hello".to_vec()),
    ];
    files
        .into_iter()
        .map(|(name, data)| {
            let p = dir.join(name);
            std::fs::write(&p, &data).expect("write");
            (p, data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hf_xet_uploads_and_cas_downloads_and_the_reverse() {
    hf_xet_uploads_and_cas_downloads_and_the_reverse_on(DemoNode::start()).await;
}

/// The same against Garage (CI runs it; skipped when `GARAGE_ENDPOINT` is not set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hf_xet_uploads_and_cas_downloads_and_the_reverse_on_garage() {
    if let Some(s3) = ExternalS3::garage() {
        hf_xet_uploads_and_cas_downloads_and_the_reverse_on(DemoNode::start_with(Some(s3))).await;
    }
}

/// hf_xet and `cas` against `node`, each downloading what the other uploaded.
async fn hf_xet_uploads_and_cas_downloads_and_the_reverse_on(node: DemoNode) {
    let dir = tempfile::tempdir().unwrap();
    let client = XetClient::new(&node.endpoint, Some(&node.token)).unwrap();

    // hf_xet uploads, cas downloads.
    let up = dir.path().join("hf");
    std::fs::create_dir(&up).unwrap();
    let files = write_files(&up);
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let uploaded = hf_upload(&node, &paths);
    for ((_, data), (hash, size)) in files.iter().zip(&uploaded) {
        assert_eq!(*size, data.len() as u64);
        let hash = MerkleHash::from_hex(hash).unwrap();
        let (got, report) = download_bytes(&client, &hash, None, &DownloadOptions::default())
            .await
            .unwrap();
        assert!(got == *data, "cas download of an hf_xet upload differs");
        assert!(report.verified);
    }

    // cas uploads, hf_xet downloads.
    let ours = dir.path().join("cas");
    std::fs::create_dir(&ours).unwrap();
    let mut other = random_bytes(5_000_000, 12);
    other[..100].copy_from_slice(&[7u8; 100]);
    std::fs::write(ours.join("other.bin"), &other).unwrap();
    std::fs::write(ours.join("text.txt"), &files[2].1).unwrap();
    let report = upload_paths(
        &client,
        std::slice::from_ref(&ours),
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    for f in &report.files {
        let out = dir.path().join("hf-download.bin");
        let got = hf_download(&node, &f.file_hash.to_hex(), f.size, &out);
        assert!(
            got == std::fs::read(&f.path).unwrap(),
            "hf_xet download of a cas upload differs: {}",
            f.path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hf_xet_second_upload_of_an_edited_file_is_deduplicated() {
    let node = DemoNode::start();
    let dir = tempfile::tempdir().unwrap();
    let original = random_bytes(16_000_000, 20);
    let a = dir.path().join("v1.bin");
    std::fs::write(&a, &original).unwrap();
    let first = hf_upload(&node, std::slice::from_ref(&a));

    let mut edited = original.clone();
    edited[8_000_000..8_000_010].copy_from_slice(b"0123456789");
    let b = dir.path().join("v2.bin");
    std::fs::write(&b, &edited).unwrap();
    let stored_before = dir_bytes(&node.s3_root());
    let second = hf_upload(&node, std::slice::from_ref(&b));
    let growth = dir_bytes(&node.s3_root()) - stored_before;
    assert_ne!(first[0].0, second[0].0);
    assert!(
        growth < 1_500_000,
        "storing the edited 16 MB file added {growth} bytes"
    );

    let out = dir.path().join("out.bin");
    assert!(hf_download(&node, &second[0].0, second[0].1, &out) == edited);
    let client = XetClient::new(&node.endpoint, Some(&node.token)).unwrap();
    let hash = MerkleHash::from_hex(&first[0].0).unwrap();
    let (got, _) = download_bytes(&client, &hash, None, &DownloadOptions::default())
        .await
        .unwrap();
    assert!(got == original);
}

/// The SHA-256 each file of the shards stored since `before` was registered with.
fn registered_sha256(
    node: &DemoNode,
    before: &std::collections::BTreeSet<String>,
) -> Vec<(MerkleHash, Option<[u8; 32]>)> {
    let mut out = Vec::new();
    for path in node.s3_objects().difference(before) {
        if !path.contains("shards/") {
            continue;
        }
        let bytes = std::fs::read(node.s3_root().join(path)).expect("stored shard");
        let parsed = parse_shard(&bytes).expect("stored shard parses");
        out.extend(parsed.shard.files.iter().map(|f| (f.file_hash, f.sha256)));
    }
    out
}

/// `cas upload` with `sha256` (the CLI's `--sha256`) registers a file with the
/// same SHA-256 as hf_xet does, through the live node; without it, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_registers_the_sha256_hf_xet_registers() {
    let node = DemoNode::start();
    let dir = tempfile::tempdir().unwrap();
    let client = XetClient::new(&node.endpoint, Some(&node.token)).unwrap();
    let data = random_bytes(3_000_000, 30);
    let mut registered = Vec::new();
    for (name, who) in [
        ("hf.bin", "hf_xet"),
        ("cas.bin", "cas --sha256"),
        ("plain.bin", "cas"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &data).unwrap();
        let before = node.s3_objects();
        if who == "hf_xet" {
            hf_upload(&node, std::slice::from_ref(&path));
        } else {
            let opts = UploadOptions {
                sha256: who == "cas --sha256",
                ..UploadOptions::default()
            };
            upload_paths(&client, std::slice::from_ref(&path), &opts)
                .await
                .unwrap();
        }
        let files = registered_sha256(&node, &before);
        assert_eq!(files.len(), 1, "{who}: {files:?}");
        registered.push(files[0]);
    }
    let (hf, with, without) = (registered[0], registered[1], registered[2]);
    assert_eq!(hf.0, with.0, "the same file hash");
    assert!(hf.1.is_some(), "hf_xet registers a SHA-256");
    assert_eq!(with.1, hf.1, "cas --sha256 registers hf_xet's SHA-256");
    assert_eq!(without, (hf.0, None));
}
