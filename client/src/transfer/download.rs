//! Downloading a file, or a byte range of it, by its Xet file hash.
//!
//! The reconstruction names the terms (chunk ranges of xorbs) in file order
//! and where to fetch each. Every distinct byte range is fetched once
//! (several at a time), decoded, and each term is cut from its decoded range
//! and checked against its `unpacked_length`. The first term is entered at
//! `offset_into_first_range` and the output is cut to the requested length.
//! A whole-file download is verified: the merkle hash of the decoded chunks
//! must be the requested file hash, or nothing is written.
//!
//! Ranges are fetched in file order, several at a time, and written out as soon
//! as the terms before them are; a decoded range is dropped after its last term,
//! so memory stays bounded whatever the file size.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cas_core::MerkleHash;
use cas_core::hash::chunk_hash;
use cas_core::merkle::file_hash;
use cas_core::xorb::decode_range_body;
use futures::StreamExt;
use reqwest::StatusCode;

use super::transport::Transport;
use super::{Progress, ProgressFn, TransferError, report};
use crate::xet::{ByteRange, ChunkRange, HttpRange, ReconstructionTerm, ReconstructionV2};

/// Settings of a download.
#[derive(Clone)]
pub struct DownloadOptions {
    /// Range fetches in flight at once.
    pub fetch_concurrency: usize,
    /// Progress notifications.
    pub progress: Option<ProgressFn>,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            fetch_concurrency: 8,
            progress: None,
        }
    }
}

impl std::fmt::Debug for DownloadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadOptions")
            .field("fetch_concurrency", &self.fetch_concurrency)
            .field("progress", &self.progress.is_some())
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

/// A fetched and decoded range.
#[derive(Debug)]
struct Decoded {
    /// Index of the range's first chunk in its xorb.
    chunk_start: u32,
    /// The decoded bytes.
    data: Bytes,
    /// Chunk boundaries in `data`: `n + 1` offsets.
    bounds: Vec<usize>,
    /// Chunk hashes (only when verifying).
    hashes: Vec<MerkleHash>,
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

/// Decodes one fetched range and checks it holds the chunks it should.
fn decode(file: &MerkleHash, job: &Job, body: &[u8], hash: bool) -> Result<Decoded, TransferError> {
    let mut data = Vec::new();
    let bounds = decode_range_body(body, &mut data).map_err(|source| TransferError::Decode {
        xorb: job.xorb,
        start: job.chunks.start,
        end: job.chunks.end,
        source,
    })?;
    let n = bounds.len() - 1;
    if n != job.chunks.len() as usize {
        return Err(TransferError::Reconstruction {
            file: *file,
            reason: format!(
                "xorb {} bytes {}-{} hold {n} chunks, the reconstruction says {}",
                job.xorb,
                job.bytes.start,
                job.bytes.end,
                job.chunks.len()
            ),
        });
    }
    let hashes = if hash {
        bounds
            .windows(2)
            .map(|w| chunk_hash(&data[w[0]..w[1]]))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Decoded {
        chunk_start: job.chunks.start,
        data: Bytes::from(data),
        bounds,
        hashes,
    })
}

/// Fetches and decodes `jobs` (`fetch_concurrency` at a time), yielding them in order
/// with the number of bytes fetched for each.
fn fetch_in_order<'a, T: Transport>(
    client: &'a T,
    file: MerkleHash,
    jobs: Vec<Job>,
    verify: bool,
    opts: &'a DownloadOptions,
) -> impl futures::Stream<Item = Result<(Decoded, u64), TransferError>> + Send + 'a {
    futures::stream::iter(jobs)
        .map(move |job| async move {
            let body = client
                .fetcher()
                .fetch_range(&job.url, job.bytes.start, job.bytes.end)
                .await?;
            let fetched = body.len() as u64;
            report(&opts.progress, Progress::Fetched { bytes: fetched });
            let decoded =
                tokio::task::spawn_blocking(move || decode(&file, &job, &body, verify)).await??;
            Ok((decoded, fetched))
        })
        .buffered(opts.fetch_concurrency.max(1))
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

/// Cuts the terms, in file order, from their decoded ranges: skips
/// `offset_into_first_range`, stops after the requested length, checks every
/// term's length and (when verifying) collects the chunk leaves of the file hash.
#[derive(Debug)]
struct Assembler {
    /// Bytes still to skip at the start.
    skip: u64,
    /// Bytes still to write.
    remaining: u64,
    /// Bytes handed out so far.
    written: u64,
    /// The leaves so far, when verifying.
    leaves: Option<Leaves>,
}

impl Assembler {
    fn new(offset: u64, limit: Option<u64>, verify: bool) -> Self {
        Assembler {
            skip: offset,
            remaining: limit.unwrap_or(u64::MAX),
            written: 0,
            leaves: verify.then(Vec::new),
        }
    }

