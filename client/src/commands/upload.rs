//! `cas upload`: upload files and directories, print their file hashes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use cas_client::transfer::{Progress, UploadOptions, upload_paths};
use indicatif::HumanBytes;

use super::{CacheArgs, ServerArgs, byte_bar, finish_output, runtime, stdout};

/// Uploads `paths` (files, or directories walked recursively) and prints
/// `<file-hash>  <path>` per file on standard output, then a summary on standard error.
pub fn run(
    server: &ServerArgs,
    cache: &CacheArgs,
    paths: &[PathBuf],
    threads: usize,
    sha256: bool,
) -> Result<ExitCode> {
    let rt = runtime()?;
    let client = {
        let _in_runtime = rt.enter();
        server.client()?
    };
    let bar = byte_bar("uploading");
    let progress_bar = bar.clone();
    let opts = UploadOptions {
        chunk_threads: threads,
        sha256,
        cache: cache.local_cache(&server.endpoint),
        progress: Some(Arc::new(move |p: &Progress| match p {
            Progress::Total { bytes } => progress_bar.set_length(*bytes),
            Progress::Read { bytes } => progress_bar.inc(*bytes),
            Progress::FileStarted { path, .. } => {
                progress_bar.set_message(path.display().to_string())
            }
            Progress::Sent { .. } | Progress::Fetched { .. } => {}
        })),
        ..UploadOptions::default()
    };
    let result = rt.block_on(upload_paths(&client, paths, &opts));
    bar.finish_and_clear();
    let report = result.with_context(|| format!("upload to {} failed", server.endpoint))?;

    let mut out = stdout();
    for f in &report.files {
        writeln!(out, "{}  {}", f.file_hash, f.path.display())?;
    }
    finish_output(out)?;
    eprintln!(
        "cas: {} file(s): read {} ({} bytes), sent {} ({} bytes: {} xorb(s), {} shard(s)), \
         dedup ratio {:.1}% ({} deduplicated)",
        report.files.len(),
        HumanBytes(report.bytes_read),
        report.bytes_read,
        HumanBytes(report.bytes_sent()),
        report.bytes_sent(),
        report.xorbs_sent,
        report.shards_sent,
        report.dedup_ratio() * 100.0,
        HumanBytes(report.deduplicated_bytes),
    );
    if report.cache_dropped {
        eprintln!(
            "cas: the server refused chunks the local cache named; \
             the cache for {} was dropped and the upload repeated without it",
            server.endpoint
        );
    }
    Ok(ExitCode::SUCCESS)
}
