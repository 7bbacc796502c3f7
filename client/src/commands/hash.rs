//! `cas hash`: the Xet file hash of files, printed like sha256sum.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use cas_core::MerkleHash;

use super::{finish_output, for_each_block, is_broken_pipe, stdout};

/// The Xet file hash of the file (or `-` for standard input) at `path`.
pub fn file_hash(path: &str, threads: usize) -> Result<MerkleHash> {
    let mut leaves = Vec::new();
    for_each_block(path, threads, |block| {
        leaves.extend(block.chunks.iter().map(|c| (c.hash, c.len as u64)));
        Ok(())
    })?;
    Ok(cas_core::merkle::file_hash(&leaves))
}

/// Prints `<hash>  <path>` per file; a file that cannot be read is reported and makes the exit status 1.
pub fn run(paths: &[String], threads: usize) -> Result<ExitCode> {
    let mut out = stdout();
    let mut failed = false;
    for path in paths {
        match file_hash(path, threads) {
            Ok(h) => {
                if let Err(e) = writeln!(out, "{h}  {path}") {
                    let e = anyhow::Error::from(e);
                    return if is_broken_pipe(&e) {
                        Ok(ExitCode::SUCCESS)
                    } else {
                        Err(e)
                    };
                }
            }
            Err(e) => {
                let _ = out.flush();
                eprintln!("cas: {e:#}");
                failed = true;
            }
        }
    }
    finish_output(out)?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
