//! The measurements: new data (parts 1 and 4), re-upload after a one-line edit
//! (part 2), and the storage of two model versions (part 3).
//!
//! Every measured system is fresh in every repetition (its own node process,
//! data directory and key prefix, or its own reference server and directory;
//! hf_xet's cache lives with the system), so nothing deduplicates across
//! systems or repetitions; repetitions also use files made from different
//! seeds. Within a repetition the systems take turns in an order rotated by
//! one per repetition, spreading a busy moment of the shared machine over all
//! of them. Before every timed transfer the machine's dirty pages are written
//! out, so no transfer pays for the disk writes of the steps before it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::clients::{Client, Tools};
use crate::cpu::{CpuUse, Meter, Process};
use crate::data::{self, TextEdit};
use crate::link::{Link, LinkProxy, rewrite_url, url_addr};
use crate::report::{Table, bytes, mb_per_s, median, median_bytes, ratio, secs, speedup, verdict};
use crate::s3::{Bucket, PART_CONCURRENCY, PART_SIZE, S3Location};
use crate::systems::{Endpoints, NodeOptions, NodeSystem, ReferenceSystem, System};

/// Target of part 2: a one-line edit re-uploads at least this many times faster.
const EDIT_SPEEDUP_TARGET: f64 = 20.0;
/// Target of part 4: with the same client, our node takes at most this
/// multiple of the reference server's time.
const PEER_TIME_TARGET: f64 = 1.25;

/// Which server a system is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// Our node.
    Node,
    /// The reference server.
    Reference,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Node => "our node",
            Server::Reference => "reference",
        }
    }
}

/// Something measured: the plain-S3 baseline, or a client against a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Whole objects PUT and GET through aws-sdk-s3.
    S3,
    /// `client` against a fresh `server`.
    On(Server, Client),
}

impl Target {
    fn name(self) -> String {
        match self {
            Target::S3 => "plain S3".into(),
            Target::On(server, client) => format!("{} → {}", client.name(), server.name()),
        }
    }

    /// A label usable in paths and key prefixes.
    fn label(self) -> String {
        match self {
            Target::S3 => "s3".into(),
            Target::On(server, client) => format!("{server:?}-{client:?}").to_lowercase(),
        }
    }

    /// The client's name in a row label (`plain S3` for the baseline).
    fn client_name(self) -> &'static str {
        match self {
            Target::S3 => "plain S3",
            Target::On(_, client) => client.name(),
        }
    }
}

/// A target with the system it runs against (none for plain S3).
struct Subject {
    target: Target,
    system: Option<System>,
    /// What the CPU accounting of its transfers reads (none for plain S3).
    meter: Option<Meter>,
}

/// One timed upload.
struct Upload {
    /// The file hash (empty for plain S3).
    hash: String,
    /// Wall time of the transfer.
    elapsed: Duration,
    /// Bytes the client says it sent, if it says.
    sent: Option<u64>,
    /// CPU used meanwhile (none for plain S3).
    cpu: Option<CpuUse>,
}

/// Measurements of one target, one value per repetition.
#[derive(Clone, Debug, Default)]
struct Transfers {
    up: Vec<Duration>,
    down: Vec<Duration>,
    stored: Vec<u64>,
    sent: Vec<u64>,
    up_cpu: Vec<CpuUse>,
    down_cpu: Vec<CpuUse>,
}

/// Everything a part needs.
pub struct Bench {
    /// The client and node programs.
    pub tools: Tools,
    /// Clients to measure (`cas (gRPC)` only when `cas` speaks it).
    pub clients: Vec<Client>,
    /// The shared bucket.
    pub bucket: Bucket,
    /// How nodes reach the bucket.
    pub s3: S3Location,
    /// Key prefix of everything this run stores (ends in `/`).
    pub run_prefix: String,
    /// Scratch directory of this run (data files, node state, downloads).
    pub work: PathBuf,
    /// Repetitions of each measurement.
    pub reps: usize,
    /// Base seed of all generated data.
    pub seed: u64,
    /// Size of the new-data and text files.
    pub size: u64,
    /// Approximate size of the model files.
    pub model_size: u64,
    /// Fraction of the model's tensors that change in version 2.
    pub changed_fraction: f64,
    /// Log filter of the nodes.
    pub node_log_filter: String,
    /// The link part 2's clients upload through (none: loopback, unshaped).
    pub link: Option<Link>,
    /// The S3 server's process, when its CPU time can be read.
    pub s3_process: Option<Process>,
}

/// Where a client's uploads go: a system's endpoints and the bucket of the plain-S3
/// baseline, either directly or through a shaped [`Link`].
struct Route {
    endpoints: Option<Endpoints>,
    bucket: Bucket,
    _proxies: Vec<LinkProxy>,
}

