//! The CAS node: one process of the multi-region cluster.
//!
//! Layers, bottom up:
//! - [`config`]: the node's configuration (TOML file plus environment overrides);
//! - [`auth`]: signed bearer tokens with read/write/admin/cluster scopes;
//! - [`store`]: xorbs and shards in S3 (and an embedded S3 server for local runs);
//! - [`index`]: the global index, an openraft state machine over RocksDB, replicated
//!   across regions by a Raft group over gRPC;
//! - [`telemetry`]: structured logs and the Prometheus metrics every layer reports to;
//! - [`service`]: the one place the rules live (validated writes, dedup, reconstruction);
//! - [`api`]: the front ends (Xet HTTP, client gRPC, node-to-node gRPC, operator gRPC),
//!   thin adapters over the service and the index;
//! - [`server`]: assembling and running a node from its configuration;
//! - [`local_cluster`]: a whole cluster of node processes on one machine (the demo,
//!   the cluster tests).

pub mod api;
pub mod auth;
pub mod config;
pub mod index;
pub mod local_cluster;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
