//! The node-to-node gRPC API (`cas.raft.v1.Peer`): a thin adapter that hands the
//! Raft RPCs, forwarded writes and read-index requests of the other members to the
//! local [`Index`]. Callers must hold a `cluster`-scope token.

use std::io::Write;
use std::sync::Arc;

use cas_proto::index::{Command, CommandResult};
use cas_proto::raft as pb;
use cas_proto::raft::peer_server::{Peer, PeerServer};
use futures::StreamExt;
use openraft::raft::TransferLeaderError;
use tonic::{Request, Response, Status, Streaming};

use super::{authorize, coded, index_status};
use crate::auth::{Scope, Tokens};
use crate::index::codec::{log_id_to_pb, snapshot_meta_from_pb, vote_to_pb};
use crate::index::network::MAX_PEER_MESSAGE_BYTES;
use crate::index::{Index, IndexError, wire};

/// The `Peer` front end of one node.
#[derive(Clone)]
pub struct PeerApi {
    index: Arc<Index>,
    tokens: Tokens,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl PeerApi {
    /// The API over `index`, admitting callers with a `cluster` token signed by
    /// `tokens`; its replication streams end when `stop` turns true (so the node's
    /// shutdown does not wait for the leader to close them).
    pub fn new(
        index: Arc<Index>,
        tokens: Tokens,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        PeerApi {
            index,
            tokens,
            stop,
        }
    }

    /// The tonic service to mount.
    pub fn into_server(self) -> PeerServer<Self> {
        PeerServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        authorize(&self.tokens, req, Scope::Cluster).map(|_| ())
    }
}

fn malformed(e: std::io::Error) -> Status {
    coded(
        tonic::Code::InvalidArgument,
        "malformed_peer_message",
        e.to_string(),
    )
}

fn raft_status(e: impl std::fmt::Display) -> Status {
    coded(tonic::Code::Unavailable, "index_unavailable", e.to_string())
}

/// The answers of a pipelined append stream.
type AppendAnswers =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::StreamAppendResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerApi {
    type StreamAppendStream = AppendAnswers;

    async fn stream_append(
        &self,
        req: Request<Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        self.authorize(&req)?;
        // A malformed or broken request ends the input; the answers given so far stand
        // and the stream then ends with the error.
        let failed: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
        let input = {
            let failed = failed.clone();
            req.into_inner()
                .map(move |item| {
                    let err = match item {
                        Ok(msg) => match wire::append_request_from_pb(msg) {
                            Ok(rpc) => return Some(rpc),
                            Err(e) => malformed(e),
                        },
                        Err(status) => status,
                    };
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                    None
                })
                .take_while(|rpc| std::future::ready(rpc.is_some()))
                .filter_map(std::future::ready)
        };
        let answers = self.index.raft().stream_append(input).map(|r| match r {
            Ok(result) => Ok(wire::stream_result_to_pb(&result)),
            Err(fatal) => Err(raft_status(fatal)),
        });
        let tail = futures::stream::once(async move {
            failed.lock().unwrap_or_else(|e| e.into_inner()).take()
        })
        .filter_map(|e| std::future::ready(e.map(Err)));
        let mut stop = self.stop.clone();
        let stopping = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        // At shutdown the stream ends (the leader sees the node go away) instead of
        // holding the server open.
        Ok(Response::new(Box::pin(
            answers.chain(tail).take_until(stopping),
        )))
    }

    async fn append_entries(
        &self,
        req: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.authorize(&req)?;
        let rpc = wire::append_request_from_pb(req.into_inner()).map_err(malformed)?;
        let resp = self
            .index
            .raft()
            .append_entries(rpc)
            .await
            .map_err(raft_status)?;
        Ok(Response::new(wire::append_response_to_pb(&resp)))
    }

    async fn vote(
        &self,
        req: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.authorize(&req)?;
        let rpc = wire::vote_request_from_pb(req.into_inner()).map_err(malformed)?;
        let resp = self.index.raft().vote(rpc).await.map_err(raft_status)?;
        Ok(Response::new(wire::vote_response_to_pb(&resp)))
    }

    async fn pre_vote(
        &self,
        req: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.authorize(&req)?;
        let rpc = wire::vote_request_from_pb(req.into_inner()).map_err(malformed)?;
        let resp = self.index.raft().pre_vote(rpc).await.map_err(raft_status)?;
        Ok(Response::new(wire::vote_response_to_pb(&resp)))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        self.authorize(&req)?;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| malformed(crate::index::codec::invalid("empty snapshot stream")))?;
        let vote = wire::required_vote(first.vote).map_err(malformed)?;
        let meta = snapshot_meta_from_pb(first.meta.unwrap_or_default()).map_err(malformed)?;

        // The bytes go to a file of their own; a failed transfer removes it.
        let file = tempfile::Builder::new()
            .prefix("snapshot-")
            .suffix(".receiving")
            .tempfile_in(self.index.incoming_dir())
            .map_err(|e| index_status(IndexError::Storage(e.to_string())))?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut received = first.data.len() as u64;
        writer
            .write_all(&first.data)
            .map_err(|e| index_status(IndexError::Storage(e.to_string())))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            received += chunk.data.len() as u64;
            writer
                .write_all(&chunk.data)
                .map_err(|e| index_status(IndexError::Storage(e.to_string())))?;
        }
        let file = writer
            .into_inner()
            .map_err(|e| index_status(IndexError::Storage(e.to_string())))?;
        tracing::info!(%meta, bytes = received, "snapshot received from the leader");
        let resp = self
            .index
            .install_snapshot(vote, meta, file)
            .await
            .map_err(index_status)?;
        Ok(Response::new(pb::SnapshotResponse {
            vote: Some(vote_to_pb(&resp)),
        }))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.authorize(&req)?;
        let rpc = wire::transfer_request_from_pb(req.into_inner()).map_err(malformed)?;
        let expected = rpc.last_log_id().map(log_id_to_pb);
        let resp = self
            .index
            .raft()
            .handle_transfer_leader(rpc)
            .await
            .map_err(raft_status)?;
        let refused = match resp {
            Ok(()) => None,
            Err(TransferLeaderError::VoteChanged { actual, .. }) => {
                Some(pb::transfer_leader_response::Refused {
                    reason: "the vote changed".into(),
                    actual_vote: Some(vote_to_pb(&actual)),
                    vote_changed: true,
                    ..Default::default()
                })
            }
            Err(TransferLeaderError::LogNotFlushed { actual, .. }) => {
                Some(pb::transfer_leader_response::Refused {
                    reason: "the log is not flushed yet".into(),
                    actual_last_log_id: actual.as_ref().map(log_id_to_pb),
                    expected_last_log_id: expected,
                    vote_changed: false,
                    ..Default::default()
                })
            }
        };
        Ok(Response::new(pb::TransferLeaderResponse { refused }))
    }

    async fn forward_write(
        &self,
        req: Request<Command>,
    ) -> Result<Response<CommandResult>, Status> {
        self.authorize(&req)?;
        let result = self
            .index
            .write_local(req.into_inner())
            .await
            .map_err(index_status)?;
        Ok(Response::new(result))
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        self.authorize(&req)?;
        self.index
            .leave(req.get_ref().node_id)
            .map_err(index_status)?;
        Ok(Response::new(pb::LeaveResponse {}))
    }

    async fn read_index(
        &self,
        req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.authorize(&req)?;
        let read = self.index.read_index_local().await.map_err(index_status)?;
        Ok(Response::new(pb::ReadIndexResponse {
            read_log_id: read.as_ref().map(log_id_to_pb),
            leader_id: self.index.node_id(),
        }))
    }
}
