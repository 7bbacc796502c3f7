//! `cas-bench`: the end-to-end benchmark. In one run against one S3 server
//! (Garage by default) it measures our node with `cas` and hf_xet against
//! plain S3 (whole-object PUT/GET) and against the Xet reference server, and
//! prints one Markdown table per part; every figure is a ratio against a
//! baseline measured in the same run.
//!
//! 1. new data: upload and download throughput, vs plain S3;
//! 2. re-upload after a one-line edit of a large file, vs its first upload;
//! 3. bucket bytes for two versions of a model file, vs plain S3;
//! 4. the same clients and files against our node and the reference server.
//!
//! Not a test: run it by hand (see `docs/benchmarks.md`):
//!
//! ```sh
//! cargo build --release -p cas-node -p cas-client -p cas-bench
//! cargo run --release -p cas-bench -- --size-mb 64 --model-mb 64 --reps 1   # quick check
//! cargo run --release -p cas-bench -- --out bench.md                        # the full run
//! ```

mod clients;
mod cpu;
mod data;
mod link;
mod parts;
mod report;
mod s3;
mod systems;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use clap::Parser;

use crate::clients::{Client, Tools};
use crate::parts::Bench;
use crate::report::Table;
use crate::s3::{Bucket, GarageBuild, S3Kind};

