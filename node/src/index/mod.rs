//! The global index: xorbs, files and dedup entries in an openraft state machine over
//! RocksDB, replicated through a Raft log in the same database.
//!
//! - [`types`]: the Raft type configuration (commands, results, members, snapshot file);
//! - [`codec`]: how every stored value is encoded (a format byte, then protobuf);
//! - [`log_store`]: the Raft log and vote (synced before acknowledged);
//! - [`state_machine`]: the records, applied in synced batches;
//! - [`snapshot`]: snapshot files, streamed to disk and back;
//! - [`membership`]: the voter placement policy and the operator's membership changes;
//! - [`network`]: the Raft network: the members' `Peer` gRPC services over one
//!   reused channel per peer, with optional simulated region latency;
//! - [`wire`]: the Raft RPC messages on the wire;
//! - [`faults`]: injected faults (partitions, stalled snapshots) for drills and tests;
//! - [`error`]: [`IndexError`] with stable codes.
//!
//! [`Index`] is what the service calls. Writes ([`Index::write`]) go through Raft
//! (a follower forwards them to the leader) and return after commit and apply.
//! Reads ([`Index::xorb`], [`Index::file`], [`Index::dedup`], [`Index::has_xorbs`])
//! go straight to the local state machine; a read that must not miss a write
//! acknowledged anywhere first calls [`Index::ensure_linearizable`] (on a follower:
//! the leader's read index, then a wait until it is applied locally). While a
//! snapshot is being installed (on a node that fell far behind) local reads may see
//! a partial state.
//!
//! On disk, under the index directory: `db/` (RocksDB, column families `raft_log`,
//! `raft_meta`, `xorbs`, `files`, `dedup`, `sm_meta`) and `snapshots/` (the latest
//! snapshot file).

pub mod codec;
pub mod error;
pub mod faults;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod wire;

#[cfg(test)]
mod tests;

pub use error::IndexError;
pub use faults::{FaultFile, Faults};
pub use membership::{MemberStatus, desired_voters};
pub use network::{LinkDelays, PeerError, Peers};
pub use types::{IndexCommand, IndexRaft, NodeInfo, SnapshotFile, TypeConfig, node_info};

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cas_proto::index::{Command, CommandResult, DedupEntry, FileRecord, XorbRecord, command};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, Fatal, LinearizableReadError, RaftError};
use openraft::{ReadPolicy, ServerState};
use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, DB, DBCompressionType, Options};

use codec::decode;
use log_store::{CF_LOG, CF_META, LogStore};
use network::GrpcNetwork;
use state_machine::{CF_DEDUP, CF_FILES, CF_SM_META, CF_XORBS, StateMachine};
use types::LogId;

/// How long [`Index::open`] waits for this node to lead and catch up.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write or a linearizable read waits for Raft before giving up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A summary of the index's Raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStatus {
    /// This node's id.
    pub node_id: u64,
    /// This node's role: `Leader`, `Follower`, `Learner`, `Candidate` or `Shutdown`.
    pub role: String,
    /// The current leader, if known.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The index of the last log entry.
    pub last_log_index: Option<u64>,
    /// The index of the last entry applied to the state machine.
    pub last_applied: Option<u64>,
    /// The index of the last entry the latest snapshot includes.
    pub snapshot: Option<u64>,
    /// The index of the last entry removed from the log.
    pub purged: Option<u64>,
    /// The voters of the current membership (ascending).
    pub voters: Vec<u64>,
    /// The learners of the current membership (ascending).
    pub learners: Vec<u64>,
}

/// How a node takes part in the index group.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// On a fresh store: start a new group of this node alone (`true`), or wait to be
    /// added by the group's leader (`false`). Ignored once the store is initialized.
    pub bootstrap: bool,
    /// The channels to the other members.
    pub peers: Arc<Peers>,
}

impl IndexOptions {
    /// A node that starts its own group and calls its peers unauthenticated, without
    /// injected latency (tests, single-node use).
    pub fn single_node() -> Self {
        IndexOptions {
            bootstrap: true,
            peers: Peers::new(None, "", LinkDelays::none()),
        }
    }
}

/// The index of one node: its Raft instance and its local state.
pub struct Index {
    raft: IndexRaft,
    db: Arc<DB>,
    node_id: u64,
    peers: Arc<Peers>,
    incoming: PathBuf,
    /// Held by a membership change: one at a time.
    membership_lock: tokio::sync::Mutex<()>,
    /// Turns true when the group removed this node.
    removed: tokio::sync::watch::Sender<bool>,
}

