//! `cas download`: download a file, or a byte range of it, by its file hash.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use cas_client::transfer::{DownloadOptions, Progress, download_to_file};
use cas_client::xet::ByteRange;
use cas_core::MerkleHash;
use indicatif::HumanBytes;

use super::{ServerArgs, byte_bar, runtime};

/// Downloads `hash` (or `range` of it) to `output`, atomically; a whole file is verified.
pub fn run(
    server: &ServerArgs,
    hash: &MerkleHash,
    output: &Path,
    range: Option<ByteRange>,
    sync: bool,
) -> Result<ExitCode> {
    let rt = runtime()?;
    let client = {
        let _in_runtime = rt.enter();
        server.client()?
    };
    let bar = byte_bar("downloading");
    let progress_bar = bar.clone();
    let opts = DownloadOptions {
        progress: Some(Arc::new(move |p: &Progress| match p {
            Progress::Total { bytes } => progress_bar.set_length(*bytes),
            Progress::Fetched { bytes } => progress_bar.inc(*bytes),
            _ => {}
        })),
        sync,
        ..DownloadOptions::default()
    };
    let result = rt.block_on(download_to_file(&client, hash, range, output, &opts));
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) if e.is_not_found() => {
            return Err(
                anyhow!(e).context(format!("file {hash} is not known to {}", server.endpoint))
            );
        }
        Err(e) if e.is_range_not_satisfiable() => {
            let what = range.map_or_else(String::new, |r| format!(" {r}"));
            return Err(anyhow!(e).context(format!("range{what} is outside file {hash}")));
        }
        Err(e) => {
            return Err(anyhow!(e).context(format!("download of {hash} failed")));
        }
    };
    eprintln!(
        "cas: wrote {} ({} bytes) to {}{}; fetched {} in {} range request(s)",
        HumanBytes(report.bytes_written),
        report.bytes_written,
        output.display(),
        if report.verified {
            ", file hash verified"
        } else {
            ""
        },
        HumanBytes(report.bytes_fetched),
        report.fetches,
    );
    Ok(ExitCode::SUCCESS)
}
