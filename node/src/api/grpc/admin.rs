//! The operator gRPC API (`cas.admin.v1.Admin`): a thin adapter over the index's
//! status and membership changes. Callers must hold an `admin`-scope token.

use std::sync::Arc;

use cas_proto::admin as pb;
use cas_proto::admin::admin_server::{Admin, AdminServer};
use tonic::{Request, Response, Status};

use super::{authorize, coded, index_status};
use crate::auth::{Scope, Tokens};
use crate::index::{Index, IndexError, NodeInfo};

/// The `Admin` front end of one node.
#[derive(Clone)]
pub struct AdminApi {
    index: Arc<Index>,
    tokens: Tokens,
}

impl AdminApi {
    /// The API over `index`, admitting callers with an `admin` token signed by `tokens`.
    pub fn new(index: Arc<Index>, tokens: Tokens) -> Self {
        AdminApi { index, tokens }
    }

    /// The tonic service to mount.
    pub fn into_server(self) -> AdminServer<Self> {
        AdminServer::new(self)
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        authorize(&self.tokens, req, Scope::Admin).map(|_| ())
    }

    fn status(&self) -> pb::ClusterStatus {
        let s = self.index.status();
        let members: Vec<pb::Member> = self
            .index
            .members()
            .into_iter()
            .map(|m| pb::Member {
                id: m.id,
                addr: m.addr,
                region: m.region,
                voter: m.voter,
                leader: m.leader,
                lag: m.lag,
            })
            .collect();
        let leader_addr = members
            .iter()
            .find(|m| Some(m.id) == s.leader)
            .map(|m| m.addr.clone())
            .unwrap_or_default();
        pb::ClusterStatus {
            node_id: s.node_id,
            role: s.role,
            leader_id: s.leader,
            leader_addr,
            term: s.term,
            last_log_index: s.last_log_index,
            last_applied: s.last_applied,
            members,
            snapshot_index: s.snapshot,
            purged_index: s.purged,
        }
    }
}

/// A membership change refused for its malformed input (INVALID_ARGUMENT; changes
/// refused for the group's state are FAILED_PRECONDITION).
fn malformed(message: String) -> Status {
    let e = IndexError::InvalidMembership(message);
    coded(tonic::Code::InvalidArgument, e.code(), e.to_string())
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.authorize(&req)?;
        Ok(Response::new(self.status()))
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        if r.id == 0 {
            return Err(malformed("node ids start at 1".into()));
        }
        crate::config::peer_address(&r.addr).map_err(malformed)?;
        if r.region.parse::<crate::config::Region>().is_err() {
            return Err(malformed(format!("{:?} is not a region", r.region)));
        }
        self.index
            .add_node(r.id, NodeInfo::new(r.addr, r.region))
            .await
            .map_err(index_status)?;
        Ok(Response::new(self.status()))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.authorize(&req)?;
        self.index
            .remove_node(req.get_ref().id)
            .await
            .map_err(index_status)?;
        Ok(Response::new(self.status()))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.authorize(&req)?;
        self.index
            .transfer_leader(req.get_ref().to)
            .await
            .map_err(index_status)?;
        Ok(Response::new(self.status()))
    }

    async fn compact(
        &self,
        req: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        self.authorize(&req)?;
        let snapshot_index = self.index.compact().await.map_err(index_status)?;
        Ok(Response::new(pb::CompactResponse {
            snapshot_index,
            purged_index: self.index.status().purged,
        }))
    }
}
