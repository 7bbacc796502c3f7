//! `cas-node serve` and `cas-node demo`: running nodes until interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cas_node::auth::{Scope, Tokens};
use cas_node::config::{NodeConfig, Secret};
use cas_node::local_cluster::{Layout, LocalCluster, LocalClusterSpec};
use cas_node::server::RunningNode;
use cas_node::store::{LocalS3, LocalS3Config};
use cas_node::telemetry;

/// Lifetime of the token `demo` hands out.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(7 * 86_400);

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
async fn interrupted() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot watch Ctrl-C")?;
    Ok(())
}

fn init_telemetry(
    config: &NodeConfig,
) -> anyhow::Result<Option<metrics_exporter_prometheus::PrometheusHandle>> {
    telemetry::init_logging(&config.telemetry)?;
    Ok(match config.telemetry.metrics_listen {
        Some(_) => Some(telemetry::install_metrics()?),
        None => None,
    })
}

/// Resolves once standard input is closed (never, unless `watch`).
async fn stdin_closed(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// `cas-node serve`: runs until interrupted, removed from the cluster, or (with
/// `exit_with_stdin`) until standard input closes.
pub async fn serve(config: NodeConfig, exit_with_stdin: bool) -> anyhow::Result<()> {
    let metrics = init_telemetry(&config)?;
    let node = RunningNode::start(&config, metrics).await?;
    let mut removed = node.removed();
    let was_removed = tokio::select! {
        r = interrupted() => { r?; false }
        _ = stdin_closed(exit_with_stdin) => false,
        _ = removed.wait_for(|r| *r) => true,
    };
    tracing::info!("stopping");
    node.shutdown().await;
    if was_removed {
        anyhow::bail!(
            "node {} was removed from the cluster; its data directory is retired",
            config.node.id
        );
    }
    Ok(())
}

/// What `cas-node demo` was asked for.
pub struct DemoOptions {
    /// The configuration (demo mode: no secret needed).
    pub config: NodeConfig,
    /// Where to write the endpoints and token.
    pub state: Option<PathBuf>,
    /// Where to keep data (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// The HTTP API address.
    pub http_listen: std::net::SocketAddr,
    /// The gRPC API address.
    pub grpc_listen: std::net::SocketAddr,
    /// Nodes per region; one node runs in this process, more run as child processes.
    pub layout: Layout,
}

/// Reads the demo's token secret from `path`, creating a random one the first time.
fn demo_secret(path: &Path) -> anyhow::Result<Secret> {
    cas_node::local_cluster::token_secret(path)
        .with_context(|| format!("the token secret {}", path.display()))
}

/// Writes `bytes` to `path` readable by the owner only, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    cas_node::local_cluster::write_private(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `cas-node demo`: one node in this process, or a whole local cluster.
pub async fn demo(opts: DemoOptions) -> anyhow::Result<()> {
    if opts.layout.total() > 1 {
        return demo_cluster(opts).await;
    }
    let mut config = opts.config;
    config.node.region = opts.layout.0[0].0;
    let metrics = init_telemetry(&config)?;
    let (_temp, data_dir) = match opts.data_dir {
        Some(dir) => (None, dir),
        None => {
            let t = tempfile::Builder::new()
                .prefix("cas-demo-")
                .tempdir()
                .context("cannot create a temporary data directory")?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;

    // The embedded S3 server, unless the configuration names an S3 endpoint.
    let s3 = match config.s3.endpoint {
        Some(_) => None,
        None => {
            let s3 = LocalS3::start(LocalS3Config::new(data_dir.join("s3")))
                .await
                .context("cannot start the embedded S3 server")?;
            config.s3.endpoint = Some(s3.endpoint().to_owned());
            config.s3.region = s3.region().to_owned();
            config.s3.bucket = s3.bucket().to_owned();
            config.s3.access_key_id = Some(s3.access_key_id().to_owned());
            config.s3.secret_access_key = Some(Secret::new(s3.secret_access_key()));
            config.s3.force_path_style = true;
            Some(s3)
        }
    };
    config.node.data_dir = data_dir.join("node");
    config.http.listen = opts.http_listen;
    config.grpc.listen = opts.grpc_listen;
    if config.auth.token_secret.is_none() && config.auth.token_secret_file.is_none() {
        config.auth.token_secret = Some(demo_secret(&data_dir.join("token-secret"))?);
    }

    let node = match RunningNode::start(&config, metrics).await {
        Ok(node) => node,
        Err(e) => {
            if let Some(s3) = s3 {
                s3.shutdown().await;
            }
            return Err(e.into());
        }
    };
    let url = format!("http://{}", node.http_addr());
    let grpc_url = format!("grpc://{}", node.grpc_addr());
    let token = Tokens::from_config(&config.auth)?
        .with_max_ttl(config.auth.max_token_ttl)
        .issue(
            "demo",
            vec![Scope::Write],
            DEMO_TOKEN_TTL.min(config.auth.max_token_ttl),
        )
        .context("cannot issue the demo token")?;
    let state = serde_json::json!({
        "endpoints": { config.node.region.as_str(): [url] },
        "grpc_endpoints": { config.node.region.as_str(): [grpc_url] },
        "token": token.token,
    });
    let text = serde_json::to_string_pretty(&state)?;
    if let Some(path) = &opts.state {
        write_private(path, text.as_bytes())?;
    }
    println!("{text}");
    eprintln!(
        "cas-node demo: serving {url} and {grpc_url} (region {}); Ctrl-C stops it",
        config.node.region
    );

    interrupted().await?;
    tracing::info!("stopping");
    node.shutdown().await;
    if let Some(s3) = s3 {
        s3.shutdown().await;
    }
    if let Some(path) = &opts.state {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// `cas-node demo` with more than one node: an embedded S3 server and one child
/// process per node, joined into one group, with the inter-region latency simulated.
async fn demo_cluster(opts: DemoOptions) -> anyhow::Result<()> {
    telemetry::init_logging(&opts.config.telemetry)?;
    let (_temp, base_dir) = match opts.data_dir {
        Some(dir) => (None, dir),
        None => {
            let t = tempfile::Builder::new()
                .prefix("cas-demo-")
                .tempdir()
                .context("cannot create a temporary data directory")?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    let spec = LocalClusterSpec {
        layout: opts.layout.clone(),
        base_dir: base_dir.clone(),
        exe: std::env::current_exe().context("cannot find the cas-node executable")?,
        simulate_region_latency: true,
        log_filter: opts.config.telemetry.log_filter.clone(),
        fault_injection: false,
        network: cas_node::local_cluster::ClusterNetwork::Loopback,
    };
    let mut cluster = if LocalCluster::exists_in(&base_dir) {
        eprintln!(
            "cas-node demo: resuming the cluster kept in {} (its own layout and data)",
            base_dir.display()
        );
        LocalCluster::resume(spec)
            .await
            .context("cannot resume the local cluster")?
    } else {
        eprintln!(
            "cas-node demo: starting {} nodes ({}) under {}",
            opts.layout.total(),
            opts.layout,
            base_dir.display()
        );
        LocalCluster::start(spec)
            .await
            .context("cannot start the local cluster")?
    };
    let status = cluster.status().await.context("no cluster status")?;
    let write = cluster.token(&[Scope::Write])?;
    let admin = cluster.token(&[Scope::Admin])?;
    let mut endpoints = serde_json::Map::new();
    let mut grpc: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (region, urls) in cluster.endpoints() {
        endpoints.insert(region.to_string(), serde_json::json!(urls));
    }
    for n in cluster.nodes().values() {
        grpc.entry(n.region.to_string())
            .or_default()
            .push(n.grpc_url());
    }
    let nodes: Vec<serde_json::Value> = cluster
        .nodes()
        .values()
        .map(|n| {
            let member = status.members.iter().find(|m| m.id == n.id);
            serde_json::json!({
                "id": n.id,
                "region": n.region.as_str(),
                "http": n.http_url(),
                "grpc": n.grpc_url(),
                "role": match member {
                    Some(m) if m.leader => "leader",
                    Some(m) if m.voter => "voter",
                    _ => "learner",
                },
                "pid": n.pid(),
                "data_dir": n.data_dir,
                "log": cluster.log_path(n.id),
            })
        })
        .collect();
    let state = serde_json::json!({
        "endpoints": endpoints,
        "grpc_endpoints": grpc,
        "token": write,
        "admin_token": admin,
        "nodes": nodes,
    });
    let text = serde_json::to_string_pretty(&state)?;
    if let Some(path) = &opts.state {
        write_private(path, text.as_bytes())?;
    }
    println!("{text}");
    for (region, urls) in cluster.endpoints() {
        eprintln!("cas-node demo: {region}: {}", urls.join(" "));
    }
    eprintln!("cas-node demo: the cluster serves; Ctrl-C stops it");
    interrupted().await?;
    eprintln!("cas-node demo: stopping");
    cluster.shutdown().await;
    if let Some(path) = &opts.state {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
