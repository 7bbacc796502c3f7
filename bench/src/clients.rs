//! The clients under test, each driven as a subprocess and timed whole:
//! `cas` over the Xet HTTP API, `cas` over the node's gRPC API, and the real
//! Xet client `hf_xet` through `node/tests/python/hf_xet_driver.py`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::systems::Endpoints;

/// A client program. Adding a client is adding a variant here, its name and
/// how it uploads and downloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `cas` over the Xet HTTP API (`http://` endpoint).
    CasHttp,
    /// `cas` over the node's gRPC API (`grpc://` endpoint).
    CasGrpc,
    /// hf_xet 1.8.0, the Hugging Face client, over the Xet HTTP API.
    HfXet,
}

impl Client {
    /// Every client, in table order.
    pub const ALL: [Client; 3] = [Client::CasHttp, Client::CasGrpc, Client::HfXet];

    /// The client's name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Client::CasHttp => "cas (HTTP)",
            Client::CasGrpc => "cas (gRPC)",
            Client::HfXet => "hf_xet",
        }
    }

    /// The endpoint of a server this client talks to; `None` when the server
    /// does not speak its protocol (the reference server has no gRPC API).
    pub fn endpoint(self, endpoints: &Endpoints) -> Option<&str> {
        match self {
            Client::CasHttp | Client::HfXet => Some(&endpoints.http),
            Client::CasGrpc => endpoints.grpc.as_deref(),
        }
    }
}

/// One timed upload.
#[derive(Clone, Debug)]
pub struct Uploaded {
    /// The file's Xet hash, as the client printed it.
    pub hash: String,
    /// Wall time of the whole client process.
    pub elapsed: Duration,
    /// Bytes the client says it sent (`cas` reports it; hf_xet does not).
    pub bytes_sent: Option<u64>,
}

/// The programs the bench runs, and how long each run may take.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The `cas` binary.
    pub cas: PathBuf,
    /// The `cas-node` binary.
    pub cas_node: PathBuf,
    /// The Python interpreter with hf_xet installed.
    pub python: PathBuf,
    /// `hf_xet_driver.py`.
    pub hf_xet_driver: PathBuf,
    /// Longest run of one client process.
    pub timeout: Duration,
    /// `cas upload` runs with `--sha256`.
    pub cas_sha256: bool,
}

