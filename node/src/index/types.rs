//! The Raft type configuration of the index: its command, result, node id and member
//! types, the file that carries a snapshot, and short aliases for openraft's types.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use cas_proto::index::{Command, CommandResult, command};

/// A state-machine command as a Raft log entry carries it: the protobuf [`Command`].
///
/// A thin wrapper only because openraft wants its commands printable and the
/// generated message is not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndexCommand(pub Command);

impl From<Command> for IndexCommand {
    fn from(cmd: Command) -> Self {
        IndexCommand(cmd)
    }
}

impl Deref for IndexCommand {
    type Target = Command;

    fn deref(&self) -> &Command {
        &self.0
    }
}

impl fmt::Display for IndexCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.op {
            Some(command::Op::RegisterXorb(r)) => write!(
                f,
                "register_xorb({} chunks)",
                r.xorb.as_ref().map_or(0, |x| x.chunk_lens.len())
            ),
            Some(command::Op::RegisterFiles(r)) => write!(
                f,
                "register_files({} files, {} dedup entries)",
                r.files.len(),
                r.dedup.len()
            ),
            None => f.write_str("empty_command"),
        }
    }
}

/// A member of the index's Raft group: where its gRPC API listens and its region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NodeInfo {
    /// `host:port` of the node's gRPC listener (Raft RPCs go there).
    pub addr: String,
    /// The node's region, e.g. `eu-west-3`.
    pub region: String,
}

impl NodeInfo {
    /// A member listening on `addr` in `region`.
    pub fn new(addr: impl Into<String>, region: impl Into<String>) -> Self {
        NodeInfo {
            addr: addr.into(),
            region: region.into(),
        }
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.region)
    }
}

/// The member description of a node listening for gRPC on `addr` in `region`.
pub fn node_info(addr: SocketAddr, region: &str) -> NodeInfo {
    NodeInfo::new(addr.to_string(), region)
}

openraft::declare_raft_types!(
    /// The index's Raft types: protobuf commands and results, `u64` node ids,
    /// [`NodeInfo`] members; openraft's defaults otherwise (terms, votes, entries).
    pub TypeConfig:
        D = IndexCommand,
        R = CommandResult,
        NodeId = u64,
        Node = NodeInfo,
);

/// A log entry's position.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A membership configuration.
pub type Membership = openraft::Membership<u64, NodeInfo>;
/// A membership with the log id of the entry that carried it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot: its metadata and its file.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// The index's Raft instance.
pub type IndexRaft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;

/// The bytes of one snapshot, in a file: streamed from and to disk, never held in
/// memory whole. The file is read from its start; the format is in
/// [`super::snapshot`].
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    file: File,
}

impl SnapshotFile {
    /// Opens the snapshot stored at `path` for reading.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(SnapshotFile {
            path: path.to_owned(),
            file: File::open(path)?,
        })
    }

    /// Wraps a file that holds a snapshot (e.g. one received from the leader), read
    /// from its current position.
    pub fn from_file(file: File, path: PathBuf) -> Self {
        SnapshotFile { path, file }
    }

    /// Where the file is (it may since have been replaced by a newer snapshot; the
    /// open handle still reads the old one).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshot's size in bytes.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether the file is empty (never true of a valid snapshot).
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The open file, for reading the snapshot.
    pub fn into_file(self) -> File {
        self.file
    }
}
