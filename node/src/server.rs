//! Assembling and running a node from its configuration: object store, index, service,
//! HTTP and gRPC front ends and metrics endpoint, with an orderly shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::grpc::GrpcApi;
use crate::api::grpc::admin::AdminApi;
use crate::api::grpc::peer::PeerApi;
use crate::api::http::{HttpState, router};
use crate::auth::{NodeCredential, Tokens};
use crate::config::{ConfigError, NodeConfig};
use crate::index::{Index, IndexError, IndexOptions, LinkDelays, Peers};
use crate::service::{CasService, ServiceLimits};
use crate::store::{S3Settings, S3Store, StoreError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The S3 bucket is unreachable or refuses the credentials.
    #[error("object store")]
    Store(#[from] StoreError),
    /// The index could not be opened.
    #[error("index")]
    Index(#[from] IndexError),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl StartError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            StartError::Config(_) => "bad_config",
            StartError::Store(e) => e.code(),
            StartError::Index(e) => e.code(),
            StartError::Bind { .. } => "bind_failed",
            StartError::DataDir { .. } => "data_dir_unusable",
        }
    }
}

/// The store settings a configuration describes.
pub fn s3_settings(config: &NodeConfig) -> Result<S3Settings, ConfigError> {
    let s3 = &config.s3;
    let (Some(key), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) else {
        return Err(ConfigError::field(
            "s3.access_key_id",
            "static S3 credentials are required (set s3.access_key_id and s3.secret_access_key)",
        ));
    };
    Ok(S3Settings {
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        bucket: s3.bucket.clone(),
        access_key_id: key.clone(),
        secret_access_key: secret.expose().to_owned(),
        key_prefix: s3.key_prefix.clone(),
        force_path_style: s3.force_path_style,
        request_timeout: s3.request_timeout,
        max_retries: s3.max_retries,
        presign_ttl: s3.presign_ttl,
        ..S3Settings::default()
    })
}

/// A running node.
pub struct RunningNode {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    service: CasService,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn serve(
    listener: TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    })
}

/// How long a stopping node lets open requests (downloads, uploads, replication
/// streams) finish before it cuts them.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Applies the fault file to the node's peer calls every 100 ms until `stop`.
fn watch_faults(
    path: PathBuf,
    index: Arc<Index>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    tracing::warn!(file = %path.display(), "fault injection is on");
    tokio::spawn(async move {
        loop {
            match crate::index::FaultFile::read(&path) {
                Ok(faults) => index.peers().faults().apply(&faults),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable fault file")
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        }
    })
}

/// How often the leader checks that it sits in a region near a quorum.
const LEADER_PLACEMENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands the leadership to a region nearer a quorum when this node leads from a far
/// one (after a failover), every [`LEADER_PLACEMENT_INTERVAL`] until `stop`.
fn place_leader(
    index: Arc<Index>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                _ = tokio::time::sleep(LEADER_PLACEMENT_INTERVAL) => {}
            }
            if let Err(e) = index.place_leader().await {
                tracing::warn!(error = %e, "leader placement");
            }
        }
    })
}

/// The gRPC services of a node: the client API, the node-to-node API, the operator API.
struct GrpcServices {
    cas: GrpcApi,
    peer: PeerApi,
    admin: AdminApi,
}

/// Serves the gRPC services on `listener` until `stop` turns true.
fn serve_grpc(
    listener: TcpListener,
    services: GrpcServices,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .add_service(services.cas.into_server())
            .add_service(services.peer.into_server())
            .add_service(services.admin.into_server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )
            .await
            .map_err(std::io::Error::other)
    })
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: configured,
        source,
    })
}

