//! [`LocalS3`]: an in-process S3-compatible server (s3s-fs) for local runs and tests.
//!
//! # What s3s-fs 0.14.1 does and does not do (checked by `node/tests/store_s3.rs`)
//!
//! Works, and is what the store relies on:
//! - SigV4 header auth, really checked: a wrong secret or an unknown access key
//!   gets 403, an unsigned request gets 403 `AccessDenied`;
//! - SigV4 query auth (presigned URLs): a plain GET with no `Authorization`
//!   header, with or without a `Range` header (Range is not a signed header),
//!   is served; a changed signature or path, or an expired URL, gets 403;
//! - single ranges `bytes=S-E`, `bytes=S-` and `bytes=-N`, answered 206 with
//!   `Content-Range`; a start at or past the end gets 416 `InvalidRange`; an
//!   end past the end is clamped (S3 behaviour; the store turns it into an
//!   error);
//! - multipart uploads (create, upload part, complete, abort), with S3's
//!   5 MiB minimum for every part but the last, and parts numbered 1..N;
//! - writes are atomic (temporary file, then rename), so readers never see a
//!   partial object.
//!
//! Gaps, none of which the store depends on:
//! - no multi-range GETs (`bytes=a-b,c-d`): the Xet client sends single ranges
//!   by default (XET.md §11);
//! - conditional create (`If-None-Match: *`) is not atomic; the store never
//!   uses conditional writes;
//! - keys map to file paths, so `a` and `a/b` cannot both exist and a key may
//!   not end in `/`; the key layout never produces either;
//! - a GET on a missing bucket answers `NoSuchKey`, not `NoSuchBucket`;
//! - files are not fsynced: not durable across a power loss (fine for tests and
//!   demos, not for production);
//! - after a failed `CompleteMultipartUpload` the upload id is gone, so the
//!   abort that follows is refused; the part files were already consumed;
//! - GETs stream in 4 KiB reads (about 100 MB/s).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use rand::distr::{Alphanumeric, SampleString as _};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::S3Settings;

/// How long a stopping server waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the embedded S3 server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalS3Error {
    /// The bucket name is not a valid S3 bucket name.
    #[error("invalid bucket name {0:?}")]
    InvalidBucket(String),
    /// The access key id or secret is empty.
    #[error("the access key id and secret must not be empty")]
    EmptyCredentials,
    /// The data directory or the bucket directory could not be created or opened.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl LocalS3Error {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            LocalS3Error::InvalidBucket(_) => "local_s3_invalid_bucket",
            LocalS3Error::EmptyCredentials => "local_s3_empty_credentials",
            LocalS3Error::DataDir { .. } => "local_s3_data_dir",
            LocalS3Error::Bind { .. } => "local_s3_bind",
        }
    }
}

/// What to start an embedded S3 server with.
#[derive(Clone)]
pub struct LocalS3Config {
    /// Directory holding the data; one sub-directory per bucket.
    pub root: PathBuf,
    /// Bucket created at start (kept if it exists).
    pub bucket: String,
    /// Region clients sign for (s3s accepts any).
    pub region: String,
    /// The one access key id the server accepts.
    pub access_key_id: String,
    /// Its secret; never printed by `Debug`.
    pub secret_access_key: String,
    /// Listening address; the default `127.0.0.1:0` picks a free loopback port.
    pub bind: SocketAddr,
}

impl std::fmt::Debug for LocalS3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalS3Config")
            .field("root", &self.root)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("bind", &self.bind)
            .finish()
    }
}

impl LocalS3Config {
    /// Bucket `cas` in `us-east-1` under `root`, fresh random credentials, a free
    /// loopback port.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let mut rng = rand::rng();
        Self {
            root: root.into(),
            bucket: "cas".to_owned(),
            region: "us-east-1".to_owned(),
            access_key_id: format!("LOCAL{}", Alphanumeric.sample_string(&mut rng, 15))
                .to_uppercase(),
            secret_access_key: Alphanumeric.sample_string(&mut rng, 40),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// An s3s-fs server running in this process, with SigV4 auth for one key pair.
///
/// Stops gracefully on [`shutdown`](Self::shutdown) or, without waiting, when
/// dropped (the server task then finishes open requests on its own). See the
/// module documentation for what s3s-fs supports.
#[derive(Debug)]
pub struct LocalS3 {
    config: LocalS3Config,
    endpoint: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl LocalS3 {
    /// Creates the data and bucket directories, binds the socket and starts serving.
    pub async fn start(config: LocalS3Config) -> Result<Self, LocalS3Error> {
        if !s3s::path::check_bucket_name(&config.bucket) {
            return Err(LocalS3Error::InvalidBucket(config.bucket));
        }
        if config.access_key_id.is_empty() || config.secret_access_key.is_empty() {
            return Err(LocalS3Error::EmptyCredentials);
        }
        let data_dir = |path: &Path, message: String| LocalS3Error::DataDir {
            path: path.to_owned(),
            message,
        };
        // s3s-fs keeps a bucket as a directory under the root: creating it
        // directly is idempotent across restarts (CreateBucket is not).
        let bucket_dir = config.root.join(&config.bucket);
        tokio::fs::create_dir_all(&bucket_dir)
            .await
            .map_err(|e| data_dir(&bucket_dir, e.to_string()))?;
        let fs = s3s_fs::FileSystem::new(&config.root)
            .map_err(|e| data_dir(&config.root, format!("{e:?}")))?;
        let service = {
            let mut builder = S3ServiceBuilder::new(fs);
            builder.set_auth(SimpleAuth::from_single(
                config.access_key_id.clone(),
                config.secret_access_key.clone(),
            ));
            builder.build()
        };
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|source| LocalS3Error::Bind {
                    addr: config.bind,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| LocalS3Error::Bind {
            addr: config.bind,
            source,
        })?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, service, stopped));
        tracing::info!(%addr, root = %config.root.display(), bucket = config.bucket, "embedded S3 server started");
        Ok(Self {
            endpoint: format!("http://{addr}"),
            addr,
            config,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The server's URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    /// The region clients should sign for.
    pub fn region(&self) -> &str {
        &self.config.region
    }

    /// The accepted access key id.
    pub fn access_key_id(&self) -> &str {
        &self.config.access_key_id
    }

    /// The accepted secret access key.
    pub fn secret_access_key(&self) -> &str {
        &self.config.secret_access_key
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.config.root
    }

    /// Store settings pointing at this server (defaults for everything else).
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: self.config.region.clone(),
            bucket: self.config.bucket.clone(),
            access_key_id: self.config.access_key_id.clone(),
            secret_access_key: self.config.secret_access_key.clone(),
            ..S3Settings::default()
        }
    }

    /// Stops accepting connections, lets open ones finish (up to 10 s), and
    /// waits for the server task to end; the port is closed on return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "embedded S3 server task failed");
        }
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        // Dropping the sender wakes the server task, which stops on its own.
        self.stop.take();
    }
}

/// Accepts connections until `stopped` fires (or its sender is dropped), then
/// closes the listener and drains open connections.
async fn serve(listener: TcpListener, service: S3Service, mut stopped: oneshot::Receiver<()>) {
    let builder = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let conn = builder.serve_connection(TokioIo::new(socket), service.clone());
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "embedded S3 connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "embedded S3 server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("embedded S3 server stopped"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("embedded S3 server stopped with connections still open");
        }
    }
}
