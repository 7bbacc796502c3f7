//! `cas`: the command-line client of the content-addressed store.

use std::path::PathBuf;
use std::process::ExitCode;

use cas_client::xet::ByteRange;
use cas_core::MerkleHash;
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
    /// Upload files and directories to a CAS server; prints `<file-hash>  <path>` per file.
    ///
    /// Directories are walked recursively in sorted order; inside them, anything
    /// but regular files and directories (symlinks included) is skipped. Only
    /// chunks the server does not already hold are sent. A summary (bytes read,
    /// bytes sent, dedup ratio) goes to standard error.
    ///
    /// A local cache (see --cache-dir) keeps the shards each upload registered,
    /// per endpoint, so a later upload finds every chunk it already sent without
    /// asking the server.
    Upload {
        #[command(flatten)]
        server: commands::ServerArgs,
        #[command(flatten)]
        cache: commands::CacheArgs,
        /// Files and directories to upload.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Threads to chunk and hash with (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Also compute each file's SHA-256 and register it with the file, as
        /// hf_xet does (the Git LFS object id). Optional in the format and not
        /// checkable by the server; it costs one more pass over every new or
        /// changed file (a manifest of the last upload limits it to the bytes from
        /// the first change on).
        #[arg(long, env = "CAS_SHA256")]
        sha256: bool,
    },
    /// Download a file, or a byte range of it, by its file hash.
    ///
    /// The output is written to a temporary file next to OUT and renamed over
    /// it only when complete; a whole-file download is verified against the
    /// file hash first.
    Download {
        #[command(flatten)]
        server: commands::ServerArgs,
        /// The Xet file hash (64 hex digits), as `cas upload` or `cas hash` print it.
        hash: MerkleHash,
        /// Where to write the bytes.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Only bytes START to END of the file, both inclusive as in HTTP
        /// (`0-99` is the first 100 bytes), or `START-` for everything from
        /// START on. A range reaching past the end of the file is cut there; one
        /// starting at or past the end is an error. Ranges are not hash-verified.
        #[arg(long, value_name = "START-END")]
        range: Option<ByteRange>,
        /// Flush the bytes to disk before OUT is renamed into place, so the file
        /// survives a power cut too (without it, OUT still appears only whole).
        #[arg(long)]
        sync: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = |t: Option<usize>| t.unwrap_or_else(cas_core::chunking::default_threads).max(1);
    let result = match cli.command {
        Command::Hash { files, threads: t } => commands::hash::run(&files, threads(t)),
        Command::Chunk { file, threads: t } => commands::chunk::run(&file, threads(t)),
        Command::Upload {
            server,
            cache,
            paths,
            threads: t,
            sha256,
        } => commands::upload::run(&server, &cache, &paths, threads(t), sha256),
        Command::Download {
            server,
            hash,
            output,
            range,
            sync,
        } => commands::download::run(&server, &hash, &output, range, sync),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cas: {e:#}");
            ExitCode::FAILURE
        }
    }
}