impl RunningNode {
    /// Starts a node: checks the bucket, opens the index under `node.data_dir`, and
    /// serves the HTTP API, the gRPC API (and `/metrics` when `telemetry.metrics_listen`
    /// is set and a metrics handle is given).
    pub async fn start(
        config: &NodeConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, StartError> {
        let settings = s3_settings(config)?;
        let store = S3Store::new(&settings)?;
        store.check_bucket().await?;

        let data_dir = &config.node.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let tokens = Tokens::from_config(&config.auth)?;

        let http = bind(config.http.listen).await?;
        let http_addr = local_addr(&http, config.http.listen)?;
        let grpc = bind(config.grpc.listen).await?;
        let grpc_addr = local_addr(&grpc, config.grpc.listen)?;
        let metrics_listener = match (config.telemetry.metrics_listen, &metrics) {
            (Some(addr), Some(_)) => Some(bind(addr).await?),
            _ => None,
        };

        let delays = if config.cluster.simulate_region_latency {
            LinkDelays::simulated(config.node.region)
        } else {
            LinkDelays::none()
        };
        let peers = Peers::new(
            Some(NodeCredential::new(tokens.clone(), config.node.id)),
            config.node.region.as_str(),
            delays,
        );
        let index = Arc::new(
            Index::open_with(
                &data_dir.join("index"),
                config.node.id,
                crate::index::NodeInfo::new(
                    config.grpc.advertised(grpc_addr),
                    config.node.region.as_str(),
                ),
                IndexOptions {
                    bootstrap: config.cluster.bootstrap,
                    peers,
                },
            )
            .await?,
        );
        let service = CasService::new(
            index.clone(),
            store,
            ServiceLimits::from_config(&config.limits),
        );

        let (stop, stop_rx) = watch::channel(false);
        let mut servers = Vec::new();
        servers.push(place_leader(index.clone(), stop_rx.clone()));
        if let Some(path) = &config.cluster.fault_file {
            servers.push(watch_faults(path.clone(), index.clone(), stop_rx.clone()));
        }
        let app = router(HttpState {
            service: service.clone(),
            tokens: tokens.clone(),
        });
        servers.push(serve(http, app, stop_rx.clone()));
        let grpc_services = GrpcServices {
            cas: GrpcApi::new(service.clone(), tokens.clone()),
            peer: PeerApi::new(index.clone(), tokens.clone(), stop_rx.clone()),
            admin: AdminApi::new(index.clone(), tokens),
        };
        servers.push(serve_grpc(grpc, grpc_services, stop_rx.clone()));
        let mut metrics_addr = None;
        if let (Some(listener), Some(handle)) = (metrics_listener, metrics) {
            metrics_addr = listener.local_addr().ok();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let handle = handle.clone();
                    async move { handle.render() }
                }),
            );
            servers.push(serve(listener, app, stop_rx));
        }
        tracing::info!(http = %http_addr, grpc = %grpc_addr, node = config.node.id, region = %config.node.region, "node serving");
        Ok(RunningNode {
            http_addr,
            grpc_addr,
            metrics_addr,
            service,
            stop,
            servers,
        })
    }

    /// The address the HTTP API listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address the gRPC API listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address of the metrics endpoint, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Turns true when the cluster removed this node (it should stop).
    pub fn removed(&self) -> watch::Receiver<bool> {
        self.service.index().removed()
    }

    /// The service this node runs.
    pub fn service(&self) -> &CasService {
        &self.service
    }

    /// Stops accepting requests, lets open ones finish (for at most
    /// [`SHUTDOWN_GRACE`]; then they are cut), then closes the index.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut s in self.servers {
            match tokio::time::timeout_at(deadline, &mut s).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
                Err(_) => {
                    tracing::warn!(
                        grace = ?SHUTDOWN_GRACE,
                        "requests still open at the end of the shutdown grace; cutting them"
                    );
                    s.abort();
                    let _ = s.await;
                }
            }
        }
        let index = self.service.index().clone();
        drop(self.service);
        match Arc::try_unwrap(index) {
            Ok(index) => index.shutdown().await,
            // Connections cut at the end of the grace run on in tasks of their own
            // and still hold the service: stop Raft at least.
            Err(index) => {
                tracing::warn!(
                    "cut connections still hold the index: Raft stops, the database closes on exit"
                );
                index.stop_raft().await;
            }
        }
        tracing::info!("node stopped");
    }
}
