//! Xorb upload and xorb metadata.
//!
//! A xorb is accepted only if it parses, every chunk decompresses to its declared
//! length within the limits, and the merkle hash recomputed from the chunks equals the
//! hash it was uploaded under (invariant 3). It is then stored in S3 with a storage
//! footer (so the object describes itself), and only after S3 acknowledged the write is
//! it registered in the index (invariant 1).

use bytes::Bytes;
use cas_core::hash::MerkleHash;
use cas_core::xorb::validate_xorb;
use cas_proto::index::{Command, RegisterXorb, command, command_result};

use super::records::{XorbLayout, xorb_record};
use super::{Caller, CasService, ServiceError, now_ms};
use crate::store::ObjectBody;
use crate::store::keys::xorb_key;

/// Outcome of a xorb upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XorbUploaded {
    /// False when the xorb was already stored (nothing was written).
    pub inserted: bool,
}

/// Xorbs one batched lookup may ask about.
pub const MAX_XORB_BATCH: usize = 4096;

impl CasService {
    /// Validates and stores a xorb uploaded under `hash`; idempotent.
    pub async fn upload_xorb(
        &self,
        caller: &Caller,
        hash: MerkleHash,
        body: Bytes,
    ) -> Result<XorbUploaded, ServiceError> {
        let limit = self.limits().max_xorb_bytes;
        if body.len() as u64 > limit {
            return Err(ServiceError::TooLarge {
                what: "xorb",
                len: body.len() as u64,
                limit,
            });
        }
        if self.index().has_xorb(&hash.0)? {
            return Ok(XorbUploaded { inserted: false });
        }
        // Decompressing and hashing up to 64 MiB is CPU work: keep it off the I/O threads.
        let checked = body.clone();
        let parsed = tokio::task::spawn_blocking(move || validate_xorb(&checked, &hash))
            .await
            .map_err(|e| {
                ServiceError::Inconsistent(format!("xorb validation task failed: {e}"))
            })??;

        // The stored object is the body followed by the footer, sent as two
        // segments: no copy of the (up to 64 MiB) body to append a few KiB.
        let footer = parsed.storage_footer();
        let mut tail = Vec::with_capacity(footer.encoded_len());
        footer.write_to(&mut tail);
        let stored = ObjectBody::new([body.slice(..parsed.body_len), Bytes::from(tail)]);
        let record = xorb_record(&parsed, stored.len() as u64, now_ms(), &caller.subject);

        self.store().put_object(&xorb_key(&hash), stored).await?;
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