/// The CPU counters of `subject`'s processes (none for plain S3).
fn read_cpu(subject: &Subject) -> Result<Option<crate::cpu::Reading>> {
    Ok(subject.meter.as_ref().map(Meter::read).transpose()?)
}

/// The CPU `subject`'s processes used since `before`.
fn cpu_since(subject: &Subject, before: Option<crate::cpu::Reading>) -> Result<Option<CpuUse>> {
    let (Some(meter), Some(before)) = (&subject.meter, before) else {
        return Ok(None);
    };
    Ok(Some(before.until(&meter.read()?)))
}

impl Bench {
    /// Starts a fresh system for `target` in `part` (a part and repetition).
    async fn subject(&self, part: &str, target: Target) -> Result<Subject> {
        let label = format!("{part}-{}", target.label());
        let dir = self.work.join(&label);
        let system = match target {
            Target::S3 => None,
            Target::On(Server::Node, _) => Some(System::Node(
                NodeSystem::start(NodeOptions {
                    binary: &self.tools.cas_node,
                    s3: &self.s3,
                    prefix: format!("{}{label}/", self.run_prefix),
                    dir,
                    log_filter: &self.node_log_filter,
                })
                .await
                .with_context(|| format!("starting a node for {}", target.name()))?,
            )),
            Target::On(Server::Reference, _) => {
                Some(System::Reference(ReferenceSystem::start(dir).await?))
            }
        };
        let meter = match &system {
            Some(System::Node(node)) => node.pid().map(|pid| Meter {
                server: Process::Pid(pid),
                s3: self.s3_process,
            }),
            Some(System::Reference(_)) => Some(Meter {
                server: Process::Own,
                s3: None,
            }),
            None => None,
        };
        Ok(Subject {
            target,
            system,
            meter,
        })
    }

    /// Starts a fresh system for each target.
    async fn subjects(&self, part: &str, targets: &[Target]) -> Result<Vec<Subject>> {
        let mut subjects = Vec::with_capacity(targets.len());
        for &target in targets {
            subjects.push(self.subject(part, target).await?);
        }
        Ok(subjects)
    }

    /// Stops `subjects` and frees what they and the baseline stored in `part`
    /// (bucket objects, reference-server directories).
    async fn finish(&self, part: &str, subjects: Vec<Subject>) -> Result<()> {
        for subject in &subjects {
            if let Some(system) = &subject.system {
                system.clear(&self.bucket).await?;
            }
        }
        self.bucket.delete_prefix(&self.s3_prefix(part)).await?;
        for subject in subjects {
            if let Some(System::Reference(reference)) = subject.system {
                reference.remove()?;
            }
        }
        Ok(())
    }

    /// Key prefix of the baseline's objects in `part`.
    fn s3_prefix(&self, part: &str) -> String {
        format!("{}{part}-s3/", self.run_prefix)
    }

    /// Bytes stored by the system of `subject`, or by the baseline in `part`.
    async fn stored(&self, part: &str, subject: &Subject) -> Result<u64> {
        match &subject.system {
            Some(system) => system.stored_bytes(&self.bucket).await,
            None => Ok(self.bucket.usage(&self.s3_prefix(part)).await?.bytes),
        }
    }

    /// Uploads `file` for `subject` (as baseline object `name` for plain S3).
    async fn upload(
        &self,
        part: &str,
        subject: &Subject,
        file: &Path,
        name: &str,
    ) -> Result<Upload> {
        let route = Route {
            endpoints: subject.system.as_ref().map(|s| s.endpoints().clone()),
            bucket: self.bucket.clone(),
            _proxies: Vec::new(),
        };
        self.upload_by(&route, part, subject, file, name).await
    }

    /// How `subject`'s client reaches its system (and the baseline its bucket):
    /// through `link` when given.
    async fn route(&self, subject: &Subject, link: Option<&Link>) -> Result<Route> {
        let endpoints = subject.system.as_ref().map(|s| s.endpoints().clone());
        let Some(link) = link else {
            return Ok(Route {
                endpoints,
                bucket: self.bucket.clone(),
                _proxies: Vec::new(),
            });
        };
        let mut proxies = Vec::new();
        let mut location = self.s3.clone();
        let s3 = link.proxy(url_addr(&location.endpoint)?).await?;
        location.endpoint = rewrite_url(&location.endpoint, &s3);
        proxies.push(s3);
        let endpoints = match endpoints {
            Some(mut e) => {
                let http = link.proxy(url_addr(&e.http)?).await?;
                e.http = rewrite_url(&e.http, &http);
                proxies.push(http);
                if let Some(grpc) = e.grpc.clone() {
                    let p = link.proxy(url_addr(&grpc)?).await?;
                    e.grpc = Some(rewrite_url(&grpc, &p));
                    proxies.push(p);
                }
                Some(e)
            }
            None => None,
        };
        Ok(Route {
            endpoints,
            bucket: Bucket::new(&location),
            _proxies: proxies,
        })
    }

