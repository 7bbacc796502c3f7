//! The clients whose transfers are timed: our `cas` binary, the real Xet client
//! `hf_xet` (through `node/tests/python/hf_xet_driver.py`), and plain whole-object
//! S3 PUT/GET through aws-sdk-s3 (multipart for large objects, as a Git-LFS server
//! stores files).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use cas_node::store::{S3Settings, S3Store};

use crate::systems::Garage;

/// Runs a command, failing with its stderr; returns its stdout and how long it took.
fn timed(cmd: &mut Command) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((String::from_utf8(out.stdout)?, took))
}

/// Our client.
pub struct Cas {
    /// The `cas` executable.
    pub exe: PathBuf,
}

impl Cas {
    /// Uploads `file`; returns its hash and the time taken.
    pub fn upload(
        &self,
        endpoint: &str,
        token: &str,
        file: &Path,
    ) -> anyhow::Result<(String, Duration)> {
        let (out, took) = timed(
            Command::new(&self.exe)
                .args(["upload", "--endpoint", endpoint, "--token", token])
                .arg(file),
        )?;
        let hash = out
            .split_whitespace()
            .next()
            .context("cas upload printed no hash")?
            .to_owned();
        Ok((hash, took))
    }

    /// Downloads `hash` to `out`; returns the time taken.
    pub fn download(
        &self,
        endpoint: &str,
        token: &str,
        hash: &str,
        out: &Path,
    ) -> anyhow::Result<Duration> {
        let (_, took) = timed(
            Command::new(&self.exe)
                .args([
                    "download",
                    "--endpoint",
                    endpoint,
                    "--token",
                    token,
                    hash,
                    "-o",
                ])
                .arg(out),
        )?;
        Ok(took)
    }
}

/// The real Xet client.
pub struct HfXet {
    /// The driver script.
    pub driver: PathBuf,
}

impl HfXet {
    /// Uploads `file`; returns its hash and the time taken.
    pub fn upload(
        &self,
        endpoint: &str,
        token: &str,
        file: &Path,
    ) -> anyhow::Result<(String, Duration)> {
        let (out, took) = timed(
            Command::new("python3")
                .arg(&self.driver)
                .args(["upload", endpoint, token])
                .arg(file),
        )?;
        let v: serde_json::Value =
            serde_json::from_str(out.lines().next().context("no driver output")?)?;
        let hash = v["hash"].as_str().context("no hash")?.to_owned();
        Ok((hash, took))
    }

    /// Downloads `hash` (`size` bytes) to `out`; returns the time taken.
    pub fn download(
        &self,
        endpoint: &str,
        token: &str,
        hash: &str,
        size: u64,
        out: &Path,
    ) -> anyhow::Result<Duration> {
        let (_, took) = timed(
            Command::new("python3")
                .arg(&self.driver)
                .args(["download", endpoint, token, hash, &size.to_string()])
                .arg(out),
        )?;
        Ok(took)
    }
}

/// Plain whole-object S3 transfers (the Git-LFS-style baseline).
pub struct PlainS3 {
    store: S3Store,
}

impl PlainS3 {
    /// Objects go under `prefix` in Garage's bucket.
    pub fn new(garage: &Garage, prefix: &str) -> anyhow::Result<Self> {
        let settings = S3Settings {
            endpoint: Some(garage.endpoint.clone()),
            region: garage.region.clone(),
            bucket: garage.bucket.clone(),
            access_key_id: garage.key.clone(),
            secret_access_key: garage.secret.clone(),
            key_prefix: prefix.to_owned(),
            force_path_style: true,
            ..S3Settings::default()
        };
        Ok(PlainS3 {
            store: S3Store::new(&settings)?,
        })
    }

    /// PUTs `file` as `key` (multipart above the store's threshold); returns the time
    /// taken, reading the file included.
    pub async fn put(&self, key: &str, file: &Path) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let data = Bytes::from(tokio::fs::read(file).await?);
        self.store.put_object(key, data).await?;
        Ok(started.elapsed())
    }

    /// GETs `key` into `out` with one request; returns the time taken, writing included.
    pub async fn get(&self, key: &str, out: &Path) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let data = self.store.get_object(key).await?;
        tokio::fs::write(out, &data).await?;
        Ok(started.elapsed())
    }
}
