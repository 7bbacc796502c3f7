//! Protocol Buffers of the cluster, generated at build time from `proto/`.
//!
//! - [`index`]: the global index's records and the commands its Raft log carries;
//! - [`api`]: the client gRPC API (`cas.api.v1.Cas`);
//! - [`admin`]: the operator API (`cas.admin.v1.Admin`);
//! - [`raft`]: the global index's Raft messages (log entries, votes, memberships,
//!   snapshots) and the node-to-node `Peer` service.
//!
//! The generated code lives in modules named after the packages (`cas::index::v1`,
//! ...), which is what its cross-package references expect; the short names above
//! are what the rest of the workspace uses.

#![allow(missing_docs, clippy::all)]

/// The generated packages, nested as their names are.
pub mod cas {
    /// `cas.index`.
    pub mod index {
        /// `cas.index.v1`.
        pub mod v1 {
            tonic::include_proto!("cas.index.v1");
        }
    }
    /// `cas.api`.
    pub mod api {
        /// `cas.api.v1`.
        pub mod v1 {
            tonic::include_proto!("cas.api.v1");
        }
    }
    /// `cas.admin`.
    pub mod admin {
        /// `cas.admin.v1`.
        pub mod v1 {
            tonic::include_proto!("cas.admin.v1");
        }
    }
    /// `cas.raft`.
    pub mod raft {
        /// `cas.raft.v1`.
        pub mod v1 {
            tonic::include_proto!("cas.raft.v1");
        }
    }
}

/// The global index's records and commands (`cas.index.v1`).
pub use cas::index::v1 as index;

/// The client gRPC API (`cas.api.v1`).
pub use cas::api::v1 as api;

/// The operator API (`cas.admin.v1`).
pub use cas::admin::v1 as admin;

/// The global index's Raft messages and the `Peer` service (`cas.raft.v1`).
pub use cas::raft::v1 as raft;
