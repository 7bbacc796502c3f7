//! Downloading a file, or a byte range of it, by its Xet file hash.
//!
//! The reconstruction names the terms (chunk ranges of xorbs) in file order
//! and where to fetch each. The terms' stated lengths give each its place in
//! the output (the first term entered at `offset_into_first_range`, the output
//! cut to the requested length), so the output is sized up front. Every
//! distinct byte range is fetched once (several at a time) and decoded as it
//! streams in, a batch of whole chunk records at a time, on blocking threads
//! that write each term's bytes at its place with positioned writes, in
//! whatever order the ranges arrive; each term is checked against its
//! `unpacked_length`. Memory stays bounded by the batches in flight (each at
//! most 1 MiB fetched and 4 MiB decoded), whatever the file size, however
//! large the server's ranges and however well their chunks compressed. A whole-file
//! download is verified: the merkle hash of the decoded chunks must be the
//! requested file hash, or the output is not kept.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use cas_core::MerkleHash;
use cas_core::hash::chunk_hash;
use cas_core::merkle::file_hash;
use cas_core::xorb::{complete_records_len, decode_range_body};
use futures::StreamExt;
use reqwest::StatusCode;

use super::transport::Transport;
use super::{Progress, ProgressFn, TransferError, report};
use crate::xet::{ByteRange, ChunkRange, HttpRange, RangeBody, ReconstructionV2};

/// Settings of a download.
#[derive(Clone)]
pub struct DownloadOptions {
    /// Range fetches in flight at once.
    pub fetch_concurrency: usize,
    /// Progress notifications.
    pub progress: Option<ProgressFn>,
    /// [`download_to_file`] flushes the output to disk before renaming it into
    /// place (and the rename after). Off by default: the output appears only
    /// whole either way, and a download can be fetched again.
    pub sync: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            fetch_concurrency: 8,
            progress: None,
            sync: false,
        }
    }
}

impl std::fmt::Debug for DownloadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadOptions")
            .field("fetch_concurrency", &self.fetch_concurrency)
            .field("progress", &self.progress.is_some())
            .field("sync", &self.sync)
            .finish()
    }
}

/// What a download did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DownloadReport {
    /// Bytes written to the output.
    pub bytes_written: u64,
    /// Bytes fetched from fetch URLs (serialized xorb ranges).
    pub bytes_fetched: u64,
    /// Range requests made (distinct ranges).
    pub fetches: usize,
    /// Whether the output was checked against the file hash (whole-file downloads).
    pub verified: bool,
}

/// One distinct byte range to fetch.
#[derive(Clone, Debug)]
struct Job {
    url: String,
    xorb: MerkleHash,
    chunks: ChunkRange,
    bytes: HttpRange,
}

/// The fetch plan of a reconstruction: distinct ranges, and the range of each term.
fn plan(
    file: &MerkleHash,
    recon: &ReconstructionV2,
) -> Result<(Vec<Job>, Vec<usize>), TransferError> {
    let mut slots: HashMap<(&str, u64, u64), usize> = HashMap::new();
    let mut jobs = Vec::new();
    let mut term_slots = Vec::with_capacity(recon.terms.len());
    for (i, t) in recon.terms.iter().enumerate() {
        if t.range.is_empty() {
            return Err(TransferError::Reconstruction {
                file: *file,
                reason: format!("term {i} has no chunks"),
            });
        }
        let (url, d) = recon
            .locate(t)
            .ok_or_else(|| TransferError::Reconstruction {
                file: *file,
                reason: format!(
                    "term {i} (xorb {}, chunks {}..{}) is in no fetch range",
                    t.hash, t.range.start, t.range.end
                ),
            })?;
        if d.bytes.is_empty() {
            return Err(TransferError::Reconstruction {
                file: *file,
                reason: format!("inverted byte range {}-{}", d.bytes.start, d.bytes.end),
            });
        }
        let slot = *slots
            .entry((url, d.bytes.start, d.bytes.end))
            .or_insert_with(|| {
                jobs.push(Job {
                    url: url.to_string(),
                    xorb: t.hash,
                    chunks: d.chunks,
                    bytes: d.bytes,
                });
                jobs.len() - 1
            });
        term_slots.push(slot);
    }
    Ok((jobs, term_slots))
}

/// Whether a fetch failed because its URL expired (403 from AWS and s3s, 400 from Garage).
fn is_expired_url(e: &TransferError) -> bool {
    matches!(e, TransferError::Xet(x)
        if matches!(x.status(), Some(StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST)))
}

/// Copies the fresh fetch URLs of `fresh` into `jobs` (planned from `old`); the two
/// reconstructions must describe the same terms from the same byte ranges.
fn renew_urls(
    file: &MerkleHash,
    old: &ReconstructionV2,
    fresh: &ReconstructionV2,
    jobs: &mut [Job],
) -> Result<(), TransferError> {
    let changed = || TransferError::Reconstruction {
        file: *file,
        reason: "the reconstruction changed while the file was being downloaded".into(),
    };
    if old.terms != fresh.terms || old.offset_into_first_range != fresh.offset_into_first_range {
        return Err(changed());
    }
    let (fresh_jobs, _) = plan(file, fresh)?;
    if fresh_jobs.len() != jobs.len() {
        return Err(changed());
    }
    for (job, new) in jobs.iter_mut().zip(fresh_jobs) {
        if (job.xorb, job.chunks, job.bytes) != (new.xorb, new.chunks, new.bytes) {
            return Err(changed());
        }
        job.url = new.url;
    }
    Ok(())
}

