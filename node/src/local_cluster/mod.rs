//! A whole cluster on one machine: an embedded S3 server and one `cas-node serve`
//! process per node, in the regions of a [`Layout`], joined into one index group
//! through the operator API exactly as an operator would. What `cas-node demo` runs
//! and what the cluster tests drive (kill, restart, add and remove nodes).
//!
//! Every node listens on loopback ports chosen here (or, with
//! [`ClusterNetwork::Namespaces`], on its region's address in a network namespace of
//! its own region), keeps its data under the base directory (`node-<id>/`), and exits
//! when the process that started it goes away (its standard input closes).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use cas_proto::admin as pb;
use cas_proto::admin::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::auth::{Scope, Tokens};

use crate::config::{Region, Secret};
use crate::index::FaultFile;
use crate::store::{LocalS3, LocalS3Config};
mod netns;
mod s3_proxy;

pub use cas_proto::admin::{ClusterStatus, Member};
pub use netns::{NetnsError, RegionNetwork};
pub use s3_proxy::{S3Fault, S3Proxy};

/// How long a node may take to stop after SIGTERM: its grace for open requests,
/// then for Raft to stop and for its index to close (each bounded by
/// `CLOSE_TIMEOUT`), and a few seconds for the process to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(
    crate::server::SHUTDOWN_GRACE.as_secs() + 2 * crate::index::CLOSE_TIMEOUT.as_secs() + 5,
);

/// How long a node may take to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Lifetime of the tokens a local cluster hands out.
pub const TOKEN_TTL: Duration = Duration::from_secs(7 * 86_400);

/// How many nodes run in each region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout(pub Vec<(Region, usize)>);

impl Layout {
    /// The default topology: 4 nodes in us-east-1, 4 in eu-west-3, 2 in ap-southeast-1.
    pub fn default_regions() -> Self {
        Layout(vec![
            (Region::UsEast1, 4),
            (Region::EuWest3, 4),
            (Region::ApSoutheast1, 2),
        ])
    }

    /// The number of nodes.
    pub fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(r, n)| format!("{r}={n}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Layout {
    type Err = String;

    /// `us-east-1=4,eu-west-3=4,ap-southeast-1=2`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out: Vec<(Region, usize)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (region, n) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected REGION=COUNT"))?;
            let region: Region = region.trim().parse().map_err(|e| format!("{e}"))?;
            let n: usize = n
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the count is not a number"))?;
            if out.iter().any(|(r, _)| *r == region) {
                return Err(format!("{region} is listed twice"));
            }
            if n > 0 {
                out.push((region, n));
            }
        }
        if out.is_empty() {
            return Err("the layout has no node".into());
        }
        Ok(Layout(out))
    }
}

/// What went wrong running a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    /// A file or process could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A node did not come up, or a membership change failed.
    #[error("{0}")]
    Node(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalClusterError {
    let what = what.into();
    move |source| LocalClusterError::Io { what, source }
}

/// One node of a local cluster.
#[derive(Debug)]
pub struct LocalNode {
    /// Its node id.
    pub id: u64,
    /// Its region.
    pub region: Region,
    /// Its HTTP API.
    pub http: SocketAddr,
    /// Its gRPC API (client, peers, admin).
    pub grpc: SocketAddr,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    /// `http://host:port` of its HTTP API.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `grpc://host:port` of its gRPC API.
    pub fn grpc_url(&self) -> String {
        format!("grpc://{}", self.grpc)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether its process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// Settings of a local cluster.
#[derive(Debug, Clone)]
pub struct LocalClusterSpec {
    /// Nodes per region.
    pub layout: Layout,
    /// Where everything is kept.
    pub base_dir: PathBuf,
    /// The `cas-node` executable to run.
    pub exe: PathBuf,
    /// Inject the inter-region round trips of `regions.md` into node-to-node calls.
    pub simulate_region_latency: bool,
    /// The nodes' log filter.
    pub log_filter: String,
    /// Put the fault controls in place: a fault file every node reads (simulated
    /// partitions, [`LocalCluster::isolate`]) and a proxy in front of S3
    /// ([`LocalCluster::set_s3_fault`]). For tests and drills.
    pub fault_injection: bool,
    /// How the nodes are networked.
    pub network: ClusterNetwork,
}

/// How the nodes of a local cluster reach each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClusterNetwork {
    /// Every node on loopback; partitions and latency are simulated by the nodes.
    #[default]
    Loopback,
    /// Each region in its own Linux network namespace (root only, see
    /// [`RegionNetwork`]): partitions are dropped packets, and latency is the
    /// kernel's where it has `netem`.
    Namespaces,
}

impl FromStr for ClusterNetwork {
    type Err = String;

    /// `loopback` or `netns`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "loopback" | "" => Ok(ClusterNetwork::Loopback),
            "netns" => Ok(ClusterNetwork::Namespaces),
            other => Err(format!("{other:?}: expected loopback or netns")),
        }
    }
}

