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
//! All distinct decoded ranges of the requested span are held in memory until
//! they are written, so memory use grows with the (deduplicated) size asked for.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use cas_core::MerkleHash;
use cas_core::hash::chunk_hash;
use cas_core::merkle::file_hash;
use cas_core::xorb::decode_range_body;
use futures::StreamExt;
use reqwest::StatusCode;

use super::{Progress, ProgressFn, TransferError, report};
use crate::xet::{ByteRange, ChunkRange, HttpRange, ReconstructionV2, XetClient};

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
    data: Vec<u8>,
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
        data,
        bounds,
        hashes,
    })
}

/// Fetches and decodes every job, several at a time.
async fn fetch_all(
    client: &XetClient,
    file: &MerkleHash,
    jobs: &[Job],
    verify: bool,
    opts: &DownloadOptions,
) -> Result<(Vec<Decoded>, u64), TransferError> {
    let total: u64 = jobs.iter().map(|j| j.bytes.len()).sum();
    report(&opts.progress, Progress::Total { bytes: total });
    let file = *file;
    let mut results = futures::stream::iter(jobs.iter().cloned().enumerate())
        .map(|(i, job)| async move {
            let body = client
                .fetch_range(&job.url, job.bytes.start, job.bytes.end)
                .await?;
            report(
                &opts.progress,
                Progress::Fetched {
                    bytes: body.len() as u64,
                },
            );
            let fetched = body.len() as u64;
            let decoded =
                tokio::task::spawn_blocking(move || decode(&file, &job, &body, verify)).await??;
            Ok::<_, TransferError>((i, decoded, fetched))
        })
        .buffer_unordered(opts.fetch_concurrency.max(1));
    let mut slots: Vec<Option<Decoded>> =
        std::iter::repeat_with(|| None).take(jobs.len()).collect();
    let mut fetched = 0;
    while let Some(r) = results.next().await {
        let (i, d, n) = r?;
        slots[i] = Some(d);
        fetched += n;
    }
    let decoded = slots
        .into_iter()
        .map(|d| d.ok_or_else(|| TransferError::Task("a range was not fetched".into())))
        .collect::<Result<_, _>>()?;
    Ok((decoded, fetched))
}

/// A reconstruction with all its ranges fetched and decoded.
#[derive(Debug)]
struct Fetched {
    /// The reconstruction.
    recon: ReconstructionV2,
    /// For each term, the index of its range in `decoded`.
    term_slots: Vec<usize>,
    /// The decoded ranges.
    decoded: Vec<Decoded>,
}

/// Writes the terms in order: skips `offset_into_first_range`, stops after `limit`
/// bytes; checks every term's length. Returns the bytes written and, when
/// `verify`, the `(chunk hash, length)` of every chunk of every term.
fn assemble(
    file: &MerkleHash,
    fetched: &Fetched,
    limit: Option<u64>,
    verify: bool,
    out: &mut impl Write,
    out_path: &Path,
) -> Result<(u64, Vec<(MerkleHash, u64)>), TransferError> {
    let Fetched {
        recon,
        term_slots,
        decoded,
    } = fetched;
    let mut skip = recon.offset_into_first_range;
    let mut remaining = limit.unwrap_or(u64::MAX);
    let mut written = 0u64;
    let mut leaves = Vec::new();
    for (i, (t, &slot)) in recon.terms.iter().zip(term_slots).enumerate() {
        let d = &decoded[slot];
        let a = (t.range.start - d.chunk_start) as usize;
        let b = (t.range.end - d.chunk_start) as usize;
        let bytes = &d.data[d.bounds[a]..d.bounds[b]];
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
        if verify {
            leaves.extend((a..b).map(|k| (d.hashes[k], (d.bounds[k + 1] - d.bounds[k]) as u64)));
        }
        let s = skip.min(bytes.len() as u64) as usize;
        skip -= s as u64;
        let part = &bytes[s..];
        let take = (part.len() as u64).min(remaining) as usize;
        if take > 0 {
            out.write_all(&part[..take])
                .map_err(|e| TransferError::io(out_path, e))?;
            remaining -= take as u64;
            written += take as u64;
        }
    }
    if skip > 0 {
        return Err(TransferError::Reconstruction {
            file: *file,
            reason: format!(
                "offset_into_first_range {} is past the end of the terms",
                recon.offset_into_first_range
            ),
        });
    }
    Ok((written, leaves))
}

