//! The Raft network of the index group: the `cas.raft.v1.Peer` gRPC service of each
//! member, reached through one reused channel per peer ([`Peers`]).
//!
//! Every call carries this node's `cluster`-scope credential. When the simulation of
//! region latency is on ([`LinkDelays`]), every call waits half the round trip between
//! the two regions before it is sent and half after its answer, so a whole cluster on
//! one machine commits with the latency of three real regions.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cas_proto::index::{Command, CommandResult};
use cas_proto::raft as pb;
use cas_proto::raft::peer_client::PeerClient;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use openraft::OptionalSend;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderError, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use tonic::transport::{Channel, Endpoint};

use super::codec::{log_id_from_pb, snapshot_meta_to_pb, vote_to_pb};
use super::faults::Faults;
use super::types::{LogId, NodeInfo, Snapshot, SnapshotFile, TypeConfig, Vote};
use super::wire;
use crate::auth::NodeCredential;
use crate::config::Region;

/// One answer of a pipelined append stream, as openraft takes it.
type AppendAnswer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// Size of the parts a snapshot file is streamed in.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Largest message a peer sends or accepts (a batch of log entries).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

/// Time allowed to open a connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Injected link latency: the simulation of inter-region round trips.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkDelays {
    from: Option<Region>,
}

impl LinkDelays {
    /// No injected latency.
    pub fn none() -> Self {
        LinkDelays { from: None }
    }

    /// Calls from a node in `from` wait the simulated round trip to their target's region.
    pub fn simulated(from: Region) -> Self {
        LinkDelays { from: Some(from) }
    }

    /// Half the simulated round trip to a node in `region` (zero when off or unknown).
    pub fn one_way(&self, region: &str) -> Duration {
        match (self.from, region.parse::<Region>()) {
            (Some(from), Ok(to)) => from.round_trip(to) / 2,
            _ => Duration::ZERO,
        }
    }
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached (connection refused, reset, unavailable).
    #[error("node {node} at {addr} is unreachable: {message}")]
    Unreachable {
        /// The peer's id.
        node: u64,
        /// Its address.
        addr: String,
        /// What failed.
        message: String,
    },
    /// The peer answered with an error status.
    #[error("node {node} answered {code:?}{}: {message}", code_note(server_code))]
    Status {
        /// The peer's id.
        node: u64,
        /// The gRPC code.
        code: tonic::Code,
        /// The stable error code the peer sent, if any.
        server_code: Option<String>,
        /// The status message.
        message: String,
    },
    /// The call took longer than allowed.
    #[error("node {node} did not answer within {timeout:?}")]
    Timeout {
        /// The peer's id.
        node: u64,
        /// The time allowed.
        timeout: Duration,
    },
    /// The peer's answer does not decode.
    #[error("node {node} sent a malformed answer: {message}")]
    Malformed {
        /// The peer's id.
        node: u64,
        /// What is wrong.
        message: String,
    },
    /// This node cannot sign its credential or build a channel.
    #[error("cannot call node {node}: {message}")]
    Local {
        /// The peer's id.
        node: u64,
        /// What failed.
        message: String,
    },
}

fn code_note(server_code: &Option<String>) -> String {
    server_code
        .as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

impl PeerError {
    fn from_status(node: u64, addr: &str, s: &tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown if is_transport(s) => {
                PeerError::Unreachable {
                    node,
                    addr: addr.to_owned(),
                    message: s.message().to_owned(),
                }
            }
            code => PeerError::Status {
                node,
                code,
                server_code: s
                    .metadata()
                    .get(crate::api::grpc::ERROR_CODE_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                message: s.message().to_owned(),
            },
        }
    }

    /// The stable error code the peer sent, if any.
    pub fn server_code(&self) -> Option<&str> {
        match self {
            PeerError::Status { server_code, .. } => server_code.as_deref(),
            _ => None,
        }
    }

    fn into_rpc<E: std::error::Error>(self) -> RPCError<TypeConfig, E> {
        match &self {
            PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&self)),
            _ => RPCError::Network(NetworkError::new(&self)),
        }
    }

    fn into_streaming(self) -> StreamingError<TypeConfig> {
        match &self {
            PeerError::Unreachable { .. } => StreamingError::Unreachable(Unreachable::new(&self)),
            _ => StreamingError::Network(NetworkError::new(&self)),
        }
    }
}