/// A running local cluster; its node processes are killed when it is dropped.
pub struct LocalCluster {
    spec: LocalClusterSpec,
    s3: Option<LocalS3>,
    proxy: Option<S3Proxy>,
    secret_file: PathBuf,
    tokens: Tokens,
    nodes: BTreeMap<u64, LocalNode>,
    next_id: u64,
    /// The faults written to the fault file.
    faults: std::sync::Mutex<FaultFile>,
    /// The regions' namespaces (with [`ClusterNetwork::Namespaces`]); removed after
    /// the nodes have stopped.
    net: Option<RegionNetwork>,
}

/// The file in the base directory recording what [`LocalCluster::resume`] needs.
const MANIFEST: &str = "cluster.json";

/// What a stopped local cluster needs to start again: its members' addresses and its
/// S3 server's address and credentials (the nodes' configurations name them).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Manifest {
    s3: SavedS3,
    proxy: Option<SocketAddr>,
    next_id: u64,
    nodes: Vec<SavedNode>,
}

/// The embedded S3 server of a [`Manifest`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedS3 {
    addr: SocketAddr,
    access_key_id: String,
    secret_access_key: String,
}

/// A member of a [`Manifest`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedNode {
    id: u64,
    region: Region,
    http: SocketAddr,
    grpc: SocketAddr,
}

impl Manifest {
    fn read(path: &Path) -> Result<Manifest, LocalClusterError> {
        let text =
            std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| LocalClusterError::Node(format!("{}: {e}", path.display())))
    }

    /// Writes it, readable by the owner only (it holds S3 credentials).
    fn write(&self, path: &Path) -> Result<(), LocalClusterError> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| LocalClusterError::Node(format!("{}: {e}", path.display())))?;
        write_private(path, &text).map_err(io(format!("writing {}", path.display())))
    }

    /// Nodes per region of the members.
    fn layout(&self) -> Layout {
        Layout(
            Region::ALL
                .iter()
                .map(|r| (*r, self.nodes.iter().filter(|n| n.region == *r).count()))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }
}

/// `N` distinct free ports on `ip`: bound on loopback all at once (so the kernel
/// cannot hand out one twice), then released for the node to take.
pub fn free_addrs<const N: usize>(ip: IpAddr) -> Result<[SocketAddr; N], LocalClusterError> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("picking a free port"))?;
    let mut addrs = [SocketAddr::new(ip, 0); N];
    for (addr, l) in addrs.iter_mut().zip(&listeners) {
        addr.set_port(l.local_addr().map_err(io("picking a free port"))?.port());
    }
    Ok(addrs)
}

/// Writes `bytes` to `path` atomically (a reader sees the old file or the whole new
/// one, also after a crash), readable by the owner only: for secrets, tokens and the
/// files that name them.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The directory of node `id` (its `node.toml`, `data/` and `node.log`) in a
/// cluster's base directory.
fn node_dir(base: &Path, id: u64) -> PathBuf {
    base.join(format!("node-{id}"))
}

/// The token secret kept in `path`, created (32 random bytes as hex, owner-only)
/// the first time: one per demo or local cluster, so its tokens outlive restarts.
pub fn token_secret(path: &Path) -> std::io::Result<Secret> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Secret::new(text.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = [0u8; 32];
            rand::fill(&mut b[..]);
            let secret: String = b.iter().map(|x| format!("{x:02x}")).collect();
            write_private(path, secret.as_bytes())?;
            Ok(Secret::new(secret))
        }
        Err(e) => Err(e),
    }
}