/// How long [`Index::shutdown`] waits for Raft's workers to close the database.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write or read waits between two tries while the leadership settles.
const SETTLE_DELAY: Duration = Duration::from_millis(50);

fn storage(e: impl std::fmt::Display) -> IndexError {
    IndexError::Storage(e.to_string())
}

fn fatal(e: Fatal<TypeConfig>) -> IndexError {
    match e {
        Fatal::StorageError(e) => IndexError::Storage(e.to_string()),
        other => IndexError::Stopped(other.to_string()),
    }
}

/// The Raft settings of the index.
fn raft_config() -> Result<openraft::Config, IndexError> {
    openraft::Config {
        cluster_name: "cas-index".to_owned(),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // A snapshot every 20k entries; 10k entries stay behind it for slow followers.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 10_000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| IndexError::Stopped(format!("raft config: {e}")))
}

/// Options of one column family.
fn family_options(name: &str) -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    if [CF_XORBS, CF_FILES, CF_DEDUP].contains(&name) {
        // Most lookups of absent hashes end at the filter.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
    }
    opts
}

/// Opens (or creates) the index database in `dir` with every column family.
pub fn open_db(dir: &Path) -> Result<Arc<DB>, IndexError> {
    std::fs::create_dir_all(dir).map_err(storage)?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(5);
    let families = [CF_LOG, CF_META, CF_XORBS, CF_FILES, CF_DEDUP, CF_SM_META]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, family_options(name)));
    let db = DB::open_cf_descriptors(&opts, dir, families).map_err(storage)?;
    Ok(Arc::new(db))
}

/// Refuses a command the state machine would ignore: a missing record, a hash that
/// is not 32 bytes.
fn validate(cmd: &Command) -> Result<(), IndexError> {
    let hash = |what: &str, h: &[u8]| {
        if h.len() == 32 {
            Ok(())
        } else {
            Err(IndexError::InvalidCommand(format!(
                "{what} of {} bytes, not 32",
                h.len()
            )))
        }
    };
    match &cmd.op {
        Some(command::Op::RegisterXorb(r)) => {
            let x = r
                .xorb
                .as_ref()
                .ok_or_else(|| IndexError::InvalidCommand("register_xorb without a xorb".into()))?;
            hash("xorb hash", &x.hash)
        }
        Some(command::Op::RegisterFiles(r)) => {
            for f in &r.files {
                hash("file hash", &f.hash)?;
            }
            for d in &r.dedup {
                hash("dedup chunk hash", &d.chunk_hash)?;
                hash("dedup xorb hash", &d.xorb_hash)?;
            }
            Ok(())
        }
        None => Err(IndexError::InvalidCommand(
            "command without an operation".into(),
        )),
    }
}

/// Whether a failed call to the leader may succeed when tried again (the leader
/// changed, was unreachable, or was busy).
fn peer_retryable(e: &PeerError) -> bool {
    match e {
        PeerError::Unreachable { .. } | PeerError::Timeout { .. } => true,
        PeerError::Status { code, .. } => *code == tonic::Code::Unavailable,
        PeerError::Malformed { .. } | PeerError::Local { .. } => false,
    }
}

/// Waits for `fut` at most `timeout`.
async fn bounded<T>(
    what: &str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, IndexError>>,
) -> Result<T, IndexError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(IndexError::Unavailable(format!(
            "{what} did not complete within {timeout:?}"
        ))),
    }
}

impl Index {
    /// Opens (or creates) the index in `dir` as node `node_id` of a single-node group
    /// ([`IndexOptions::single_node`]); see [`Index::open_with`].
    pub async fn open(dir: &Path, node_id: u64, node: NodeInfo) -> Result<Index, IndexError> {
        Self::open_with(dir, node_id, node, IndexOptions::single_node()).await
    }