impl Tools {
    /// Whether `cas` accepts `grpc://` endpoints (its `upload --help` says so).
    pub async fn cas_speaks_grpc(&self) -> Result<bool> {
        let mut cmd = tokio::process::Command::new(&self.cas);
        cmd.args(["upload", "--help"]);
        let out = self.run(cmd, "cas upload --help").await?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("grpc://"))
    }

    /// Checks that hf_xet imports in the configured Python.
    pub async fn check_hf_xet(&self) -> Result<()> {
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.args(["-c", "import hf_xet"]);
        self.run(cmd, "python3 -c 'import hf_xet'")
            .await
            .map(drop)
            .context(
                "hf_xet is not importable; install it with: pip install -r requirements-test.txt",
            )
    }

    /// Uploads `path` with `client` to the server at `endpoints`.
    pub async fn upload(
        &self,
        client: Client,
        endpoints: &Endpoints,
        path: &Path,
    ) -> Result<Uploaded> {
        let endpoint = client
            .endpoint(endpoints)
            .with_context(|| format!("{} cannot talk to this server", client.name()))?;
        let cmd = match client {
            Client::CasHttp | Client::CasGrpc => {
                let mut cmd = self.cas_command(endpoints);
                cmd.args(["upload", "--endpoint", endpoint]).arg(path);
                if self.cas_sha256 {
                    cmd.arg("--sha256");
                }
                cmd
            }
            Client::HfXet => {
                let mut cmd = self.hf_xet_command(endpoints);
                cmd.args(["upload", endpoint, &endpoints.token]).arg(path);
                cmd
            }
        };
        let started = Instant::now();
        let out = self.run(cmd, &format!("{} upload", client.name())).await?;
        let elapsed = started.elapsed();
        let stdout = String::from_utf8(out.stdout)?;
        let (hash, bytes_sent) = match client {
            Client::CasHttp | Client::CasGrpc => {
                let hash = stdout
                    .split_whitespace()
                    .next()
                    .context("cas upload printed no file hash")?
                    .to_owned();
                (hash, cas_bytes_sent(&String::from_utf8_lossy(&out.stderr)))
            }
            Client::HfXet => {
                let line: serde_json::Value = serde_json::from_str(stdout.trim())
                    .with_context(|| format!("hf_xet driver printed {stdout:?}"))?;
                let hash = line["hash"]
                    .as_str()
                    .context("hf_xet driver printed no hash")?;
                (hash.to_owned(), None)
            }
        };
        Ok(Uploaded {
            hash,
            elapsed,
            bytes_sent,
        })
    }

    /// Downloads file `hash` (`size` bytes) with `client` from the server at
    /// `endpoints` to `out`; returns the wall time of the client process.
    pub async fn download(
        &self,
        client: Client,
        endpoints: &Endpoints,
        hash: &str,
        size: u64,
        out: &Path,
    ) -> Result<Duration> {
        let endpoint = client
            .endpoint(endpoints)
            .with_context(|| format!("{} cannot talk to this server", client.name()))?;
        let cmd = match client {
            Client::CasHttp | Client::CasGrpc => {
                let mut cmd = self.cas_command(endpoints);
                cmd.args(["download", "--endpoint", endpoint, hash, "-o"])
                    .arg(out);
                cmd
            }
            Client::HfXet => {
                let mut cmd = self.hf_xet_command(endpoints);
                cmd.args(["download", endpoint, &endpoints.token, hash])
                    .arg(size.to_string())
                    .arg(out);
                cmd
            }
        };
        let started = Instant::now();
        self.run(cmd, &format!("{} download", client.name()))
            .await?;
        Ok(started.elapsed())
    }

    /// `cas` with the token in its environment (not on the command line) and its
    /// local cache in the server's scratch directory.
    fn cas_command(&self, endpoints: &Endpoints) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.cas);
        cmd.env("CAS_TOKEN", &endpoints.token)
            .env("CAS_CACHE_DIR", endpoints.scratch.join("cas-cache"));
        cmd
    }

    /// The hf_xet driver, with its cache in the server's scratch directory so
    /// that no state is shared between servers.
    fn hf_xet_command(&self, endpoints: &Endpoints) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.arg(&self.hf_xet_driver)
            .env("HF_HOME", endpoints.scratch.join("hf-home"))
            .env("HF_XET_CACHE", endpoints.scratch.join("hf-xet-cache"));
        cmd
    }

    /// Runs `cmd` to completion within the timeout (killing it otherwise);
    /// fails unless it exits successfully.
    async fn run(&self, mut cmd: tokio::process::Command, what: &str) -> Result<Output> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("{what} took over {:?}; killed", self.timeout))??;
        if !out.status.success() {
            bail!(
                "{what} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }
}

/// The byte count in `cas upload`'s summary: `... sent 1.00 GiB (1073741824 bytes: ...`.
fn cas_bytes_sent(stderr: &str) -> Option<u64> {
    let after = &stderr[stderr.find(" sent ")? + " sent ".len()..];
    let digits = &after[after.find('(')? + 1..];
    let end = digits.find(' ')?;
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bytes_cas_sent() {
        let summary = "cas: 1 file(s): read 1.00 GiB (1073741824 bytes), sent 12.50 KiB \
                       (12800 bytes: 1 xorb(s), 1 shard(s)), dedup ratio 99.9% (1.00 GiB deduplicated)\n";
        assert_eq!(cas_bytes_sent(summary), Some(12_800));
        assert_eq!(cas_bytes_sent("no summary"), None);
    }
}
