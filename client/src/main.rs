//! `cas`: the command-line client of the content-addressed store.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// Command-line client of the content-addressed store.
#[derive(Parser)]
#[command(name = "cas", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Xet file hash of each file, like sha256sum (`-` reads standard input).
    Hash {
        /// Files to hash.
        #[arg(required = true)]
        files: Vec<String>,
        /// Threads to chunk and hash with (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Print one JSON object per chunk of a file: offset, length, hash.
    Chunk {
        /// The file to chunk (`-` reads standard input).
        file: String,
        /// Threads to chunk and hash with (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = |t: Option<usize>| t.unwrap_or_else(cas_core::chunking::default_threads).max(1);
    let result = match cli.command {
        Command::Hash { files, threads: t } => commands::hash::run(&files, threads(t)),
        Command::Chunk { file, threads: t } => commands::chunk::run(&file, threads(t)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cas: {e:#}");
            ExitCode::FAILURE
        }
    }
}
