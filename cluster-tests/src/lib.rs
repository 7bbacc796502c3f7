//! The cluster-test harness: a [`LocalCluster`] of real `cas-node` processes in
//! simulated regions with the embedded S3 server, a [`Workload`] of concurrent
//! uploads through every region that runs while a scenario injects faults, and the
//! [`check`]er that every acknowledged upload downloads byte-identical from every
//! node.
//!
//! Every loop here is bounded: uploads stop when asked or after their time limit,
//! waits have deadlines.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cas_client::transfer::{DownloadOptions, Remote, UploadOptions, download_bytes, upload_files};
use cas_client::xet::RetryPolicy;
use cas_core::MerkleHash;
use cas_node::auth::Scope;
use cas_node::local_cluster::{
    ClusterNetwork, ClusterStatus, Layout, LocalCluster, LocalClusterSpec, RegionNetwork,
};
use rand::{Rng, SeedableRng};

pub use cas_node::local_cluster;

pub mod history;

/// The `cas-node` executable `cargo test --workspace` built next to this test binary.
pub fn node_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/cas-node
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("the test binary is in target/<profile>/deps");
    let node = dir.join("cas-node");
    assert!(
        node.exists(),
        "{} is missing: build it first (`cargo build -p cas-node`; `cargo test --workspace` does)",
        node.display()
    );
    node
}

/// The layout the fault scenarios run on: `CAS_CLUSTER_LAYOUT` (e.g. the full
/// `us-east-1=4,eu-west-3=4,ap-southeast-1=2`), by default 2/2/1 nodes, which keeps
/// the whole suite within a few minutes on two cores. Regions are listed in this
/// order: us-east-1, eu-west-3, ap-southeast-1.
pub fn scenario_layout() -> String {
    std::env::var("CAS_CLUSTER_LAYOUT")
        .unwrap_or_else(|_| "us-east-1=2,eu-west-3=2,ap-southeast-1=1".to_owned())
}

/// How the scenarios' nodes are networked: `CAS_CLUSTER_NET=netns` puts each region
/// in its own Linux network namespace (root only: partitions are packets the kernel
/// drops, latency is `netem`'s where the kernel has it), by default loopback.
pub fn scenario_network() -> ClusterNetwork {
    let net: ClusterNetwork = std::env::var("CAS_CLUSTER_NET")
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("CAS_CLUSTER_NET: {e}"));
    assert!(
        net == ClusterNetwork::Loopback || RegionNetwork::available(),
        "CAS_CLUSTER_NET=netns needs root, `ip` and `iptables`"
    );
    net
}

/// A cluster for one test, in its own temporary directory (kept when the test fails,
/// so the node logs can be read).
pub struct TestCluster {
    /// The cluster.
    pub cluster: LocalCluster,
    /// A write-scoped token.
    pub token: String,
    dir: Option<tempfile::TempDir>,
    keep_on_panic: bool,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.keep_on_panic
            && std::thread::panicking()
            && let Some(d) = self.dir.take()
        {
            eprintln!(
                "cluster directory (node logs) kept in {}",
                d.keep().display()
            );
        }
    }
}

impl TestCluster {
    /// Starts `layout` with the inter-region latency simulated.
    pub async fn start(layout: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cas-cluster-test-")
            .tempdir()
            .expect("temp dir");
        let layout: Layout = layout.parse().expect("layout");
        let cluster = LocalCluster::start(LocalClusterSpec {
            layout,
            base_dir: dir.path().to_owned(),
            exe: node_exe(),
            simulate_region_latency: true,
            log_filter: "warn,cas_node=info".into(),
            fault_injection: true,
            network: scenario_network(),
        })
        .await
        .unwrap_or_else(|e| panic!("cluster start: {e} (logs in {})", dir.path().display()));
        let token = cluster.token(&[Scope::Write]).expect("token");
        TestCluster {
            cluster,
            token,
            dir: Some(dir),
            keep_on_panic: false,
        }
    }

    /// Keeps the cluster directory (node logs) when the test panics, and says where.
    pub fn keep_logs_on_panic(&mut self) {
        self.keep_on_panic = true;
    }

    /// An HTTP client of node `id` (no retries: the workload sees failures as they are).
    pub fn client(&self, id: u64) -> Remote {
        let n = self.cluster.node(id).expect("node");
        Remote::connect(&n.http_url(), Some(&self.token), RetryPolicy::none()).expect("client")
    }

    /// The ids of the nodes in `region`, ascending.
    pub fn nodes_in(&self, region: cas_node::config::Region) -> Vec<u64> {
        self.cluster
            .nodes()
            .values()
            .filter(|n| n.region == region)
            .map(|n| n.id)
            .collect()
    }

    /// Stops the whole cluster (every node, then the S3 server) and starts it again
    /// on its data ([`LocalCluster::resume`]).
    pub async fn stop_and_resume(&mut self) {
        self.cluster.shutdown().await;
        let spec = self.cluster.spec().clone();
        self.cluster = LocalCluster::resume(spec)
            .await
            .unwrap_or_else(|e| panic!("resuming the cluster: {e}"));
    }

