//! The Raft network of a single-voter group: there is no peer to reach, so every RPC
//! answers "unreachable". When nodes join, a gRPC network (one reused channel per
//! peer, the `cas.raft.v1` messages on the wire) takes this one's place behind the
//! same [`RaftNetworkFactory`] trait; nothing else in the index changes.

use std::future::Future;

use openraft::OptionalSend;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use super::types::{NodeInfo, Snapshot, SnapshotFile, TypeConfig, Vote};

/// Why a peer cannot be reached.
#[derive(Debug, thiserror::Error)]
#[error("node {0} is not reachable: this node runs a single-voter index without a network")]
pub struct NoNetwork(u64);

/// Hands out [`NoPeerConnection`]s.
#[derive(Debug, Clone, Default)]
pub struct SingleNodeNetwork;

/// A connection to a peer that cannot be reached.
#[derive(Debug)]
pub struct NoPeerConnection {
    target: u64,
}

impl RaftNetworkFactory<TypeConfig> for SingleNodeNetwork {
    type Network = NoPeerConnection;

    async fn new_client(&mut self, target: u64, _node: &NodeInfo) -> Self::Network {
        NoPeerConnection { target }
    }
}

impl NoPeerConnection {
    fn unreachable(&self) -> Unreachable<TypeConfig> {
        Unreachable::new(&NoNetwork(self.target))
    }
}

impl RaftNetworkV2<TypeConfig> for NoPeerConnection {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn pre_vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
