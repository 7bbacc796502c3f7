//! The index state machine in RocksDB: xorb records (`xorbs`), file records (`files`)
//! and dedup entries (`dedup`), each keyed by the raw 32-byte hash, plus the last
//! applied log id and membership (`sm_meta`). Values are [`codec`](super::codec)-encoded.
//!
//! Applying a run of entries writes the records together with the last applied log id
//! and membership in one synced write batch, and answers the writers only after it.
//! Applying is deterministic: it reads nothing but the state and the command (the
//! command carries its timestamps), and it never fails on a malformed command (which
//! would stop every replica): such a command changes nothing and returns an empty
//! result. Records are only ever inserted, never overwritten.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use cas_proto::index::{
    Command, CommandResult, FilesRegistered, XorbRegistered, command, command_result,
};
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{DB, WriteBatch};

use super::codec::{
    decode_log_id, decode_stored_membership, encode, encode_log_id, encode_stored_membership,
};
use super::log_store::{cf, storage_err, synced};
use super::snapshot::Snapshots;
use super::types::{
    Entry, LogId, Snapshot, SnapshotFile, SnapshotMeta, StoredMembership, TypeConfig,
};

/// Column family of xorb records (key: xorb hash).
pub const CF_XORBS: &str = "xorbs";
/// Column family of file records (key: file hash).
pub const CF_FILES: &str = "files";
/// Column family of dedup entries (key: chunk hash).
pub const CF_DEDUP: &str = "dedup";
/// Column family of the applied state (last applied log id, last membership).
pub const CF_SM_META: &str = "sm_meta";
/// The column families holding records (what a snapshot carries).
pub const DATA_FAMILIES: [&str; 3] = [CF_XORBS, CF_FILES, CF_DEDUP];

/// Key of the last applied log id in [`CF_SM_META`].
pub const KEY_APPLIED: &[u8] = b"last_applied";
/// Key of the last applied membership in [`CF_SM_META`].
pub const KEY_MEMBERSHIP: &[u8] = b"last_membership";

/// Entries applied per write batch at most (a long run is applied in several).
const APPLY_CHUNK: usize = 1024;

/// The applied state: last applied log id and last membership.
pub type Applied = (Option<LogId>, StoredMembership);

/// Reads the applied state through `get` (the database or a RocksDB snapshot of it).
pub fn read_applied(get: impl Fn(&[u8]) -> io::Result<Option<Vec<u8>>>) -> io::Result<Applied> {
    let applied = get(KEY_APPLIED)?.map(|b| decode_log_id(&b)).transpose()?;
    let membership = get(KEY_MEMBERSHIP)?
        .map(|b| decode_stored_membership(&b))
        .transpose()?
        .unwrap_or_default();
    Ok((applied, membership))
}

/// Puts the applied state into `batch`.
pub fn put_applied(
    db: &DB,
    batch: &mut WriteBatch,
    applied: Option<&LogId>,
    membership: Option<&StoredMembership>,
) -> io::Result<()> {
    let meta = cf(db, CF_SM_META)?;
    if let Some(l) = applied {
        batch.put_cf(meta, KEY_APPLIED, encode_log_id(l));
    }
    if let Some(m) = membership {
        batch.put_cf(meta, KEY_MEMBERSHIP, encode_stored_membership(m));
    }
    Ok(())
}

/// The state machine (cheap to clone: clones share the database and snapshots).
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DB>,
    snapshots: Arc<Snapshots>,
}

impl StateMachine {
    /// A state machine over `db` (which has the families above), keeping its snapshot
    /// file in `snapshot_dir`.
    pub fn new(db: Arc<DB>, snapshot_dir: PathBuf) -> io::Result<Self> {
        for name in DATA_FAMILIES.iter().chain(&[CF_SM_META]) {
            cf(&db, name)?;
        }
        Ok(StateMachine {
            db,
            snapshots: Arc::new(Snapshots::new(snapshot_dir)?),
        })
    }

    /// The database this state machine writes to.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    fn applied(&self) -> io::Result<Applied> {
        let meta = cf(&self.db, CF_SM_META)?;
        read_applied(|k| self.db.get_cf(meta, k).map_err(storage_err))
    }
}