    /// The bytes of term `i` to write (possibly none), cut from its decoded range `d`.
    fn term(
        &mut self,
        file: &MerkleHash,
        i: usize,
        t: &ReconstructionTerm,
        d: &Decoded,
    ) -> Result<Bytes, TransferError> {
        let a = (t.range.start - d.chunk_start) as usize;
        let b = (t.range.end - d.chunk_start) as usize;
        let bytes = d.data.slice(d.bounds[a]..d.bounds[b]);
        if bytes.len() as u64 != t.unpacked_length {
            return Err(TransferError::Reconstruction {
                file: *file,
                reason: format!(
                    "term {i} decodes to {} bytes, its unpacked_length is {}",
                    bytes.len(),
                    t.unpacked_length
                ),
            });
        }
        if let Some(leaves) = &mut self.leaves {
            leaves.extend((a..b).map(|k| (d.hashes[k], (d.bounds[k + 1] - d.bounds[k]) as u64)));
        }
        let s = self.skip.min(bytes.len() as u64) as usize;
        self.skip -= s as u64;
        let take = ((bytes.len() - s) as u64).min(self.remaining) as usize;
        self.remaining -= take as u64;
        self.written += take as u64;
        Ok(bytes.slice(s..s + take))
    }

    /// The bytes written and the leaves, once every term went through.
    fn finish(
        self,
        file: &MerkleHash,
        offset: u64,
    ) -> Result<(u64, Option<Leaves>), TransferError> {
        if self.skip > 0 {
            return Err(TransferError::Reconstruction {
                file: *file,
                reason: format!("offset_into_first_range {offset} is past the end of the terms"),
            });
        }
        Ok((self.written, self.leaves))
    }
}

/// Downloads into `out` (whose path is only used in error messages).
///
/// Ranges are fetched in file order, `fetch_concurrency` at a time; the terms are
/// written as soon as their range is decoded (on a blocking thread), and a decoded
/// range is dropped after its last term, so memory stays near `fetch_concurrency`
/// ranges whatever the file size. An expired fetch URL gets the reconstruction asked
/// for again, once, and the download goes on from where it was.
async fn download_into<T: Transport, W: Write + Send + 'static>(
    client: &T,
    file: &MerkleHash,
    range: Option<ByteRange>,
    opts: &DownloadOptions,
    out: W,
    out_path: PathBuf,
) -> Result<(W, DownloadReport), TransferError> {
    if file.is_zero() {
        // The empty file: no chunks, nothing to ask the server.
        return match range {
            Some(r) => Err(TransferError::RangeNotSatisfiable {
                range: r.to_string(),
            }),
            None => Ok((
                out,
                DownloadReport {
                    verified: true,
                    ..DownloadReport::default()
                },
            )),
        };
    }
    let verify = range.is_none();
    let recon = client.reconstruction(*file, range).await?;
    let offset = recon.offset_into_first_range;
    if verify && offset != 0 {
        return Err(TransferError::Reconstruction {
            file: *file,
            reason: format!("a whole-file reconstruction starts at offset {offset}"),
        });
    }
    let (mut jobs, term_slots) = plan(file, &recon)?;
    let mut last_use = vec![0usize; jobs.len()];
    for (i, &slot) in term_slots.iter().enumerate() {
        last_use[slot] = i;
    }
    let total: u64 = jobs.iter().map(|j| j.bytes.len()).sum();
    report(&opts.progress, Progress::Total { bytes: total });

    // The writer thread: writes what it receives, in order.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(64);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = out;
        for part in rx {
            out.write_all(&part)
                .map_err(|e| TransferError::io(&out_path, e))?;
        }
        Ok::<_, TransferError>(out)
    });

    let fed = async {
        let tx = tx;
        let mut asm = Assembler::new(offset, range.and_then(|r| r.len()), verify);
        let mut held: HashMap<usize, Decoded> = HashMap::new();
        let mut received = 0usize;
        let mut fetched = 0u64;
        let mut renewed = false;
        let mut stream = Box::pin(fetch_in_order(client, *file, jobs.clone(), verify, opts));
        for (i, (t, &slot)) in recon.terms.iter().zip(&term_slots).enumerate() {
            while slot >= received {
                match stream.next().await {
                    Some(Ok((d, n))) => {
                        held.insert(received, d);
                        received += 1;
                        fetched += n;
                    }
                    Some(Err(e)) if !renewed && is_expired_url(&e) => {
                        renewed = true;
                        let fresh = client.reconstruction(*file, range).await?;
                        renew_urls(file, &recon, &fresh, &mut jobs)?;
                        let rest = jobs[received..].to_vec();
                        stream = Box::pin(fetch_in_order(client, *file, rest, verify, opts));
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(TransferError::Task("a range was not fetched".into())),
                }
            }
            let part = asm.term(file, i, t, &held[&slot])?;
            if last_use[slot] == i {
                held.remove(&slot);
            }
            if !part.is_empty() && tx.send(part).is_err() {
                // The writer stopped; its error is reported below.
                break;
            }
        }
        let (written, leaves) = asm.finish(file, offset)?;
        Ok((written, leaves, fetched))
    }
    .await;
    let out = writer.await??;
    let (written, leaves, fetched) = fed?;

    match leaves {
        Some(leaves) => {
            let actual = file_hash(&leaves);
            if actual != *file {
                return Err(TransferError::FileHashMismatch {
                    expected: *file,
                    actual,
                });
            }
        }
        None if written == 0 => {
            return Err(TransferError::RangeNotSatisfiable {
                range: range.map(|r| r.to_string()).unwrap_or_default(),
            });
        }
        None => {}
    }
    Ok((
        out,
        DownloadReport {
            bytes_written: written,
            bytes_fetched: fetched,
            fetches: jobs.len(),
            verified: verify,
        },
    ))
}

