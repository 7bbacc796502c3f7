//! One module per `cas` subcommand.

pub mod chunk;
pub mod hash;

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use anyhow::{Context, Result};
use cas_core::chunking::{ChunkedBlock, ChunkedBlocks};

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