    /// Stops every node and the S3 server.
    pub async fn shutdown(mut self) {
        self.cluster.shutdown().await;
    }
}

/// An upload the cluster acknowledged.
#[derive(Clone)]
pub struct Acked {
    /// The file hash.
    pub hash: MerkleHash,
    /// The bytes.
    pub data: Arc<Vec<u8>>,
    /// The node that took it.
    pub via: u64,
}

/// What a workload did.
#[derive(Default)]
pub struct WorkloadReport {
    /// Uploads the cluster acknowledged.
    pub acked: Vec<Acked>,
    /// Uploads that failed (node down, leader change): not acknowledged.
    pub failed: usize,
}

/// Concurrent uploaders, each cycling through the given nodes, until stopped.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<WorkloadReport>>,
}

/// Longest a workload runs even if nobody stops it.
pub const WORKLOAD_LIMIT: Duration = Duration::from_secs(300);

impl Workload {
    /// Starts `uploaders` tasks; uploader `u` writes files of 200 KB to 1.5 MB (some
    /// sharing content with earlier ones, so dedup is exercised) through the nodes
    /// `targets` in turn, each through its own HTTP client.
    pub fn start(tc: &TestCluster, targets: &[u64], uploaders: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let clients: Vec<(u64, Remote)> = targets.iter().map(|id| (*id, tc.client(*id))).collect();
        let clients = Arc::new(clients);
        let tasks = (0..uploaders)
            .map(|u| {
                let stop = stop.clone();
                let dir = dir.clone();
                let clients = clients.clone();
                tokio::spawn(async move {
                    let mut report = WorkloadReport::default();
                    let mut rng = rand::rngs::StdRng::seed_from_u64(1_000 + u as u64);
                    let started = Instant::now();
                    let mut shared = vec![0u8; 300_000];
                    rng.fill(&mut shared[..]);
                    let mut i = 0usize;
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < WORKLOAD_LIMIT {
                        let len = rng.random_range(200_000..1_500_000);
                        let mut data = vec![0u8; len];
                        rng.fill(&mut data[..]);
                        if i.is_multiple_of(3) {
                            // Starts like earlier files: deduplicated chunks.
                            let n = shared.len().min(len);
                            data[..n].copy_from_slice(&shared[..n]);
                        }
                        let path = dir.path().join(format!("u{u}-{i}"));
                        std::fs::write(&path, &data).expect("write");
                        let (via, client) = &clients[(u + i) % clients.len()];
                        i += 1;
                        let attempt = tokio::time::timeout(
                            Duration::from_secs(30),
                            upload_files(
                                client,
                                std::slice::from_ref(&path),
                                &UploadOptions::default(),
                            ),
                        )
                        .await;
                        let _ = std::fs::remove_file(&path);
                        match attempt {
                            Ok(Ok(r)) => report.acked.push(Acked {
                                hash: r.files[0].file_hash,
                                data: Arc::new(data),
                                via: *via,
                            }),
                            _ => {
                                report.failed += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        Workload { stop, tasks }
    }

    /// Stops the uploaders and returns what they did.
    pub async fn finish(self) -> WorkloadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = WorkloadReport::default();
        for t in self.tasks {
            let r = t.await.expect("uploader task");
            all.acked.extend(r.acked);
            all.failed += r.failed;
        }
        all
    }
}

/// Downloads the checker keeps in flight per reading node.
pub const CHECK_CONCURRENCY: usize = 8;

/// Checks that every acknowledged upload downloads byte-identical (whole-file hash
/// verified) from every node in `readers`; panics naming the first that does not.
/// Each node serves [`CHECK_CONCURRENCY`] downloads at a time, the nodes one after
/// the other.
pub async fn check(tc: &TestCluster, acked: &[Acked], readers: &[u64]) {
    use futures::StreamExt;
    assert!(!acked.is_empty(), "the workload got nothing acknowledged");
    for id in readers {
        let n = tc.cluster.node(*id).expect("node");
        let client = Remote::connect(&n.http_url(), Some(&tc.token), RetryPolicy::default())
            .expect("client");
        let region = n.region;
        let client = &client;
        let mut downloads = futures::stream::iter(acked)
            .map(|a| async move {
                let got = download_bytes(client, &a.hash, None, &DownloadOptions::default()).await;
                (a, got)
            })
            .buffer_unordered(CHECK_CONCURRENCY);
        while let Some((a, got)) = downloads.next().await {
            let got = got.unwrap_or_else(|e| {
                panic!(
                    "file {} (acknowledged by node {}) cannot be read from node {id} ({region}): {e}",
                    a.hash, a.via
                )
            });
            assert!(
                got.0 == *a.data,
                "file {} differs when read from node {id}",
                a.hash
            );
        }
    }
}

/// Waits (bounded) until `cond` holds on the cluster status.
pub async fn wait_status(
    tc: &TestCluster,
    what: &str,
    within: Duration,
    cond: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = tc.cluster.status().await
            && cond(&s)
        {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writers and readers recording a [`history::History`] of index operations.
pub struct HistoryWorkload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A file a writer is about to register: its hash and its first chunk's hash.
#[derive(Clone, Copy)]
struct Announced {
    file: MerkleHash,
    first_chunk: MerkleHash,
}

impl HistoryWorkload {
    /// Starts one writer per node of `writers` (files of 100-400 KB of random bytes,
    /// each announced before its upload is invoked) and one reader per node of
    /// `readers`: each read asks for the reconstruction of a file, then its first
    /// chunk's global-dedup entry, mostly of the files announced last (so reads
    /// overlap their writes), sometimes of older ones or of files never written.
    pub fn start(
        tc: &TestCluster,
        writers: &[u64],
        readers: &[u64],
        history: Arc<history::History>,
    ) -> Self {
        use history::{Kind, Outcome};
        let stop = Arc::new(AtomicBool::new(false));
        let announced: Arc<std::sync::Mutex<Vec<Announced>>> = Arc::default();
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let client = |id: u64| {
            let n = tc.cluster.node(id).expect("node");
            cas_client::xet::XetClient::with_config(
                cas_client::xet::XetClientConfig::new(n.http_url())
                    .with_token(tc.token.clone())
                    .with_retry(RetryPolicy::none()),
            )
            .expect("client")
        };
        let mut tasks = Vec::new();
        for (w, id) in writers.iter().copied().enumerate() {
            let (stop, announced, dir, history) = (
                stop.clone(),
                announced.clone(),
                dir.clone(),
                history.clone(),
            );
            let client = client(id);
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(7_000 + w as u64);
                let started = Instant::now();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) && started.elapsed() < WORKLOAD_LIMIT {
                    let mut data = vec![0u8; rng.random_range(100_000..400_000)];
                    rng.fill(&mut data[..]);
                    let chunks = cas_core::chunking::chunk_and_hash(&data);
                    let file = cas_core::chunking::file_hash_of_chunks(&chunks);
                    let path = dir.path().join(format!("w{w}-{i}"));
                    i += 1;
                    std::fs::write(&path, &data).expect("write");
                    announced.lock().expect("announced").push(Announced {
                        file,
                        first_chunk: chunks[0].hash,
                    });
                    let invoked = history.now();
                    let r = tokio::time::timeout(
                        Duration::from_secs(30),
                        upload_files(
                            &client,
                            std::slice::from_ref(&path),
                            &UploadOptions::default(),
                        ),
                    )
                    .await;
                    let outcome = match r {
                        Ok(Ok(report)) => {
                            assert_eq!(report.files[0].file_hash, file, "file hash");
                            Outcome::Acked
                        }
                        _ => Outcome::Failed,
                    };
                    history.record(file, Kind::Write, id, invoked, outcome);
                    let _ = std::fs::remove_file(&path);
                    if outcome == Outcome::Failed {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
        for (r, id) in readers.iter().copied().enumerate() {
            let (stop, announced, history) = (stop.clone(), announced.clone(), history.clone());
            let client = client(id);
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(9_000 + r as u64);
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < WORKLOAD_LIMIT {
                    let target = {
                        let a = announced.lock().expect("announced");
                        let roll = rng.random_range(0..10);
                        if a.is_empty() || roll == 0 {
                            let mut never = || MerkleHash::from_bytes(rng.random());
                            Announced {
                                file: never(),
                                first_chunk: never(),
                            }
                        } else if roll < 8 {
                            a[a.len() - 1 - rng.random_range(0..a.len().min(3))]
                        } else {
                            a[rng.random_range(0..a.len())]
                        }
                    };
                    let invoked = history.now();
                    let outcome = match tokio::time::timeout(
                        Duration::from_secs(15),
                        client.reconstruction(&target.file, None),
                    )
                    .await
                    {
                        Ok(Ok(_)) => Outcome::Present,
                        Ok(Err(e)) if e.is_not_found() => Outcome::Absent,
                        _ => Outcome::Failed,
                    };
                    history.record(target.file, Kind::Read, id, invoked, outcome);
                    let invoked = history.now();
                    let outcome = match tokio::time::timeout(
                        Duration::from_secs(15),
                        client.query_dedup(&target.first_chunk),
                    )
                    .await
                    {
                        Ok(Ok(Some(_))) => Outcome::Present,
                        Ok(Ok(None)) => Outcome::Absent,
                        _ => Outcome::Failed,
                    };
                    // Recorded under the file: the query stands for it.
                    history.record(target.file, Kind::DedupQuery, id, invoked, outcome);
                    if outcome == Outcome::Failed {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
        HistoryWorkload { stop, tasks }
    }

    /// Stops the writers and readers.
    pub async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("history task");
        }
    }
}