/// `(chunk hash, length)` of every chunk of a file, in order: the leaves of its hash.
type Leaves = Vec<(MerkleHash, u64)>;

/// Where one term's bytes go: bytes `from..to` of the term, written at `at` in
/// the output (nothing when `from == to`: the term lies outside the range asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Placement {
    /// Index of the term in the reconstruction.
    term: usize,
    /// The term's chunks, relative to the first chunk of its fetched range.
    chunks: (usize, usize),
    /// The term's length, as the reconstruction states it.
    unpacked_length: u64,
    /// First byte of the term to write.
    from: u64,
    /// End (exclusive) of the bytes of the term to write.
    to: u64,
    /// Output position of byte `from`.
    at: u64,
}

/// Where every term goes in the output, grouped by the range that serves it,
/// and the output's length.
///
/// The terms' stated lengths place them: the output is bytes
/// `offset_into_first_range..` of their concatenation, cut to `limit`. Every
/// decoded term is checked against its stated length before it is written, so
/// a wrong length fails the download rather than misplacing bytes.
fn layout(
    file: &MerkleHash,
    recon: &ReconstructionV2,
    jobs: &[Job],
    term_slots: &[usize],
    limit: Option<u64>,
) -> Result<(Vec<Vec<Placement>>, u64), TransferError> {
    let offset = recon.offset_into_first_range;
    let window_end = offset.saturating_add(limit.unwrap_or(u64::MAX));
    let mut per_job = vec![Vec::new(); jobs.len()];
    let mut start = 0u64;
    for (i, (t, &slot)) in recon.terms.iter().zip(term_slots).enumerate() {
        let end =
            start
                .checked_add(t.unpacked_length)
                .ok_or_else(|| TransferError::Reconstruction {
                    file: *file,
                    reason: "the terms' lengths add up to more than 2^64 bytes".into(),
                })?;
        let from = offset.clamp(start, end) - start;
        let to = window_end.clamp(start, end) - start;
        let first = jobs[slot].chunks.start;
        per_job[slot].push(Placement {
            term: i,
            chunks: (
                (t.range.start - first) as usize,
                (t.range.end - first) as usize,
            ),
            unpacked_length: t.unpacked_length,
            from,
            to: to.max(from),
            at: (start + from).saturating_sub(offset),
        });
        start = end;
    }
    if offset > start {
        return Err(TransferError::Reconstruction {
            file: *file,
            reason: format!("offset_into_first_range {offset} is past the end of the terms"),
        });
    }
    Ok((per_job, window_end.min(start) - offset))
}

/// The output of a download: sized once, then written at positions, in any
/// order and from several threads at once.
trait Sink: Send + Sync + 'static {
    /// Sets the output's length (before any write).
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    /// Writes all of `buf` at byte `pos`.
    fn write_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()>;
}

