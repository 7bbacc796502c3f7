//! The S3 server every system stores into, and the plain-S3 (Git-LFS-style)
//! baseline: whole objects PUT and GET through aws-sdk-s3.

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use tokio::io::AsyncWriteExt as _;

use crate::cpu::Process;

/// Part size of the baseline's multipart uploads (what a Git LFS server's
/// S3 backend typically uses).
pub const PART_SIZE: u64 = 16 << 20;
/// Parts of one baseline upload in flight at once.
pub const PART_CONCURRENCY: usize = 4;
/// Longest time `scripts/garage.sh start` may take.
const GARAGE_START_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout of one S3 request attempt (a whole-object GET of a few GiB included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Concurrent deletes when a prefix is cleared.
const DELETE_CONCURRENCY: usize = 16;
/// Most listing pages read for one prefix (1000 keys each).
const MAX_LIST_PAGES: usize = 10_000;

/// Which S3 server to run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum S3Kind {
    /// Start a Garage server with `scripts/garage.sh` (installed with
    /// `scripts/garage.sh install`) and stop it at the end.
    Garage,
    /// The Garage (or other S3) server the `GARAGE_*` variables name, as
    /// `scripts/garage.sh start` prints them.
    Env,
    /// The embedded s3s-fs server of `cas-node`, in this process.
    S3s,
}

/// Which Garage build `scripts/garage.sh` runs (its `GARAGE_PROFILE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GarageBuild {
    /// The crate's release profile, as operators install it
    /// (`GARAGE_PROFILE=release scripts/garage.sh install`, ~15 minutes once).
    Release,
    /// The quick build the test suites use (opt-level 1): about twice
    /// Garage's CPU per stored byte, which the client and node share.
    Test,
}

impl GarageBuild {
    /// The `GARAGE_PROFILE` value.
    pub fn profile(self) -> &'static str {
        match self {
            GarageBuild::Release => "release",
            GarageBuild::Test => "test",
        }
    }
}

