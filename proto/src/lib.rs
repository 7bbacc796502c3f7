//! Protocol Buffers of the cluster, generated at build time from `proto/`.
//!
//! - [`index`]: the global index's records and the commands its Raft log carries;
//! - [`api`]: the client gRPC API (`cas.api.v1.Cas`);
//! - [`raft`]: the global index's Raft messages (log entries, votes, memberships, snapshots).

#![allow(missing_docs, clippy::all)]

/// The global index's records and commands (`cas.index.v1`).
pub mod index {
    tonic::include_proto!("cas.index.v1");
}

/// The client gRPC API (`cas.api.v1`).
pub mod api {
    tonic::include_proto!("cas.api.v1");
}

/// The global index's Raft messages (`cas.raft.v1`).
pub mod raft {
    tonic::include_proto!("cas.raft.v1");
}
