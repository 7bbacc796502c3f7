//! The node's front ends, thin adapters over [`crate::service`]:
//!
//! - [`http`]: the Xet CAS HTTP API (what `hf_xet` speaks), plus health and metrics;
//! - [`grpc`]: the client gRPC API, shaped for fewer round trips.
//!
//! An adapter authenticates the caller, decodes the request, calls one service method
//! and encodes its answer; it holds no rule of its own.

pub mod grpc;
pub mod http;
