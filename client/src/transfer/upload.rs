//! Uploading files: chunking, global dedup, xorbs, shards.
//!
//! Files are processed one after the other. Each file is mapped read-only
//! (never copied into memory whole), chunked and hashed on
//! [`UploadOptions::chunk_threads`] threads (while its SHA-256, if asked for,
//! is computed on a thread of its own), and its global-dedup candidates are
//! queried. It is then added to the open [`UploadSession`] on a blocking
//! thread, which hands over every xorb as soon as it is full: xorbs upload
//! ([`UploadOptions::xorb_concurrency`] at a time) while packing and
//! compression go on. Once a batch holds [`UploadOptions::batch_bytes`] of new
//! data, or its shard would approach [`UploadOptions::max_shard_bytes`], its
//! last xorb is posted and then its shard. The next batch starts knowing every xorb the
//! previous ones created, so deduplication spans the whole upload; teaching
//! it costs time in proportion to the chunks uploaded so far, which matters
//! only for uploads of hundreds of batches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cas_core::MerkleHash;
use cas_core::chunking::Chunk;
use cas_core::constants::MAX_SHARD_BYTES;
use cas_core::dedup::should_query_global_dedup;
use cas_core::shard::{HEADER_SIZE, ParsedShard, RECORD_SIZE, Shard, parse_shard};
use futures::StreamExt;

use super::file_data::FileData;
use super::scan::{Scanned, manifest_of, scan};
use super::transport::Transport;
use super::{Progress, ProgressFn, TransferError, report};
use crate::cache::{CachedShards, LocalCache};
use crate::pipeline::UploadSession;
use cas_core::xorb::SerializedXorb;

/// Settings of an upload.
#[derive(Clone)]
pub struct UploadOptions {
    /// Threads to chunk and hash each file with.
    pub chunk_threads: usize,
    /// Global-dedup queries in flight at once.
    pub dedup_concurrency: usize,
    /// Xorb uploads in flight at once.
    pub xorb_concurrency: usize,
    /// New (not deduplicated) bytes a batch collects before its xorbs and shard are sent.
    pub batch_bytes: u64,
    /// Largest shard sent; batches are cut so their shard stays below it.
    pub max_shard_bytes: usize,
    /// Progress notifications.
    pub progress: Option<ProgressFn>,
    /// The local cache to consult before asking the server, and to keep what
    /// this upload registered and learned (none: the server only).
    pub cache: Option<LocalCache>,
    /// Also compute each file's SHA-256 and register it with the file (the
    /// format's optional metadata; Git LFS names objects by it, and hf_xet always
    /// sends it). The store identifies files by their Xet hash and cannot check
    /// a client's SHA-256, so it costs a pass over the data for metadata only:
    /// on a re-upload, from the last checkpoint before the first change to the end.
    pub sha256: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            chunk_threads: cas_core::chunking::default_threads(),
            dedup_concurrency: 8,
            xorb_concurrency: 4,
            batch_bytes: 512 << 20,
            max_shard_bytes: MAX_SHARD_BYTES,
            progress: None,
            cache: None,
            sha256: false,
        }
    }
}

impl std::fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadOptions")
            .field("chunk_threads", &self.chunk_threads)
            .field("dedup_concurrency", &self.dedup_concurrency)
            .field("xorb_concurrency", &self.xorb_concurrency)
            .field("batch_bytes", &self.batch_bytes)
            .field("max_shard_bytes", &self.max_shard_bytes)
            .field("progress", &self.progress.is_some())
            .field("cache", &self.cache)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// One uploaded file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedFile {
    /// The path it was read from.
    pub path: PathBuf,
    /// Its Xet file hash (the name to download it by).
    pub file_hash: MerkleHash,
    /// Its size in bytes.
    pub size: u64,
    /// Its bytes that were packed into new xorbs (the rest was deduplicated).
    pub new_bytes: u64,
}