    /// Opens (or creates) the index in `dir` as node `node_id` (`node` says where it
    /// listens). The state machine recovers from RocksDB, the rest by replaying the log.
    ///
    /// A fresh store with `opts.bootstrap` becomes a single-voter group of this node; a
    /// lone voter (fresh or not) is waited for until it leads and has applied its
    /// whole log ([`OPEN_TIMEOUT`]). A member of a larger group, or a fresh store
    /// waiting to be added, returns at once: elections and catching up run in the
    /// background once the node serves its `Peer` API.
    pub async fn open_with(
        dir: &Path,
        node_id: u64,
        node: NodeInfo,
        opts: IndexOptions,
    ) -> Result<Index, IndexError> {
        let db = open_db(&dir.join("db"))?;
        let log = LogStore::new(db.clone()).map_err(storage)?;
        log.claim_node_id(node_id).map_err(storage)?;
        let sm = StateMachine::new(db.clone(), dir.join("snapshots")).map_err(storage)?;
        let incoming = dir.join("incoming");
        // Snapshots a crash interrupted while they were being received.
        let _ = std::fs::remove_dir_all(&incoming);
        std::fs::create_dir_all(&incoming).map_err(storage)?;
        let raft = IndexRaft::new(
            node_id,
            Arc::new(raft_config()?),
            GrpcNetwork::new(opts.peers.clone()),
            log,
            sm,
        )
        .await
        .map_err(fatal)?;
        let index = Index {
            raft,
            db,
            node_id,
            peers: opts.peers,
            incoming,
            membership_lock: tokio::sync::Mutex::new(()),
            removed: tokio::sync::watch::channel(false).0,
        };
        let started = bounded(
            "opening the index",
            OPEN_TIMEOUT,
            index.start(node, opts.bootstrap),
        )
        .await;
        match started {
            Ok(()) => Ok(index),
            Err(e) => {
                index.shutdown().await;
                Err(e)
            }
        }
    }

    /// Initializes a fresh group (when bootstrapping), or hurries the election of a
    /// lone voter, then waits until a lone voter leads and has applied every
    /// committed entry.
    async fn start(&self, node: NodeInfo, bootstrap: bool) -> Result<(), IndexError> {
        let id = self.node_id;
        if !self.raft.is_initialized().await.map_err(fatal)? {
            if !bootstrap {
                tracing::info!(
                    node = id,
                    "index store is fresh; waiting to be added to the group"
                );
                return Ok(());
            }
            self.raft
                .initialize(BTreeMap::from([(id, node)]))
                .await
                .map_err(|e| IndexError::Stopped(format!("initializing the index: {e}")))?;
        }
        let m = self.raft.metrics().borrow_watched().clone();
        let lone_voter = m.membership_config.voter_ids().eq([id]);
        if !lone_voter {
            return Ok(());
        }
        if m.state != ServerState::Leader {
            self.raft.trigger().elect(false).await.map_err(fatal)?;
        }
        self.raft
            .wait(None)
            .state(ServerState::Leader, "index leader")
            .await
            .map_err(|e| IndexError::Unavailable(e.to_string()))?;
        // A read index through the new leader: returns once every committed entry
        // (the whole log, for a lone voter) is applied.
        self.ensure_linearizable().await
    }

    /// The leader as a known member other than this node, if there is one.
    fn remote_leader(
        &self,
        leader: Option<u64>,
        node: Option<NodeInfo>,
    ) -> Option<(u64, NodeInfo)> {
        match (leader, node) {
            (Some(id), Some(node)) if id != self.node_id => Some((id, node)),
            (Some(id), None) if id != self.node_id => {
                let m = self.raft.metrics().borrow_watched().clone();
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .cloned()
                    .map(|n| (id, n))
            }
            _ => None,
        }
    }

    /// Commits `cmd` through Raft and returns what applying it did. On a follower the
    /// command goes to the leader; while the leadership changes the write is tried
    /// again until [`REQUEST_TIMEOUT`] (commands are idempotent, so a retry of one
    /// that did commit is harmless).
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, IndexError> {
        validate(&cmd)?;
        bounded("index write", REQUEST_TIMEOUT, async {
            let mut last = None;
            for attempt in 0u32.. {
                if attempt > 0 {
                    tokio::time::sleep(SETTLE_DELAY * attempt.min(10)).await;
                }
                let (leader, node) = match self.write_local(cmd.clone()).await {
                    Err(IndexError::NotLeader { leader, .. }) => {
                        let node = leader.and_then(|id| self.member(id));
                        (leader, node)
                    }
                    other => return other,
                };
                let Some((id, node)) = self.remote_leader(leader, node) else {
                    continue;
                };
                match self
                    .peers
                    .forward_write(id, &node, cmd.clone(), REQUEST_TIMEOUT)
                    .await
                {
                    Ok(result) => return Ok(result),
                    Err(e) if peer_retryable(&e) => last = Some(e),
                    Err(e) => return Err(IndexError::from_peer(e)),
                }
            }
            Err(IndexError::Unavailable(format!(
                "no leader took the write: {last:?}"
            )))
        })
        .await
    }

