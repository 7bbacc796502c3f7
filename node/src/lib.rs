//! The CAS node: one process of the multi-region cluster.
//!
//! Layers, bottom up:
//! - [`config`]: the node's configuration (TOML file plus environment overrides);
//! - [`auth`]: signed bearer tokens with read/write scopes;
//! - [`store`]: xorbs and shards in S3 (and an embedded S3 server for local runs);
//! - [`telemetry`]: structured logs and the Prometheus metrics every layer reports to.

pub mod auth;
pub mod config;
pub mod store;
pub mod telemetry;
