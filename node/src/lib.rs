//! The CAS node: one process of the multi-region cluster.
//!
//! Layers, bottom up:
//! - [`config`]: the node's configuration (TOML file plus environment overrides);
//! - [`auth`]: signed bearer tokens with read/write scopes;
//! - [`telemetry`]: structured logs and the Prometheus metrics every layer reports to.

pub mod auth;
pub mod config;
pub mod telemetry;
