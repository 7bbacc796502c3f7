//! Xorb upload and xorb metadata.
//!
//! A xorb is accepted only if it parses, every chunk decompresses to its declared
//! length within the limits, and the merkle hash recomputed from the chunks equals the
//! hash it was uploaded under (invariant 3). It is stored in S3 with a storage footer
//! (so the object describes itself), and only after S3 acknowledged the write is it
//! registered in the index (invariant 1).
//!
//! The checks run while the upload streams in: each batch of whole chunk records
//! is checked as it arrives and then handed to an [`ObjectWriter`], which sends
//! multipart parts as they fill. Only bytes that passed their checks are sent;
//! the object becomes visible only once the whole xorb (its hash included) checked
//! out, and the upload is aborted otherwise. Storing thus overlaps receiving, and
//! an upload holds what is gathered for the next parts plus the parts in flight
//! (without an announced length, up to the multipart threshold before the first
//! part goes) rather than the whole xorb.

use bytes::{Bytes, BytesMut};
use cas_core::constants::MAX_CHUNK_COMPRESSED_LEN;
use cas_core::hash::MerkleHash;
use cas_core::xorb::{CHUNK_HEADER_LEN, MAX_FOOTER_LEN, ParsedXorb, XorbValidator};
use cas_proto::index::{Command, RegisterXorb, command, command_result};
use futures::{Stream, StreamExt as _};

use super::records::{XorbLayout, xorb_record};
use super::{Caller, CasService, ServiceError, now_ms};
use crate::store::ObjectWriter;
use crate::store::keys::xorb_key;

/// Outcome of a xorb upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XorbUploaded {
    /// False when the xorb was already stored (nothing was written).
    pub inserted: bool,
}

/// Xorbs one batched lookup may ask about.
pub const MAX_XORB_BATCH: usize = 4096;

/// Bytes of an upload gathered before their records are checked: large enough
/// that a trip to a blocking thread costs little, small against a 64 MiB xorb.
const CHECK_BATCH_BYTES: usize = 2 * 1024 * 1024;
// A batch always holds a whole record, so a full one always checks some bytes.
const _: () = assert!(CHUNK_HEADER_LEN + MAX_CHUNK_COMPRESSED_LEN < CHECK_BATCH_BYTES);

impl CasService {
    /// Validates and stores a xorb uploaded under `hash` whose bytes are all
    /// here; idempotent (see [`upload_xorb_stream`](Self::upload_xorb_stream)).
    pub async fn upload_xorb(
        &self,
        caller: &Caller,
        hash: MerkleHash,
        body: Bytes,
    ) -> Result<XorbUploaded, ServiceError> {
        let len = body.len() as u64;
        let body = futures::stream::iter([Ok(body)]);
        self.upload_xorb_stream(caller, hash, Some(len), body).await
    }

