//! The Raft log and vote in RocksDB: column family `raft_log` (key: the entry's index,
//! big-endian; value: a [`codec`](super::codec)-encoded entry) and `raft_meta` (the
//! vote, the committed and last purged log ids, the owning node id).
//!
//! Durability (default RocksDB writes can lose acknowledged data on power loss):
//! - a vote is written with a synced write (WAL fsync) before `save_vote` returns;
//! - `append` writes its entries (readable at once) and hands the IO callback to a
//!   flusher thread, which calls it only after `flush_wal(sync)` covered the write.
//!   The flusher syncs once for every callback queued meanwhile (group commit) and
//!   reports them in order;
//! - truncation and purging are synced writes;
//! - the committed log id is written unsynced: it only lets a restart re-apply
//!   sooner, and any later synced write carries it to disk anyway.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::{Arc, Weak};

use cas_proto::raft as pb;
use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};

use super::codec::{
    decode, decode_entry, decode_log_id, decode_vote, encode, encode_entry, encode_log_id,
    encode_vote, index_key, invalid, key_index, log_id_from_pb,
};
use super::types::{Entry, LogId, TypeConfig, Vote};

/// Column family of log entries (key: big-endian index).
pub const CF_LOG: &str = "raft_log";
/// Column family of the vote, the committed and last purged log ids, the node id.
pub const CF_META: &str = "raft_meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_NODE_ID: &[u8] = b"node_id";

/// The error of a RocksDB call.
pub fn storage_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Write options that fsync the WAL before the write returns.
pub fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

/// A column family of `db`, or an error naming it.
pub fn cf<'a>(db: &'a DB, name: &str) -> io::Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| io::Error::other(format!("column family {name} missing")))
}

/// Writes `batch` synced, off the async threads.
pub async fn write_synced(db: &Arc<DB>, batch: WriteBatch) -> io::Result<()> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.write_opt(batch, &synced()).map_err(storage_err))
        .await
        .map_err(storage_err)?
}

/// The log store (cheap to clone: clones share the database and the flusher).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<IOFlushed<TypeConfig>>,
}

/// Syncs the WAL for queued append callbacks, then calls them in order. Holds the
/// database weakly so that it closes when the stores do; the thread ends when the
/// last [`LogStore`] clone is dropped.
fn run_flusher(db: Weak<DB>, callbacks: mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = callbacks.recv() {
        let mut due = vec![first];
        due.extend(callbacks.try_iter());
        let result = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("index database closed before the log was synced".to_owned()),
        };
        for callback in due {
            callback.io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

impl LogStore {
    /// A log store over `db`, which must have the [`CF_LOG`] and [`CF_META`] families.
    pub fn new(db: Arc<DB>) -> io::Result<Self> {
        cf(&db, CF_LOG)?;
        cf(&db, CF_META)?;
        let (tx, rx) = mpsc::channel();
        let weak = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("index-log-flush".to_owned())
            .spawn(move || run_flusher(weak, rx))?;
        Ok(LogStore { db, flusher: tx })
    }

    /// Records that this store belongs to `node_id`, or fails if it belongs to
    /// another node (a data directory is never reused under another identity).
    pub fn claim_node_id(&self, node_id: u64) -> io::Result<()> {
        let meta = cf(&self.db, CF_META)?;
        match self.get_meta(KEY_NODE_ID, decode::<pb::StoreOwner>)? {
            Some(owner) if owner.node_id != node_id => Err(io::Error::other(format!(
                "the index directory belongs to node {}, not {node_id}",
                owner.node_id
            ))),
            Some(owner) if owner.removed => Err(io::Error::other(format!(
                "node {node_id} was removed from the cluster: its data directory is never \
                 used again (start a new node with a fresh directory and a new id)"
            ))),
            Some(_) => Ok(()),
            None => self
                .db
                .put_cf_opt(
                    meta,
                    KEY_NODE_ID,
                    encode(&pb::StoreOwner {
                        node_id,
                        removed: false,
                    }),
                    &synced(),
                )
                .map_err(storage_err),
        }
    }

    /// Marks the store of `node_id` as removed from the group (synced): it never
    /// opens again.
    pub fn mark_removed(db: &DB, node_id: u64) -> io::Result<()> {
        db.put_cf_opt(
            cf(db, CF_META)?,
            KEY_NODE_ID,
            encode(&pb::StoreOwner {
                node_id,
                removed: true,
            }),
            &synced(),
        )
        .map_err(storage_err)
    }

    fn get_meta<T>(
        &self,
        key: &[u8],
        decode: impl Fn(&[u8]) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        match self
            .db
            .get_pinned_cf(cf(&self.db, CF_META)?, key)
            .map_err(storage_err)?
        {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => match x.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_LOG)?,
            IteratorMode::From(&index_key(start), Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(storage_err)?;
            let index = key_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry = decode_entry(&value)?;
            if entry.log_id.index != index {
                return Err(invalid(format!(
                    "log entry under key {index} has index {}",
                    entry.log_id.index
                )));
            }
            out.push(entry);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get_meta(KEY_VOTE, decode_vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged = self.get_meta(KEY_LAST_PURGED, decode_log_id)?;
        let last = match self
            .db
            .iterator_cf(cf(&self.db, CF_LOG)?, IteratorMode::End)
            .next()
        {
            Some(item) => {
                let (_, value) = item.map_err(storage_err)?;
                // Only the log id is needed: the command stays encoded.
                let entry: pb::Entry = decode(&value)?;
                let id = entry
                    .log_id
                    .ok_or_else(|| invalid("entry without a log id"))?;
                Some(log_id_from_pb(id)?)
            }
            None => None,
        };
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, KEY_VOTE, encode_vote(vote));
        write_synced(&self.db, batch).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let meta = cf(&self.db, CF_META)?;
        let result = match committed {
            Some(c) => self.db.put_cf(meta, KEY_COMMITTED, encode_log_id(&c)),
            None => self.db.delete_cf(meta, KEY_COMMITTED),
        };
        result.map_err(storage_err)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        self.get_meta(KEY_COMMITTED, decode_log_id)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(log, index_key(entry.log_id.index), encode_entry(&entry));
        }
        // Written now (WAL on, not yet synced) so the entries are readable when this
        // returns; reported flushed by the flusher once the WAL is synced.
        self.db.write(batch).map_err(storage_err)?;
        if let Err(mpsc::SendError(callback)) = self.flusher.send(callback) {
            callback.io_completed(Err(io::Error::other("index log flusher stopped")));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = match last_log_id {
            Some(l) => match l.index.checked_add(1) {
                Some(f) => f,
                None => return Ok(()),
            },
            None => 0,
        };
        let log = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(log, index_key(from), index_key(u64::MAX));
        // The range excludes its end key.
        batch.delete_cf(log, index_key(u64::MAX));
        write_synced(&self.db, batch).await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        // One batch: the purge mark and the deletion land together, so no hole shows.
        batch.put_cf(
            cf(&self.db, CF_META)?,
            KEY_LAST_PURGED,
            encode_log_id(&log_id),
        );
        let log = cf(&self.db, CF_LOG)?;
        match log_id.index.checked_add(1) {
            Some(end) => batch.delete_range_cf(log, index_key(0), index_key(end)),
            None => {
                batch.delete_range_cf(log, index_key(0), index_key(u64::MAX));
                batch.delete_cf(log, index_key(u64::MAX));
            }
        }
        write_synced(&self.db, batch).await
    }
}