/// What an upload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// The files, in upload order.
    pub files: Vec<UploadedFile>,
    /// Bytes read from the files.
    pub bytes_read: u64,
    /// Bytes packed into new xorbs (before compression).
    pub new_bytes: u64,
    /// Bytes found in this upload or on the server, not packed again.
    pub deduplicated_bytes: u64,
    /// Serialized xorb bytes posted.
    pub xorb_bytes_sent: u64,
    /// Shard bytes posted.
    pub shard_bytes_sent: u64,
    /// Xorbs posted.
    pub xorbs_sent: usize,
    /// Posted xorbs the server said it already had.
    pub xorbs_already_stored: usize,
    /// Shards posted.
    pub shards_sent: usize,
    /// Global-dedup queries made.
    pub dedup_queries: usize,
    /// Queries the server answered with a usable shard.
    pub dedup_hits: usize,
    /// Answers not used: unparsable, expired, or the query failed.
    pub dedup_answers_ignored: usize,
    /// Chunks verified against the manifest of an earlier upload of the same
    /// path instead of being chunked again (the fast path for edited files).
    pub chunks_reused: usize,
    /// Shards of the local cache that located chunks of this upload.
    pub cache_shards_used: usize,
    /// Whether the server refused a shard built from the local cache, so the
    /// endpoint's cache was dropped and the upload run again without it.
    pub cache_dropped: bool,
}

impl UploadReport {
    /// Bytes posted in all: xorbs and shards (every xorb posted counts, even one the server had).
    pub fn bytes_sent(&self) -> u64 {
        self.xorb_bytes_sent + self.shard_bytes_sent
    }

    /// Share of the bytes read that did not have to be packed again (0 to 1; 0 for no input).
    pub fn dedup_ratio(&self) -> f64 {
        if self.bytes_read == 0 {
            0.0
        } else {
            self.deduplicated_bytes as f64 / self.bytes_read as f64
        }
    }
}

/// The regular files under `paths`, in order: a file as given, a directory
/// walked recursively in sorted order. Inside directories, anything that is
/// not a regular file or a directory (symlinks included) is skipped; a path
/// given directly must be a file or a directory (symlinks to them are followed).
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TransferError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| TransferError::io(p, e))?;
        if meta.is_file() {
            out.push(p.clone());
        } else if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            return Err(TransferError::NotAFile { path: p.clone() });
        }
    }
    Ok(out)
}

/// Appends the regular files under `dir`, sorted, depth first.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TransferError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| TransferError::io(dir, e))?
        .map(|e| {
            let e = e.map_err(|err| TransferError::io(dir, err))?;
            let ty = e
                .file_type()
                .map_err(|err| TransferError::io(e.path(), err))?;
            Ok((e.path(), ty))
        })
        .collect::<Result<Vec<_>, TransferError>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, ty) in entries {
        if ty.is_dir() {
            walk(&path, out)?;
        } else if ty.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Uploads the files under `paths` ([`collect_files`]), then [`upload_files`].
pub async fn upload_paths<T: Transport>(
    client: &T,
    paths: &[PathBuf],
    opts: &UploadOptions,
) -> Result<UploadReport, TransferError> {
    let files = collect_files(paths)?;
    upload_files(client, &files, opts).await
}

/// Uploads regular files; returns their hashes and what was sent.
///
/// Each file is mapped, not read into memory; new xorbs are held in memory until
/// their batch is sent (see the module documentation).
pub async fn upload_files<T: Transport>(
    client: &T,
    files: &[PathBuf],
    opts: &UploadOptions,
) -> Result<UploadReport, TransferError> {
    let mut total = 0u64;
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| TransferError::io(f, e))?;
        total += meta.len();
    }
    report(&opts.progress, Progress::Total { bytes: total });

    let cached = match &opts.cache {
        Some(cache) => {
            let shards = cache.shards.clone();
            Some(tokio::task::spawn_blocking(move || shards.load(now_secs())).await?)
        }
        None => None,
    };
    let mut up = Uploader::new(client, opts, cached);
    let result = up.run(files).await;
    match result {
        // The server does not know a xorb the cache promised (another cluster behind
        // the same address, a store reset): forget this endpoint's cache, start again.
        Err(e) if up.used_cache && e.is_refused() => {
            if let Some(cache) = &opts.cache {
                let _ = cache.shards.clear();
            }
            let mut again = Uploader::new(client, opts, None);
            again.run(files).await?;
            again.report.cache_dropped = true;
            Ok(again.report)
        }
        Err(e) => Err(e),
        Ok(()) => Ok(up.report),
    }
}

