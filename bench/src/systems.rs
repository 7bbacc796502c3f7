//! The servers under test: our node (a `cas-node serve` process storing into
//! the shared bucket under a key prefix of its own) and the Xet reference
//! server (`local_cas_server` of `xet-client`, in this process, storing into a
//! directory).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use cas_node::local_cluster::{free_addrs, token_secret, write_private};
use xet_client::cas_client::{LocalTestServer, LocalTestServerBuilder};

use crate::s3::{Bucket, S3Location};

/// How long a node may take to answer `/healthz`.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit once told to stop.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `cas-node token issue` may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a client reaches a server, and as whom.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The Xet HTTP API, `http://host:port`.
    pub http: String,
    /// The gRPC API, `grpc://host:port`, when the server has one.
    pub grpc: Option<String>,
    /// Bearer token with write scope.
    pub token: String,
    /// A directory of this server's own for client-side state (hf_xet's cache).
    pub scratch: PathBuf,
}

/// A running server under test.
pub enum System {
    /// Our node.
    Node(NodeSystem),
    /// The reference server.
    Reference(ReferenceSystem),
}

impl System {
    /// Where clients reach it.
    pub fn endpoints(&self) -> &Endpoints {
        match self {
            System::Node(n) => &n.endpoints,
            System::Reference(r) => &r.endpoints,
        }
    }

    /// Bytes it stores: the node's objects under its prefix in the bucket, the
    /// reference server's files in its directory.
    pub async fn stored_bytes(&self, bucket: &Bucket) -> Result<u64> {
        match self {
            System::Node(n) => Ok(bucket.usage(&n.prefix).await?.bytes),
            System::Reference(r) => {
                let dir = r.store.clone();
                tokio::task::spawn_blocking(move || dir_bytes(&dir)).await?
            }
        }
    }

    /// Frees what it stores in the bucket (the reference server's directory
    /// goes when the run's scratch directory does).
    pub async fn clear(&self, bucket: &Bucket) -> Result<()> {
        if let System::Node(n) = self {
            bucket.delete_prefix(&n.prefix).await?;
        }
        Ok(())
    }
}

/// What a node is started with.
pub struct NodeOptions<'a> {
    /// The `cas-node` binary.
    pub binary: &'a Path,
    /// The bucket it stores into.
    pub s3: &'a S3Location,
    /// Its key prefix in the bucket (ends in `/`).
    pub prefix: String,
    /// A fresh directory for its configuration, state and log.
    pub dir: PathBuf,
    /// Its log filter (`telemetry.log_filter`).
    pub log_filter: &'a str,
}

/// A `cas-node serve` process; stopped when dropped.
pub struct NodeSystem {
    child: Option<Child>,
    /// Where clients reach it.
    pub endpoints: Endpoints,
    /// Its key prefix in the bucket.
    pub prefix: String,
    /// Its log file.
    pub log: PathBuf,
}