impl LocalCluster {
    /// Starts the S3 server and every node of `spec.layout`, and joins them into one
    /// group: the first node forms it, the others are added through the operator API.
    /// Refuses a base directory that already holds a cluster (see
    /// [`LocalCluster::resume`]).
    pub async fn start(spec: LocalClusterSpec) -> Result<Self, LocalClusterError> {
        if node_dir(&spec.base_dir, 1).exists() {
            return Err(LocalClusterError::Node(format!(
                "{} already holds a cluster{}; start from an empty directory",
                spec.base_dir.display(),
                if Self::exists_in(&spec.base_dir) {
                    " (resume it instead)"
                } else {
                    ", one without the cluster.json needed to resume it"
                }
            )));
        }
        let mut cluster = Self::open(spec.clone(), None).await?;
        let mut first = true;
        for (region, n) in spec.layout.0.clone() {
            for _ in 0..n {
                if first {
                    let id = cluster.spawn(region, true)?;
                    cluster.wait_serving(id).await?;
                    first = false;
                } else {
                    cluster.add_node(region).await?;
                }
            }
        }
        cluster.save_manifest()?;
        Ok(cluster)
    }

    /// Starts again a cluster that [`LocalCluster::start`] created in
    /// `spec.base_dir` and that was stopped: the S3 server on its old address and
    /// credentials, every member node on its old configuration and data, and waits
    /// for a leader. Nodes that were removed stay gone. `spec.layout` is replaced by
    /// the cluster's own; loopback clusters only (namespaces do not outlive a run).
    pub async fn resume(mut spec: LocalClusterSpec) -> Result<Self, LocalClusterError> {
        let path = spec.base_dir.join(MANIFEST);
        let manifest = Manifest::read(&path)?;
        if spec.network != ClusterNetwork::Loopback {
            return Err(LocalClusterError::Node(
                "only a loopback cluster can be resumed".into(),
            ));
        }
        spec.layout = manifest.layout();
        spec.fault_injection = manifest.proxy.is_some();
        let mut cluster = Self::open(spec, Some(&manifest)).await?;
        cluster.next_id = manifest.next_id;
        for n in &manifest.nodes {
            let dir = node_dir(&cluster.spec.base_dir, n.id);
            let mut node = LocalNode {
                id: n.id,
                region: n.region,
                http: n.http,
                grpc: n.grpc,
                config: dir.join("node.toml"),
                data_dir: dir.join("data"),
                child: None,
            };
            cluster.launch(&mut node)?;
            cluster.nodes.insert(n.id, node);
        }
        for id in manifest.nodes.iter().map(|n| n.id) {
            cluster.wait_serving(id).await?;
        }
        cluster.leader(START_TIMEOUT).await?;
        Ok(cluster)
    }