/// Shard bytes one file may need: header, one entry and one verification entry
/// per chunk (a term has at least one chunk), metadata; plus CAS-info records
/// for all its chunks were they all new, each in its own xorb at worst.
fn shard_estimate(num_chunks: usize) -> usize {
    RECORD_SIZE * (2 + 4 * num_chunks)
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A global-dedup answer worth using: a shard that parses and whose key has
/// not expired at `now` (seconds since the epoch). A shard without footer, or
/// whose expiry is 0 (servers write 0 when they set none), does not expire.
pub fn usable_answer(bytes: &[u8], now: u64) -> Option<ParsedShard> {
    let parsed = parse_shard(bytes).ok()?;
    match parsed.footer {
        Some(f) if f.key_expiry != 0 && f.is_expired(now) => None,
        _ => Some(parsed),
    }
}

/// The state of one upload.
struct Uploader<'a, T> {
    client: &'a T,
    opts: &'a UploadOptions,
    session: UploadSession,
    /// Dedup answers and shards sent so far, fed to every new batch's session.
    learned: Vec<Arc<ParsedShard>>,
    /// Raw chunk hashes this upload already knows a place for.
    known: HashSet<MerkleHash>,
    /// Chunk hashes already queried (answered or not).
    queried: HashSet<MerkleHash>,
    /// The local cache's shards, if there is a cache.
    cached: Option<CachedShards>,
    /// Cached shards already learned.
    cache_learned: HashSet<usize>,
    /// Whether a cached shard located any chunk (the server may refuse what it names).
    used_cache: bool,
    /// Dedup answers to keep in the cache once the batch is registered.
    to_cache: Vec<Bytes>,
    /// Files in the open batch.
    batch_files: usize,
    /// New bytes packed in the open batch.
    batch_new_bytes: u64,
    /// Upper bound of the open batch's shard size.
    batch_shard_estimate: usize,
    report: UploadReport,
}

impl<'a, T: Transport> Uploader<'a, T> {
    /// A fresh upload.
    fn new(client: &'a T, opts: &'a UploadOptions, cached: Option<CachedShards>) -> Self {
        Uploader {
            client,
            opts,
            session: UploadSession::new(),
            learned: Vec::new(),
            known: HashSet::new(),
            queried: HashSet::new(),
            cached,
            cache_learned: HashSet::new(),
            used_cache: false,
            to_cache: Vec::new(),
            batch_files: 0,
            batch_new_bytes: 0,
            batch_shard_estimate: HEADER_SIZE + 2 * RECORD_SIZE,
            report: UploadReport::default(),
        }
    }

    /// Uploads `files` in order, then sends the last batch.
    async fn run(&mut self, files: &[PathBuf]) -> Result<(), TransferError> {
        for path in files {
            self.add_path(path).await?;
        }
        self.flush().await
    }