impl Sink for std::fs::File {
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        std::fs::File::set_len(self, len)
    }

    #[cfg(unix)]
    fn write_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, pos)
    }

    #[cfg(windows)]
    fn write_at(&self, mut buf: &[u8], mut pos: u64) -> std::io::Result<()> {
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(self, buf, pos) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// An output in memory.
#[derive(Debug, Default)]
struct Memory(std::sync::Mutex<Vec<u8>>);

impl Memory {
    fn into_inner(self: Arc<Self>) -> Vec<u8> {
        match Arc::try_unwrap(self) {
            Ok(m) => m.0.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(shared) => shared.0.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

impl Sink for Memory {
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::OutOfMemory)?;
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resize(len, 0);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()> {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let at = usize::try_from(pos).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        out.get_mut(at..at + buf.len())
            .ok_or(std::io::ErrorKind::InvalidInput)?
            .copy_from_slice(buf);
        Ok(())
    }
}

/// Decoding buffers, reused from range to range: a fresh buffer per range
/// costs a page fault and the zeroing of every page it touches.
#[derive(Debug, Default)]
struct Buffers(std::sync::Mutex<Vec<Vec<u8>>>);

impl Buffers {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn put(&self, buffer: Vec<u8>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(buffer);
    }
}

/// Serialized bytes gathered before a piece of a range is decoded: large
/// enough that a hand-off to a decoding thread is cheap beside it, small
/// enough that decoding keeps pace with the network.
#[cfg(not(test))]
const DECODE_BATCH_BYTES: usize = 1 << 20;
/// Small in unit tests, so that their ranges are decoded in several pieces.
#[cfg(test)]
const DECODE_BATCH_BYTES: usize = 20_000;

/// Most uncompressed bytes one piece decodes to (beyond its first chunk):
/// well-compressed records would otherwise decode to many times their size.
#[cfg(not(test))]
const DECODE_BATCH_RAW_BYTES: usize = 4 << 20;
/// Small in unit tests, so that pieces are cut by it too.
#[cfg(test)]
const DECODE_BATCH_RAW_BYTES: usize = 40_000;

/// What decoding a range needs, shared by the decoding threads of its pieces.
struct RangeTarget<S> {
    file: MerkleHash,
    job: Job,
    /// The terms this range serves.
    placements: Vec<Placement>,
    verify: bool,
    sink: Arc<S>,
    out_path: PathBuf,
}

impl<S> RangeTarget<S> {
    fn decode_error(&self, source: cas_core::Error) -> TransferError {
        TransferError::Decode {
            xorb: self.job.xorb,
            start: self.job.chunks.start,
            end: self.job.chunks.end,
            source,
        }
    }

    fn chunk_count_error(&self, got: &str) -> TransferError {
        TransferError::Reconstruction {
            file: self.file,
            reason: format!(
                "xorb {} bytes {}-{} hold {got} chunks, the reconstruction says {}",
                self.job.xorb,
                self.job.bytes.start,
                self.job.bytes.end,
                self.job.chunks.len()
            ),
        }
    }
}

/// Decoding state of one range, carried from piece to piece: the range's
/// chunks are decoded in order as their bytes arrive, and each term's bytes
/// are written at their place as soon as they are decoded.
#[derive(Debug)]
struct RangeDecoder {
    /// Where each chunk decoded so far starts in the range's uncompressed
    /// bytes, and where the last one ends: one more entry than chunks.
    offsets: Vec<u64>,
    /// `(chunk hash, length)` of the chunks decoded so far (when verifying).
    leaves: Leaves,
    /// The current piece's uncompressed bytes (a reused buffer).
    buffer: Vec<u8>,
}

impl RangeDecoder {
    fn new(buffer: Vec<u8>) -> Self {
        RangeDecoder {
            offsets: vec![0],
            leaves: Leaves::new(),
            buffer,
        }
    }

    /// Chunks decoded so far.
    fn chunks(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Decodes `piece` (whole chunk records, the ones after those decoded so
    /// far), writes the bytes of every term it covers at their place, and
    /// checks the stated length of every term that ends in it.
    fn feed<S: Sink>(&mut self, t: &RangeTarget<S>, piece: &[u8]) -> Result<(), TransferError> {
        self.buffer.clear();
        let bounds = decode_range_body(piece, &mut self.buffer).map_err(|e| t.decode_error(e))?;
        let c0 = self.chunks();
        let c1 = c0 + bounds.len() - 1;
        if c1 > t.job.chunks.len() as usize {
            return Err(t.chunk_count_error(&format!("more than {}", t.job.chunks.len())));
        }
        let base = self.offsets[c0];
        self.offsets
            .extend(bounds[1..].iter().map(|&b| base + b as u64));
        if t.verify {
            self.leaves.extend(
                bounds
                    .windows(2)
                    .map(|w| (chunk_hash(&self.buffer[w[0]..w[1]]), (w[1] - w[0]) as u64)),
            );
        }
        for p in &t.placements {
            let (a, b) = p.chunks;
            let (lo, hi) = (a.max(c0), b.min(c1));
            if lo >= hi {
                continue;
            }
            let term_start = self.offsets[a];
            if b <= c1 {
                let len = self.offsets[b] - term_start;
                if len != p.unpacked_length {
                    return Err(TransferError::Reconstruction {
                        file: t.file,
                        reason: format!(
                            "term {} decodes to {len} bytes, its unpacked_length is {}",
                            p.term, p.unpacked_length
                        ),
                    });
                }
            }
            // The part of the term in this piece, cut to the bytes wanted of it.
            let from = (self.offsets[lo] - term_start).max(p.from);
            let to = (self.offsets[hi] - term_start).min(p.to);
            if from < to {
                let at = (term_start + from - base) as usize;
                t.sink
                    .write_at(
                        &self.buffer[at..at + (to - from) as usize],
                        p.at + (from - p.from),
                    )
                    .map_err(|e| TransferError::io(&t.out_path, e))?;
            }
        }
        Ok(())
    }

    /// Checks every chunk of the range was decoded; gives back the buffer
    /// and returns the range's leaves.
    fn finish<S>(self, t: &RangeTarget<S>, buffers: &Buffers) -> Result<Leaves, TransferError> {
        buffers.put(self.buffer);
        let n = self.offsets.len() - 1;
        if n != t.job.chunks.len() as usize {
            return Err(t.chunk_count_error(&n.to_string()));
        }
        Ok(self.leaves)
    }
}

/// The bytes of a fetched range as they arrive.
trait Pieces: Send {
    /// The next piece of the range; `None` once all of it arrived.
    fn next_piece(&mut self) -> impl Future<Output = Result<Option<Bytes>, TransferError>> + Send;
}

impl Pieces for RangeBody {
    async fn next_piece(&mut self) -> Result<Option<Bytes>, TransferError> {
        Ok(self.next_bytes().await?)
    }
}

/// What a download needs from the server.
trait Source: Sync {
    /// A fetched range being read.
    type Body: Pieces;

    /// How to rebuild `file` (or a byte range of it).
    fn reconstruction(
        &self,
        file: MerkleHash,
        range: Option<ByteRange>,
    ) -> impl Future<Output = Result<ReconstructionV2, TransferError>> + Send;

    /// Opens bytes `start..=end` of a fetch URL.
    fn fetch(
        &self,
        url: &str,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Self::Body, TransferError>> + Send;
}

/// A [`Transport`] as a download's [`Source`].
struct Via<'a, T>(&'a T);

impl<T: Transport> Source for Via<'_, T> {
    type Body = RangeBody;

    async fn reconstruction(
        &self,
        file: MerkleHash,
        range: Option<ByteRange>,
    ) -> Result<ReconstructionV2, TransferError> {
        self.0.reconstruction(file, range).await
    }

    async fn fetch(&self, url: &str, start: u64, end: u64) -> Result<RangeBody, TransferError> {
        Ok(self.0.fetcher().open_range(url, start, end).await?)
    }
}

/// A range's decoder: idle between pieces, or decoding one on a blocking thread.
enum DecoderSlot {
    Idle(RangeDecoder),
    Busy(tokio::task::JoinHandle<Result<RangeDecoder, TransferError>>),
    /// Lost to a failed piece.
    Gone,
}

impl DecoderSlot {
    /// The decoder, once the piece it is decoding (if any) is done.
    async fn take(&mut self) -> Result<RangeDecoder, TransferError> {
        match std::mem::replace(self, DecoderSlot::Gone) {
            DecoderSlot::Idle(d) => Ok(d),
            DecoderSlot::Busy(h) => h.await?,
            DecoderSlot::Gone => Err(TransferError::Task(
                "a range's decoder was lost to an earlier error".into(),
            )),
        }
    }

    /// Waits for a piece still being decoded, whatever its outcome: after a
    /// failure nothing of the range may still be writing to the output.
    async fn settle(&mut self) {
        if let DecoderSlot::Busy(h) = std::mem::replace(self, DecoderSlot::Gone) {
            let _ = h.await;
        }
    }
}

/// Fetches one range and decodes it as it arrives ([`stream_range`]);
/// returns the range's leaves and the bytes fetched. `reported` holds the
/// bytes of this range already counted as fetched in the progress (by an
/// earlier attempt), so that a range fetched again is not counted twice.
async fn fetch_range_into<Src: Source, S: Sink>(
    source: &Src,
    target: Arc<RangeTarget<S>>,
    buffers: &Buffers,
    progress: &Option<ProgressFn>,
    reported: &AtomicU64,
) -> Result<(Leaves, u64), TransferError> {
    let mut slot = DecoderSlot::Idle(RangeDecoder::new(buffers.take()));
    let streamed = stream_range(source, &target, &mut slot, progress, reported).await;
    if streamed.is_err() {
        slot.settle().await;
    }
    let fetched = streamed?;
    let decoder = slot.take().await?;
    Ok((decoder.finish(&target, buffers)?, fetched))
}

/// Reads a range and hands it to its decoder piece by piece: whenever
/// [`DECODE_BATCH_BYTES`] have gathered, their whole chunk records (at most
/// [`DECODE_BATCH_RAW_BYTES`] once decoded) go to a blocking thread that
/// decodes them and writes their terms, while the next bytes are read; one
/// piece per range is decoded at a time, in order. Returns the bytes fetched.
async fn stream_range<Src: Source, S: Sink>(
    source: &Src,
    target: &Arc<RangeTarget<S>>,
    slot: &mut DecoderSlot,
    progress: &Option<ProgressFn>,
    reported: &AtomicU64,
) -> Result<u64, TransferError> {
    let job = &target.job;
    let mut body = source
        .fetch(&job.url, job.bytes.start, job.bytes.end)
        .await?;
    let mut pending = BytesMut::new();
    let (mut fetched, mut records) = (0u64, 0usize);
    loop {
        let piece = body.next_piece().await?;
        let done = piece.is_none();
        if let Some(piece) = piece {
            fetched += piece.len() as u64;
            let before = reported.fetch_max(fetched, Ordering::Relaxed);
            if fetched > before {
                report(
                    progress,
                    Progress::Fetched {
                        bytes: fetched - before,
                    },
                );
            }
            pending.extend_from_slice(&piece);
        }
        while pending.len() >= DECODE_BATCH_BYTES || (done && !pending.is_empty()) {
            let (mut cut, n) = complete_records_len(&pending, records, DECODE_BATCH_RAW_BYTES)
                .map_err(|e| target.decode_error(e))?;
            if cut == 0 {
                if !done {
                    break;
                }
                // An incomplete record at the end: handed on, it fails to decode.
                cut = pending.len();
            }
            records += n;
            let batch = pending.split_to(cut).freeze();
            let mut decoder = slot.take().await?;
            let target = target.clone();
            *slot = DecoderSlot::Busy(tokio::task::spawn_blocking(move || {
                decoder.feed(&target, &batch)?;
                Ok(decoder)
            }));
        }
        if done {
            return Ok(fetched);
        }
    }
}

/// How one range of a pass ended.
enum Outcome {
    /// Fetched, decoded and written: its leaves and the bytes fetched.
    Written(Leaves, u64),
    /// Not tried: an expired URL was seen earlier in the pass.
    Deferred,
    /// Failed.
    Failed(TransferError),
}

/// Downloads into `sink` (`out_path` is only used in error messages).
///
/// Ranges are fetched `fetch_concurrency` at a time, in file order; each is
/// decoded as it arrives ([`fetch_range_into`]) on blocking threads, which
/// write its terms straight to their places in the pre-sized output
/// (positioned writes, in whatever order the ranges complete), so memory
/// stays near `fetch_concurrency` decode batches whatever the file size and
/// however large the server makes its ranges. An expired fetch URL stops new
/// fetches; the ranges in flight finish, the reconstruction is asked for
/// again, once, and only the ranges not yet written are fetched again.
async fn download_into<Src: Source, S: Sink>(
    source: &Src,
    file: &MerkleHash,
    range: Option<ByteRange>,
    opts: &DownloadOptions,
    sink: Arc<S>,
    out_path: PathBuf,
) -> Result<DownloadReport, TransferError> {
    if file.is_zero() {
        // The empty file: no chunks, nothing to ask the server.
        return match range {
            Some(r) => Err(TransferError::RangeNotSatisfiable {
                range: r.to_string(),
            }),
            None => Ok(DownloadReport {
                verified: true,
                ..DownloadReport::default()
            }),
        };
    }
    let verify = range.is_none();
    let recon = source.reconstruction(*file, range).await?;
    let offset = recon.offset_into_first_range;
    if verify && offset != 0 {
        return Err(TransferError::Reconstruction {
            file: *file,
            reason: format!("a whole-file reconstruction starts at offset {offset}"),
        });
    }
    let (mut jobs, term_slots) = plan(file, &recon)?;
    let (placements, out_len) = layout(
        file,
        &recon,
        &jobs,
        &term_slots,
        range.and_then(|r| r.len()),
    )?;
    if !verify && out_len == 0 {
        return Err(TransferError::RangeNotSatisfiable {
            range: range.map(|r| r.to_string()).unwrap_or_default(),
        });
    }
    let total: u64 = jobs.iter().map(|j| j.bytes.len()).sum();
    report(&opts.progress, Progress::Total { bytes: total });
    sink.set_len(out_len)
        .map_err(|e| TransferError::io(&out_path, e))?;

    let buffers = Buffers::default();
    let reported: Vec<AtomicU64> = jobs.iter().map(|_| AtomicU64::new(0)).collect();
    let mut job_leaves: Vec<Option<Leaves>> = vec![None; jobs.len()];
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    let mut fetched = 0u64;
    let mut renewed = false;
    loop {
        let expired = AtomicBool::new(false);
        let mut retry = Vec::new();
        {
            let (jobs, expired, buffers, reported) = (&jobs, &expired, &buffers, &reported);
            let (placements, sink, out_path) = (&placements, &sink, &out_path);
            let mut results = futures::stream::iter(pending.iter().copied())
                .map(|j| async move {
                    if expired.load(Ordering::Relaxed) {
                        return (j, Outcome::Deferred);
                    }
                    let target = Arc::new(RangeTarget {
                        file: *file,
                        job: jobs[j].clone(),
                        placements: placements[j].clone(),
                        verify,
                        sink: sink.clone(),
                        out_path: out_path.clone(),
                    });
                    let fetched =
                        fetch_range_into(source, target, buffers, &opts.progress, &reported[j]);
                    match fetched.await {
                        Ok((leaves, n)) => (j, Outcome::Written(leaves, n)),
                        Err(e) => {
                            if !renewed && is_expired_url(&e) {
                                expired.store(true, Ordering::Relaxed);
                            }
                            (j, Outcome::Failed(e))
                        }
                    }
                })
                .buffer_unordered(opts.fetch_concurrency.max(1));
            while let Some((j, outcome)) = results.next().await {
                match outcome {
                    Outcome::Written(leaves, n) => {
                        fetched += n;
                        job_leaves[j] = Some(leaves);
                    }
                    Outcome::Deferred => retry.push(j),
                    Outcome::Failed(e) if !renewed && is_expired_url(&e) => retry.push(j),
                    Outcome::Failed(e) => return Err(e),
                }
            }
        }
        if retry.is_empty() {
            break;
        }
        renewed = true;
        let fresh = source.reconstruction(*file, range).await?;
        renew_urls(file, &recon, &fresh, &mut jobs)?;
        retry.sort_unstable();
        pending = retry;
    }

    if verify {
        let mut leaves = Leaves::new();
        for (t, &slot) in recon.terms.iter().zip(&term_slots) {
            let of_range = job_leaves[slot]
                .as_ref()
                .ok_or_else(|| TransferError::Task("a range was not fetched".into()))?;
            let first = jobs[slot].chunks.start;
            let (a, b) = (
                (t.range.start - first) as usize,
                (t.range.end - first) as usize,
            );
            leaves.extend_from_slice(&of_range[a..b]);
        }
        let actual = file_hash(&leaves);
        if actual != *file {
            return Err(TransferError::FileHashMismatch {
                expected: *file,
                actual,
            });
        }
    }
    Ok(DownloadReport {
        bytes_written: out_len,
        bytes_fetched: fetched,
        fetches: jobs.len(),
        verified: verify,
    })
}

/// Downloads a file (or a byte range of it) into memory.
pub async fn download_bytes<T: Transport>(
    client: &T,
    file_hash: &MerkleHash,
    range: Option<ByteRange>,
    opts: &DownloadOptions,
) -> Result<(Vec<u8>, DownloadReport), TransferError> {
    let out = Arc::new(Memory::default());
    let report = download_into(
        &Via(client),
        file_hash,
        range,
        opts,
        out.clone(),
        PathBuf::from("<memory>"),
    )
    .await?;
    Ok((out.into_inner(), report))
}

/// Downloads a file (or a byte range of it) to `out`, atomically: the bytes go
/// to a temporary file in `out`'s directory, sized first and written at each
/// term's place as ranges arrive; it is synced and renamed over `out` only
/// once everything was fetched, checked and (for a whole file) verified. On
/// error `out` is left untouched.
pub async fn download_to_file<T: Transport>(
    client: &T,
    file_hash: &MerkleHash,
    range: Option<ByteRange>,
    out: &Path,
    opts: &DownloadOptions,
) -> Result<DownloadReport, TransferError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".cas-download-")
        .tempfile_in(&dir)
        .map_err(|e| TransferError::io(&dir, e))?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| TransferError::io(tmp.path(), e))?;
    let report = download_into(
        &Via(client),
        file_hash,
        range,
        opts,
        Arc::new(file),
        out.to_path_buf(),
    )
    .await?;
    let out = out.to_path_buf();
    let sync = opts.sync;
    tokio::task::spawn_blocking(move || {
        if sync {
            tmp.as_file()
                .sync_all()
                .map_err(|e| TransferError::io(tmp.path(), e))?;
        }
        tmp.persist(&out)
            .map_err(|e| TransferError::io(&out, e.error))?;
        // Make the rename itself durable.
        #[cfg(unix)]
        if sync && let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok::<_, TransferError>(())
    })
    .await??;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xet::{ReconstructionTerm, XorbFetch, XorbRangeDescriptor};
    use cas_core::chunking::chunk_and_hash;
    use cas_core::xorb::XorbBuilder;

    /// A xorb of `data`'s chunks, its hash, and a reconstruction of the whole
    /// of `data` as one term per chunk (served from one range).
    fn fixture(data: &[u8]) -> (Vec<u8>, ReconstructionV2, Vec<(MerkleHash, u64)>) {
        let chunks = chunk_and_hash(data);
        let mut b = XorbBuilder::new();
        for c in &chunks {
            let added = b.add_chunk_with_hash(&data[c.range()], c.hash).unwrap();
            assert!(matches!(added, cas_core::xorb::AddChunk::Added(_)));
        }
        let x = b.finish().unwrap();
        let n = chunks.len() as u32;
        let terms = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| ReconstructionTerm {
                hash: x.hash,
                unpacked_length: c.len as u64,
                range: ChunkRange {
                    start: i as u32,
                    end: i as u32 + 1,
                },
            })
            .collect();
        let recon = ReconstructionV2 {
            offset_into_first_range: 0,
            terms,
            xorbs: HashMap::from([(
                x.hash,
                vec![XorbFetch {
                    url: "http://fetch/x".into(),
                    ranges: vec![XorbRangeDescriptor {
                        chunks: ChunkRange { start: 0, end: n },
                        bytes: HttpRange {
                            start: 0,
                            end: x.bytes.len() as u64 - 1,
                        },
                    }],
                }],
            )]),
        };
        let leaves = chunks.iter().map(|c| (c.hash, c.len as u64)).collect();
        (x.bytes, recon, leaves)
    }

    fn pseudo_random(n: usize) -> Vec<u8> {
        seeded_random(n, 0x9E37_79B9_7F4A_7C15)
    }

    #[test]
    fn one_fetch_serves_every_term_of_a_range() {
        let data = pseudo_random(700_000);
        let (_, recon, _) = fixture(&data);
        let file = MerkleHash::ZERO;
        let (jobs, slots) = plan(&file, &recon).unwrap();
        assert_eq!(jobs.len(), 1);
        assert!(slots.iter().all(|&s| s == 0));
        assert!(recon.terms.len() > 3);
    }

    fn seeded_random(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    /// A server in memory: answers the `k`-th reconstruction request with
    /// `recons[k]` (the last one from then on); fetch URLs are `http://fetch/<n>`
    /// (the `n`-th xorb, answered after `(xorbs - n) * 3` ms, so that ranges
    /// complete in reverse file order) or `expired/<n>` (403).
    struct Mock {
        recons: Vec<ReconstructionV2>,
        bodies: Vec<Vec<u8>>,
        recon_calls: std::sync::atomic::AtomicUsize,
    }

    /// A range body in memory, handed out in pieces of 7 001 bytes (so that
    /// chunk records straddle pieces); with `cut_after`, the answer fails
    /// with a 403 (a URL that expired on a reconnection) once that many bytes
    /// were handed out.
    struct MockBody {
        rest: Bytes,
        sent: usize,
        cut_after: Option<usize>,
    }

    fn forbidden(url: &str) -> TransferError {
        TransferError::Xet(crate::xet::XetError::Status {
            status: StatusCode::FORBIDDEN,
            url: url.into(),
            detail: Default::default(),
        })
    }

    impl Pieces for MockBody {
        async fn next_piece(&mut self) -> Result<Option<Bytes>, TransferError> {
            if self.cut_after.is_some_and(|c| self.sent >= c) {
                return Err(forbidden("cut"));
            }
            if self.rest.is_empty() {
                return Ok(None);
            }
            let n = self.rest.len().min(7_001);
            self.sent += n;
            Ok(Some(self.rest.split_to(n)))
        }
    }

    impl Source for Mock {
        type Body = MockBody;

        async fn reconstruction(
            &self,
            _file: MerkleHash,
            _range: Option<ByteRange>,
        ) -> Result<ReconstructionV2, TransferError> {
            let k = self.recon_calls.fetch_add(1, Ordering::SeqCst);
            Ok(self.recons[k.min(self.recons.len() - 1)].clone())
        }

        async fn fetch(&self, url: &str, start: u64, end: u64) -> Result<MockBody, TransferError> {
            if url.starts_with("expired/") {
                return Err(forbidden(url));
            }
            let n: usize = url.rsplit('/').next().unwrap().parse().unwrap();
            let delay = (self.bodies.len() - n) as u64 * 3;
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            let rest = Bytes::copy_from_slice(&self.bodies[n][start as usize..=end as usize]);
            Ok(MockBody {
                cut_after: url.starts_with("cut/").then_some(rest.len() / 2),
                rest,
                sent: 0,
            })
        }
    }

    /// A file made of `pieces` in the order `order` (a piece may repeat), one
    /// xorb per distinct piece and one term per chunk: the file's bytes, its
    /// hash, and a server holding it (fetch URLs under `url_base`).
    fn many_terms(order: &[usize], url_base: &str) -> (Vec<u8>, MerkleHash, Mock) {
        let pieces: Vec<Vec<u8>> = (0..6)
            .map(|k| seeded_random(150_000 + 40_000 * k, 0x1234_5678 + k as u64))
            .collect();
        let mut bodies = Vec::new();
        let mut xorbs = HashMap::new();
        let mut terms = Vec::new();
        let mut leaves = Vec::new();
        let mut data = Vec::new();
        let mut fixtures: HashMap<usize, (ReconstructionV2, Leaves)> = HashMap::new();
        for &k in order {
            let (recon, l) = fixtures.entry(k).or_insert_with(|| {
                let (body, mut recon, l) = fixture(&pieces[k]);
                for f in recon.xorbs.values_mut().flatten() {
                    f.url = format!("{url_base}/{}", bodies.len());
                }
                bodies.push(body);
                xorbs.extend(recon.xorbs.clone());
                (recon, l)
            });
            terms.extend(recon.terms.iter().cloned());
            leaves.extend_from_slice(l);
            data.extend_from_slice(&pieces[k]);
        }
        let recon = ReconstructionV2 {
            offset_into_first_range: 0,
            terms,
            xorbs,
        };
        let mock = Mock {
            recons: vec![recon],
            bodies,
            recon_calls: Default::default(),
        };
        (data, file_hash(&leaves), mock)
    }

    const ORDER: [usize; 9] = [0, 1, 2, 1, 3, 4, 5, 0, 2];

    fn opts(fetch_concurrency: usize) -> DownloadOptions {
        DownloadOptions {
            fetch_concurrency,
            ..DownloadOptions::default()
        }
    }

    async fn to_memory(
        mock: &Mock,
        file: &MerkleHash,
        range: Option<ByteRange>,
        fetch_concurrency: usize,
    ) -> Result<(Vec<u8>, DownloadReport), TransferError> {
        to_memory_with(mock, file, range, &opts(fetch_concurrency)).await
    }

    async fn to_memory_with(
        mock: &Mock,
        file: &MerkleHash,
        range: Option<ByteRange>,
        opts: &DownloadOptions,
    ) -> Result<(Vec<u8>, DownloadReport), TransferError> {
        let out = Arc::new(Memory::default());
        let report = download_into(mock, file, range, opts, out.clone(), "<memory>".into()).await?;
        Ok((out.into_inner(), report))
    }

    /// `recon` with the fetch URL of the `n`-th xorb's body replaced by `url`.
    fn with_url(recon: &ReconstructionV2, n: usize, url: &str) -> ReconstructionV2 {
        let mut out = recon.clone();
        for f in out.xorbs.values_mut().flatten() {
            if f.url.ends_with(&format!("/{n}")) {
                f.url = url.into();
            }
        }
        out
    }

    #[tokio::test]
    async fn ranges_completing_out_of_order_give_the_same_bytes() {
        let (data, file, mock) = many_terms(&ORDER, "http://fetch");
        assert!(
            mock.recons[0].terms.len() > 20,
            "{}",
            mock.recons[0].terms.len()
        );
        for concurrency in [1, 3, 8] {
            let (out, report) = to_memory(&mock, &file, None, concurrency).await.unwrap();
            assert!(out == data, "concurrency {concurrency}");
            assert_eq!(report.bytes_written, data.len() as u64);
            assert!(report.verified);
            // Six distinct ranges, each fetched once though some serve two places.
            assert_eq!(report.fetches, 6);
        }

        // The same into a file, through positioned writes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file_out = Arc::new(std::fs::File::create(&path).unwrap());
        let report = download_into(&mock, &file, None, &opts(8), file_out, path.clone())
            .await
            .unwrap();
        assert_eq!(report.bytes_written, data.len() as u64);
        assert!(std::fs::read(&path).unwrap() == data);
    }

    #[tokio::test]
    async fn a_byte_range_is_cut_from_the_terms() {
        let (data, file, mut mock) = many_terms(&ORDER, "http://fetch");
        mock.recons[0].offset_into_first_range = 1234;
        let len = 700_000u64;
        let range = ByteRange::offset_length(1234, len);
        let (out, report) = to_memory(&mock, &file, range, 8).await.unwrap();
        assert_eq!(report.bytes_written, len);
        assert!(!report.verified);
        assert!(out == data[1234..1234 + len as usize]);

        // To the end of the file.
        let range = Some(ByteRange::from_start(1234));
        let (out, _) = to_memory(&mock, &file, range, 8).await.unwrap();
        assert!(out == data[1234..]);

        // An offset past all the data is an error.
        mock.recons[0].offset_into_first_range = data.len() as u64 + 1;
        assert!(matches!(
            to_memory(&mock, &file, range, 8).await,
            Err(TransferError::Reconstruction { .. })
        ));
    }

    #[tokio::test]
    async fn wrong_term_length_or_hash_is_rejected() {
        let (_, file, mut mock) = many_terms(&ORDER, "http://fetch");
        let wrong = MerkleHash([7; 32]);
        assert!(matches!(
            to_memory(&mock, &wrong, None, 8).await,
            Err(TransferError::FileHashMismatch { .. })
        ));
        mock.recons[0].terms[5].unpacked_length += 1;
        let err = to_memory(&mock, &file, None, 8).await.unwrap_err();
        assert!(err.to_string().contains("unpacked_length"), "{err}");
    }

    #[tokio::test]
    async fn expired_urls_are_renewed_once() {
        let (data, file, mut mock) = many_terms(&ORDER, "http://fetch");
        let fresh = mock.recons[0].clone();
        // The fourth xorb's URL has expired: the others are written meanwhile.
        let stale = with_url(&fresh, 3, "expired/3");
        mock.recons = vec![stale.clone(), fresh.clone()];
        let (out, report) = to_memory(&mock, &file, None, 8).await.unwrap();
        assert!(out == data);
        assert!(report.verified);
        assert_eq!(mock.recon_calls.load(Ordering::SeqCst), 2);

        // Still expired after the renewal: the error is reported.
        mock.recons = vec![stale.clone(), stale];
        mock.recon_calls = Default::default();
        let err = to_memory(&mock, &file, None, 8).await.unwrap_err();
        assert!(is_expired_url(&err), "{err}");
        assert_eq!(mock.recon_calls.load(Ordering::SeqCst), 2);

        // A URL that expires half-way through its range (on a reconnection):
        // the range is fetched again from fresh URLs, written whole, and its
        // bytes are counted once in the progress.
        mock.recons = vec![with_url(&fresh, 2, "cut/2"), fresh];
        mock.recon_calls = Default::default();
        let fetched = Arc::new(AtomicU64::new(0));
        let counter = fetched.clone();
        let progress: ProgressFn = Arc::new(move |p: &Progress| {
            if let Progress::Fetched { bytes } = p {
                counter.fetch_add(*bytes, Ordering::SeqCst);
            }
        });
        let opts = DownloadOptions {
            progress: Some(progress),
            ..opts(8)
        };
        let (out, report) = to_memory_with(&mock, &file, None, &opts).await.unwrap();
        assert!(out == data);
        assert!(report.verified);
        assert_eq!(mock.recon_calls.load(Ordering::SeqCst), 2);
        let total: usize = mock.bodies.iter().map(Vec::len).sum();
        assert_eq!(fetched.load(Ordering::SeqCst), total as u64);
    }

    #[test]
    fn renewed_urls_must_describe_the_same_ranges() {
        let data = pseudo_random(300_000);
        let (_, recon, leaves) = fixture(&data);
        let file = file_hash(&leaves);
        let (mut jobs, _) = plan(&file, &recon).unwrap();
        let mut fresh = recon.clone();
        for f in fresh.xorbs.values_mut().flatten() {
            f.url = "http://fetch/renewed".into();
        }
        renew_urls(&file, &recon, &fresh, &mut jobs).unwrap();
        assert!(jobs.iter().all(|j| j.url == "http://fetch/renewed"));

        let mut moved = fresh.clone();
        for f in moved.xorbs.values_mut().flatten() {
            f.ranges[0].bytes.end -= 1;
        }
        assert!(renew_urls(&file, &recon, &moved, &mut jobs).is_err());
        let mut other = fresh;
        other.terms.pop();
        assert!(renew_urls(&file, &recon, &other, &mut jobs).is_err());
    }

    #[tokio::test]
    async fn body_with_the_wrong_chunk_count_or_garbage_is_rejected() {
        let data = pseudo_random(300_000);
        let (body, recon, leaves) = fixture(&data);
        let file = file_hash(&leaves);
        let mock = |recon: &ReconstructionV2, body: &[u8]| Mock {
            recons: vec![recon.clone()],
            bodies: vec![body.to_vec()],
            recon_calls: Default::default(),
        };
        let fetch_url = |r: &mut ReconstructionV2| {
            for f in r.xorbs.values_mut().flatten() {
                f.url = "http://fetch/0".into();
            }
        };
        let mut good = recon.clone();
        fetch_url(&mut good);
        let (out, _) = to_memory(&mock(&good, &body), &file, None, 1)
            .await
            .unwrap();
        assert!(out == data);

        // The range holds one chunk more than the reconstruction says, or one fewer.
        let mut more = good.clone();
        let fetch = &mut more.xorbs.values_mut().next().unwrap()[0].ranges[0];
        fetch.chunks.end -= 1;
        more.terms.pop();
        let err = to_memory(&mock(&more, &body), &file, None, 1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let mut fewer = good.clone();
        let fetch = &mut fewer.xorbs.values_mut().next().unwrap()[0].ranges[0];
        fetch.chunks.end += 1;
        let err = to_memory(&mock(&fewer, &body), &file, None, 1)
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::Reconstruction { .. }), "{err}");

        // Garbage, and a body cut inside its last record.
        let mut garbage = body.clone();
        garbage[0] = 9;
        let err = to_memory(&mock(&good, &garbage), &file, None, 1)
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::Decode { .. }), "{err}");
        let mut cut = good.clone();
        let fetch = &mut cut.xorbs.values_mut().next().unwrap()[0].ranges[0];
        fetch.bytes.end -= 1;
        let err = to_memory(&mock(&cut, &body), &file, None, 1)
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::Decode { .. }), "{err}");
    }

    #[test]
    fn term_outside_every_range_is_rejected() {
        let data = pseudo_random(300_000);
        let (_, mut recon, _) = fixture(&data);
        let last = recon.terms.len() as u32;
        recon.terms[0].range = ChunkRange {
            start: last,
            end: last + 1,
        };
        assert!(matches!(
            plan(&MerkleHash::ZERO, &recon),
            Err(TransferError::Reconstruction { .. })
        ));
    }
}