impl NodeSystem {
    /// Writes a configuration, issues a write token, starts the node and waits
    /// until `/healthz` answers.
    pub async fn start(options: NodeOptions<'_>) -> Result<Self> {
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir)?;
        let secret_file = dir.join("token-secret");
        token_secret(&secret_file)
            .with_context(|| format!("cannot create {}", secret_file.display()))?;
        let [http, grpc] = free_addrs(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let config = node_config(&options, &dir, &secret_file, http, grpc);
        let config_file = dir.join("node.toml");
        write_private(&config_file, config.as_bytes())
            .with_context(|| format!("cannot write {}", config_file.display()))?;

        let token = issue_token(options.binary, &config_file)?;
        let log = dir.join("node.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(options.binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            // The node exits when this process goes away, even if killed.
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", options.binary.display()))?;
        let mut node = NodeSystem {
            child: Some(child),
            endpoints: Endpoints {
                http: format!("http://{http}"),
                grpc: Some(format!("grpc://{grpc}")),
                token,
                scratch: dir.join("client"),
            },
            prefix: options.prefix,
            log,
        };
        std::fs::create_dir_all(&node.endpoints.scratch)?;
        node.wait_healthy().await?;
        Ok(node)
    }

    /// Its process id (none once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Polls `/healthz` until it answers 200, the process exits, or the start timeout passes.
    async fn wait_healthy(&mut self) -> Result<()> {
        let url = format!("{}/healthz", self.endpoints.http);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()?;
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "cas-node exited during start-up ({status}); log: {}\n{}",
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "cas-node did not answer {url} within {NODE_START_TIMEOUT:?}; log: {}\n{}",
                    self.log.display(),
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for NodeSystem {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Closing its standard input asks the node to shut down cleanly.
        drop(child.stdin.take());
        let deadline = Instant::now() + NODE_STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The node's TOML configuration.
fn node_config(
    options: &NodeOptions<'_>,
    dir: &Path,
    secret_file: &Path,
    http: SocketAddr,
    grpc: SocketAddr,
) -> String {
    let s3 = options.s3;
    // TOML string literals, escaped.
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let p = |p: &Path| q(&p.display().to_string());
    format!(
        "[node]\n\
         id = 1\n\
         region = \"us-east-1\"\n\
         data_dir = {data_dir}\n\
         \n\
         [http]\n\
         listen = \"{http}\"\n\
         \n\
         [grpc]\n\
         listen = \"{grpc}\"\n\
         \n\
         [s3]\n\
         endpoint = {endpoint}\n\
         region = {region}\n\
         bucket = {bucket}\n\
         access_key_id = {key}\n\
         secret_access_key = {secret}\n\
         key_prefix = {prefix}\n\
         force_path_style = true\n\
         request_timeout = \"300s\"\n\
         \n\
         [auth]\n\
         token_secret_file = {secret_file}\n\
         \n\
         [telemetry]\n\
         log_filter = {log_filter}\n",
        data_dir = p(&dir.join("data")),
        endpoint = q(&s3.endpoint),
        region = q(&s3.region),
        bucket = q(&s3.bucket),
        key = q(&s3.access_key_id),
        secret = q(&s3.secret_access_key),
        prefix = q(&options.prefix),
        secret_file = p(secret_file),
        log_filter = q(options.log_filter),
    )
}

/// Issues a day-long write token with `cas-node token issue`.
fn issue_token(binary: &Path, config: &Path) -> Result<String> {
    let mut child = Command::new(binary)
        .args([
            "token",
            "issue",
            "--scope",
            "write",
            "--subject",
            "cas-bench",
        ])
        .args(["--ttl", "24h", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let deadline = Instant::now() + TOKEN_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("cas-node token issue took over {TOKEN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "cas-node token issue failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// The reference server (`LocalTestServer`), serving from this process until dropped.
pub struct ReferenceSystem {
    _server: LocalTestServer,
    store: PathBuf,
    /// Where clients reach it (any token is accepted).
    pub endpoints: Endpoints,
}

impl ReferenceSystem {
    /// Starts a reference server storing into `dir/store`.
    pub async fn start(dir: PathBuf) -> Result<Self> {
        let store = dir.join("store");
        let scratch = dir.join("client");
        std::fs::create_dir_all(&store)?;
        std::fs::create_dir_all(&scratch)?;
        let server = LocalTestServerBuilder::new()
            .with_disk_location(&store)
            .start()
            .await;
        let endpoints = Endpoints {
            http: server.http_endpoint().to_owned(),
            grpc: None,
            token: "cas-bench".into(),
            scratch,
        };
        Ok(Self {
            _server: server,
            store,
            endpoints,
        })
    }

    /// Frees its directory once the server is gone.
    pub fn remove(self) -> Result<()> {
        let store = self.store.clone();
        drop(self);
        std::fs::remove_dir_all(&store)
            .with_context(|| format!("cannot remove {}", store.display()))
    }
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}