    /// [`Bench::upload`] along `route`. The file is read through first
    /// ([`data::warm`]), so every system starts with it in the page cache, and
    /// the machine's dirty pages are written out ([`data::settle`]).
    async fn upload_by(
        &self,
        route: &Route,
        part: &str,
        subject: &Subject,
        file: &Path,
        name: &str,
    ) -> Result<Upload> {
        let warm = file.to_owned();
        tokio::task::spawn_blocking(move || {
            data::warm(&warm)?;
            data::settle()
        })
        .await??;
        match (&route.endpoints, subject.target) {
            (Some(endpoints), Target::On(_, client)) => {
                let before = read_cpu(subject)?;
                let up = self.tools.upload(client, endpoints, file).await?;
                Ok(Upload {
                    hash: up.hash,
                    elapsed: up.elapsed,
                    sent: up.bytes_sent,
                    cpu: cpu_since(subject, before)?,
                })
            }
            _ => {
                let key = format!("{}{name}", self.s3_prefix(part));
                let started = Instant::now();
                route.bucket.put_file(&key, file).await?;
                let elapsed = started.elapsed();
                let size = std::fs::metadata(file)?.len();
                Ok(Upload {
                    hash: String::new(),
                    elapsed,
                    sent: Some(size),
                    cpu: None,
                })
            }
        }
    }

    /// Downloads what [`Bench::upload`] stored to `out`, checks it equals
    /// `source` and removes it; returns the download time (timed once the
    /// machine's dirty pages are written out) and the CPU used meanwhile.
    async fn download(
        &self,
        part: &str,
        subject: &Subject,
        hash: &str,
        name: &str,
        source: &Path,
        out: &Path,
    ) -> Result<(Duration, Option<CpuUse>)> {
        let size = std::fs::metadata(source)?.len();
        tokio::task::spawn_blocking(data::settle).await??;
        let before = read_cpu(subject)?;
        let elapsed = match (&subject.system, subject.target) {
            (Some(system), Target::On(_, client)) => {
                self.tools
                    .download(client, system.endpoints(), hash, size, out)
                    .await?
            }
            _ => {
                let key = format!("{}{name}", self.s3_prefix(part));
                let started = Instant::now();
                self.bucket.get_to_file(&key, out).await?;
                started.elapsed()
            }
        };
        let cpu = cpu_since(subject, before)?;
        let (a, b) = (source.to_owned(), out.to_owned());
        let equal = tokio::task::spawn_blocking(move || data::files_equal(&a, &b)).await??;
        ensure!(
            equal,
            "{}: the downloaded file differs from the uploaded one",
            subject.target.name()
        );
        std::fs::remove_file(out)?;
        Ok((elapsed, cpu))
    }

    /// Parts 1 and 4: upload and download of new data. Part 1 compares our node
    /// (with every client) against plain S3; part 4 runs hf_xet and `cas`
    /// against the reference server too. Returns part 1's table and part 4's
    /// tables, each when asked for.
    pub async fn new_data(&self, part1: bool, part4: bool) -> Result<(Option<Table>, Vec<Table>)> {
        let mut targets = Vec::new();
        if part1 {
            targets.push(Target::S3);
        }
        for &client in &self.clients {
            targets.push(Target::On(Server::Node, client));
        }
        if part4 {
            for &client in &self.clients {
                if client != Client::CasGrpc {
                    targets.push(Target::On(Server::Reference, client));
                }
            }
        }
        let mut results = vec![Transfers::default(); targets.len()];
        for rep in 0..self.reps {
            let part = format!("new{rep}");
            let subjects = self.subjects(&part, &targets).await?;
            let seed = data::derive(self.seed, 1_000 + rep as u64);
            let file = self.work.join(format!("new-{rep}.bin"));
            let (path, size) = (file.clone(), self.size);
            tokio::task::spawn_blocking(move || data::write_mixed(&path, seed, size)).await??;
            for k in 0..subjects.len() {
                let i = (k + rep) % subjects.len();
                let subject = &subjects[i];
                let name = format!("{rep}.bin");
                let before = self.stored(&part, subject).await?;
                let up = self.upload(&part, subject, &file, &name).await?;
                let added = self.stored(&part, subject).await?.saturating_sub(before);
                let out = self.work.join("download.out");
                let (down, down_cpu) = self
                    .download(&part, subject, &up.hash, &name, &file, &out)
                    .await?;
                let r = &mut results[i];
                r.up.push(up.elapsed);
                r.down.push(down);
                r.stored.push(added);
                r.sent.extend(up.sent);
                r.up_cpu.extend(up.cpu);
                r.down_cpu.extend(down_cpu);
                eprintln!(
                    "cas-bench: new data, rep {}/{}: {}: upload {}, download {}, stored +{}",
                    rep + 1,
                    self.reps,
                    subject.target.name(),
                    secs(up.elapsed),
                    secs(down),
                    bytes(added),
                );
            }
            std::fs::remove_file(&file)?;
            self.finish(&part, subjects).await?;
        }

        let find = |target: Target| {
            targets
                .iter()
                .position(|&t| t == target)
                .map(|i| &results[i])
        };
        let new_data = if part1 {
            Some(self.new_data_table(&targets, &results)?)
        } else {
            None
        };
        let peer = if part4 {
            self.peer_tables(&find)
        } else {
            Vec::new()
        };
        Ok((new_data, peer))
    }

