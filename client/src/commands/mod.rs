//! One module per `cas` subcommand.

pub mod chunk;
pub mod download;
pub mod hash;
pub mod upload;

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use cas_client::transfer::Remote;
use cas_client::xet::RetryPolicy;
use cas_core::chunking::{ChunkedBlock, ChunkedBlocks};
use indicatif::{ProgressBar, ProgressStyle};

/// Where the CAS server is and how to authenticate (shared by `upload` and `download`).
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The CAS server: http:// or https:// for the Xet HTTP API
    /// (e.g. https://cas.example.com), grpc://host:port for a node's gRPC API.
    #[arg(long, env = "CAS_ENDPOINT")]
    pub endpoint: String,
    /// Bearer token for the CAS server; prefer the environment variable, which other
    /// users cannot see in the process list. Without one, no Authorization header is sent.
    #[arg(long, env = "CAS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Attempts per request: 5xx, 408, 429 and connection failures are retried
    /// with exponential backoff (200 ms doubling, with jitter).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub attempts: u32,
}

impl ServerArgs {
    /// The client these arguments describe (HTTP or gRPC, by the endpoint's scheme).
    pub fn client(&self) -> Result<Remote> {
        let retry = RetryPolicy {
            max_attempts: self.attempts,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        };
        let token = self.token.as_deref().filter(|t| !t.trim().is_empty());
        Remote::connect(&self.endpoint, token, retry)
            .with_context(|| format!("cannot set up a client for {}", self.endpoint))
    }
}

/// The local cache of `cas upload`: shards it registered or learned, per endpoint,
/// and manifests of the files it uploaded.
#[derive(clap::Args, Debug, Clone)]
pub struct CacheArgs {
    /// The cache directory (default: $XDG_CACHE_HOME/cas, else ~/.cache/cas).
    #[arg(long, env = "CAS_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Neither read nor write the local cache: learn what the server holds only by asking it.
    #[arg(long, env = "CAS_NO_CACHE")]
    pub no_cache: bool,
    /// Largest size of the shards cached for one endpoint, in MiB; the oldest are evicted.
    #[arg(
        long,
        env = "CAS_CACHE_MAX_MB",
        default_value_t = 256,
        value_name = "MIB"
    )]
    pub cache_max_mb: u64,
}

impl CacheArgs {
    /// The cache for uploads to `endpoint`, unless disabled or no directory is known.
    pub fn local_cache(&self, endpoint: &str) -> Option<cas_client::cache::LocalCache> {
        if self.no_cache {
            return None;
        }
        let root = self
            .cache_dir
            .clone()
            .or_else(cas_client::cache::default_dir)?;
        Some(cas_client::cache::LocalCache::new(
            &root,
            endpoint,
            self.cache_max_mb.saturating_mul(1 << 20),
        ))
    }
}

/// The async runtime of the transfer commands.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A byte progress bar on standard error, hidden unless standard error is a terminal.
fn byte_bar(verb: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(&format!(
        "{verb} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} {{wide_msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar = ProgressBar::new(0).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Opens a path for reading; `-` is standard input.
fn open_input(path: &str) -> Result<Box<dyn Read>> {
    if path == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let f = File::open(path).with_context(|| format!("{path}: cannot open"))?;
    Ok(Box::new(f))
}

/// Chunks a path block by block, calling `f` on each block.
fn for_each_block(
    path: &str,
    threads: usize,
    mut f: impl FnMut(&ChunkedBlock) -> Result<()>,
) -> Result<()> {
    let input = open_input(path)?;
    for block in ChunkedBlocks::new(input, threads) {
        let block = block.with_context(|| format!("{path}: read failed"))?;
        f(&block)?;
    }
    Ok(())
}

/// A buffered standard output that reports a closed pipe as success.
fn stdout() -> BufWriter<io::StdoutLock<'static>> {
    BufWriter::with_capacity(1 << 16, io::stdout().lock())
}

/// Finishes writing to standard output; a closed pipe (e.g. `| head`) is not an error.
fn finish_output(mut out: impl Write) -> Result<()> {
    match out.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to standard output"),
    }
}

/// Whether an error is a closed output pipe (the reader went away, e.g. `| head`).
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
