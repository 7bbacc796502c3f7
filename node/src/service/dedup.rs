//! The global-dedup query.
//!
//! The index holds a sample of chunk hashes (the ones the Xet rule makes eligible) each
//! pointing at its xorb. A hit is answered with a complete shard (footer and lookup
//! tables, as hf_xet requires) describing that whole xorb, so the client also learns
//! the neighbours of the chunk it asked about. The chunk hashes in the answer are keyed
//! with a fresh random HMAC key and expire: a client can match its own chunks against
//! them, but cannot learn the raw hashes of data it does not have.

use bytes::Bytes;
use cas_core::hash::MerkleHash;
use cas_core::shard::{FooterOptions, Shard};

use super::records::hash_from;
use super::{CasService, ServiceError, now_ms};
use crate::telemetry::metrics::record_dedup_query;

/// Chunks one batched dedup query may ask about.
pub const MAX_DEDUP_BATCH: usize = 1024;

impl CasService {
    /// The dedup answer for `chunk`: a keyed shard describing the xorb that holds it.
    pub async fn query_dedup(&self, chunk: &MerkleHash) -> Result<Bytes, ServiceError> {
        match self.dedup_xorb(chunk)? {
            Some(xorb) => self.keyed_answer(xorb),
            None => Err(ServiceError::ChunkNotFound(*chunk)),
        }
    }

    /// The batched dedup query: one keyed shard per distinct xorb holding any of
    /// `chunks`, and for each chunk whether it was found.
    pub async fn query_dedup_batch(
        &self,
        chunks: &[MerkleHash],
    ) -> Result<(Vec<Bytes>, Vec<bool>), ServiceError> {
        if chunks.len() > MAX_DEDUP_BATCH {
            return Err(ServiceError::bad_request(
                "batch_too_large",
                format!(
                    "{} chunks in one query; at most {MAX_DEDUP_BATCH}",
                    chunks.len()
                ),
            ));
        }
        let mut found = Vec::with_capacity(chunks.len());
        let mut xorbs: Vec<MerkleHash> = Vec::new();
        for c in chunks {
            let hit = self.dedup_xorb(c)?;
            found.push(hit.is_some());
            if let Some(x) = hit
                && !xorbs.contains(&x)
            {
                xorbs.push(x);
            }
        }
        let shards = xorbs
            .into_iter()
            .map(|x| self.keyed_answer(x))
            .collect::<Result<_, _>>()?;
        Ok((shards, found))
    }

    /// The xorb the dedup index says holds `chunk`.
    fn dedup_xorb(&self, chunk: &MerkleHash) -> Result<Option<MerkleHash>, ServiceError> {
        let hit = match self.index().dedup(&chunk.0)? {
            Some(entry) => Some(hash_from(&entry.xorb_hash, "dedup entry")?),
            None => None,
        };
        record_dedup_query(hit.is_some());
        Ok(hit)
    }

    /// A complete shard describing `xorb`, its chunk hashes keyed with a fresh key.
    fn keyed_answer(&self, xorb: MerkleHash) -> Result<Bytes, ServiceError> {
        let layout = self.xorb_layout(&xorb)?.ok_or_else(|| {
            ServiceError::Inconsistent(format!("a dedup entry names unknown xorb {xorb}"))
        })?;
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        let now_s = now_ms() / 1000;
        let opts = FooterOptions {
            hmac_key: Some(MerkleHash(key)),
            chunk_hashes_already_keyed: false,
            creation_timestamp: now_s,
            key_expiry: now_s.saturating_add(self.limits().dedup_key_ttl.as_secs()),
        };
        let shard = Shard::new(Vec::new(), vec![layout.info]);
        Ok(Bytes::from(shard.to_bytes_with_footer(&opts)?))
    }
}
