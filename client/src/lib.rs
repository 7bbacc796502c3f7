//! The client library behind the `cas` command line.
//!
//! - [`pipeline`]: the upload data pipeline, independent of any transport:
//!   deduplication against what this session and the store already hold,
//!   packing new chunks into xorbs, and the shard that registers the files.
//! - [`xet`]: the Xet CAS HTTP transport ([`xet::XetClient`]): dedup queries,
//!   xorb and shard uploads, reconstructions and ranged fetches, with retries
//!   and typed errors.
//! - [`grpc`]: our gRPC transport ([`grpc::GrpcClient`]): the same operations
//!   with batched lookups and streamed uploads over one HTTP/2 connection.
//! - [`transfer`]: whole uploads and downloads over either transport
//!   ([`transfer::Transport`]): files and directories in, file hashes out;
//!   file hashes (and byte ranges) in, verified bytes out.
//! - [`cache`]: the local cache of shards (and file manifests) earlier uploads
//!   left, consulted before asking the server.
//! - [`retry`]: bounded retries with backoff, shared by both transports.

pub mod cache;
pub mod grpc;
pub mod pipeline;
pub mod retry;
pub mod transfer;
pub mod xet;
