//! `cas-index-bench`: the index group of a local three-region cluster (real node
//! processes, the regions' round trips injected into node-to-node calls) measured
//! from outside:
//!
//! 1. commit latency: one index write at a time to the leader, against the round
//!    trip to the nearest quorum of voters;
//! 2. commit throughput: many writes in flight (Raft batches them into appends), with
//!    one record or many per command;
//! 3. global-dedup queries answered from a node's local replica, in every region;
//! 4. failover: from a `kill -9` of the leader to a new leader, and to the first
//!    write it commits.
//!
//! Index writes go straight to the leader's `Peer.ForwardWrite` with a cluster token:
//! registrations of synthetic empty files (the same log, replication, apply and
//! RocksDB path as any registration, without the S3 uploads before it). Dedup
//! queries go to the HTTP API with a write token, after real uploads.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cas_client::transfer::{UploadOptions, upload_files};
use cas_client::xet::{RetryPolicy, XetClient, XetClientConfig};
use cas_core::MerkleHash;
use cas_node::auth::Scope;
use cas_node::config::Region;
use cas_node::index::membership::quorum_round_trip;
use cas_node::local_cluster::{Layout, LocalCluster, LocalClusterSpec};
use cas_proto::index::{Command, FileRecord, RegisterFiles, command};
use cas_proto::raft::peer_client::PeerClient;
use clap::Parser;
use tonic::transport::Channel;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Latency, throughput and failover of the index group of a local three-region cluster"
)]
struct Args {
    /// Nodes per region.
    #[arg(long, default_value = "us-east-1=4,eu-west-3=4,ap-southeast-1=2")]
    layout: String,
    /// Sequential writes timed for the commit latency.
    #[arg(long, default_value_t = 200)]
    writes: usize,
    /// Writes in flight for the throughput runs.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds each throughput run lasts.
    #[arg(long, default_value_t = 8)]
    throughput_secs: u64,
    /// Dedup queries timed per region (half hits, half misses).
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Leader kills timed.
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    /// The `cas-node` executable (default: next to this one).
    #[arg(long)]
    node_exe: Option<PathBuf>,
    /// Also write the report (Markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Percentile `p` (0..=100) of sorted `xs`.
fn percentile(xs: &[Duration], p: f64) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (xs.len() - 1) as f64).round() as usize;
    xs[rank.min(xs.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A random 32-byte hash.
fn random_hash() -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&rand::random::<[u8; 32]>())
}

/// A registration of `files` synthetic empty files.
fn registration(files: usize) -> Command {
    let files = (0..files)
        .map(|_| FileRecord {
            format: 1,
            hash: random_hash(),
            size: 0,
            sha256: bytes::Bytes::from_static(&[0; 32]),
            terms: Vec::new(),
            shard_hash: bytes::Bytes::new(),
            created_at_ms: 0,
            uploader: "cas-index-bench".into(),
        })
        .collect();
    Command {
        op: Some(command::Op::RegisterFiles(RegisterFiles {
            shard_hash: random_hash(),
            files,
            dedup: Vec::new(),
        })),
    }
}

/// The `Peer` API of one node, called with a cluster token.
#[derive(Clone)]
struct Peer {
    client: PeerClient<Channel>,
    auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl Peer {
    async fn connect(cluster: &LocalCluster, id: u64) -> anyhow::Result<Peer> {
        let node = cluster.node(id).context("no such node")?;
        let client = PeerClient::connect(format!("http://{}", node.grpc)).await?;
        let token = cluster.token(&[Scope::Cluster])?;
        Ok(Peer {
            client,
            auth: format!("Bearer {token}").parse()?,
        })
    }

    /// Commits one command (the node must lead).
    async fn write(&mut self, cmd: Command) -> Result<(), tonic::Status> {
        let mut req = tonic::Request::new(cmd);
        req.metadata_mut()
            .insert("authorization", self.auth.clone());
        req.set_timeout(Duration::from_secs(10));
        self.client.forward_write(req).await.map(|_| ())
    }
}

struct Report(String);

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        self.0.push_str(s.as_ref());
        self.0.push('\n');
    }
}

