//! `cas-bench`: end-to-end benchmarks of our node and `cas` against plain S3 PUT/GET
//! and against the Xet reference server, on one Garage S3 server, in one run.
//! Every figure is reported next to a baseline measured in the same run (the
//! machine is shared and noisy: ratios hold where absolute figures move).
//!
//! ```sh
//! cargo build --release -p cas-node -p cas-client -p cas-bench
//! target/release/cas-bench --out bench.md
//! ```

mod clients;
mod data;
mod systems;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use clients::{Cas, HfXet, PlainS3};
use systems::{Garage, Node, Reference};

/// End-to-end benchmarks (see `docs/benchmarks.md`).
#[derive(Debug, Parser)]
struct Args {
    /// MiB of new data for the throughput and peer comparisons.
    #[arg(long, default_value_t = 1024)]
    size_mb: usize,
    /// MiB of the text file edited by one line.
    #[arg(long, default_value_t = 1024)]
    edit_mb: usize,
    /// MiB of the model whose tensors change between versions.
    #[arg(long, default_value_t = 512)]
    model_mb: usize,
    /// Repetitions of each timed transfer (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Directory holding `cas-node` and `cas` (default: the release build).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the tables to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// The median of some durations.
fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn same(a: &Path, b: &Path) -> anyhow::Result<()> {
    if std::fs::read(a)? != std::fs::read(b)? {
        bail!("{} and {} differ", a.display(), b.display());
    }
    Ok(())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is in the workspace")
        .to_owned()
}

/// One timed row: name, upload, download.
struct Row {
    name: &'static str,
    up: Duration,
    down: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let repo = repo_root();
    let bin_dir = args.bin_dir.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| repo.join("target"), PathBuf::from)
            .join("release")
    });
    let node_exe = bin_dir.join("cas-node");
    let cas = Cas {
        exe: bin_dir.join("cas"),
    };
    for exe in [&node_exe, &cas.exe] {
        if !exe.exists() {
            bail!(
                "{} is missing: build it first with `cargo build --release -p cas-node -p cas-client`",
                exe.display()
            );
        }
    }
    let hf = HfXet {
        driver: repo.join("node/tests/python/hf_xet_driver.py"),
    };
    let reps = args.reps.max(1);
    let work = tempfile::Builder::new().prefix("cas-bench-").tempdir()?;
    let dir = work.path();
    let garage = Garage::start(&repo).context("starting Garage")?;
    let run = format!("run-{}", std::process::id());
    let mut report = String::new();
    writeln!(
        report,
        "Run of {} (Garage on loopback; sizes: new data {} MiB, edited text {} MiB, model {} MiB; median of {reps})\n",
        chrono_free_date(),
        args.size_mb,
        args.edit_mb,
        args.model_mb
    )?;

    // 1. New data: plain S3, our node (cas over HTTP and gRPC, hf_xet), the reference.
    eprintln!("cas-bench: new data");
    let size = (args.size_mb as u64) << 20;
    let mut rows = Vec::new();
    let s3 = PlainS3::new(&garage, &format!("{run}/lfs/"))?;
    let mut systems: Vec<(&'static str, String, String, bool)> = Vec::new();
    let node_http = Node::start(&node_exe, &garage, &format!("{run}/cas-http/"))?;
    let node_grpc = Node::start(&node_exe, &garage, &format!("{run}/cas-grpc/"))?;
    let node_hf = Node::start(&node_exe, &garage, &format!("{run}/hf/"))?;
    let ref_cas = Reference::start().await?;
    let ref_hf = Reference::start().await?;
    systems.push((
        "cas → our node (HTTP)",
        node_http.http.clone(),
        node_http.token.clone(),
        false,
    ));
    systems.push((
        "cas → our node (gRPC)",
        node_grpc.grpc.clone(),
        node_grpc.token.clone(),
        false,
    ));
    systems.push((
        "hf_xet → our node",
        node_hf.http.clone(),
        node_hf.token.clone(),
        true,
    ));
    systems.push((
        "cas → reference server",
        ref_cas.endpoint(),
        "token".into(),
        false,
    ));
    systems.push((
        "hf_xet → reference server",
        ref_hf.endpoint(),
        "token".into(),
        true,
    ));
    let mut s3_up = Vec::new();
    let mut s3_down = Vec::new();
    let mut sys_times: Vec<(Vec<Duration>, Vec<Duration>)> =
        vec![(Vec::new(), Vec::new()); systems.len()];
    for rep in 0..reps {
        // Fresh content every repetition, so no repetition deduplicates against another.
        let file = data::new_data(
            dir,
            &format!("new-{rep}.bin"),
            args.size_mb,
            100 + rep as u64,
        )?;
        let out = dir.join("out.bin");
        s3_up.push(s3.put(&format!("new-{rep}"), &file).await?);
        s3_down.push(s3.get(&format!("new-{rep}"), &out).await?);
        same(&file, &out)?;
        for (i, (name, endpoint, token, is_hf)) in systems.iter().enumerate() {
            let _ = std::fs::remove_file(&out);
            let (hash, up) = if *is_hf {
                hf.upload(endpoint, token, &file)?
            } else {
                cas.upload(endpoint, token, &file)?
            };
            let down = if *is_hf {
                hf.download(endpoint, token, &hash, size, &out)?
            } else {
                cas.download(endpoint, token, &hash, &out)?
            };
            same(&file, &out).with_context(|| format!("{name} round trip"))?;
            sys_times[i].0.push(up);
            sys_times[i].1.push(down);
        }
        std::fs::remove_file(&file)?;
    }
    rows.push(Row {
        name: "plain S3 PUT / GET (baseline)",
        up: median(s3_up),
        down: median(s3_down),
    });
    for ((name, ..), (up, down)) in systems.iter().zip(sys_times) {
        rows.push(Row {
            name,
            up: median(up),
            down: median(down),
        });
    }
    let base = &rows[0];
    writeln!(report, "### New data: {} MiB\n", args.size_mb)?;
    writeln!(
        report,
        "| client → server | upload | MB/s | vs S3 PUT | download | MB/s | vs S3 GET |"
    )?;
    writeln!(report, "|---|---|---|---|---|---|---|")?;
    for r in &rows {
        writeln!(
            report,
            "| {} | {:.2} s | {:.0} | {:.2}x | {:.2} s | {:.0} | {:.2}x |",
            r.name,
            r.up.as_secs_f64(),
            mbps(size, r.up),
            r.up.as_secs_f64() / base.up.as_secs_f64(),
            r.down.as_secs_f64(),
            mbps(size, r.down),
            r.down.as_secs_f64() / base.down.as_secs_f64(),
        )?;
    }
    let find = |n: &str| rows.iter().find(|r| r.name == n).expect("row");
    let (hf_ours, hf_ref) = (find("hf_xet → our node"), find("hf_xet → reference server"));
    let (cas_ours, cas_ref) = (
        find("cas → our node (HTTP)"),
        find("cas → reference server"),
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    writeln!(
        report,
        "\nPeer comparison (time ratios; lower is better for the first system):\n"
    )?;
    writeln!(report, "| comparison | upload | download | target |")?;
    writeln!(report, "|---|---|---|---|")?;
    for (what, a, b, target) in [
        ("hf_xet: our node / reference", hf_ours, hf_ref, "≤ 1.25x"),
        ("our node: cas / hf_xet", cas_ours, hf_ours, "< 1x"),
        ("reference: cas / hf_xet", cas_ref, hf_ref, "< 1x"),
    ] {
        writeln!(
            report,
            "| {what} | {:.2}x | {:.2}x | {target} |",
            ratio(a.up, b.up),
            ratio(a.down, b.down)
        )?;
    }
    drop((node_grpc, node_hf, ref_cas, ref_hf));

    // 2. A one-line edit in a large text file.
    eprintln!("cas-bench: one-line edit");
    let [v1, edited, inserted] = data::text_versions(dir, args.edit_mb)?;
    let node_edit = Node::start(&node_exe, &garage, &format!("{run}/edit/"))?;
    let (_, first) = cas.upload(&node_edit.http, &node_edit.token, &v1)?;
    let lfs_put = s3.put("text-v1", &v1).await?;
    let mut edit_times = Vec::new();
    let mut insert_times = Vec::new();
    for _ in 0..reps {
        // Re-uploading the same edit is a no-op for the store but still re-reads,
        // chunks and asks: each repetition measures the whole client path.
        edit_times.push(cas.upload(&node_edit.http, &node_edit.token, &edited)?.1);
        insert_times.push(cas.upload(&node_edit.http, &node_edit.token, &inserted)?.1);
    }
    let (edit, insert) = (median(edit_times), median(insert_times));
    writeln!(
        report,
        "\n### One-line edit of a {} MiB text file (cas → our node)\n",
        args.edit_mb
    )?;
    writeln!(
        report,
        "| upload | time | speed-up vs whole-file upload | target |"
    )?;
    writeln!(report, "|---|---|---|---|")?;
    writeln!(
        report,
        "| first upload (all new) | {:.2} s | 1x | |",
        first.as_secs_f64()
    )?;
    writeln!(
        report,
        "| plain S3 PUT of the whole file | {:.2} s | | |",
        lfs_put.as_secs_f64()
    )?;
    writeln!(
        report,
        "| one line changed in place | {:.2} s | {:.1}x | ≥ 20x |",
        edit.as_secs_f64(),
        ratio(first, edit)
    )?;
    writeln!(
        report,
        "| one line inserted | {:.2} s | {:.1}x | ≥ 20x |",
        insert.as_secs_f64(),
        ratio(first, insert)
    )?;
    writeln!(
        report,
        "\nStored for the three versions: {:.1} MiB (the file is {} MiB).",
        garage.bytes_under(&node_edit.prefix).await? as f64 / (1 << 20) as f64,
        args.edit_mb
    )?;
    drop(node_edit);
    for f in [&v1, &edited, &inserted] {
        std::fs::remove_file(f)?;
    }

    // 3. Storage for two versions of a model with 30% of its tensors changed.
    eprintln!("cas-bench: model versions");
    let (m1, m2, changed) = data::model_versions(dir, args.model_mb, 100, 30)?;
    let node_model = Node::start(&node_exe, &garage, &format!("{run}/model/"))?;
    cas.upload(&node_model.http, &node_model.token, &m1)?;
    let after_v1 = garage.bytes_under(&node_model.prefix).await?;
    cas.upload(&node_model.http, &node_model.token, &m2)?;
    let after_v2 = garage.bytes_under(&node_model.prefix).await?;
    let whole = std::fs::metadata(&m1)?.len() + std::fs::metadata(&m2)?.len();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    writeln!(
        report,
        "\n### Storage: two versions of a {} MiB model, {changed} of 100 tensors changed\n",
        args.model_mb
    )?;
    writeln!(
        report,
        "| store | after v1 | after v1 + v2 | vs whole files |"
    )?;
    writeln!(report, "|---|---|---|---|")?;
    writeln!(
        report,
        "| plain S3 (whole files) | {:.1} MiB | {:.1} MiB | 1x |",
        mib(std::fs::metadata(&m1)?.len()),
        mib(whole)
    )?;
    writeln!(
        report,
        "| our node (xorbs + shards) | {:.1} MiB | {:.1} MiB | {:.2}x |",
        mib(after_v1),
        mib(after_v2),
        after_v2 as f64 / whole as f64
    )?;
    drop(node_model);

    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report)?;
    }
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
fn chrono_free_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