    /// Part 1's table: our node with each client against plain S3.
    fn new_data_table(&self, targets: &[Target], results: &[Transfers]) -> Result<Table> {
        let Some(base) = targets.iter().position(|&t| t == Target::S3) else {
            bail!("part 1 needs the plain-S3 baseline");
        };
        let (base_up, base_down) = (median(&results[base].up), median(&results[base].down));
        let mut table = Table::new(
            format!(
                "1. New data: {} of mixed data, upload and download (median of {})",
                bytes(self.size),
                self.reps
            ),
            &[
                "case",
                "upload",
                "upload MB/s",
                "upload speed vs S3",
                "download",
                "download MB/s",
                "download speed vs S3",
                "bucket bytes added",
            ],
        );
        for (target, r) in targets.iter().zip(results) {
            if matches!(target, Target::On(Server::Reference, _)) {
                continue;
            }
            let (up, down) = (median(&r.up), median(&r.down));
            let vs = |base: Duration, case: Duration| {
                if *target == Target::S3 {
                    "1x (baseline)".to_owned()
                } else {
                    ratio(speedup(base, case))
                }
            };
            table.row(vec![
                target.name(),
                secs(up),
                mb_per_s(self.size, up),
                vs(base_up, up),
                secs(down),
                mb_per_s(self.size, down),
                vs(base_down, down),
                bytes(median_bytes(&r.stored)),
            ]);
        }
        table.note(
            "Data: 4 MiB pieces alternating random bytes, float32 weights, random bytes, \
             bf16 weights (half incompressible, half tensor data LZ4/BG4 can shrink); \
             a new seed per repetition, the same file for every case of a repetition.",
        );
        table.note(format!(
            "Plain S3: a multipart PUT in {} parts, {PART_CONCURRENCY} in flight, and one \
             GET streamed to the file (what a Git LFS server and `git lfs pull` do), \
             through aws-sdk-s3 from the bench process.",
            bytes(PART_SIZE)
        ));
        table.note(
            "Times are whole client processes (start-up, chunking, hashing, transfer, \
             verification, hf_xet's Python start-up included); the node stores every \
             xorb in the same S3 server before it answers. Speed vs S3 = S3 time / case \
             time: above 1x is faster than plain S3.",
        );
        Ok(table)
    }