fn node_exe(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.node_exe {
        return Ok(p.clone());
    }
    let me = std::env::current_exe()?;
    let next = me.with_file_name("cas-node");
    if next.exists() {
        return Ok(next);
    }
    bail!(
        "no cas-node next to {} (build it: cargo build --release -p cas-node, or pass --node-exe)",
        me.display()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let layout: Layout = args.layout.parse().map_err(anyhow::Error::msg)?;
    let dir = tempfile::Builder::new()
        .prefix("cas-index-bench-")
        .tempdir()?;
    eprintln!(
        "cas-index-bench: starting {layout} in {}",
        dir.path().display()
    );
    let mut cluster = LocalCluster::start(LocalClusterSpec {
        layout: layout.clone(),
        base_dir: dir.path().to_owned(),
        exe: node_exe(&args)?,
        simulate_region_latency: true,
        log_filter: "warn".into(),
        fault_injection: false,
        network: cas_node::local_cluster::ClusterNetwork::Loopback,
    })
    .await?;
    let outcome = run(&args, &mut cluster).await;
    cluster.shutdown().await;
    let report = outcome?;
    if let Some(out) = &args.out {
        std::fs::write(out, report)?;
    }
    Ok(())
}

async fn run(args: &Args, cluster: &mut LocalCluster) -> anyhow::Result<String> {
    let mut r = Report(String::new());
    let status = cluster.status().await?;
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    let region_of = |id: u64| cluster.node(id).map(|n| n.region);
    let voters: Vec<Region> = status
        .members
        .iter()
        .filter(|m| m.voter)
        .filter_map(|m| region_of(m.id))
        .collect();
    let leader_region = region_of(leader).context("leader not local")?;
    let quorum_rtt = quorum_round_trip(leader_region, &voters);
    r.line(format!(
        "Cluster {} ({} nodes, {} voters), simulated round trips 1/80/150/220 ms; leader node {leader} in {leader_region}; round trip to the nearest quorum: {}\n",
        args.layout,
        cluster.nodes().len(),
        voters.len(),
        ms(quorum_rtt)
    ));

    // 1. Commit latency.
    let mut peer = Peer::connect(cluster, leader).await?;
    for _ in 0..10 {
        peer.write(registration(1)).await?;
    }
    let mut lat = Vec::with_capacity(args.writes);
    for _ in 0..args.writes {
        let t = Instant::now();
        peer.write(registration(1)).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
    let ratio = p50.as_secs_f64() / quorum_rtt.as_secs_f64().max(1e-9);
    r.line("### Commit latency (one write at a time, to the leader)\n");
    r.line("| writes | p50 | p90 | p99 | max | quorum round trip | p50 / round trip | target | result |");
    r.line("|---|---|---|---|---|---|---|---|---|");
    r.line(format!(
        "| {} | {} | {} | {} | {} | {} | {ratio:.2}x | ≤ 1.2x | {} |\n",
        lat.len(),
        ms(p50),
        ms(percentile(&lat, 90.0)),
        ms(p99),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
        ms(quorum_rtt),
        if ratio <= 1.2 { "met" } else { "**missed**" }
    ));

    // 2. Throughput.
    r.line(format!(
        "### Commit throughput ({} writes in flight, {} s each)\n",
        args.concurrency, args.throughput_secs
    ));
    r.line("| records per command | commands/s | records/s | p50 latency | p99 latency | failed |");
    r.line("|---|---|---|---|---|---|");
    for per_cmd in [1usize, 64] {
        let until = Instant::now() + Duration::from_secs(args.throughput_secs);
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let mut peer = peer.clone();
                tokio::spawn(async move {
                    let (mut lat, mut failed) = (Vec::new(), 0usize);
                    while Instant::now() < until {
                        let t = Instant::now();
                        match peer.write(registration(per_cmd)).await {
                            Ok(()) => lat.push(t.elapsed()),
                            Err(_) => failed += 1,
                        }
                    }
                    (lat, failed)
                })
            })
            .collect();
        let started = Instant::now();
        let (mut lat, mut failed) = (Vec::new(), 0);
        for t in tasks {
            let (l, f) = t.await?;
            lat.extend(l);
            failed += f;
        }
        let secs = started.elapsed().as_secs_f64();
        lat.sort();
        r.line(format!(
            "| {per_cmd} | {:.0} | {:.0} | {} | {} | {failed} |",
            lat.len() as f64 / secs,
            (lat.len() * per_cmd) as f64 / secs,
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0)),
        ));
    }
    r.line("");

    // 3. Dedup queries on local replicas.
    let token = cluster.token(&[Scope::Write])?;
    let leader_http = cluster.node(leader).context("leader")?.http_url();
    let uploader = XetClient::with_config(
        XetClientConfig::new(leader_http)
            .with_token(token.clone())
            .with_retry(RetryPolicy::default()),
    )?;
    let files_dir = tempfile::tempdir()?;
    let mut firsts = Vec::new();
    for i in 0..32 {
        let mut data = vec![0u8; 256 * 1024];
        rand::fill(&mut data[..]);
        firsts.push(cas_core::chunking::chunk_and_hash(&data)[0].hash);
        let path = files_dir.path().join(format!("f{i}"));
        std::fs::write(&path, &data)?;
        upload_files(&uploader, &[path], &UploadOptions::default()).await?;
    }
    // Every replica has applied them once a linearizable read succeeded there; wait
    // for the farthest region simply by asking until each answers.
    r.line(format!(
        "### Global-dedup queries on a local replica ({} per node, half hits, half misses, one at a time over HTTP)\n",
        args.queries
    ));
    r.line("| node | region | role | p50 | p90 | p99 | max | target p99 | result |");
    r.line("|---|---|---|---|---|---|---|---|---|");
    let mut per_region: Vec<(u64, Region)> = Vec::new();
    for region in [Region::UsEast1, Region::EuWest3, Region::ApSoutheast1] {
        if let Some(n) = cluster
            .nodes()
            .values()
            .filter(|n| n.region == region)
            .find(|n| n.id != leader)
        {
            per_region.push((n.id, region));
        }
    }
    for (id, region) in per_region {
        let node = cluster.node(id).context("node")?;
        let client = XetClient::with_config(
            XetClientConfig::new(node.http_url())
                .with_token(token.clone())
                .with_retry(RetryPolicy::none()),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for f in &firsts {
            while client.query_dedup(f).await?.is_none() {
                if Instant::now() > deadline {
                    bail!("node {id} never saw the uploads");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut lat = Vec::with_capacity(args.queries);
        for i in 0..args.queries {
            let (hash, hit) = if i % 2 == 0 {
                (firsts[i / 2 % firsts.len()], true)
            } else {
                (MerkleHash::from_bytes(rand::random()), false)
            };
            let t = Instant::now();
            let found = client.query_dedup(&hash).await?.is_some();
            lat.push(t.elapsed());
            if found != hit {
                bail!("node {id}: dedup query for {hash} answered {found}, expected {hit}");
            }
        }
        lat.sort();
        let p99 = percentile(&lat, 99.0);
        let role = cluster
            .status()
            .await?
            .members
            .iter()
            .find(|m| m.id == id)
            .map_or("?", |m| if m.voter { "voter" } else { "learner" });
        r.line(format!(
            "| {id} | {region} | {role} | {} | {} | {} | {} | < 2 ms | {} |",
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 90.0)),
            ms(p99),
            ms(*lat.last().unwrap_or(&Duration::ZERO)),
            if p99 < Duration::from_millis(2) {
                "met"
            } else {
                "**missed**"
            }
        ));
    }
    r.line("");

    // 4. Failover.
    r.line("### Failover (kill -9 of the leader)\n");
    r.line("| run | killed leader | new leader | to a new leader | to its first commit |");
    r.line("|---|---|---|---|---|");
    let mut elect = Vec::new();
    let mut commit = Vec::new();
    for run in 1..=args.failovers {
        let old = cluster.leader(Duration::from_secs(20)).await?;
        let killed = Instant::now();
        cluster.kill9(old)?;
        let deadline = killed + Duration::from_secs(30);
        let new = loop {
            let mut found = None;
            for id in cluster.nodes().keys().copied().filter(|id| *id != old) {
                if let Ok(s) = cluster.node_status(id).await
                    && s.role == "Leader"
                {
                    found = Some(id);
                    break;
                }
            }
            if let Some(id) = found {
                break id;
            }
            if Instant::now() > deadline {
                bail!("no new leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let elected = killed.elapsed();
        let mut peer = Peer::connect(cluster, new).await?;
        while peer.write(registration(1)).await.is_err() {
            if Instant::now() > deadline {
                bail!("the new leader committed nothing within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let committed = killed.elapsed();
        r.line(format!(
            "| {run} | {old} | {new} | {} | {} |",
            ms(elected),
            ms(committed)
        ));
        elect.push(elected);
        commit.push(committed);
        cluster.restart(old).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    elect.sort();
    commit.sort();
    r.line(format!(
        "| median | | | {} | {} |\n",
        ms(percentile(&elect, 50.0)),
        ms(percentile(&commit, 50.0))
    ));
    Ok(r.0)
}