/// Downloads a file (or a byte range of it) into memory.
pub async fn download_bytes<T: Transport>(
    client: &T,
    file_hash: &MerkleHash,
    range: Option<ByteRange>,
    opts: &DownloadOptions,
) -> Result<(Vec<u8>, DownloadReport), TransferError> {
    download_into(
        client,
        file_hash,
        range,
        opts,
        Vec::new(),
        PathBuf::from("<memory>"),
    )
    .await
}

/// Downloads a file (or a byte range of it) to `out`, atomically: the bytes go
/// to a temporary file in `out`'s directory, which is synced and renamed over
/// `out` only once everything was fetched, checked and (for a whole file)
/// verified. On error `out` is left untouched.
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
    let writer = BufWriter::with_capacity(1 << 20, tmp);
    let (writer, report) =
        download_into(client, file_hash, range, opts, writer, out.to_path_buf()).await?;
    let out = out.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let tmp = writer
            .into_inner()
            .map_err(|e| TransferError::io(&out, e.into_error()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| TransferError::io(tmp.path(), e))?;
        tmp.persist(&out)
            .map_err(|e| TransferError::io(&out, e.error))?;
        // Make the rename itself durable.
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(&dir) {
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
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
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

    /// Runs every term of `recon` through an [`Assembler`]: the bytes, their count, the leaves.
    fn assemble_all(
        file: &MerkleHash,
        recon: &ReconstructionV2,
        decoded: &[Decoded],
        slots: &[usize],
        limit: Option<u64>,
        verify: bool,
    ) -> Result<(Vec<u8>, u64, Option<Leaves>), TransferError> {
        let mut asm = Assembler::new(recon.offset_into_first_range, limit, verify);
        let mut out = Vec::new();
        for (i, (t, &s)) in recon.terms.iter().zip(slots).enumerate() {
            out.extend_from_slice(&asm.term(file, i, t, &decoded[s])?);
        }
        let (n, leaves) = asm.finish(file, recon.offset_into_first_range)?;
        Ok((out, n, leaves))
    }

    #[test]
    fn assembles_skips_truncates_and_verifies() {
        let data = pseudo_random(700_000);
        let (body, mut recon, leaves) = fixture(&data);
        let file = file_hash(&leaves);
        let (jobs, slots) = plan(&file, &recon).unwrap();
        let decoded = vec![decode(&file, &jobs[0], &body, true).unwrap()];

        let (out, n, got_leaves) =
            assemble_all(&file, &recon, &decoded, &slots, None, true).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
        assert_eq!(file_hash(&got_leaves.unwrap()), file);

        // A range starting mid-chunk: skip into the first term, cut at the length.
        recon.offset_into_first_range = 1234;
        let (out, n, leaves) =
            assemble_all(&file, &recon, &decoded, &slots, Some(100_000), false).unwrap();
        assert_eq!(n, 100_000);
        assert_eq!(out, &data[1234..101_234]);
        assert!(leaves.is_none());

        // An offset past all the data is an error.
        recon.offset_into_first_range = data.len() as u64 + 1;
        assert!(matches!(
            assemble_all(&file, &recon, &decoded, &slots, None, false),
            Err(TransferError::Reconstruction { .. })
        ));
    }

    #[test]
    fn wrong_term_length_is_rejected() {
        let data = pseudo_random(300_000);
        let (body, mut recon, leaves) = fixture(&data);
        let file = file_hash(&leaves);
        recon.terms[0].unpacked_length += 1;
        let (jobs, slots) = plan(&file, &recon).unwrap();
        let decoded = vec![decode(&file, &jobs[0], &body, false).unwrap()];
        let err = assemble_all(&file, &recon, &decoded, &slots, None, false).unwrap_err();
        assert!(err.to_string().contains("unpacked_length"), "{err}");
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

    #[test]
    fn body_with_the_wrong_chunk_count_or_garbage_is_rejected() {
        let data = pseudo_random(300_000);
        let (body, recon, leaves) = fixture(&data);
        let file = file_hash(&leaves);
        let (mut jobs, _) = plan(&file, &recon).unwrap();
        jobs[0].chunks.end += 1;
        assert!(matches!(
            decode(&file, &jobs[0], &body, false),
            Err(TransferError::Reconstruction { .. })
        ));
        assert!(matches!(
            decode(&file, &jobs[0], &[1, 2, 3], false),
            Err(TransferError::Decode { .. })
        ));
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