    /// Part 4's tables: the same client against both servers, and `cas`
    /// against hf_xet on each server.
    fn peer_tables<'a>(&self, find: &impl Fn(Target) -> Option<&'a Transfers>) -> Vec<Table> {
        let cell = |d: Duration| format!("{} ({})", secs(d), mb_per_s(self.size, d));
        let mut same_client = Table::new(
            format!(
                "4a. Same client and files, our node vs the reference server ({} of mixed data, median of {})",
                bytes(self.size),
                self.reps
            ),
            &[
                "client",
                "operation",
                "our node",
                "reference",
                "node time / reference time",
                "target",
                "result",
            ],
        );
        for client in [Client::HfXet, Client::CasHttp] {
            let (Some(node), Some(reference)) = (
                find(Target::On(Server::Node, client)),
                find(Target::On(Server::Reference, client)),
            ) else {
                continue;
            };
            for (operation, ours, theirs) in [
                ("upload", &node.up, &reference.up),
                ("download", &node.down, &reference.down),
            ] {
                let (ours, theirs) = (median(ours), median(theirs));
                let r = ours.as_secs_f64() / theirs.as_secs_f64();
                let (target, result) = if client == Client::HfXet {
                    (
                        format!("≤ {PEER_TIME_TARGET}x"),
                        verdict(r <= PEER_TIME_TARGET),
                    )
                } else {
                    ("—".into(), "—".into())
                };
                same_client.row(vec![
                    client.name().into(),
                    operation.into(),
                    cell(ours),
                    cell(theirs),
                    ratio(r),
                    target,
                    result,
                ]);
            }
        }
        same_client.note(
            "Our node stores every xorb and shard in Garage (S3) and commits it to its \
             Raft index before answering, and serves downloads as presigned URLs to \
             Garage; the reference server (xet-client 1.8.0 `LocalTestServer`, in the \
             bench process) writes to a local directory and serves the bytes itself, \
             with no S3, replication or validation.",
        );
        if let Some(spread) = find(Target::On(Server::Node, Client::HfXet))
            .zip(find(Target::On(Server::Reference, Client::HfXet)))
            .and_then(|(node, reference)| upload_spread(node, reference))
        {
            same_client.note(spread.describe(Client::HfXet));
        }
        let cpu = self.cpu_table(find);

        let mut cas_vs_hf = Table::new(
            format!(
                "4b. cas vs hf_xet on each server ({} of mixed data, median of {})",
                bytes(self.size),
                self.reps
            ),
            &[
                "server",
                "operation",
                "cas",
                "hf_xet",
                "cas time / hf_xet time",
                "target",
                "result",
            ],
        );
        for (server, cas) in [
            (Server::Node, Client::CasHttp),
            (Server::Node, Client::CasGrpc),
            (Server::Reference, Client::CasHttp),
        ] {
            let (Some(ours), Some(hf)) = (
                find(Target::On(server, cas)),
                find(Target::On(server, Client::HfXet)),
            ) else {
                continue;
            };
            for (operation, c, h) in [
                ("upload", &ours.up, &hf.up),
                ("download", &ours.down, &hf.down),
            ] {
                let (c, h) = (median(c), median(h));
                let r = c.as_secs_f64() / h.as_secs_f64();
                cas_vs_hf.row(vec![
                    format!("{}, {}", server.name(), cas.name()),
                    operation.into(),
                    cell(c),
                    cell(h),
                    ratio(r),
                    "< 1x (cas faster)".into(),
                    verdict(r < 1.0),
                ]);
            }
        }
        vec![same_client, cas_vs_hf, cpu]
    }

    /// Part 4's CPU table: for each client and server, the CPU time the client,
    /// the server and the S3 server used during the transfers of table 4a.
    fn cpu_table<'a>(&self, find: &impl Fn(Target) -> Option<&'a Transfers>) -> Table {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut table = Table::new(
            format!(
                "4c. CPU time during the transfers of 4a (seconds of CPU, median of {}, on {cores} cores)",
                self.reps
            ),
            &[
                "client",
                "server",
                "operation",
                "wall time",
                "client CPU",
                "server CPU",
                "S3 server CPU",
                "all CPU",
                "cores busy",
            ],
        );
        let cpu_secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
        for client in [Client::HfXet, Client::CasHttp] {
            for server in [Server::Node, Server::Reference] {
                let Some(t) = find(Target::On(server, client)) else {
                    continue;
                };
                for (operation, wall, cpu) in [
                    ("upload", &t.up, &t.up_cpu),
                    ("download", &t.down, &t.down_cpu),
                ] {
                    if cpu.is_empty() {
                        continue;
                    }
                    let column =
                        |f: fn(&CpuUse) -> Duration| median(&cpu.iter().map(f).collect::<Vec<_>>());
                    let s3: Vec<Duration> = cpu.iter().filter_map(|c| c.s3).collect();
                    let (wall, all) = (median(wall), column(|c| c.total()));
                    table.row(vec![
                        client.name().into(),
                        server.name().into(),
                        operation.into(),
                        secs(wall),
                        cpu_secs(column(|c| c.client)),
                        cpu_secs(column(|c| c.server)),
                        if s3.is_empty() {
                            "—".into()
                        } else {
                            cpu_secs(median(&s3))
                        },
                        cpu_secs(all),
                        format!("{:.2}", all.as_secs_f64() / wall.as_secs_f64()),
                    ]);
                }
            }
        }
        table.note(
            "User + system time from /proc, read just before and after each transfer: \
             the client process (counted when it exits), the `cas-node` process or, for \
             the reference server, the bench process it runs in, and the S3 server's \
             process (Garage's; the bench's for the embedded s3s-fs; — where it is not \
             measured, or not used). Client, node and \
             Garage share the machine's cores, so whatever CPU the S3 server and the \
             node take during an upload is taken from the client; \"cores busy\" near \
             the core count means the transfer was CPU-bound. Each column is a median \
             of its own (all CPU: of the per-run totals). Work a process does after the \
             client exits and kernel threads (writeback) are not counted: cores busy is \
             a lower bound.",
        );
        table
    }

    /// Part 2: first upload of a text file, then re-uploads of two edited
    /// versions (one line changed in place, one line inserted), per client,
    /// against plain S3 storing every version whole.
    pub async fn edits(&self) -> Result<Table> {
        let versions = [
            (TextEdit::None, "first upload"),
            (TextEdit::ReplaceLine, "one line changed (same length)"),
            (TextEdit::InsertLine, "one line inserted"),
        ];
        let mut targets = vec![Target::S3];
        targets.extend(self.clients.iter().map(|&c| Target::On(Server::Node, c)));
        // results[target][version]
        let mut results = vec![vec![Transfers::default(); versions.len()]; targets.len()];
        for rep in 0..self.reps {
            let part = format!("edit{rep}");
            let subjects = self.subjects(&part, &targets).await?;
            let seed = data::derive(self.seed, 2_000 + rep as u64);
            let mut files = Vec::new();
            for (v, (edit, _)) in versions.iter().enumerate() {
                let path = self.work.join(format!("text-{rep}-{v}.jsonl"));
                let (p, size, edit) = (path.clone(), self.size, *edit);
                tokio::task::spawn_blocking(move || data::write_text(&p, seed, size, edit))
                    .await??;
                files.push(path);
            }
            // Every version is uploaded from the same path, as a user edits a file in
            // place; before the inserted line, the path holds the first version again
            // (uploaded untimed), so each timed upload is one edit away from the last.
            let working = self.work.join(format!("text-{rep}.jsonl"));
            let place = |file: &std::path::Path| -> Result<()> {
                let _ = std::fs::remove_file(&working);
                std::fs::hard_link(file, &working)?;
                Ok(())
            };
            for k in 0..subjects.len() {
                let i = (k + rep) % subjects.len();
                let subject = &subjects[i];
                let route = self.route(subject, self.link.as_ref()).await?;
                for (v, file) in files.iter().enumerate() {
                    let name = format!("{rep}-{v}.jsonl");
                    if v == 2 && subject.target != Target::S3 {
                        place(&files[0])?;
                        self.upload_by(
                            &route,
                            &part,
                            subject,
                            &working,
                            &format!("{rep}-0b.jsonl"),
                        )
                        .await?;
                    }
                    place(file)?;
                    let before = self.stored(&part, subject).await?;
                    let Upload {
                        elapsed: up, sent, ..
                    } = self
                        .upload_by(&route, &part, subject, &working, &name)
                        .await?;
                    let added = self.stored(&part, subject).await?.saturating_sub(before);
                    let r = &mut results[i][v];
                    r.up.push(up);
                    r.stored.push(added);
                    r.sent.extend(sent);
                    eprintln!(
                        "cas-bench: edits, rep {}/{}: {}: {}: {}, sent {}, stored +{}",
                        rep + 1,
                        self.reps,
                        subject.target.name(),
                        versions[v].1,
                        secs(up),
                        sent.map_or_else(|| "?".into(), bytes),
                        bytes(added),
                    );
                }
            }
            for file in files.iter().chain([&working]) {
                let _ = std::fs::remove_file(file);
            }
            self.finish(&part, subjects).await?;
        }

        let mut table = Table::new(
            format!(
                "2. Re-upload after a one-line edit of a {} JSON-lines file (median of {}; {})",
                bytes(self.size),
                self.reps,
                self.link.as_ref().map_or_else(
                    || "clients on loopback".to_owned(),
                    |l| format!("clients on a {} Mbit/s link", l.mbit())
                )
            ),
            &[
                "client",
                "upload",
                "time",
                "MB/s",
                "faster than first upload",
                "faster than whole-file upload",
                "bytes sent",
                "bucket bytes added",
                "target",
                "result",
            ],
        );
        // The whole-file upload of each version: plain S3 (targets[0]) storing it whole.
        let whole: Vec<Duration> = results[0].iter().map(|r| median(&r.up)).collect();
        for (target, per_version) in targets.iter().zip(&results) {
            let first = median(&per_version[0].up);
            for (v, r) in per_version.iter().enumerate() {
                let time = median(&r.up);
                let faster = speedup(first, time);
                let vs_whole = speedup(whole[v], time);
                let (target_cell, result) = match (v, target) {
                    (0, _) | (_, Target::S3) => ("—".into(), "—".into()),
                    _ => (
                        format!("≥ {EDIT_SPEEDUP_TARGET}x"),
                        verdict(vs_whole >= EDIT_SPEEDUP_TARGET),
                    ),
                };
                table.row(vec![
                    if *target == Target::S3 {
                        "plain S3 (whole object)".into()
                    } else {
                        format!("{} → our node", target.client_name())
                    },
                    versions[v].1.into(),
                    secs(time),
                    mb_per_s(self.size, time),
                    if v == 0 {
                        "1x (baseline)".into()
                    } else {
                        ratio(faster)
                    },
                    if *target == Target::S3 {
                        "1x (baseline)".into()
                    } else {
                        ratio(vs_whole)
                    },
                    if r.sent.is_empty() {
                        "—".into()
                    } else {
                        bytes(median_bytes(&r.sent))
                    },
                    bytes(median_bytes(&r.stored)),
                    target_cell,
                    result,
                ]);
            }
        }
        table.note(
            "Whole-file upload: the same version stored whole with one S3 PUT (multipart), \
             as Git LFS re-uploads an edited file; the target is judged against it. \
             \"Faster than first upload\" compares with the same client's first upload \
             of the file instead.",
        );
        if let Some(link) = &self.link {
            table.note(format!(
                "Every client, and the plain-S3 baseline, reaches its server through a \
                 link paced to {} Mbit/s each way (all connections together), as a \
                 user's uplink; the nodes reach S3 directly, as in a data centre.",
                link.mbit()
            ));
        }
        table.note(
            "The file: JSON records (`{\"id\", \"user\", \"score\", \"text\"}`), a new seed per \
             repetition. The edits touch the first line starting past the middle: its \
             `score` rewritten with the same width, or a new line inserted before it.",
        );
        table.note(
            "Each client uploads to its own fresh node; the edited versions follow the \
             first upload on the same node, from the same path, as a file edited in place \
             (before the inserted line the path holds the first version again, uploaded \
             untimed). Both clients keep their local caches between uploads, as a \
             user's machine would: hf_xet its shard cache, cas its shard cache and its \
             per-path manifest (old chunks are recognised by fingerprint and only the \
             region around the edit is chunked again). Only new chunks (and a shard) are \
             sent. hf_xet does not report bytes sent, and computes the file's SHA-256 \
             (the Git LFS object id), which cas does only with --sha256. Every file is \
             read through just before each timed upload, so every client and the \
             baseline start with it in the page cache.",
        );
        Ok(table)
    }

    /// Part 3: bucket usage after version 1 and after versions 1 and 2 of a
    /// model file, our node (per client) against plain S3.
    pub async fn model_versions(&self) -> Result<Table> {
        const PART: &str = "model";
        let tensors = data::model_layout(self.model_size);
        let changed = data::changed_tensors(self.seed, tensors.len(), self.changed_fraction);
        let changed_bytes: u64 = tensors
            .iter()
            .zip(&changed)
            .filter(|&(_, &c)| c)
            .map(|(t, _)| t.bytes())
            .sum();
        let changed_count = changed.iter().filter(|&&c| c).count();
        let seed = data::derive(self.seed, 3_000);
        let mut files = Vec::new();
        let mut size = 0;
        for version in [1, 2] {
            let path = self.work.join(format!("model-v{version}.safetensors"));
            let (p, t, c) = (path.clone(), tensors.clone(), changed.clone());
            size =
                tokio::task::spawn_blocking(move || data::write_model(&p, seed, &t, &c, version))
                    .await??;
            files.push(path);
        }
        let mut targets = vec![Target::S3];
        targets.extend(self.clients.iter().map(|&c| Target::On(Server::Node, c)));
        let subjects = self.subjects(PART, &targets).await?;
        let mut rows = Vec::new();
        for subject in &subjects {
            let mut stored = Vec::new();
            let mut times = Vec::new();
            for (v, file) in files.iter().enumerate() {
                let up = self
                    .upload(PART, subject, file, &format!("v{}.safetensors", v + 1))
                    .await?;
                times.push(up.elapsed);
                stored.push(self.stored(PART, subject).await?);
            }
            eprintln!(
                "cas-bench: model versions: {}: v1 {} (stored {}), v2 {} (stored {})",
                subject.target.name(),
                secs(times[0]),
                bytes(stored[0]),
                secs(times[1]),
                bytes(stored[1]),
            );
            rows.push((subject.target, stored, times));
        }
        self.finish(PART, subjects).await?;
        for file in files {
            std::fs::remove_file(file)?;
        }

        let s3_total = rows
            .iter()
            .find(|(t, ..)| *t == Target::S3)
            .map(|(_, stored, _)| stored[1])
            .context("part 3 needs the plain-S3 baseline")?;
        let mut table = Table::new(
            format!(
                "3. Storage of two versions of a {} safetensors-like model, {} of {} tensors ({:.0}% of the bytes) changed",
                bytes(size),
                changed_count,
                tensors.len(),
                changed_bytes as f64 * 100.0 / size as f64
            ),
            &[
                "case",
                "bucket after v1",
                "after v1 + v2",
                "added by v2",
                "v1 + v2 vs plain S3",
                "added by v2 / changed tensor bytes",
                "v1 upload",
                "v2 upload",
            ],
        );
        for (target, stored, times) in &rows {
            let added = stored[1].saturating_sub(stored[0]);
            table.row(vec![
                if *target == Target::S3 {
                    "plain S3 (two whole objects)".into()
                } else {
                    format!("{} → our node", target.client_name())
                },
                bytes(stored[0]),
                bytes(stored[1]),
                bytes(added),
                ratio(stored[1] as f64 / s3_total as f64),
                ratio(added as f64 / changed_bytes as f64),
                secs(times[0]),
                secs(times[1]),
            ]);
        }
        table.note(format!(
            "The model: an 8-byte length, a JSON header, then bf16 embedding and projection \
             matrices and float32 norms of a Llama-like model ({} tensors); version 2 has \
             new weights in {changed_count} tensors picked at random ({} changed) and a \
             header that differs only in its `__metadata__.version` (same length, so every \
             tensor keeps its offset). Ideal deduplication stores v1 plus the changed \
             bytes: {} in all, {} of plain S3 (before compression).",
            tensors.len(),
            bytes(changed_bytes),
            bytes(size + changed_bytes),
            ratio((size + changed_bytes) as f64 / (2 * size) as f64),
        ));
        table.note(
            "Bucket bytes are the sizes of the objects under each system's prefix \
             (ListObjectsV2): xorbs (chunks LZ4/BG4-compressed where that helps, with \
             the storage footer) and shards. Each client uploads both versions to its \
             own fresh node, in one run (storage is deterministic; the times are \
             informative only).",
        );
        Ok(table)
    }
}