/// Downloads into `out` (whose path is only used in error messages).
async fn download_into<W: Write + Send + 'static>(
    client: &XetClient,
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
    let mut attempt = 0;
    let (all, fetched, fetches) = loop {
        attempt += 1;
        let recon = client.reconstruction(file, range).await?;
        let (jobs, term_slots) = plan(file, &recon)?;
        match fetch_all(client, file, &jobs, verify, opts).await {
            Ok((decoded, fetched)) => {
                let all = Fetched {
                    recon,
                    term_slots,
                    decoded,
                };
                break (all, fetched, jobs.len());
            }
            // Expired fetch URLs: ask for fresh ones, once.
            Err(TransferError::Xet(e))
                if attempt == 1 && e.status() == Some(StatusCode::FORBIDDEN) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
    };
    if verify && all.recon.offset_into_first_range != 0 {
        return Err(TransferError::Reconstruction {
            file: *file,
            reason: format!(
                "a whole-file reconstruction starts at offset {}",
                all.recon.offset_into_first_range
            ),
        });
    }

    let file = *file;
    let limit = range.and_then(|r| r.len());
    let (out, written, leaves) = tokio::task::spawn_blocking(move || {
        let mut out = out;
        let (written, leaves) = assemble(&file, &all, limit, verify, &mut out, &out_path)?;
        Ok::<_, TransferError>((out, written, leaves))
    })
    .await??;

    if verify {
        let actual = file_hash(&leaves);
        if actual != file {
            return Err(TransferError::FileHashMismatch {
                expected: file,
                actual,
            });
        }
    } else if written == 0 {
        return Err(TransferError::RangeNotSatisfiable {
            range: range.map(|r| r.to_string()).unwrap_or_default(),
        });
    }
    Ok((
        out,
        DownloadReport {
            bytes_written: written,
            bytes_fetched: fetched,
            fetches,
            verified: verify,
        },
    ))
}

/// Downloads a file (or a byte range of it) into memory.
pub async fn download_bytes(
    client: &XetClient,
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
pub async fn download_to_file(
    client: &XetClient,
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

    #[test]
    fn assembles_skips_truncates_and_verifies() {
        let data = pseudo_random(700_000);
        let (body, recon, leaves) = fixture(&data);
        let file = file_hash(&leaves);
        let (jobs, slots) = plan(&file, &recon).unwrap();
        let decoded = vec![decode(&file, &jobs[0], &body, true).unwrap()];
        let mut all = Fetched {
            recon: recon.clone(),
            term_slots: slots,
            decoded,
        };

        let mut out = Vec::new();
        let (n, got_leaves) = assemble(&file, &all, None, true, &mut out, Path::new("m")).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
        assert_eq!(file_hash(&got_leaves), file);

        // A range starting mid-chunk: skip into the first term, cut at the length.
        all.recon.offset_into_first_range = 1234;
        let mut out = Vec::new();
        let (n, _) = assemble(&file, &all, Some(100_000), false, &mut out, Path::new("m")).unwrap();
        assert_eq!(n, 100_000);
        assert_eq!(out, &data[1234..101_234]);

        // An offset past all the data is an error.
        all.recon.offset_into_first_range = data.len() as u64 + 1;
        let mut out = Vec::new();
        assert!(matches!(
            assemble(&file, &all, None, false, &mut out, Path::new("m")),
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
        let all = Fetched {
            decoded: vec![decode(&file, &jobs[0], &body, false).unwrap()],
            recon,
            term_slots: slots,
        };
        let err = assemble(&file, &all, None, false, &mut Vec::new(), Path::new("m")).unwrap_err();
        assert!(err.to_string().contains("unpacked_length"), "{err}");
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