/// How to reach the S3 bucket.
#[derive(Clone, Debug)]
pub struct S3Location {
    /// Endpoint URL, `http://host:port`.
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Bucket all systems share (each under its own key prefix).
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

/// A running S3 server; stopped when dropped (Garage) or shut down with the
/// process (s3s-fs).
pub enum S3Server {
    /// A Garage server this run started.
    Garage {
        /// Stops it when dropped.
        _guard: GarageGuard,
    },
    /// A server this run did not start.
    External,
    /// The embedded s3s-fs server.
    Embedded {
        /// Stops serving when dropped.
        _server: cas_node::store::LocalS3,
    },
}

impl S3Server {
    /// Its process, for CPU accounting: Garage's, this one for the embedded
    /// server, none for a server elsewhere.
    pub fn process(&self) -> Option<Process> {
        match self {
            S3Server::Garage { _guard: guard } => guard.pid().map(Process::Pid),
            S3Server::External => None,
            S3Server::Embedded { .. } => Some(Process::Own),
        }
    }
}

/// Starts (or finds) the S3 server of `kind`; `dir` holds its data.
pub async fn start(
    kind: S3Kind,
    dir: &Path,
    garage_script: &Path,
    garage_build: GarageBuild,
) -> Result<(S3Server, S3Location)> {
    match kind {
        S3Kind::Garage => {
            let (guard, location) = GarageGuard::start(garage_script, dir, garage_build).await?;
            Ok((S3Server::Garage { _guard: guard }, location))
        }
        S3Kind::Env => {
            let vars = |name: &str| {
                std::env::var(name).with_context(|| format!("--s3 env needs {name} to be set"))
            };
            let location = S3Location {
                endpoint: vars("GARAGE_ENDPOINT")?,
                region: std::env::var("GARAGE_REGION").unwrap_or_else(|_| "garage".into()),
                bucket: vars("GARAGE_DEFAULT_BUCKET")?,
                access_key_id: vars("GARAGE_DEFAULT_ACCESS_KEY")?,
                secret_access_key: vars("GARAGE_DEFAULT_SECRET_KEY")?,
            };
            Ok((S3Server::External, location))
        }
        S3Kind::S3s => {
            let mut config = cas_node::store::LocalS3Config::new(dir);
            config.bucket = "cas-bench".into();
            let server = cas_node::store::LocalS3::start(config)
                .await
                .context("cannot start the embedded S3 server")?;
            let location = S3Location {
                endpoint: server.endpoint().to_owned(),
                region: server.region().to_owned(),
                bucket: server.bucket().to_owned(),
                access_key_id: server.access_key_id().to_owned(),
                secret_access_key: server.secret_access_key().to_owned(),
            };
            Ok((S3Server::Embedded { _server: server }, location))
        }
    }
}

/// A Garage server started with `scripts/garage.sh start DIR`; stopped with
/// `scripts/garage.sh stop DIR` when dropped.
pub struct GarageGuard {
    script: PathBuf,
    dir: PathBuf,
    build: GarageBuild,
}

impl GarageGuard {
    /// Starts Garage with its configuration and data in `dir`.
    async fn start(script: &Path, dir: &Path, build: GarageBuild) -> Result<(Self, S3Location)> {
        ensure!(
            script.is_file(),
            "{} not found; pass --garage-script, or --s3 s3s to use the embedded S3 server",
            script.display()
        );
        std::fs::create_dir_all(dir)?;
        let child = tokio::process::Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(dir)
            .env("GARAGE_PROFILE", build.profile())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot run scripts/garage.sh")?;
        // From here on the guard stops whatever the script managed to start.
        let guard = GarageGuard {
            script: script.to_owned(),
            dir: dir.to_owned(),
            build,
        };
        let out = tokio::time::timeout(GARAGE_START_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("garage.sh start took over {GARAGE_START_TIMEOUT:?}"))??;
        if !out.status.success() {
            bail!(
                "garage.sh start failed ({}); is Garage's {} build installed \
                 (GARAGE_PROFILE={} scripts/garage.sh install)?\n{}",
                out.status,
                build.profile(),
                build.profile(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| {
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix("export "))
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_owned)
                .with_context(|| format!("garage.sh start printed no {name}"))
        };
        let location = S3Location {
            endpoint: var("GARAGE_ENDPOINT")?,
            region: var("GARAGE_REGION")?,
            bucket: var("GARAGE_DEFAULT_BUCKET")?,
            access_key_id: var("GARAGE_DEFAULT_ACCESS_KEY")?,
            secret_access_key: var("GARAGE_DEFAULT_SECRET_KEY")?,
        };
        Ok((guard, location))
    }

    /// The Garage process (`garage.sh start` writes it to `DIR/garage.pid`).
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("garage.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for GarageGuard {
    fn drop(&mut self) {
        // The script waits at most 20 s for a clean exit, then kills Garage.
        let status = std::process::Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .env("GARAGE_PROFILE", self.build.profile())
            .stdin(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "cas-bench: could not stop Garage in {} ({status:?}); stop it with: {} stop {}",
                self.dir.display(),
                self.script.display(),
                self.dir.display()
            );
        }
    }
}

/// Objects and bytes under a prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of objects.
    pub objects: u64,
    /// Sum of their sizes.
    pub bytes: u64,
}

/// The shared bucket through aws-sdk-s3: the baseline's transfers, usage and clean-up.
#[derive(Clone, Debug)]
pub struct Bucket {
    client: Client,
    bucket: String,
}

impl Bucket {
    /// A client for `location` (path-style addressing, checksums only where
    /// required: Garage over plain HTTP refuses the SDK's streaming checksums).
    pub fn new(location: &S3Location) -> Self {
        let credentials = Credentials::new(
            location.access_key_id.clone(),
            location.secret_access_key.clone(),
            None,
            None,
            "cas-bench",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(location.region.clone()))
            .endpoint_url(location.endpoint.clone())
            .credentials_provider(credentials)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(REQUEST_TIMEOUT)
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: location.bucket.clone(),
        }
    }