/// How one client's uploads to our node and to the reference compared, over
/// the repetitions (each repetition pairs one upload to each server).
#[derive(Debug, Clone, Copy, PartialEq)]
struct UploadSpread {
    /// Lowest and highest of our node's upload time over the reference's.
    time: (f64, f64),
    /// Lowest and highest of the client's and the S3 server's CPU (the node's
    /// own left out) over the reference side's whole CPU, when measured.
    without_node: Option<(f64, f64)>,
}

impl UploadSpread {
    /// A sentence for table 4a about `client`'s uploads.
    fn describe(&self, client: Client) -> String {
        let range = |(lo, hi): (f64, f64)| format!("{}-{}", ratio(lo), ratio(hi));
        let mut text = format!(
            "{} upload, per repetition: our node's time was {} the reference's.",
            client.name(),
            range(self.time)
        );
        if let Some(cpu) = self.without_node {
            text.push_str(&format!(
                " Leaving out the node's own CPU, {client} and the S3 server used {} the CPU \
                 of {client} and the reference server. While the uploads are CPU-bound \
                 (cores busy near the core count in table 4c), that is about the ratio \
                 a node that took no CPU at all would reach.",
                range(cpu),
                client = client.name(),
            ));
        }
        text
    }
}

/// The spread of `node` against `reference` uploads, paired by repetition;
/// `None` when no pair was measured.
fn upload_spread(node: &Transfers, reference: &Transfers) -> Option<UploadSpread> {
    let time = min_max(
        node.up
            .iter()
            .zip(&reference.up)
            .map(|(ours, theirs)| ours.as_secs_f64() / theirs.as_secs_f64()),
    )?;
    let without_node = min_max(node.up_cpu.iter().zip(&reference.up_cpu).filter_map(
        |(ours, theirs)| {
            Some((ours.client + ours.s3?).as_secs_f64() / theirs.total().as_secs_f64())
        },
    ));
    Some(UploadSpread { time, without_node })
}