    /// Commits `cmd` if this node leads; [`IndexError::NotLeader`] otherwise (what a
    /// forwarded write runs on the leader: it is never forwarded again).
    pub async fn write_local(&self, cmd: Command) -> Result<CommandResult, IndexError> {
        validate(&cmd)?;
        match self.raft.client_write(IndexCommand(cmd)).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(IndexError::NotLeader {
                    leader: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(RaftError::APIError(e)) => Err(IndexError::Unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    /// The member `id` of the current membership.
    fn member(&self, id: u64) -> Option<NodeInfo> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// Confirms through the leader (a read index) and waits until the local state
    /// machine has applied everything committed before the call: a local read that
    /// follows sees every acknowledged write. On the leader this is a round of
    /// heartbeats; elsewhere the leader's read index, then a local wait.
    pub async fn ensure_linearizable(&self) -> Result<(), IndexError> {
        bounded("linearizable read", REQUEST_TIMEOUT, async {
            let mut last = None;
            for attempt in 0u32.. {
                if attempt > 0 {
                    tokio::time::sleep(SETTLE_DELAY * attempt.min(10)).await;
                }
                let (leader, node) = match self.read_index_local().await {
                    Ok(_) => return Ok(()),
                    Err(IndexError::NotLeader { leader, .. }) => {
                        (leader, leader.and_then(|id| self.member(id)))
                    }
                    Err(e) => return Err(e),
                };
                let Some((id, node)) = self.remote_leader(leader, node) else {
                    continue;
                };
                match self.peers.read_index(id, &node, REQUEST_TIMEOUT).await {
                    Ok(read) => {
                        self.raft
                            .wait(Some(REQUEST_TIMEOUT))
                            .applied_index_at_least(read.map(|l| l.index), "read index applied")
                            .await
                            .map_err(|e| IndexError::Unavailable(e.to_string()))?;
                        return Ok(());
                    }
                    Err(e) if peer_retryable(&e) => last = Some(e),
                    Err(e) => return Err(IndexError::from_peer(e)),
                }
            }
            Err(IndexError::Unavailable(format!(
                "no leader confirmed the read: {last:?}"
            )))
        })
        .await
    }

    /// On the leader: confirms the leadership with a quorum, waits until everything
    /// committed is applied, and returns the read index. [`IndexError::NotLeader`]
    /// elsewhere (what a follower's read-index request runs on the leader).
    pub async fn read_index_local(&self) -> Result<Option<LogId>, IndexError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(read) => Ok(Some(*read.log_id())),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(IndexError::NotLeader {
                    leader: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(RaftError::APIError(e)) => Err(IndexError::Unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Installs a snapshot received from the leader `vote` (its bytes in `file`, which
    /// is removed afterwards); returns this node's vote.
    pub async fn install_snapshot(
        &self,
        vote: types::Vote,
        meta: types::SnapshotMeta,
        file: tempfile::NamedTempFile,
    ) -> Result<types::Vote, IndexError> {
        let path = file.path().to_owned();
        let reader = std::fs::File::open(&path).map_err(storage)?;
        let snapshot = types::Snapshot {
            meta,
            snapshot: SnapshotFile::from_file(reader, path),
        };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(fatal)?;
        drop(file);
        Ok(resp.vote)
    }

    /// Takes the removal notice of the group's leader: the data directory is marked
    /// as never to be used again, and [`Index::removed`] turns true. A notice for
    /// another node is refused.
    pub fn leave(&self, node_id: u64) -> Result<(), IndexError> {
        if node_id != self.node_id {
            return Err(IndexError::InvalidMembership(format!(
                "a removal notice for node {node_id} reached node {}",
                self.node_id
            )));
        }
        LogStore::mark_removed(&self.db, node_id).map_err(storage)?;
        tracing::warn!(node = node_id, "removed from the cluster; stopping");
        self.removed.send_replace(true);
        Ok(())
    }

    /// Turns true once the group removed this node (the node should stop).
    pub fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// Where snapshots being received from the leader are written before install.
    pub fn incoming_dir(&self) -> &Path {
        &self.incoming
    }

    /// The channels to the other members.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    fn family(&self, name: &str) -> Result<&rocksdb::ColumnFamily, IndexError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| storage(format!("column family {name} missing")))
    }

    fn get<M: prost::Message + Default>(
        &self,
        family: &str,
        key: &[u8; 32],
    ) -> Result<Option<M>, IndexError> {
        match self
            .db
            .get_pinned_cf(self.family(family)?, key)
            .map_err(storage)?
        {
            Some(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|e| IndexError::Corrupt(format!("{family} record: {e}"))),
            None => Ok(None),
        }
    }

    /// The record of a committed xorb (local replica).
    pub fn xorb(&self, hash: &[u8; 32]) -> Result<Option<XorbRecord>, IndexError> {
        self.get(CF_XORBS, hash)
    }

    /// Whether a xorb is committed (local replica).
    pub fn has_xorb(&self, hash: &[u8; 32]) -> Result<bool, IndexError> {
        let found = self
            .db
            .get_pinned_cf(self.family(CF_XORBS)?, hash)
            .map_err(storage)?;
        Ok(found.is_some())
    }

    /// For each xorb, whether it is committed (local replica, one multi-get).
    pub fn has_xorbs(&self, hashes: &[[u8; 32]]) -> Result<Vec<bool>, IndexError> {
        self.db
            .batched_multi_get_cf(self.family(CF_XORBS)?, hashes.iter(), false)
            .into_iter()
            .map(|r| r.map(|v| v.is_some()).map_err(storage))
            .collect()
    }

    /// The record of a registered file (local replica).
    pub fn file(&self, hash: &[u8; 32]) -> Result<Option<FileRecord>, IndexError> {
        self.get(CF_FILES, hash)
    }

    /// The dedup entry of a chunk (local replica).
    pub fn dedup(&self, chunk: &[u8; 32]) -> Result<Option<DedupEntry>, IndexError> {
        self.get(CF_DEDUP, chunk)
    }

    /// The index's Raft state, from the latest metrics.
    pub fn status(&self) -> IndexStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        IndexStatus {
            node_id: self.node_id,
            role: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.as_ref().map(|l| l.index),
            snapshot: m.snapshot.as_ref().map(|l| l.index),
            purged: m.purged.as_ref().map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// Builds a snapshot of everything applied so far and asks Raft to remove the log
    /// entries it covers; returns the snapshot's last index once it is built. The
    /// removal itself may finish later (a leader keeps entries a follower is still
    /// being sent); [`IndexStatus::purged`] tells when.
    pub async fn compact(&self) -> Result<u64, IndexError> {
        let applied = self
            .raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map(|l| l.index)
            .ok_or_else(|| IndexError::Unavailable("nothing applied yet".into()))?;
        self.raft.trigger().snapshot().await.map_err(fatal)?;
        let metrics = self
            .raft
            .wait(Some(REQUEST_TIMEOUT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot built",
            )
            .await
            .map_err(|e| IndexError::Unavailable(e.to_string()))?;
        let index = metrics.snapshot.map_or(applied, |s| s.index);
        self.raft.trigger().purge_log(index).await.map_err(fatal)?;
        tracing::info!(node = self.node_id, snapshot = index, "index compacted");
        Ok(index)
    }

    /// The Raft instance (snapshots, membership changes, metrics).
    pub fn raft(&self) -> &IndexRaft {
        &self.raft
    }

    /// Stops Raft (for at most [`CLOSE_TIMEOUT`]): no more log entries are written
    /// or applied. For a shutdown where others still hold the index; the database
    /// then closes with its last holder.
    pub async fn stop_raft(&self) {
        match tokio::time::timeout(CLOSE_TIMEOUT, self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "index shutdown"),
            Err(_) => tracing::warn!(timeout = ?CLOSE_TIMEOUT, "Raft did not stop in time"),
        }
    }

    /// Stops Raft and closes the database: when it returns, the store can be opened
    /// again (Raft's workers release their handles of the database shortly after
    /// Raft stops; they get [`CLOSE_TIMEOUT`]).
    pub async fn shutdown(self) {
        self.stop_raft().await;
        let db = Arc::downgrade(&self.db);
        drop(self);
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        while db.strong_count() > 0 {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("the index database is still open after shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