    /// Reads, chunks, deduplicates and packs one file.
    async fn add_path(&mut self, path: &Path) -> Result<(), TransferError> {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        report(
            &self.opts.progress,
            Progress::FileStarted {
                path: path.to_path_buf(),
                size,
            },
        );
        let threads = self.opts.chunk_threads.max(1);
        let want_sha256 = self.opts.sha256;
        let owned = path.to_path_buf();
        let manifests = self.opts.cache.as_ref().map(|c| c.manifests.clone());
        // The SHA-256 runs on its own thread while the file is chunked, hashed and
        // packed; a manifest of the path's last upload spares re-chunking what did not change.
        let (data, scanned) = tokio::task::spawn_blocking(move || {
            let data = Arc::new(FileData::open(&owned)?);
            let manifest = manifests.as_ref().and_then(|m| m.load(&owned));
            let scanned = scan(&data, manifest.as_ref(), threads, want_sha256)?;
            Ok::<_, TransferError>((data, scanned))
        })
        .await??;
        let Scanned {
            chunks,
            fingerprints,
            sha256,
            reused,
        } = scanned;
        self.report.chunks_reused += reused;

        let estimate = shard_estimate(chunks.len());
        let full = self.batch_new_bytes + data.len() as u64 > self.opts.batch_bytes
            || self.batch_shard_estimate + estimate > self.opts.max_shard_bytes;
        if self.batch_files > 0 && full {
            self.flush().await?;
        }

        self.query_global_dedup(&chunks).await;

        // Packing runs on a blocking thread and hands over each xorb it fills; the
        // xorbs upload meanwhile. The channel bounds how far packing runs ahead.
        let session = std::mem::take(&mut self.session);
        let (tx, mut rx) = tokio::sync::mpsc::channel(self.opts.xorb_concurrency.max(1));
        let packing = tokio::task::spawn_blocking(move || {
            let mut session = session;
            let mut hashed = None;
            let summary = session.add_file_with_sha256(
                &data,
                &chunks,
                || {
                    let Some(job) = sha256 else { return Ok(None) };
                    let (digest, checkpoints) = job.join()?;
                    hashed = Some((digest, checkpoints));
                    Ok(Some(digest))
                },
                &mut |x| tx.blocking_send(x).is_ok(),
            );
            (session, summary, chunks, hashed)
        });
        let filled = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let (packed, sent) = tokio::join!(packing, self.send_xorbs(filled));
        sent?;
        let (session, summary, chunks, hashed) = packed?;
        self.session = session;
        let summary = summary?;
        self.known.extend(chunks.iter().map(|c| c.hash));
        if let Some(cache) = &self.opts.cache {
            // Best effort: without a manifest the next upload of this path scans it all.
            let manifest = manifest_of(&chunks, fingerprints, summary.size, hashed);
            let (store, owned) = (cache.manifests.clone(), path.to_path_buf());
            let _ = tokio::task::spawn_blocking(move || store.save(&owned, &manifest)).await;
        }

        self.batch_files += 1;
        self.batch_new_bytes += summary.new_bytes;
        self.batch_shard_estimate += estimate;
        self.report.bytes_read += summary.size;
        self.report.new_bytes += summary.new_bytes;
        self.report.deduplicated_bytes += summary.deduplicated_bytes;
        self.report.files.push(UploadedFile {
            path: path.to_path_buf(),
            file_hash: summary.file_hash,
            size: summary.size,
            new_bytes: summary.new_bytes,
        });
        report(
            &self.opts.progress,
            Progress::Read {
                bytes: summary.size,
            },
        );
        Ok(())
    }