/// The lowest and highest finite value, if any.
fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |range, v| match range {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(client: u64, server: u64, s3: Option<u64>) -> CpuUse {
        let ms = Duration::from_millis;
        CpuUse {
            client: ms(client),
            server: ms(server),
            s3: s3.map(ms),
        }
    }

    fn uploads(times: &[u64], cpus: Vec<CpuUse>) -> Transfers {
        Transfers {
            up: times.iter().copied().map(Duration::from_millis).collect(),
            up_cpu: cpus,
            ..Transfers::default()
        }
    }

    #[test]
    fn spread_pairs_repetitions_and_leaves_out_the_node() {
        let node = uploads(
            &[5000, 6000],
            vec![cpu(3000, 1000, Some(5000)), cpu(3000, 2000, Some(6000))],
        );
        let reference = uploads(
            &[4000, 4000],
            vec![cpu(3000, 4000, None), cpu(3000, 3000, None)],
        );
        let spread = upload_spread(&node, &reference).unwrap();
        assert_eq!(spread.time, (1.25, 1.5));
        // (3 + 5) / 7 and (3 + 6) / 6: the node's 1 s and 2 s are not counted.
        let (lo, hi) = spread.without_node.unwrap();
        assert!(
            (lo - 8.0 / 7.0).abs() < 1e-9 && (hi - 1.5).abs() < 1e-9,
            "{lo} {hi}"
        );
        let text = spread.describe(Client::HfXet);
        assert!(text.starts_with("hf_xet upload"), "{text}");
        assert!(text.contains("1.25x-1.50x"), "{text}");
        assert!(text.contains("1.14x-1.50x"), "{text}");
    }

    #[test]
    fn spread_needs_a_pair_and_skips_unmeasured_cpu() {
        let none = uploads(&[], vec![]);
        let one = uploads(&[5000], vec![cpu(1000, 1000, None)]);
        assert_eq!(upload_spread(&none, &one), None);
        let spread = upload_spread(&one, &one).unwrap();
        assert_eq!(spread.time, (1.0, 1.0));
        // Without the S3 server's CPU there is nothing to leave the node out of.
        assert_eq!(spread.without_node, None);
        assert!(!spread.describe(Client::CasHttp).contains("Leaving out"));
    }
}