    /// Whether `dir` holds a cluster [`LocalCluster::resume`] can start again.
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(MANIFEST).exists()
    }

    /// The S3 server, its fault proxy, the token secret and the namespaces of a
    /// cluster with no node yet (the S3 server on `saved`'s address and credentials
    /// when given).
    async fn open(
        spec: LocalClusterSpec,
        saved: Option<&Manifest>,
    ) -> Result<Self, LocalClusterError> {
        std::fs::create_dir_all(&spec.base_dir)
            .map_err(io(format!("creating {}", spec.base_dir.display())))?;
        let net = match spec.network {
            ClusterNetwork::Loopback => None,
            ClusterNetwork::Namespaces => {
                let regions: Vec<Region> = spec.layout.0.iter().map(|(r, _)| *r).collect();
                Some(
                    RegionNetwork::create(&regions, spec.simulate_region_latency)
                        .map_err(|e| LocalClusterError::Node(format!("network namespaces: {e}")))?,
                )
            }
        };
        let host_ip = net
            .as_ref()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |n| IpAddr::V4(n.host_ip()));
        let mut s3_config = LocalS3Config::new(spec.base_dir.join("s3"));
        s3_config.bind = SocketAddr::new(host_ip, 0);
        if let Some(m) = saved {
            s3_config.bind = m.s3.addr;
            s3_config.access_key_id = m.s3.access_key_id.clone();
            s3_config.secret_access_key = m.s3.secret_access_key.clone();
        }
        let s3 = LocalS3::start(s3_config)
            .await
            .map_err(|e| LocalClusterError::Node(format!("embedded S3 server: {e}")))?;
        let proxy = if spec.fault_injection {
            let bind = saved
                .and_then(|m| m.proxy)
                .unwrap_or(SocketAddr::new(host_ip, 0));
            Some(
                S3Proxy::start(bind, s3.addr())
                    .await
                    .map_err(io(format!("starting the S3 fault proxy on {bind}")))?,
            )
        } else {
            None
        };
        let secret_file = spec.base_dir.join("token-secret");
        let secret = token_secret(&secret_file)
            .map_err(io(format!("the token secret {}", secret_file.display())))?;
        let tokens = Tokens::new(&secret)
            .map_err(|e| LocalClusterError::Node(format!("token secret: {e}")))?;
        Ok(LocalCluster {
            spec,
            s3: Some(s3),
            proxy,
            secret_file,
            tokens,
            nodes: BTreeMap::new(),
            next_id: 1,
            faults: std::sync::Mutex::new(FaultFile::default()),
            net,
        })
    }

    /// Records the cluster's members and S3 server in its manifest, for
    /// [`LocalCluster::resume`]: once every node of a start is a member, then
    /// after each membership change. Namespace clusters keep none (namespaces do
    /// not outlive a run, so they cannot be resumed).
    fn save_manifest(&self) -> Result<(), LocalClusterError> {
        if self.net.is_some() {
            return Ok(());
        }
        let s3 = self
            .s3
            .as_ref()
            .ok_or_else(|| LocalClusterError::Node("the S3 server stopped".into()))?;
        let manifest = Manifest {
            s3: SavedS3 {
                addr: s3.addr(),
                access_key_id: s3.access_key_id().to_owned(),
                secret_access_key: s3.secret_access_key().to_owned(),
            },
            proxy: self.proxy.as_ref().map(S3Proxy::addr),
            next_id: self.next_id,
            nodes: self
                .nodes
                .values()
                .map(|n| SavedNode {
                    id: n.id,
                    region: n.region,
                    http: n.http,
                    grpc: n.grpc,
                })
                .collect(),
        };
        manifest.write(&self.spec.base_dir.join(MANIFEST))
    }

    /// A token with `scopes`, signed with the cluster's secret.
    pub fn token(&self, scopes: &[Scope]) -> Result<String, LocalClusterError> {
        self.tokens
            .clone()
            .with_max_ttl(TOKEN_TTL)
            .issue("local-cluster", scopes.iter().copied(), TOKEN_TTL)
            .map(|t| t.token)
            .map_err(|e| LocalClusterError::Node(format!("issuing a token: {e}")))
    }

    /// The settings it runs with.
    pub fn spec(&self) -> &LocalClusterSpec {
        &self.spec
    }

    /// The nodes, by id.
    pub fn nodes(&self) -> &BTreeMap<u64, LocalNode> {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, id: u64) -> Option<&LocalNode> {
        self.nodes.get(&id)
    }

    /// The embedded S3 server's data directory.
    pub fn s3_root(&self) -> Option<&Path> {
        self.s3.as_ref().map(LocalS3::root)
    }

    /// The HTTP endpoints of the nodes, by region.
    pub fn endpoints(&self) -> BTreeMap<Region, Vec<String>> {
        let mut out: BTreeMap<Region, Vec<String>> = BTreeMap::new();
        for n in self.nodes.values() {
            out.entry(n.region).or_default().push(n.http_url());
        }
        out
    }

    /// Writes node `id`'s configuration and starts its process.
    fn spawn(&mut self, region: Region, bootstrap: bool) -> Result<u64, LocalClusterError> {
        let id = self.next_id;
        self.next_id += 1;
        let dir = node_dir(&self.spec.base_dir, id);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let s3 = self
            .s3
            .as_ref()
            .ok_or_else(|| LocalClusterError::Node("the S3 server stopped".into()))?;
        let ip = match &self.net {
            Some(net) => IpAddr::V4(net.ip_of(region).ok_or_else(|| {
                LocalClusterError::Node(format!("{region} has no network namespace"))
            })?),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let [http, grpc] = free_addrs(ip)?;
        let config = dir.join("node.toml");
        let data_dir = dir.join("data");
        let text = format!(
            r#"# Node {id} of a local cluster ({layout}).
[node]
id = {id}
region = "{region}"
data_dir = {data_dir:?}

[http]
listen = "{http}"

[grpc]
listen = "{grpc}"

[s3]
endpoint = "{endpoint}"
region = "{s3_region}"
bucket = "{bucket}"
access_key_id = "{key}"
secret_access_key = "{secret}"
force_path_style = true
request_timeout = "{s3_timeout}"

[auth]
token_secret_file = {secret_file:?}

[cluster]
bootstrap = {bootstrap}
simulate_region_latency = {latency}
{fault_file}
[telemetry]
log_filter = "{filter}"
"#,
            layout = self.spec.layout,
            data_dir = data_dir.display().to_string(),
            endpoint = self
                .proxy
                .as_ref()
                .map_or_else(|| s3.endpoint().to_owned(), S3Proxy::endpoint),
            s3_region = s3.region(),
            bucket = s3.bucket(),
            key = s3.access_key_id(),
            secret = s3.secret_access_key(),
            secret_file = self.secret_file.display().to_string(),
            // Namespaces whose links the kernel delays need no simulation.
            latency = self.spec.simulate_region_latency
                && !self.net.as_ref().is_some_and(RegionNetwork::kernel_latency),
            s3_timeout = if self.spec.fault_injection {
                "3s"
            } else {
                "30s"
            },
            fault_file = if self.spec.fault_injection {
                format!(
                    "fault_file = {:?}\n",
                    self.fault_file().display().to_string()
                )
            } else {
                String::new()
            },
            filter = self.spec.log_filter,
        );
        // Owner-only: it holds the S3 secret key.
        write_private(&config, text.as_bytes())
            .map_err(io(format!("writing {}", config.display())))?;
        let mut node = LocalNode {
            id,
            region,
            http,
            grpc,
            config,
            data_dir,
            child: None,
        };
        self.launch(&mut node)?;
        self.nodes.insert(id, node);
        Ok(id)
    }

    fn launch(&self, node: &mut LocalNode) -> Result<(), LocalClusterError> {
        let log = self.log_path(node.id);
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("opening {}", log.display())))?;
        let err_file = log_file
            .try_clone()
            .map_err(io(format!("opening {}", log.display())))?;
        let mut command = match &self.net {
            Some(net) => net.command(node.region, &self.spec.exe).ok_or_else(|| {
                LocalClusterError::Node(format!("{} has no network namespace", node.region))
            })?,
            None => Command::new(&self.spec.exe),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(io(format!("starting {}", self.spec.exe.display())))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `id` answers on its gRPC API (or fails if it exits or takes
    /// too long).
    pub async fn wait_serving(&mut self, id: u64) -> Result<(), LocalClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.node_mut(id)?.grpc;
        let auth = self.admin_header()?;
        loop {
            if !self.node_mut(id)?.is_running() {
                return Err(LocalClusterError::Node(format!(
                    "node {id} exited during start-up (see {})",
                    self.log_path(id).display()
                )));
            }
            if let Ok(mut c) = self.admin(addr).await
                && c.status(with_auth(pb::StatusRequest {}, &auth)?)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LocalClusterError::Node(format!(
                    "node {id} did not serve within {START_TIMEOUT:?} (see {})",
                    self.log_path(id).display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The fault file every node reads (with `fault_injection`).
    pub fn fault_file(&self) -> PathBuf {
        self.spec.base_dir.join("faults.json")
    }

    /// Cuts `regions` off from the others (node-to-node calls across the cut fail);
    /// an empty list heals every cut. In namespaces the kernel drops the packets at
    /// once; on loopback the nodes apply it within 100 ms.
    pub fn isolate(&self, regions: &[Region]) -> Result<(), LocalClusterError> {
        if let Some(net) = &self.net {
            return net
                .cut(regions)
                .map_err(|e| LocalClusterError::Node(format!("cutting {regions:?} off: {e}")));
        }
        self.change_faults(|f| f.isolated = regions.iter().map(|r| r.to_string()).collect())
    }

    /// Holds every snapshot transfer open for `stall` after its last byte (zero lifts
    /// it), so a node can be stopped while it receives a snapshot. Nodes apply it
    /// within 100 ms.
    pub fn stall_snapshots(&self, stall: Duration) -> Result<(), LocalClusterError> {
        let ms = u64::try_from(stall.as_millis()).unwrap_or(u64::MAX);
        self.change_faults(|f| f.snapshot_stall_ms = ms)
    }

    fn change_faults(&self, change: impl FnOnce(&mut FaultFile)) -> Result<(), LocalClusterError> {
        if !self.spec.fault_injection {
            return Err(LocalClusterError::Node(
                "fault injection is off for this cluster".into(),
            ));
        }
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut faults);
        let path = self.fault_file();
        faults
            .write(&path)
            .map_err(io(format!("writing {}", path.display())))
    }

    /// Snapshot files node `id` is receiving now (they live until installed).
    pub fn snapshots_being_received(&self, id: u64) -> usize {
        self.node(id)
            .and_then(|n| std::fs::read_dir(n.data_dir.join("index").join("incoming")).ok())
            .map_or(0, |entries| entries.filter_map(Result::ok).count())
    }

    /// Makes S3 fail (or heals it) for every node, through the proxy.
    pub fn set_s3_fault(&self, fault: S3Fault) -> Result<(), LocalClusterError> {
        match &self.proxy {
            Some(p) => {
                p.set(fault);
                Ok(())
            }
            None => Err(LocalClusterError::Node(
                "fault injection is off for this cluster".into(),
            )),
        }
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: u64) -> PathBuf {
        node_dir(&self.spec.base_dir, id).join("node.log")
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut LocalNode, LocalClusterError> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| LocalClusterError::Node(format!("no node {id}")))
    }

    async fn admin(&self, addr: SocketAddr) -> Result<AdminClient<Channel>, LocalClusterError> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| LocalClusterError::Node(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(600))
            .connect()
            .await
            .map_err(|e| LocalClusterError::Node(format!("admin API at {addr}: {e}")))?;
        Ok(AdminClient::new(channel))
    }

    /// A client of node `id`'s admin API (requests carry no token: add one).
    pub async fn admin_client(&self, id: u64) -> Result<AdminClient<Channel>, LocalClusterError> {
        let addr = self
            .node(id)
            .ok_or_else(|| LocalClusterError::Node(format!("no node {id}")))?
            .grpc;
        self.admin(addr).await
    }

    /// The `Authorization` value of an admin token.
    fn admin_header(&self) -> Result<String, LocalClusterError> {
        Ok(format!("Bearer {}", self.token(&[Scope::Admin])?))
    }

    fn admin_request<T>(&self, msg: T) -> Result<tonic::Request<T>, LocalClusterError> {
        with_auth(msg, &self.admin_header()?)
    }

    /// The group's status as a running node sees it (the leader, when one is known).
    pub async fn status(&self) -> Result<pb::ClusterStatus, LocalClusterError> {
        let mut last = None;
        for n in self.nodes.values() {
            let Ok(mut c) = self.admin(n.grpc).await else {
                continue;
            };
            match c.status(self.admin_request(pb::StatusRequest {})?).await {
                Ok(s) => {
                    let s = s.into_inner();
                    if s.role == "Leader" {
                        return Ok(s);
                    }
                    if let Some(leader) = self
                        .nodes
                        .values()
                        .find(|m| Some(m.id) == s.leader_id && m.grpc.to_string() == s.leader_addr)
                        && let Ok(mut lc) = self.admin(leader.grpc).await
                        && let Ok(ls) = lc.status(self.admin_request(pb::StatusRequest {})?).await
                    {
                        return Ok(ls.into_inner());
                    }
                    last = Some(s);
                }
                Err(_) => continue,
            }
        }
        last.ok_or_else(|| LocalClusterError::Node("no node answered".into()))
    }

    /// The group as node `id` itself sees it (its own log and snapshot positions).
    pub async fn node_status(&self, id: u64) -> Result<pb::ClusterStatus, LocalClusterError> {
        let s = self
            .admin_client(id)
            .await?
            .status(self.admin_request(pb::StatusRequest {})?)
            .await
            .map_err(|s| {
                LocalClusterError::Node(format!("status of node {id}: {}", s.message()))
            })?;
        Ok(s.into_inner())
    }

    /// Compacts node `id`'s index: a snapshot now, and the log it covers removed
    /// (on a leader, once no follower still needs it). Returns the snapshot's last
    /// log index.
    pub async fn compact(&self, id: u64) -> Result<u64, LocalClusterError> {
        let r = self
            .admin_client(id)
            .await?
            .compact(self.admin_request(pb::CompactRequest {})?)
            .await
            .map_err(|s| {
                LocalClusterError::Node(format!("compacting node {id}: {}", s.message()))
            })?;
        Ok(r.into_inner().snapshot_index)
    }

    /// The current leader's id, waiting (bounded) for one.
    pub async fn leader(&self, within: Duration) -> Result<u64, LocalClusterError> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(s) = self.status().await
                && s.role == "Leader"
            {
                return Ok(s.node_id);
            }
            if Instant::now() > deadline {
                return Err(LocalClusterError::Node(format!(
                    "no leader within {within:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a membership change on the leader, retrying (bounded) while the
    /// leadership moves.
    async fn on_leader<F, Fut>(&self, what: &str, call: F) -> Result<(), LocalClusterError>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<(), tonic::Status>>,
    {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let leader = self.leader(Duration::from_secs(30)).await?;
            let addr = self.node(leader).map(|n| n.grpc);
            let outcome = match addr {
                Some(addr) => match self.admin(addr).await {
                    Ok(c) => call(c).await.map_err(|s| s.message().to_owned()),
                    Err(e) => Err(e.to_string()),
                },
                None => Err(format!("the leader {leader} is not a local node")),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(LocalClusterError::Node(format!("{what}: {e}")));
                }
                Err(e) => {
                    tracing::info!(error = %e, "{what}: trying again");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }

    /// Starts a new node in `region` and adds it to the group (it catches up and
    /// becomes a voter if the policy wants one). Returns its id.
    pub async fn add_node(&mut self, region: Region) -> Result<u64, LocalClusterError> {
        let id = self.spawn(region, false)?;
        self.wait_serving(id).await?;
        let grpc = self.node_mut(id)?.grpc;
        let auth = self.admin_header()?;
        self.on_leader("adding a node", |mut c| {
            let req = with_auth(
                pb::AddNodeRequest {
                    id,
                    addr: grpc.to_string(),
                    region: region.to_string(),
                },
                &auth,
            );
            async move { c.add_node(req.map_err(local_status)?).await.map(|_| ()) }
        })
        .await?;
        self.save_manifest()?;
        Ok(id)
    }

    /// Removes node `id` from the group (handing the leadership over first if it
    /// leads) and waits for its process to stop.
    pub async fn remove_node(&mut self, id: u64) -> Result<(), LocalClusterError> {
        if self.leader(Duration::from_secs(30)).await? == id {
            let to = self
                .status()
                .await?
                .members
                .iter()
                .find(|m| m.voter && m.id != id)
                .map(|m| m.id)
                .ok_or_else(|| LocalClusterError::Node("no other voter to lead".into()))?;
            let auth = self.admin_header()?;
            self.on_leader("handing the leadership over", |mut c| {
                let req = with_auth(pb::TransferLeaderRequest { to }, &auth);
                async move {
                    c.transfer_leader(req.map_err(local_status)?)
                        .await
                        .map(|_| ())
                }
            })
            .await?;
        }
        let auth = self.admin_header()?;
        self.on_leader("removing a node", |mut c| {
            let req = with_auth(pb::RemoveNodeRequest { id }, &auth);
            async move { c.remove_node(req.map_err(local_status)?).await.map(|_| ()) }
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.node_mut(id)?.is_running() {
            if Instant::now() > deadline {
                self.kill9(id)?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(mut n) = self.nodes.remove(&id)
            && let Some(mut c) = n.child.take()
        {
            let _ = c.wait();
        }
        // Its directory stays, never to be used again: ids are not reused.
        self.save_manifest()
    }

    /// Kills node `id` with SIGKILL (no shutdown at all).
    pub fn kill9(&mut self, id: u64) -> Result<(), LocalClusterError> {
        let n = self.node_mut(id)?;
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Stops node `id` with SIGTERM and waits for it to exit; a node still running
    /// after [`STOP_TIMEOUT`] is killed and reported as an error.
    pub fn stop(&mut self, id: u64) -> Result<(), LocalClusterError> {
        let n = self.node_mut(id)?;
        if let Some(mut c) = n.child.take()
            && !terminate(&mut c, STOP_TIMEOUT)
        {
            return Err(LocalClusterError::Node(format!(
                "node {id} did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed \
                 (see {})",
                self.log_path(id).display()
            )));
        }
        Ok(())
    }

    /// Starts node `id` again on its data (after [`LocalCluster::kill9`] or
    /// [`LocalCluster::stop`]) and waits until it serves.
    pub async fn restart(&mut self, id: u64) -> Result<(), LocalClusterError> {
        let mut node = self
            .nodes
            .remove(&id)
            .ok_or_else(|| LocalClusterError::Node(format!("no node {id}")))?;
        if node.child.is_some() {
            self.nodes.insert(id, node);
            return Err(LocalClusterError::Node(format!("node {id} is running")));
        }
        let launched = self.launch(&mut node);
        self.nodes.insert(id, node);
        launched?;
        self.wait_serving(id).await
    }

    /// Stops every node (SIGTERM to all at once, SIGKILL to those still running
    /// [`STOP_TIMEOUT`] later) and the S3 server.
    pub async fn shutdown(&mut self) {
        let mut running: Vec<(u64, Child)> = self
            .nodes
            .values_mut()
            .filter_map(|n| Some((n.id, n.child.take()?)))
            .collect();
        for (_, c) in &running {
            send_term(c);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !running.is_empty() {
            running.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
            if running.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for (id, c) in &mut running {
                    let _ = c.kill();
                    let _ = c.wait();
                    tracing::warn!(node = *id, "did not stop after SIGTERM; killed");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.proxy = None;
        if let Some(s3) = self.s3.take() {
            s3.shutdown().await;
        }
    }
}

/// `msg` carrying the `Authorization` value `auth`.
fn with_auth<T>(msg: T, auth: &str) -> Result<tonic::Request<T>, LocalClusterError> {
    let mut req = tonic::Request::new(msg);
    let value = auth
        .parse()
        .map_err(|_| LocalClusterError::Node("bad admin token".into()))?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

/// A failed request construction as a status (for the retry loop).
fn local_status(e: LocalClusterError) -> tonic::Status {
    tonic::Status::internal(e.to_string())
}

/// Sends SIGTERM to a child.
fn send_term(c: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, then SIGKILL once `grace` has passed; whether it exited by itself.
fn terminate(c: &mut Child, grace: Duration) -> bool {
    send_term(c);
    let deadline = Instant::now() + grace;
    loop {
        match c.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() > deadline => {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse_and_print() {
        let l: Layout = "us-east-1=4, eu-west-3=4,ap-southeast-1=2".parse().unwrap();
        assert_eq!(l, Layout::default_regions());
        assert_eq!(l.total(), 10);
        assert_eq!(l.to_string(), "us-east-1=4,eu-west-3=4,ap-southeast-1=2");
        for bad in [
            "",
            "us-east-1",
            "us-east-1=x",
            "mars=1",
            "us-east-1=1,us-east-1=2",
            "us-east-1=0",
        ] {
            assert!(bad.parse::<Layout>().is_err(), "{bad}");
        }
    }
}
