//! Shard upload: registering files.
//!
//! A shard is accepted only if (invariant 2): it parses within the size limit; it is a
//! plain upload (no HMAC-keyed chunk hashes); every xorb it references, through a term
//! or a CAS-info block, is committed in the index; every CAS-info block describes its
//! xorb exactly as stored; every term's chunk range is in bounds and its length matches;
//! each file's verification entries match the chunks, and its hash is the file hash of
//! its chunks. Then the shard is stored in S3 and its files and global-dedup entries are
//! registered through the index, and only then acknowledged.

use std::collections::HashMap;

use bytes::Bytes;
use cas_core::hash::{MerkleHash, shard_hash};
use cas_core::shard::{Shard, XorbInfo, check_file, parse_shard_with_limit};
use cas_proto::index::{Command, RegisterFiles, command, command_result};

use super::records::{XorbLayout, dedup_entry, file_record};
use super::{Caller, CasService, ServiceError, now_ms};
use crate::store::keys::shard_key;

/// Progress of a shard upload, for front ends that stream it (Xet `/v2/shards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardProgress {
    /// `verified` of `total` files passed their checks.
    Validating {
        /// Files checked so far.
        verified: u64,
        /// Files in the shard.
        total: u64,
    },
    /// The shard is being written to the object store.
    Uploading,
    /// The files are being committed to the index.
    Syncing,
}

/// Outcome of a shard upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRegistered {
    /// Files in the shard that were not registered before.
    pub new_files: u32,
    /// Files in the shard.
    pub files: u32,
}

impl ShardRegistered {
    /// The Xet `result` field: 1 when something was registered, 0 when it all existed.
    pub fn xet_result(&self) -> u8 {
        u8::from(self.new_files > 0 || self.files == 0)
    }
}

/// Files checked between two progress reports.
const PROGRESS_EVERY: usize = 64;

impl CasService {
    /// Validates a shard and registers its files; idempotent. `progress` is told what
    /// stage the upload reached.
    pub async fn upload_shard(
        &self,
        caller: &Caller,
        body: Bytes,
        mut progress: impl FnMut(ShardProgress) + Send,
    ) -> Result<ShardRegistered, ServiceError> {
        let limit = self.limits().max_shard_bytes;
        if body.len() as u64 > limit {
            return Err(ServiceError::TooLarge {
                what: "shard",
                len: body.len() as u64,
                limit,
            });
        }
        let parsed = parse_shard_with_limit(&body, limit.min(usize::MAX as u64) as usize)?;
        if parsed
            .footer
            .as_ref()
            .is_some_and(|f| f.options().effective_key().is_some())
        {
            return Err(ServiceError::bad_request(
                "keyed_shard",
                "an uploaded shard must carry raw chunk hashes, not HMAC-keyed ones",
            ));
        }
        let shard = parsed.shard;
        shard.check_consistency()?;

        let layouts = self.referenced_xorbs(&shard).await?;
        for described in &shard.xorbs {
            check_described(described, &layouts[&described.hash])?;
        }
        let infos: HashMap<MerkleHash, &XorbInfo> =
            layouts.iter().map(|(h, l)| (*h, &l.info)).collect();
        let total = shard.files.len() as u64;
        for (i, file) in shard.files.iter().enumerate() {
            check_file(file, |h| infos.get(h).copied())?;
            if (i + 1) % PROGRESS_EVERY == 0 {
                progress(ShardProgress::Validating {
                    verified: i as u64 + 1,
                    total,
                });
                tokio::task::yield_now().await;
            }
        }
        if !total.is_multiple_of(PROGRESS_EVERY as u64) {
            progress(ShardProgress::Validating {
                verified: total,
                total,
            });
        }

        let hash = shard_hash(&body);
        progress(ShardProgress::Uploading);
        self.store().put_object(&shard_key(&hash), body).await?;

        progress(ShardProgress::Syncing);
        let now = now_ms();
        let files: Vec<_> = shard
            .files
            .iter()
            .map(|f| file_record(f, &hash, now, &caller.subject))
            .collect();
        let dedup = dedup_entries(&shard);
        let cmd = Command {
            op: Some(command::Op::RegisterFiles(RegisterFiles {
                shard_hash: super::records::raw(&hash),
                files,
                dedup,
            })),
        };
        match self.index().write(cmd).await?.result {
            Some(command_result::Result::Files(r)) => Ok(ShardRegistered {
                new_files: r.new_files,
                files: total as u32,
            }),
            other => Err(ServiceError::Inconsistent(format!(
                "the index answered a file registration with {other:?}"
            ))),
        }
    }

    /// The layout of every xorb the shard references, each confirmed committed (a local
    /// miss is confirmed through the leader before it is reported).
    async fn referenced_xorbs(
        &self,
        shard: &Shard,
    ) -> Result<HashMap<MerkleHash, XorbLayout>, ServiceError> {
        let mut wanted: Vec<MerkleHash> = shard
            .xorbs
            .iter()
            .map(|x| x.hash)
            .chain(
                shard
                    .files
                    .iter()
                    .flat_map(|f| f.terms.iter().map(|t| t.xorb_hash)),
            )
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found = HashMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for h in wanted {
            match self.xorb_layout(&h)? {
                Some(l) => {
                    found.insert(h, l);
                }
                None => missing.push(h),
            }
        }
        if !missing.is_empty() {
            self.index().ensure_linearizable().await?;
            for h in missing {
                let l = self.xorb_layout(&h)?.ok_or(ServiceError::UnknownXorb(h))?;
                found.insert(h, l);
            }
        }
        Ok(found)
    }
}

/// A CAS-info block must describe its xorb exactly as it is stored.
fn check_described(described: &XorbInfo, stored: &XorbLayout) -> Result<(), ServiceError> {
    let same = described.chunks.len() == stored.info.chunks.len()
        && described
            .chunks
            .iter()
            .zip(&stored.info.chunks)
            .all(|(d, s)| {
                d.hash == s.hash
                    && d.unpacked_bytes == s.unpacked_bytes
                    && d.byte_range_start == s.byte_range_start
            });
    if same {
        Ok(())
    } else {
        Err(ServiceError::bad_request(
            "shard_xorb_mismatch",
            format!(
                "the shard describes xorb {} with {} chunks that differ from the stored xorb ({} chunks)",
                described.hash,
                described.chunks.len(),
                stored.info.chunks.len()
            ),
        ))
    }
}

/// The global-dedup entries of an accepted shard: each eligible chunk (see
/// [`Shard::global_dedup_eligible_chunks`]) with its first place in a described xorb.
fn dedup_entries(shard: &Shard) -> Vec<cas_proto::index::DedupEntry> {
    let eligible: std::collections::HashSet<MerkleHash> =
        shard.global_dedup_eligible_chunks().into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for x in &shard.xorbs {
        for (i, c) in x.chunks.iter().enumerate() {
            if eligible.contains(&c.hash) && seen.insert(c.hash) {
                out.push(dedup_entry(&c.hash, &x.hash, i as u32));
            }
        }
    }
    out
}