    /// Looks this file's chunks up in the local cache, then queries the server
    /// about its remaining dedup candidates; teaches the session the answers.
    ///
    /// Every chunk not known to this upload is looked up in the cache, and each
    /// cached shard that holds one is learned whole. A server candidate is the
    /// file's first chunk or a chunk in the global-dedup sample, still not known
    /// and not queried before. A failed query, an unparsable answer or one whose
    /// key has expired counts as a miss.
    async fn query_global_dedup(&mut self, chunks: &[Chunk]) {
        if let Some(cached) = &self.cached {
            let mut hits = Vec::new();
            for c in chunks {
                if !self.known.contains(&c.hash)
                    && let Some(i) = cached.find(&c.hash)
                    && self.cache_learned.insert(i)
                {
                    hits.push(i);
                }
            }
            let shards: Vec<_> = hits.into_iter().filter_map(|i| cached.take(i)).collect();
            for shard in shards {
                self.report.cache_shards_used += 1;
                self.used_cache = true;
                self.learn(shard);
            }
        }
        let mut wanted = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            if should_query_global_dedup(&c.hash, i == 0)
                && !self.known.contains(&c.hash)
                && self.queried.insert(c.hash)
            {
                wanted.push(c.hash);
            }
        }
        if wanted.is_empty() {
            return;
        }
        self.report.dedup_queries += wanted.len();
        let answers = self
            .client
            .query_dedup(wanted, self.opts.dedup_concurrency)
            .await;
        self.report.dedup_answers_ignored += answers.failed;
        let now = now_secs();
        for bytes in answers.shards {
            match usable_answer(&bytes, now) {
                Some(parsed) => {
                    self.report.dedup_hits += 1;
                    self.learn(Arc::new(parsed));
                    if self.opts.cache.is_some() {
                        self.to_cache.push(bytes);
                    }
                }
                None => self.report.dedup_answers_ignored += 1,
            }
        }
    }

    /// Feeds a shard's xorbs to the session and remembers it for later batches.
    fn learn(&mut self, shard: Arc<ParsedShard>) {
        let keyed = shard
            .footer
            .as_ref()
            .and_then(|f| f.hmac_key)
            .is_some_and(|k| !k.is_zero());
        if !keyed {
            self.known.extend(
                shard
                    .shard
                    .xorbs
                    .iter()
                    .flat_map(|x| x.chunks.iter().map(|c| c.hash)),
            );
        }
        self.session.add_dedup_answer(&shard);
        self.learned.push(shard);
    }

    /// Keeps a registered batch's new xorbs, and the dedup answers it used, in the
    /// local cache (best effort: a cache that cannot be written is skipped).
    async fn keep_in_cache(&mut self, registered: &Shard) {
        let Some(cache) = &self.opts.cache else {
            return;
        };
        let mut keep: Vec<Bytes> = std::mem::take(&mut self.to_cache);
        if !registered.xorbs.is_empty()
            && let Ok(bytes) = Shard::new(Vec::new(), registered.xorbs.clone()).to_bytes()
        {
            keep.push(Bytes::from(bytes));
        }
        let shards = cache.shards.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for s in &keep {
                let _ = shards.insert(s);
            }
            let _ = shards.evict();
        })
        .await;
    }

    /// Uploads `xorbs`, `xorb_concurrency` at a time, and counts them in the report.
    async fn send_xorbs(
        &mut self,
        xorbs: impl futures::Stream<Item = SerializedXorb> + Unpin,
    ) -> Result<(), TransferError> {
        let client = self.client;
        let progress = &self.opts.progress;
        let mut uploads = xorbs
            .map(|x| async move {
                let len = x.bytes.len() as u64;
                let inserted = client.upload_xorb(x.hash, Bytes::from(x.bytes)).await?;
                report(progress, Progress::Sent { bytes: len });
                Ok::<_, TransferError>((len, inserted))
            })
            .buffer_unordered(self.opts.xorb_concurrency.max(1));
        while let Some(done) = uploads.next().await {
            let (len, inserted) = done?;
            self.report.xorbs_sent += 1;
            self.report.xorb_bytes_sent += len;
            if !inserted {
                self.report.xorbs_already_stored += 1;
            }
        }
        Ok(())
    }

    /// Sends the open batch: its last xorb (the others went as they were filled), then its shard.
    async fn flush(&mut self) -> Result<(), TransferError> {
        if self.batch_files == 0 {
            return Ok(());
        }
        let session = std::mem::take(&mut self.session);
        let plan = tokio::task::spawn_blocking(move || session.finish()).await??;

        let mut shard = plan.shard;
        shard.canonicalize();
        let shard_bytes = shard.to_bytes()?;
        if shard_bytes.len() > self.opts.max_shard_bytes {
            return Err(TransferError::ShardTooLarge {
                size: shard_bytes.len(),
                limit: self.opts.max_shard_bytes,
            });
        }

        self.send_xorbs(futures::stream::iter(plan.xorbs)).await?;

        let len = shard_bytes.len() as u64;
        self.client.upload_shard(Bytes::from(shard_bytes)).await?;
        report(&self.opts.progress, Progress::Sent { bytes: len });
        self.report.shards_sent += 1;
        self.report.shard_bytes_sent += len;
        self.keep_in_cache(&shard).await;

        // The next batch starts knowing every xorb created so far, and every dedup answer.
        let created = Arc::new(ParsedShard {
            shard: Shard::new(Vec::new(), shard.xorbs),
            footer: None,
        });
        self.learned.push(created);
        let mut session = UploadSession::new();
        for s in &self.learned {
            session.add_dedup_answer(s);
        }
        self.session = session;
        self.batch_files = 0;
        self.batch_new_bytes = 0;
        self.batch_shard_estimate = HEADER_SIZE + 2 * RECORD_SIZE;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_directories_sorted_and_skips_non_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/inner")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("b/inner/z"), b"z").unwrap();
        std::fs::write(root.join("b/y"), b"y").unwrap();
        std::fs::write(root.join("a/x"), b"x").unwrap();
        std::fs::write(root.join("top"), b"t").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("top"), root.join("b/link")).unwrap();

        let files = collect_files(&[root.to_path_buf()]).unwrap();
        let rel: Vec<_> = files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(rel, ["a/x", "b/inner/z", "b/y", "top"]);

        // Paths given directly keep their order; a missing one is an error naming it.
        let files = collect_files(&[root.join("top"), root.join("a")]).unwrap();
        assert_eq!(files, [root.join("top"), root.join("a/x")]);
        let err = collect_files(&[root.join("missing")]).unwrap_err();
        assert!(err.to_string().contains("missing"));
    }

    #[test]
    fn dedup_answers_must_parse_and_be_unexpired() {
        use cas_core::shard::{FooterOptions, XorbInfo};
        let chunk = cas_core::hash::chunk_hash(b"chunk");
        let xorb = XorbInfo::from_chunks_hashed(&[(chunk, 5)]).unwrap();
        let shard = Shard::new(Vec::new(), vec![xorb]);
        let with_expiry = |key_expiry| {
            shard
                .to_bytes_with_footer(&FooterOptions {
                    key_expiry,
                    creation_timestamp: 1_000,
                    ..FooterOptions::default()
                })
                .unwrap()
        };
        assert!(usable_answer(&with_expiry(2_000), 1_999).is_some());
        assert!(usable_answer(&with_expiry(2_000), 2_000).is_some());
        assert!(usable_answer(&with_expiry(2_000), 2_001).is_none());
        assert!(usable_answer(&with_expiry(u64::MAX), u64::MAX - 1).is_some());
        assert!(
            usable_answer(&with_expiry(0), 2_001).is_some(),
            "0 = no expiry"
        );
        assert!(usable_answer(&shard.to_bytes().unwrap(), 5).is_some());
        let mut cut = with_expiry(2_000);
        cut.truncate(cut.len() - 1);
        assert!(usable_answer(&cut, 0).is_none());
        assert!(usable_answer(b"not a shard", 0).is_none());
    }

    #[test]
    fn report_totals() {
        let r = UploadReport {
            bytes_read: 1000,
            deduplicated_bytes: 250,
            xorb_bytes_sent: 700,
            shard_bytes_sent: 96,
            ..UploadReport::default()
        };
        assert_eq!(r.bytes_sent(), 796);
        assert!((r.dedup_ratio() - 0.25).abs() < 1e-12);
        assert_eq!(UploadReport::default().dedup_ratio(), 0.0);
    }

    #[test]
    fn shard_estimate_bounds_the_real_shard() {
        // One file of n distinct chunks, all new, cannot need more than the estimate.
        use cas_core::chunking::chunk_and_hash;
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let chunks = chunk_and_hash(&data);
        let mut s = UploadSession::new();
        s.add_file(&data, &chunks).unwrap();
        let plan = s.finish().unwrap();
        let real = plan.shard.to_bytes().unwrap().len();
        assert!(real <= HEADER_SIZE + 2 * RECORD_SIZE + shard_estimate(chunks.len()));
    }
}