    /// Uploads the file at `path` as object `key`, as a Git LFS server's S3
    /// backend does: one PUT up to [`PART_SIZE`], above it a multipart upload of
    /// [`PART_SIZE`] parts, [`PART_CONCURRENCY`] in flight, each read from the
    /// file just before it is sent.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let file = Arc::new(std::fs::File::open(path)?);
        let size = file.metadata()?.len();
        if size <= PART_SIZE {
            let body = read_at(&file, 0, size as usize).await?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| anyhow!("PUT {key}: {}", DisplayErrorContext(e)))?;
            return Ok(());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| anyhow!("CreateMultipartUpload {key}: {}", DisplayErrorContext(e)))?;
        let upload_id = created
            .upload_id()
            .context("CreateMultipartUpload returned no upload id")?
            .to_owned();
        match self.put_parts(key, &upload_id, &file, size).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    /// Sends every part of a multipart upload and completes it.
    async fn put_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &Arc<std::fs::File>,
        size: u64,
    ) -> Result<()> {
        let parts = size.div_ceil(PART_SIZE);
        let mut completed: Vec<CompletedPart> = stream::iter(0..parts)
            .map(|i| async move {
                let offset = i * PART_SIZE;
                let len = PART_SIZE.min(size - offset) as usize;
                let body = read_at(file, offset, len).await?;
                let number = i32::try_from(i + 1)?;
                let sent = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!("UploadPart {key} #{number}: {}", DisplayErrorContext(e))
                    })?;
                anyhow::Ok(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(sent.e_tag().map(str::to_owned))
                        .build(),
                )
            })
            .buffer_unordered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        completed.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| anyhow!("CompleteMultipartUpload {key}: {}", DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Downloads object `key` to `out` with one GET, streaming the body to the
    /// file as it arrives (what `git lfs pull` does); returns the bytes written.
    /// Like the clients' downloads (`cas` without `--sync`, hf_xet), it does not
    /// sync the file to disk.
    pub async fn get_to_file(&self, key: &str, out: &Path) -> Result<u64> {
        let mut response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| anyhow!("GET {key}: {}", DisplayErrorContext(e)))?;
        let file = tokio::fs::File::create(out).await?;
        let mut writer = tokio::io::BufWriter::with_capacity(crate::data::BLOCK, file);
        let mut written = 0u64;
        while let Some(piece) = response.body.next().await {
            let piece = piece.with_context(|| format!("GET {key}: reading the body"))?;
            writer.write_all(&piece).await?;
            written += piece.len() as u64;
        }
        writer.flush().await?;
        Ok(written)
    }

    /// The keys and sizes of every object under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut objects = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        for _ in 0..MAX_LIST_PAGES {
            let Some(page) = pages.next().await else {
                return Ok(objects);
            };
            let page = page.map_err(|e| anyhow!("LIST {prefix}: {}", DisplayErrorContext(e)))?;
            for object in page.contents() {
                let key = object.key().context("a listed object has no key")?;
                let size = u64::try_from(object.size().unwrap_or(0))?;
                objects.push((key.to_owned(), size));
            }
        }
        bail!("more than {MAX_LIST_PAGES} listing pages under {prefix}")
    }

    /// How many objects and bytes are stored under `prefix`.
    pub async fn usage(&self, prefix: &str) -> Result<Usage> {
        let objects = self.list(prefix).await?;
        Ok(Usage {
            objects: objects.len() as u64,
            bytes: objects.iter().map(|(_, size)| size).sum(),
        })
    }

    /// Deletes every object under `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let objects = self.list(prefix).await?;
        let count = objects.len();
        stream::iter(objects)
            .map(|(key, _)| async move {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| anyhow!("DELETE {key}: {}", DisplayErrorContext(e)))
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(count)
    }
}

/// Reads `len` bytes at `offset` of `file` on a blocking thread.
async fn read_at(file: &Arc<std::fs::File>, offset: u64, len: usize) -> Result<bytes::Bytes> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        anyhow::Ok(bytes::Bytes::from(buf))
    })
    .await?
}