/// Keys written earlier in the batch being built (not yet visible in the database).
type Pending = HashSet<(&'static str, Vec<u8>)>;

/// Puts `value` under `key` in `family` unless the key exists; returns whether it
/// was inserted.
fn insert_absent(
    db: &DB,
    batch: &mut WriteBatch,
    pending: &mut Pending,
    family: &'static str,
    key: &[u8],
    value: Vec<u8>,
) -> io::Result<bool> {
    if key.len() != 32 {
        return Ok(false);
    }
    let handle = cf(db, family)?;
    if pending.contains(&(family, key.to_vec()))
        || db
            .get_pinned_cf(handle, key)
            .map_err(storage_err)?
            .is_some()
    {
        return Ok(false);
    }
    batch.put_cf(handle, key, value);
    pending.insert((family, key.to_vec()));
    Ok(true)
}

/// Applies one command into `batch`.
fn apply_command(
    db: &DB,
    cmd: &Command,
    batch: &mut WriteBatch,
    pending: &mut Pending,
) -> io::Result<CommandResult> {
    let result = match &cmd.op {
        Some(command::Op::RegisterXorb(r)) => {
            let Some(x) = &r.xorb else {
                return Ok(CommandResult::default());
            };
            if x.hash.len() != 32 {
                return Ok(CommandResult::default());
            }
            let inserted = insert_absent(db, batch, pending, CF_XORBS, &x.hash, encode(x))?;
            command_result::Result::Xorb(XorbRegistered { inserted })
        }
        Some(command::Op::RegisterFiles(r)) => {
            let mut new_files = 0;
            for f in &r.files {
                new_files += u32::from(insert_absent(
                    db,
                    batch,
                    pending,
                    CF_FILES,
                    &f.hash,
                    encode(f),
                )?);
            }
            let mut new_dedup_entries = 0;
            for d in &r.dedup {
                new_dedup_entries += u32::from(insert_absent(
                    db,
                    batch,
                    pending,
                    CF_DEDUP,
                    &d.chunk_hash,
                    encode(d),
                )?);
            }
            command_result::Result::Files(FilesRegistered {
                new_files,
                new_dedup_entries,
            })
        }
        None => return Ok(CommandResult::default()),
    };
    Ok(CommandResult {
        result: Some(result),
    })
}

/// Applies `entries` (in log order) in one synced write batch; returns each entry's
/// result.
pub(super) fn apply_entries(db: &DB, entries: &[Entry]) -> io::Result<Vec<CommandResult>> {
    let mut batch = WriteBatch::default();
    let mut pending = Pending::new();
    let mut membership = None;
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        let result = match &entry.payload {
            EntryPayload::Blank => CommandResult::default(),
            EntryPayload::Normal(cmd) => apply_command(db, cmd, &mut batch, &mut pending)?,
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                CommandResult::default()
            }
        };
        results.push(result);
    }
    let last = entries.last().map(|e| &e.log_id);
    put_applied(db, &mut batch, last, membership.as_ref())?;
    db.write_opt(batch, &synced()).map_err(storage_err)?;
    Ok(results)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<Applied> {
        self.applied()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut done = false;
        while !done {
            let mut chunk = Vec::new();
            let mut responders = Vec::new();
            while chunk.len() < APPLY_CHUNK {
                match entries.try_next().await? {
                    Some((entry, responder)) => {
                        chunk.push(entry);
                        responders.push(responder);
                    }
                    None => {
                        done = true;
                        break;
                    }
                }
            }
            if chunk.is_empty() {
                break;
            }
            let db = self.db.clone();
            let results = tokio::task::spawn_blocking(move || apply_entries(&db, &chunk))
                .await
                .map_err(storage_err)??;
            // Answer only once the batch is on disk.
            for (responder, result) in responders.into_iter().zip(results) {
                if let Some(r) = responder {
                    r.send(result);
                }
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> io::Result<()> {
        self.snapshots.install(&self.db, meta, snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        self.snapshots.current().await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        self.snapshots.build(&self.db).await
    }
}