    /// Validates and stores a xorb uploaded under `hash` as its bytes arrive
    /// (`declared_len` is the length the request announced, if any);
    /// idempotent: a xorb already stored is not written again.
    ///
    /// More than `max_xorb_bytes` (announced or received) is refused as soon
    /// as it is known. A xorb refused for any other reason (its content, S3
    /// failing) is still read to its end (within the limit), so that the
    /// client, still sending, gets the answer. On any error nothing is
    /// registered and nothing is stored that did not pass every check.
    pub async fn upload_xorb_stream<S>(
        &self,
        caller: &Caller,
        hash: MerkleHash,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<XorbUploaded, ServiceError>
    where
        S: Stream<Item = Result<Bytes, ServiceError>> + Send + Unpin,
    {
        let limit = self.limits().max_xorb_bytes;
        if let Some(len) = declared_len
            && len > limit
        {
            return Err(too_large(len, limit));
        }
        let mut body = LimitedBody {
            inner: body,
            received: 0,
            limit,
            ended: false,
        };
        if self.index().has_xorb(&hash.0)? {
            body.drain().await?;
            return Ok(XorbUploaded { inserted: false });
        }
        let mut writer = self.store().writer(&xorb_key(&hash), declared_len)?;
        // Boxed: the checks and the S3 calls make a deeply nested future.
        let parsed = match Box::pin(store_checked(hash, &mut body, &mut writer)).await {
            Ok(parsed) => parsed,
            Err(e) => {
                writer.abort().await;
                // Read the rest, so the client, still sending, gets the answer
                // (a broken body, or one past the limit, is not read on).
                if !e.is_body_failure() {
                    body.drain().await?;
                }
                return Err(e);
            }
        };
        let stored_len = writer.finish().await?;
        let record = xorb_record(&parsed, stored_len, now_ms(), &caller.subject);
        let result = self
            .index()
            .write(Command {
                op: Some(command::Op::RegisterXorb(RegisterXorb {
                    xorb: Some(record),
                })),
            })
            .await?;
        match result.result {
            Some(command_result::Result::Xorb(r)) => Ok(XorbUploaded {
                inserted: r.inserted,
            }),
            other => Err(ServiceError::Inconsistent(format!(
                "the index answered a xorb registration with {other:?}"
            ))),
        }
    }

    /// For each xorb, whether it is stored (local replica).
    pub async fn has_xorbs(&self, hashes: &[MerkleHash]) -> Result<Vec<bool>, ServiceError> {
        if hashes.len() > MAX_XORB_BATCH {
            return Err(ServiceError::bad_request(
                "batch_too_large",
                format!(
                    "{} xorbs in one query; at most {MAX_XORB_BATCH}",
                    hashes.len()
                ),
            ));
        }
        let raw: Vec<[u8; 32]> = hashes.iter().map(|h| h.0).collect();
        Ok(self.index().has_xorbs(&raw)?)
    }

    /// The stored size of a xorb, or `None` when it is not stored.
    pub async fn xorb_size(&self, hash: &MerkleHash) -> Result<Option<u64>, ServiceError> {
        Ok(self.xorb_layout(hash)?.map(|x| x.stored_len))
    }

    /// A committed xorb's chunk layout from the local replica.
    pub(crate) fn xorb_layout(
        &self,
        hash: &MerkleHash,
    ) -> Result<Option<XorbLayout>, ServiceError> {
        match self.index().xorb(&hash.0)? {
            Some(r) => XorbLayout::from_record(&r).map(Some),
            None => Ok(None),
        }
    }
}

fn too_large(len: u64, limit: u64) -> ServiceError {
    ServiceError::TooLarge {
        what: "xorb",
        len,
        limit,
    }
}

/// An upload's bytes, refused with `body_too_large` once they pass the limit.
struct LimitedBody<S> {
    inner: S,
    received: u64,
    limit: u64,
    ended: bool,
}

impl<S> LimitedBody<S>
where
    S: Stream<Item = Result<Bytes, ServiceError>> + Send + Unpin,
{
    /// The next frame, `None` at the end (and ever after).
    async fn next(&mut self) -> Option<Result<Bytes, ServiceError>> {
        if self.ended {
            return None;
        }
        let Some(frame) = self.inner.next().await else {
            self.ended = true;
            return None;
        };
        if let Ok(bytes) = &frame {
            self.received += bytes.len() as u64;
            if self.received > self.limit {
                return Some(Err(too_large(self.received, self.limit)));
            }
        }
        Some(frame)
    }

    /// Reads the rest and drops it.
    async fn drain(&mut self) -> Result<(), ServiceError> {
        while let Some(frame) = self.next().await {
            frame?;
        }
        Ok(())
    }
}

/// Receives a xorb, checking each batch of whole chunk records as it comes and
/// handing the checked bytes to `writer`, then its storage footer; returns the
/// checked xorb. Its hash must be `hash`.
async fn store_checked<S>(
    hash: MerkleHash,
    body: &mut LimitedBody<S>,
    writer: &mut ObjectWriter,
) -> Result<ParsedXorb, ServiceError>
where
    S: Stream<Item = Result<Bytes, ServiceError>> + Send + Unpin,
{
    let mut validator = XorbValidator::new();
    let mut pending = BytesMut::new();
    while let Some(frame) = body.next().await {
        let frame = frame?;
        // Every frame is copied into the batch, which is checked each time it
        // is full. A frame is a slice of its transport's buffer (a gRPC
        // message's data, of the whole message's), which keeping the frame
        // would keep alive; so an upload holds its current frame, one batch,
        // and the checked batches its writer has not sent yet.
        let mut rest = &frame[..];
        while !rest.is_empty() {
            if validator.footer_started() {
                // All that follows the records is the footer: kept, and bounded.
                check_footer_len(pending.len() + rest.len())?;
                pending.extend_from_slice(rest);
                break;
            }
            if pending.capacity() == 0 {
                pending.reserve(CHECK_BATCH_BYTES);
            }
            // Never 0: before the footer, less than one record is left unchecked.
            let take = rest.len().min(CHECK_BATCH_BYTES - pending.len());
            pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if pending.len() < CHECK_BATCH_BYTES {
                continue;
            }
            let batch = std::mem::take(&mut pending).freeze();
            let (back, checked) = blocking(move || {
                let checked = validator.check_records(&batch);
                (validator, checked.map(|n| (n, batch)))
            })
            .await?;
            validator = back;
            let (n, batch) = checked?;
            // The start of a record still arriving (the next batch begins
            // with it), or all from the footer on.
            if validator.footer_started() {
                check_footer_len(batch.len() - n)?;
            } else {
                pending.reserve(CHECK_BATCH_BYTES);
            }
            pending.extend_from_slice(&batch[n..]);
            writer.write(batch.slice(..n)).await?;
        }
    }
    let rest = pending.freeze();
    let (parsed, rest) = blocking(move || {
        let checked_before = validator.records_len();
        let parsed = validator.finish(&rest)?;
        parsed.check_hash(&hash)?;
        let records = rest.slice(..parsed.body_len - checked_before);
        Ok::<_, ServiceError>((parsed, records))
    })
    .await??;
    writer.write(rest).await?;
    let footer = parsed.storage_footer();
    let mut tail = Vec::with_capacity(footer.encoded_len());
    footer.write_to(&mut tail);
    writer.write(Bytes::from(tail)).await?;
    Ok(parsed)
}

/// Refuses a footer (all that follows the chunk records) of `len` bytes if no
/// xorb's is that long.
fn check_footer_len(len: usize) -> Result<(), ServiceError> {
    if len > MAX_FOOTER_LEN {
        return Err(cas_core::Error::MalformedXorb(format!(
            "footer longer than the {MAX_FOOTER_LEN} bytes of the largest xorb's"
        ))
        .into());
    }
    Ok(())
}

/// Runs CPU work (decompressing and hashing) off the I/O threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Inconsistent(format!("xorb validation task failed: {e}")))
}