/// End-to-end benchmark of the CAS node and client against plain S3 and the
/// Xet reference server; prints Markdown tables.
#[derive(Debug, Parser)]
#[command(name = "cas-bench", version, about)]
struct Args {
    /// Size of the new-data file (parts 1 and 4) and of the edited text file (part 2), in MiB.
    #[arg(long, env = "CAS_BENCH_SIZE_MB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    size_mb: u64,
    /// Approximate size of the model file of part 3, in MiB.
    #[arg(long, env = "CAS_BENCH_MODEL_MB", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(8..=65_536))]
    model_mb: u64,
    /// Percentage of the model's tensors that change in its second version.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=100))]
    changed_percent: u64,
    /// Repetitions of each measurement (the median is reported); part 3 runs once.
    #[arg(long, env = "CAS_BENCH_REPS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    reps: u64,
    /// Parts to run, comma-separated: 1 new data vs S3, 2 one-line edits,
    /// 3 model versions, 4 vs the reference server.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4",
          value_parser = clap::value_parser!(u8).range(1..=4))]
    parts: Vec<u8>,
    /// Base seed of the generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The S3 server: garage (started and stopped by the bench), env (the one
    /// the GARAGE_* variables name) or s3s (embedded s3s-fs, in process).
    #[arg(long, value_enum, default_value = "garage")]
    s3: S3Kind,
    /// Directory holding the `cas` and `cas-node` binaries [default:
    /// $CARGO_TARGET_DIR/release, then target/release, then this binary's directory].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Python interpreter with hf_xet installed.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// The hf_xet driver script [default: node/tests/python/hf_xet_driver.py].
    #[arg(long, value_name = "FILE")]
    hf_xet_driver: Option<PathBuf>,
    /// The Garage build to start with --s3 garage: release (as operators run
    /// it) or test (the quick build of the test suites).
    #[arg(long, value_enum, default_value = "release")]
    garage_build: GarageBuild,
    /// The Garage helper script [default: scripts/garage.sh].
    #[arg(long, value_name = "FILE")]
    garage_script: Option<PathBuf>,
    /// Where to create the scratch directory (data files, node state, Garage
    /// data); it needs about 15 times --size-mb free [default: the system temp dir].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the scratch directory (node logs, configurations) instead of removing it.
    #[arg(long)]
    keep_work_dir: bool,
    /// Longest run of one client process, in seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
    /// Log filter of the nodes (e.g. `info,cas_node=debug` to see where time goes;
    /// with --keep-work-dir the logs stay in the scratch directory).
    #[arg(long, default_value = "warn")]
    node_log_filter: String,
    /// Part 2's clients (and its plain-S3 baseline) upload through a link paced to
    /// this many Mbit/s each way, as a user's uplink [default: loopback, unshaped].
    #[arg(long, value_name = "MBIT", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    link_mbit: Option<u64>,
    /// `cas` uploads with `--sha256` (computing and registering each file's
    /// SHA-256, as hf_xet always does) [default: without, as `cas` does by default].
    #[arg(long)]
    cas_sha256: bool,
    /// Also write the tables to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let out = args.out.clone();
    let summary = parameters(&args);
    // Ctrl-C drops the run, whose guards stop every process it started.
    let result = tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match result.and_then(|tables| publish(&summary, &tables, out.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cas-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected parts; returns their tables.
async fn run(args: Args) -> Result<Vec<Table>> {
    let root = repo_root();
    let bin_dir = find_bin_dir(args.bin_dir.as_deref())?;
    let tools = Tools {
        cas: bin_dir.join("cas"),
        cas_node: bin_dir.join("cas-node"),
        python: args.python.clone(),
        hf_xet_driver: args
            .hf_xet_driver
            .clone()
            .unwrap_or_else(|| root.join("node/tests/python/hf_xet_driver.py")),
        timeout: Duration::from_secs(args.timeout_s),
        cas_sha256: args.cas_sha256,
    };
    ensure!(
        args.link_mbit.is_none() || args.parts.contains(&2),
        "--link-mbit shapes part 2 only; add 2 to --parts"
    );
    ensure!(
        tools.hf_xet_driver.is_file(),
        "{} not found (--hf-xet-driver)",
        tools.hf_xet_driver.display()
    );
    tools.check_hf_xet().await?;
    let grpc = tools.cas_speaks_grpc().await?;
    let clients: Vec<Client> = Client::ALL
        .into_iter()
        .filter(|&c| c != Client::CasGrpc || grpc)
        .collect();
    if !grpc {
        eprintln!("cas-bench: `cas` does not accept grpc:// endpoints; no cas (gRPC) rows");
    }

    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let work = tempfile::Builder::new()
        .prefix("cas-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a scratch directory in {}", base.display()))?;
    eprintln!("cas-bench: scratch directory {}", work.path().display());
    let garage_script = args
        .garage_script
        .clone()
        .unwrap_or_else(|| root.join("scripts/garage.sh"));
    let result = {
        // Inside this block, so the S3 server stops before `work` is removed.
        let (server, location) = s3::start(
            args.s3,
            &work.path().join("s3"),
            &garage_script,
            args.garage_build,
        )
        .await?;
        let bucket = Bucket::new(&location);
        let bench = Bench {
            tools,
            clients,
            bucket: bucket.clone(),
            s3: location,
            run_prefix: format!("cas-bench-{:08x}/", rand::random::<u32>()),
            work: work.path().to_owned(),
            reps: usize::try_from(args.reps)?,
            seed: args.seed,
            size: args.size_mb << 20,
            model_size: args.model_mb << 20,
            changed_fraction: args.changed_percent as f64 / 100.0,
            node_log_filter: args.node_log_filter.clone(),
            link: args.link_mbit.map(link::Link::new),
            s3_process: server.process(),
        };
        let result = run_parts(&bench, &args.parts).await;
        // Best effort: a failed part may have left objects behind.
        if let Err(e) = bucket.delete_prefix(&bench.run_prefix).await {
            eprintln!("cas-bench: could not delete {}: {e:#}", bench.run_prefix);
        }
        drop(bench);
        drop(server);
        result
    };
    if args.keep_work_dir {
        eprintln!("cas-bench: kept {}", work.keep().display());
    }
    result
}

/// Runs each selected part in turn; returns the tables in part order.
async fn run_parts(bench: &Bench, parts: &[u8]) -> Result<Vec<Table>> {
    let wants = |p: u8| parts.contains(&p);
    let (mut tables, mut peer) = (Vec::new(), Vec::new());
    if wants(1) || wants(4) {
        let (new_data, peer_tables) = bench.new_data(wants(1), wants(4)).await?;
        tables.extend(new_data);
        peer = peer_tables;
    }
    if wants(2) {
        tables.push(bench.edits().await?);
    }
    if wants(3) {
        tables.push(bench.model_versions().await?);
    }
    tables.append(&mut peer);
    Ok(tables)
}

/// Prints the tables and writes them to `out` if given.
fn publish(summary: &str, tables: &[Table], out: Option<&Path>) -> Result<()> {
    let mut text = format!("{summary}\n");
    for table in tables {
        text.push('\n');
        text.push_str(&table.to_markdown());
    }
    print!("{text}");
    if let Some(out) = out {
        std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("cas-bench: wrote {}", out.display());
    }
    Ok(())
}

/// One line describing the run: parameters and machine.
fn parameters(args: &Args) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let s3 = clap::ValueEnum::to_possible_value(&args.s3)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    let link = args
        .link_mbit
        .map_or_else(String::new, |m| format!(" --link-mbit {m}"));
    let sha256 = if args.cas_sha256 { " --cas-sha256" } else { "" };
    let garage = if args.s3 == S3Kind::Garage {
        format!(" --garage-build {}", args.garage_build.profile())
    } else {
        String::new()
    };
    format!(
        "cas-bench --size-mb {} --model-mb {} --changed-percent {} --reps {} --s3 {s3}{garage} \
         --seed {}{link}{sha256}  ({cpu}, {cores} cores)",
        args.size_mb, args.model_mb, args.changed_percent, args.reps, args.seed,
    )
}

/// The repository root (this crate's parent directory).
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// The directory holding `cas` and `cas-node`: `explicit`, or the first of
/// the default places that has both.
fn find_bin_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let has_both = |dir: &Path| dir.join("cas").is_file() && dir.join("cas-node").is_file();
    let candidates: Vec<PathBuf> = match explicit {
        Some(dir) => vec![dir.to_owned()],
        None => {
            let mut dirs = Vec::new();
            if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
                dirs.push(PathBuf::from(target).join("release"));
            }
            dirs.push(repo_root().join("target/release"));
            if let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_owned))
            {
                dirs.push(dir);
            }
            dirs
        }
    };
    if let Some(dir) = candidates.iter().find(|d| has_both(d)) {
        return Ok(dir.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "the `cas` and `cas-node` binaries are not in {}; build them with \
         `cargo build --release -p cas-node -p cas-client` (same CARGO_TARGET_DIR), \
         or pass --bin-dir",
        looked.join(", ")
    )
}
