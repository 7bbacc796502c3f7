//! [`IndexError`]: why the index could not serve a request, with a stable code.

/// Why the index could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The RocksDB store could not be opened, read or written.
    #[error("index storage: {0}")]
    Storage(String),
    /// A stored record does not decode.
    #[error("corrupt index record: {0}")]
    Corrupt(String),
    /// The command is malformed (e.g. a hash that is not 32 bytes); it was not proposed.
    #[error("invalid index command: {0}")]
    InvalidCommand(String),
    /// Raft could not commit or confirm in time (no leader yet, no quorum).
    #[error("index unavailable: {0}")]
    Unavailable(String),
    /// This node is not the leader; the request must go to the leader.
    #[error("this node is not the index leader (leader: {leader:?} at {leader_addr:?})")]
    NotLeader {
        /// The current leader's id, if known.
        leader: Option<u64>,
        /// The current leader's gRPC address, if known.
        leader_addr: Option<String>,
    },
    /// A membership change that cannot be made (unknown member, the leader itself,
    /// a change already in progress).
    #[error("membership change refused: {0}")]
    InvalidMembership(String),
    /// Raft stopped (shut down, or a storage failure it cannot recover from).
    #[error("index stopped: {0}")]
    Stopped(String),
}

impl IndexError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IndexError::Storage(_) => "index_storage",
            IndexError::Corrupt(_) => "index_corrupt_record",
            IndexError::InvalidCommand(_) => "index_invalid_command",
            IndexError::Unavailable(_) => "index_unavailable",
            IndexError::NotLeader { .. } => "index_not_leader",
            IndexError::InvalidMembership(_) => "invalid_membership_change",
            IndexError::Stopped(_) => "index_stopped",
        }
    }

    /// What a failed call to the leader means for the request that made it.
    pub fn from_peer(e: super::PeerError) -> Self {
        match e.server_code() {
            Some("index_invalid_command") => IndexError::InvalidCommand(e.to_string()),
            _ => IndexError::Unavailable(e.to_string()),
        }
    }

    /// The gRPC code a peer answers this error with (`Unavailable` is retried by the
    /// caller).
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            IndexError::Unavailable(_) | IndexError::NotLeader { .. } => tonic::Code::Unavailable,
            IndexError::InvalidCommand(_) => tonic::Code::InvalidArgument,
            IndexError::InvalidMembership(_) => tonic::Code::FailedPrecondition,
            IndexError::Storage(_) | IndexError::Corrupt(_) | IndexError::Stopped(_) => {
                tonic::Code::Internal
            }
        }
    }

    /// Whether the same request may succeed later (commands are idempotent, so a
    /// write that timed out may be retried even if it did commit).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            IndexError::Unavailable(_) | IndexError::NotLeader { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::IndexError;

    #[test]
    fn codes_are_stable_and_distinct() {
        let all = [
            IndexError::Storage(String::new()),
            IndexError::Corrupt(String::new()),
            IndexError::InvalidCommand(String::new()),
            IndexError::Unavailable(String::new()),
            IndexError::NotLeader {
                leader: None,
                leader_addr: None,
            },
            IndexError::Stopped(String::new()),
            IndexError::InvalidMembership(String::new()),
        ];
        let codes: Vec<_> = all.iter().map(IndexError::code).collect();
        assert_eq!(
            codes,
            [
                "index_storage",
                "index_corrupt_record",
                "index_invalid_command",
                "index_unavailable",
                "index_not_leader",
                "index_stopped",
                "invalid_membership_change"
            ]
        );
        let retryable: Vec<_> = all.iter().map(IndexError::is_retryable).collect();
        assert_eq!(retryable, [false, false, false, true, true, false, false]);
    }
}