/// Whether a status comes from the transport (no server answered it).
fn is_transport(s: &tonic::Status) -> bool {
    // Our services tag every refusal with a stable code; a status without one came
    // from the transport (connection refused or reset, no route, a dead peer).
    s.metadata()
        .get(crate::api::grpc::ERROR_CODE_METADATA)
        .is_none()
}

/// The channels to the other members, one per peer, reused by every call; shared by
/// the Raft network and by the index (forwarded writes, read index).
#[derive(Debug)]
pub struct Peers {
    channels: Mutex<HashMap<u64, (String, PeerClient<Channel>)>>,
    credential: Option<NodeCredential>,
    delays: LinkDelays,
    region: String,
    faults: Faults,
}

impl Peers {
    /// The peers of a node in `region`, called with `credential` (none:
    /// unauthenticated, for tests) and `delays`.
    pub fn new(credential: Option<NodeCredential>, region: &str, delays: LinkDelays) -> Arc<Self> {
        Arc::new(Peers {
            channels: Mutex::new(HashMap::new()),
            credential,
            delays,
            region: region.to_owned(),
            faults: Faults::default(),
        })
    }

    /// The injected faults calls obey (drills and tests).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The client of member `id` at `node`, on its cached channel (a new one when the
    /// member's address changed). The channel connects on first use.
    fn client(&self, id: u64, node: &NodeInfo) -> Result<PeerClient<Channel>, PeerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((addr, client)) = channels.get(&id)
            && *addr == node.addr
        {
            return Ok(client.clone());
        }
        let local = |message: String| PeerError::Local { node: id, message };
        let channel = Endpoint::from_shared(format!("http://{}", node.addr))
            .map_err(|e| local(format!("address {:?}: {e}", node.addr)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .connect_lazy();
        let client = PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        channels.insert(id, (node.addr.clone(), client.clone()));
        Ok(client)
    }

    /// Forgets the channel of a member that left.
    pub fn forget(&self, id: u64) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// `msg` with this node's credential attached.
    fn request<T>(&self, id: u64, msg: T) -> Result<tonic::Request<T>, PeerError> {
        let mut req = tonic::Request::new(msg);
        if let Some(c) = &self.credential {
            let header = c.header().map_err(|e| PeerError::Local {
                node: id,
                message: format!("signing the node credential: {e}"),
            })?;
            let value = header.parse().map_err(|_| PeerError::Local {
                node: id,
                message: "the node credential is not a valid header".into(),
            })?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }

    /// [`PeerError::Unreachable`] while a simulated partition cuts this node off
    /// from member `id` at `node`.
    fn check_partition(&self, id: u64, node: &NodeInfo) -> Result<(), PeerError> {
        if self.faults.blocks(&self.region, &node.region) {
            return Err(PeerError::Unreachable {
                node: id,
                addr: node.addr.clone(),
                message: format!(
                    "simulated partition between {} and {}",
                    self.region, node.region
                ),
            });
        }
        Ok(())
    }

    /// Opens a pipelined append stream to member `id` at `node`: `requests` are sent
    /// as they come (each one after the injected one-way delay), the answers come back
    /// in order (each after the delay too). The answers stream fails when the peer
    /// leaves a request unanswered for `idle` (plus the simulated round trip), and ends
    /// at a simulated partition.
    pub async fn stream_append(
        self: Arc<Self>,
        id: u64,
        node: NodeInfo,
        requests: impl futures::Stream<Item = pb::AppendEntriesRequest> + Send + 'static,
        idle: Duration,
    ) -> Result<
        futures::stream::BoxStream<'static, Result<pb::StreamAppendResponse, PeerError>>,
        PeerError,
    > {
        self.check_partition(id, &node)?;
        let client = self.client(id, &node)?;
        let one_way = self.delays.one_way(&node.region);
        let outstanding = Arc::new(std::sync::atomic::AtomicI64::new(0));
        // Requests leave after the one-way delay, while no partition cuts the link.
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<pb::AppendEntriesRequest>(64);
        {
            let mut requests = delayed(requests, one_way);
            let (peers, node, outstanding) = (self.clone(), node.clone(), outstanding.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = requests.next() => {
                            let Some(r) = r else { return };
                            if peers.check_partition(id, &node).is_err() {
                                return;
                            }
                            outstanding.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if out_tx.send(r).await.is_err() {
                                return;
                            }
                        }
                        () = out_tx.closed() => return,
                    }
                }
            });
        }
        let outbound = futures::stream::poll_fn(move |cx| out_rx.poll_recv(cx));
        let req = self.request(id, outbound)?;
        let opened = tokio::time::timeout(
            CONNECT_TIMEOUT + 2 * one_way,
            call_stream_append(client, req),
        )
        .await
        .map_err(|_| PeerError::Timeout {
            node: id,
            timeout: CONNECT_TIMEOUT + 2 * one_way,
        })?
        .map_err(|s| PeerError::from_status(id, &node.addr, &s))?;
        // Answers arrive after the one-way delay; a request left unanswered too long,
        // a broken stream or a partition ends them with an error.
        let mut answers = delayed(opened.into_inner(), one_way);
        let wait = idle + 2 * one_way;
        let (in_tx, mut in_rx) =
            tokio::sync::mpsc::channel::<Result<pb::StreamAppendResponse, PeerError>>(64);
        let peers = self.clone();
        tokio::spawn(async move {
            let mut progress = tokio::time::Instant::now();
            loop {
                let next = tokio::select! {
                    () = in_tx.closed() => return,
                    next = tokio::time::timeout(Duration::from_millis(100), answers.next()) => next,
                };
                let Ok(next) = next else {
                    let pending = outstanding.load(std::sync::atomic::Ordering::SeqCst) > 0;
                    if !pending {
                        progress = tokio::time::Instant::now();
                    } else if progress.elapsed() > wait {
                        let e = PeerError::Timeout {
                            node: id,
                            timeout: wait,
                        };
                        let _ = in_tx.send(Err(e)).await;
                        return;
                    }
                    continue;
                };
                progress = tokio::time::Instant::now();
                let item = match next {
                    None => return,
                    Some(Ok(answer)) => {
                        outstanding.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        peers.check_partition(id, &node).map(|()| answer)
                    }
                    Some(Err(status)) => Err(PeerError::from_status(id, &node.addr, &status)),
                };
                let last = item.is_err();
                if in_tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        let stream = futures::stream::poll_fn(move |cx| in_rx.poll_recv(cx));
        Ok(Box::pin(stream))
    }

    /// Calls member `id` at `node`: `call` gets its client and the request carrying
    /// `msg`; the call waits the injected latency and at most `timeout`.
    pub async fn call<M, T, F, Fut>(
        &self,
        id: u64,
        node: &NodeInfo,
        msg: M,
        timeout: Duration,
        call: F,
    ) -> Result<T, PeerError>
    where
        F: FnOnce(PeerClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.check_partition(id, node)?;
        let client = self.client(id, node)?;
        let req = self.request(id, msg)?;
        let one_way = self.delays.one_way(&node.region);
        let exchange = async {
            if !one_way.is_zero() {
                tokio::time::sleep(one_way).await;
            }
            let resp = call(client, req).await;
            if !one_way.is_zero() {
                tokio::time::sleep(one_way).await;
            }
            resp
        };
        match tokio::time::timeout(timeout + 2 * one_way, exchange).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(PeerError::from_status(id, &node.addr, &status)),
            Err(_) => Err(PeerError::Timeout { node: id, timeout }),
        }
    }

    /// Sends a client's write to the leader `id` at `node`.
    pub async fn forward_write(
        &self,
        id: u64,
        node: &NodeInfo,
        cmd: Command,
        timeout: Duration,
    ) -> Result<CommandResult, PeerError> {
        self.call(id, node, cmd, timeout, |mut c, r| async move {
            c.forward_write(r).await
        })
        .await
    }

    /// Tells member `id` at `node` that it was removed from the group.
    pub async fn leave(
        &self,
        id: u64,
        node: &NodeInfo,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        self.call(
            id,
            node,
            pb::LeaveRequest { node_id: id },
            timeout,
            |mut c, r| async move { c.leave(r).await },
        )
        .await
        .map(|_| ())
    }

    /// Asks the leader `id` at `node` for its read index.
    pub async fn read_index(
        &self,
        id: u64,
        node: &NodeInfo,
        timeout: Duration,
    ) -> Result<Option<LogId>, PeerError> {
        let resp = self
            .call(
                id,
                node,
                pb::ReadIndexRequest {},
                timeout,
                |mut c, r| async move { c.read_index(r).await },
            )
            .await?;
        resp.read_log_id
            .map(log_id_from_pb)
            .transpose()
            .map_err(|e| PeerError::Malformed {
                node: id,
                message: e.to_string(),
            })
    }
}

/// Hands out [`PeerConnection`]s over the shared [`Peers`].
#[derive(Debug, Clone)]
pub struct GrpcNetwork {
    peers: Arc<Peers>,
}

impl GrpcNetwork {
    /// A network over `peers`.
    pub fn new(peers: Arc<Peers>) -> Self {
        GrpcNetwork { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Self::Network {
        PeerConnection {
            peers: self.peers.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// Openraft's connection to one peer.
#[derive(Debug)]
pub struct PeerConnection {
    peers: Arc<Peers>,
    target: u64,
    node: NodeInfo,
}

impl PeerConnection {
    fn malformed(&self, e: std::io::Error) -> PeerError {
        PeerError::Malformed {
            node: self.target,
            message: e.to_string(),
        }
    }

    /// One unary Raft RPC: `msg` sent through `call` within `option`'s deadline, the
    /// answer decoded by `decode`.
    async fn unary<M, R, T, F, Fut>(
        &self,
        msg: M,
        option: &RPCOption,
        call: F,
        decode: impl FnOnce(R) -> std::io::Result<T>,
    ) -> Result<T, RPCError<TypeConfig>>
    where
        F: FnOnce(PeerClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let resp = self
            .peers
            .call(self.target, &self.node, msg, option.hard_ttl(), call)
            .await
            .map_err(PeerError::into_rpc)?;
        decode(resp).map_err(|e| self.malformed(e).into_rpc())
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotFile;

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendAnswer>, RPCError<TypeConfig>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        let requests: BoxStream<'static, pb::AppendEntriesRequest> =
            Box::pin(input.map(append_to_pb as fn(_) -> _));
        // A follower fsyncs before it answers: allow it several heartbeats.
        let idle = (option.soft_ttl() * 4).max(Duration::from_secs(2));
        let (peers, target, node) = (self.peers.clone(), self.target, self.node.clone());
        Box::pin(async move {
            let answers = peers
                .stream_append(target, node, requests, idle)
                .await
                .map_err(PeerError::into_rpc)?;
            let answers = answers.map(move |item| decode_answer(target, item));
            Ok(Box::pin(answers) as BoxStream<'s, AppendAnswer>)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(
            wire::append_request_to_pb(&rpc),
            &option,
            |mut c, r| async move { c.append_entries(r).await },
            wire::append_response_from_pb,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(
            wire::vote_request_to_pb(&rpc),
            &option,
            |mut c, r| async move { c.vote(r).await },
            wire::vote_response_from_pb,
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(
            wire::vote_request_to_pb(&rpc),
            &option,
            |mut c, r| async move { c.pre_vote(r).await },
            wire::vote_response_from_pb,
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let first = pb::SnapshotChunk {
            vote: Some(vote_to_pb(&vote)),
            meta: Some(snapshot_meta_to_pb(&snapshot.meta)),
            data: Bytes::new(),
        };
        let parts = snapshot_parts(snapshot.snapshot);
        // An injected stall holds the transfer open after its last part.
        let stall = self.peers.faults().snapshot_stall();
        let hold = futures::stream::once(tokio::time::sleep(stall))
            .filter_map(|()| std::future::ready(None::<pb::SnapshotChunk>));
        let stream = futures::stream::iter([first]).chain(parts).chain(hold);
        // The transfer itself has no deadline (the file may be large); cancelling is
        // openraft's to decide.
        let send = self.peers.call(
            self.target,
            &self.node,
            stream,
            Duration::from_secs(24 * 3600),
            |mut c, r| async move { c.install_snapshot(r).await },
        );
        let resp = tokio::select! {
            r = send => r.map_err(PeerError::into_streaming)?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let vote =
            wire::required_vote(resp.vote).map_err(|e| self.malformed(e).into_streaming())?;
        Ok(SnapshotResponse::new(vote))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let msg = wire::transfer_request_to_pb(&req);
        let resp = self
            .peers
            .call(
                self.target,
                &self.node,
                msg,
                option.hard_ttl(),
                |mut c, r| async move { c.transfer_leader(r).await },
            )
            .await
            .map_err(PeerError::into_rpc)?;
        let Some(refused) = resp.refused else {
            return Ok(Ok(()));
        };
        let malformed = |e| self.malformed(e).into_rpc();
        Ok(Err(if refused.vote_changed {
            TransferLeaderError::VoteChanged {
                expected: *req.from_leader(),
                actual: wire::required_vote(refused.actual_vote).map_err(malformed)?,
            }
        } else {
            TransferLeaderError::LogNotFlushed {
                expected: req.last_log_id().cloned(),
                actual: refused
                    .actual_last_log_id
                    .map(log_id_from_pb)
                    .transpose()
                    .map_err(malformed)?,
            }
        }))
    }
}

/// An AppendEntries request on the wire.
fn append_to_pb(r: AppendEntriesRequest<TypeConfig>) -> pb::AppendEntriesRequest {
    wire::append_request_to_pb(&r)
}

/// One answer of a pipelined append stream from member `target`, as openraft takes it.
fn decode_answer(target: u64, item: Result<pb::StreamAppendResponse, PeerError>) -> AppendAnswer {
    match item {
        Ok(msg) => wire::stream_result_from_pb(msg).map_err(|e| {
            PeerError::Malformed {
                node: target,
                message: e.to_string(),
            }
            .into_rpc()
        }),
        Err(e) => Err(e.into_rpc()),
    }
}

/// Opens the `StreamAppend` call (a named function: the request type is generic).
async fn call_stream_append<S>(
    mut client: PeerClient<Channel>,
    req: tonic::Request<S>,
) -> Result<tonic::Response<tonic::Streaming<pb::StreamAppendResponse>>, tonic::Status>
where
    S: futures::Stream<Item = pb::AppendEntriesRequest> + Send + 'static,
{
    client.stream_append(req).await
}

/// `items` with each one released `by` after it was produced, order kept; items
/// produced while earlier ones wait are not held back further (a pipelined link with
/// a one-way delay). Zero passes them straight through.
fn delayed<T: Send + 'static>(
    items: impl futures::Stream<Item = T> + Send + 'static,
    by: Duration,
) -> futures::stream::BoxStream<'static, T> {
    if by.is_zero() {
        return Box::pin(items);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut items = std::pin::pin!(items);
        loop {
            tokio::select! {
                item = items.next() => match item {
                    Some(item) => {
                        if tx.send((tokio::time::Instant::now() + by, item)).is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).then(|(at, item)| async move {
            tokio::time::sleep_until(at).await;
            item
        }),
    )
}

/// The bytes of a snapshot file as stream parts, read on a blocking thread.
fn snapshot_parts(
    file: SnapshotFile,
) -> impl futures::Stream<Item = pb::SnapshotChunk> + Send + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<pb::SnapshotChunk>(4);
    tokio::task::spawn_blocking(move || {
        let path = file.path().to_owned();
        let mut f = file.into_file();
        loop {
            let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
            let n = match f.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    // Ending the stream early makes the receiver refuse the snapshot.
                    tracing::warn!(path = %path.display(), error = %e, "reading a snapshot to send");
                    return;
                }
            };
            if n == 0 {
                return;
            }
            buf.truncate(n);
            let chunk = pb::SnapshotChunk {
                vote: None,
                meta: None,
                data: Bytes::from(buf),
            };
            if tx.blocking_send(chunk).is_err() {
                return;
            }
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_half_the_round_trip_between_regions() {
        let d = LinkDelays::simulated(Region::UsEast1);
        assert_eq!(d.one_way("eu-west-3"), Duration::from_millis(40));
        assert_eq!(d.one_way("ap-southeast-1"), Duration::from_millis(110));
        assert_eq!(d.one_way("us-east-1"), Duration::from_micros(500));
        assert_eq!(d.one_way("mars-1"), Duration::ZERO);
        assert_eq!(LinkDelays::none().one_way("eu-west-3"), Duration::ZERO);
        let eu = LinkDelays::simulated(Region::EuWest3);
        assert_eq!(eu.one_way("ap-southeast-1"), Duration::from_millis(75));
    }

    #[test]
    fn statuses_from_our_services_are_not_unreachable_peers() {
        let transport = tonic::Status::unavailable("tcp connect error");
        assert!(matches!(
            PeerError::from_status(2, "127.0.0.1:1", &transport),
            PeerError::Unreachable { .. }
        ));
        let refused = crate::api::grpc::coded(
            tonic::Code::Unavailable,
            "index_not_leader",
            "not the leader",
        );
        let e = PeerError::from_status(2, "127.0.0.1:1", &refused);
        assert!(
            matches!(
                &e,
                PeerError::Status {
                    code: tonic::Code::Unavailable,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.server_code(), Some("index_not_leader"));
        // A forwarded write refused this way is tried again (the leader moved).
        assert!(crate::index::peer_retryable(&e));
    }
}
