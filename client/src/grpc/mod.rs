//! Our gRPC transport (`cas.api.v1.Cas`, see `proto/`).
//!
//! [`GrpcClient`] does what [`crate::xet::XetClient`] does in fewer round trips:
//! dedup lookups go in batches of up to 1024 chunks, xorbs and shards stream in
//! parts over one multiplexed HTTP/2 connection. Every call carries
//! `authorization: Bearer <token>` metadata; calls are retried on `Unavailable`,
//! `DeadlineExceeded` and `Aborted` ([`crate::retry::RetryPolicy`]). Fetch URLs
//! are read over plain HTTP ([`crate::xet::Fetcher`]), exactly as with the HTTP
//! transport.
//!
//! Endpoints are written `grpc://host:port` (or `http://host:port`).

mod client;
mod error;

pub use client::{
    GrpcClient, GrpcClientConfig, MAX_HAS_XORBS_BATCH, MAX_QUERY_BATCH, UPLOAD_PART_BYTES,
};
pub use error::GrpcError;
