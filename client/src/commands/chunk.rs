//! `cas chunk`: one JSON object per chunk of a file.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{finish_output, for_each_block, is_broken_pipe, stdout};

/// One line of `cas chunk` output.
#[derive(Serialize)]
struct ChunkLine {
    offset: u64,
    length: usize,
    hash: String,
}

/// Prints the chunks of `path` as JSON lines.
pub fn run(path: &str, threads: usize) -> Result<ExitCode> {
    let mut out = stdout();
    let written = for_each_block(path, threads, |block| {
        for c in &block.chunks {
            let line = ChunkLine {
                offset: block.stream_offset + c.offset as u64,
                length: c.len,
                hash: c.hash.to_string(),
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    });
    match written {
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
        Ok(()) => finish_output(out).map(|_| ExitCode::SUCCESS),
    }
}
